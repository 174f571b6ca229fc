"""A tolerant, linear-time shell lexer: command text -> pipelines of raw commands.

It reads the shell syntax an agent writes (bash/POSIX sh, with enough of
cmd.exe and PowerShell for their wrappers) and never fails: unbalanced quotes
and parentheses run to the end of the text, which is then marked incomplete.

What it produces
    :func:`lex` returns :class:`Lexed`: a list of :class:`RawPipeline` (the
    commands joined by ``|``), separated in the source by ``;``, ``&``,
    ``&&``, ``||``, newlines and subshell parentheses. Each
    :class:`RawCommand` holds its words, its redirections (``2>`` and target,
    heredoc bodies) and ``inner``: the pipelines of the command and process
    substitutions (``$(...)``, backticks, ``<(...)``, ``>(...)``) found in its
    words, which run too. The substitution itself stays in the word as its
    source text, so ``docker rm -f $(docker ps -aq)`` keeps its shape.

Words
    A :class:`Word` has two values: ``value``, with POSIX quoting and
    backslash escapes applied, and ``wvalue``, the same but with backslashes
    kept literally (for Windows paths such as ``C:\\Users``, which bash would
    read as ``C:Users``). ``plain`` is the length of the unquoted, unescaped
    prefix of ``value``: reserved words and ``NAME=value`` assignments count
    only when unquoted. ANSI-C strings (``$'\\x72\\x6d'``) are decoded.
    Nothing is expanded: ``$HOME``, ``~`` and globs stay as written.

Bounds
    Every character is looked at a bounded number of times. Nested
    substitutions share one cursor; backtick bodies and nesting beyond
    ``MAX_DEPTH`` are the only re-read text, so the work is at most
    ``MAX_DEPTH`` times the length. Deeper nesting is skipped (not parsed) and
    the result marked incomplete.

:func:`clean` prepares untrusted text first: ANSI escape sequences, control
and format characters (zero-width spaces, bidi overrides) removed, then
Unicode NFKC (fullwidth letters and operators become ASCII).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import re2

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Lexed",
    "RawCommand",
    "RawPipeline",
    "Redirect",
    "Word",
    "clean",
    "clean_fragment",
    "lex",
]

#: Nesting bound: substitutions in substitutions, ``bash -c`` in ``bash -c``.
MAX_DEPTH = 8
#: Longer commands are cut here (characters) and marked incomplete.
MAX_LENGTH = 64 * 1024

_ANSI = re2.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: titles, hyperlinks
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*[0-~]?"  # two-character escapes (and a lone ESC)
    r"|\x{9b}[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
# C0 controls except tab and newline, DEL, C1 controls, and format characters
# (soft hyphen, zero-width and bidi marks, tags): invisible, or a word splitter
# in disguise.
_INVISIBLE = re2.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x{9f}\p{Cf}]")

_BLANK = frozenset(" \t")
# Characters that end a word (outside quotes) in POSIX mode.
_BREAK = frozenset(" \t\n;&|()<>")
# Characters after a bare word that end it (not "<" or ">": "2>" and "<(" need a look).
_WORD_END = frozenset(" \t\n;&|()")
_PLAIN_POSIX = frozenset(" \t\n;&|()<>\\'\"$`")
_PLAIN_WINDOWS = frozenset(" \t\n;&|()<>'\"^")
_DQ_ESCAPABLE = frozenset('$`"\\\n')
_OCTAL = frozenset("01234567")
_HEX = frozenset("0123456789abcdefABCDEF")
_ANSI_C_SIMPLE = {
    "a": "\a",
    "b": "\b",
    "e": "\x1b",
    "E": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}


def clean(text: str) -> str:
    """``text`` without ANSI escapes, control or format characters, in NFKC form."""
    if "\x1b" in text or "\x9b" in text:
        text = _ANSI.sub("", text)
    if not text.isascii():
        # Lone surrogates (JSON allows them) cannot be UTF-8: they become U+FFFD.
        text = text.encode("utf-8", "replace").decode("utf-8")
        text = _INVISIBLE.sub("", text)
        return unicodedata.normalize("NFKC", text)
    return _INVISIBLE.sub("", text) if not text.isprintable() else text


def clean_fragment(text: str) -> str:
    """Decoded text (an ANSI-C string) as :func:`clean` would have left it."""
    return clean(text.replace("\x1b", ""))


@dataclass(slots=True)
class Word:
    """One shell word: its POSIX value, its Windows value, its unquoted prefix length."""

    value: str
    wvalue: str
    plain: int

    @property
    def is_plain(self) -> bool:
        """Nothing in the word was quoted or escaped."""
        return self.plain == len(self.value)


@dataclass(slots=True)
class Redirect:
    """``op`` (with its fd: ``2>``, ``>>``, ``2>&1``, ``<<``) and its target word."""

    op: str
    target: Word | None
    #: A heredoc's body (``<<`` and ``<<-``), filled in when its lines are read.
    body: str | None = None


@dataclass(slots=True)
class RawCommand:
    words: list[Word] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)
    #: Pipelines of the substitutions in the words and redirection targets.
    inner: list[RawPipeline] = field(default_factory=list)


@dataclass(slots=True)
class RawPipeline:
    commands: list[RawCommand]


@dataclass(slots=True)
class Lexed:
    pipelines: list[RawPipeline]
    #: False when something was cut, skipped or left unterminated.
    complete: bool


def lex(text: str, *, windows: bool = False, depth: int = 0) -> Lexed:
    """The pipelines of ``text`` (already :func:`clean`), read as POSIX shell or, with
    ``windows``, as cmd.exe/PowerShell text (backslashes literal, ``^`` escapes,
    no substitutions). ``depth`` is the nesting level the text comes from."""
    complete = True
    if len(text) > MAX_LENGTH:
        text, complete = text[:MAX_LENGTH], False
    lexer = _Lexer(text, windows, depth)
    pipelines = lexer.parse_list(closer=False)
    return Lexed(pipelines, complete and lexer.complete)


class _Lexer:
    __slots__ = ("complete", "depth", "n", "pending", "pos", "src", "windows")

    def __init__(self, src: str, windows: bool, depth: int) -> None:
        self.src = src
        self.n = len(src)
        self.pos = 0
        self.windows = windows
        self.depth = depth
        self.complete = True
        #: Heredocs whose bodies start after the next newline: (redirect, strip tabs).
        self.pending: list[tuple[Redirect, bool]] = []

    # -- lists, pipelines, commands ------------------------------------------------

    def parse_list(self, *, closer: bool) -> list[RawPipeline]:
        """Pipelines up to the end, or (``closer``) up to the ``)`` that closes a substitution."""
        src, n = self.src, self.n
        pipelines: list[RawPipeline] = []
        stages: list[RawCommand] = []
        command = RawCommand()
        parens = 0  # subshells opened inside this substitution

        def end_command() -> None:
            nonlocal command
            if command.words or command.redirects or command.inner:
                stages.append(command)
                command = RawCommand()

        def end_pipeline() -> None:
            nonlocal stages
            end_command()
            if stages:
                pipelines.append(RawPipeline(stages))
                stages = []

        while self.pos < n:
            char = src[self.pos]
            if char in _BLANK:
                self.pos += 1
            elif char == "\n":
                self.pos += 1
                end_pipeline()
                self._read_heredocs()
            elif char == "#":
                end = src.find("\n", self.pos)
                self.pos = n if end < 0 else end
            elif char == ")":
                self.pos += 1
                if closer and parens == 0:
                    end_pipeline()
                    return pipelines
                parens = max(0, parens - 1)
                end_pipeline()
            elif char == "(":
                self.pos += 1
                parens += 1
                end_pipeline()
            elif char == "|":
                following = self._peek()
                if following == "|":  # ||
                    self.pos += 2
                    end_pipeline()
                else:  # | or |&
                    self.pos += 2 if following == "&" else 1
                    end_command()
            elif char == "&":
                following = self._peek()
                if following == ">":
                    self._redirect(command, "")
                elif following == "&":
                    self.pos += 2
                    end_pipeline()
                else:
                    self.pos += 1
                    end_pipeline()
            elif char == ";":
                while self.pos < n and src[self.pos] in ";&":
                    self.pos += 1
                end_pipeline()
            elif char in "<>" and (self.windows or self._peek() != "("):
                self._redirect(command, "")
            else:
                before = self.pos
                word = self._word(command.inner)
                if self.pos == before:  # cannot happen; never loop forever on a surprise
                    self.pos += 1
                    continue
                following = src[self.pos] if self.pos < n else ""
                if (
                    following
                    and following in "<>"
                    and word.is_plain
                    and word.value.isdigit()
                    and (self.windows or self._peek() != "(")
                ):
                    self._redirect(command, word.value)
                else:
                    command.words.append(word)
        if closer:
            self.complete = False  # a substitution never closed
        end_pipeline()
        return pipelines

    def _peek(self) -> str:
        nxt = self.pos + 1
        return self.src[nxt] if nxt < self.n else ""

    def _redirect(self, command: RawCommand, fd: str) -> None:
        src, n = self.src, self.n
        start = self.pos
        if src.startswith("&>>", start):
            op = "&>>"
        elif src.startswith("&>", start):
            op = "&>"
        else:
            op = src[start]
            rest = src[start + 1 : start + 3]
            if op == "<":
                if rest.startswith("<<"):
                    op = "<<<"
                elif rest.startswith("<-"):
                    op = "<<-"
                elif rest[:1] in ("<", "&", ">"):
                    op += rest[0]
            elif rest[:1] in (">", "|", "&"):
                op += rest[0]
        self.pos = start + len(op)
        if op in (">&", "<&"):
            dup = self.pos
            while dup < n and (src[dup].isdigit() or src[dup] == "-"):
                dup += 1
            if dup > self.pos and (dup == n or src[dup] in _BREAK):
                command.redirects.append(Redirect(fd + op + src[self.pos : dup], None))
                self.pos = dup
                return
        while self.pos < n and src[self.pos] in _BLANK:
            self.pos += 1
        target: Word | None = None
        if self.pos < n and (
            src[self.pos] not in _BREAK
            or (not self.windows and src.startswith(("<(", ">("), self.pos))
        ):
            target = self._word(command.inner)
        redirect = Redirect(fd + op, target)
        command.redirects.append(redirect)
        if op in ("<<", "<<-"):
            self.pending.append((redirect, op == "<<-"))

    def _read_heredocs(self) -> None:
        """Consume the bodies of the heredocs opened on the line that just ended."""
        src, n = self.src, self.n
        pending, self.pending = self.pending, []
        for redirect, strip_tabs in pending:
            delimiter = redirect.target.value if redirect.target is not None else ""
            lines: list[str] = []
            while self.pos < n:
                end = src.find("\n", self.pos)
                line = src[self.pos : n if end < 0 else end]
                self.pos = n if end < 0 else end + 1
                if strip_tabs:
                    line = line.lstrip("\t")
                if line == delimiter:
                    break
                lines.append(line)
            redirect.body = "\n".join(lines) + ("\n" if lines else "")

    # -- words ---------------------------------------------------------------------

    def _word(self, inner: list[RawPipeline]) -> Word:
        """The word at the cursor (which is not a blank or an operator)."""
        src, n = self.src, self.n
        windows = self.windows
        plain_set = _PLAIN_WINDOWS if windows else _PLAIN_POSIX
        start = self.pos
        run = start
        while run < n and src[run] not in plain_set:
            run += 1
        if run > start and (run == n or src[run] in _WORD_END):
            # The common case: a bare word followed by a blank or an operator.
            self.pos = run
            text = src[start:run]
            if not text.isascii():
                text = unicodedata.normalize("NFKC", text)
            return Word(text, text, len(text))
        value: list[str] = []
        wvalue: list[str] = []
        plain = -1  # length of the plain prefix, once something is quoted
        while self.pos < n:
            char = src[self.pos]
            if char not in plain_set:
                run = self.pos + 1
                while run < n and src[run] not in plain_set:
                    run += 1
                chunk = src[self.pos : run]
                value.append(chunk)
                wvalue.append(chunk)
                self.pos = run
                continue
            if char in _BREAK:
                if char in "<>" and self.pos == start and self._peek() == "(" and not windows:
                    if plain < 0:
                        plain = len("".join(value))
                    raw = self._substitution(inner, 2)
                    value.append(raw)
                    wvalue.append(raw)
                    continue
                break
            if plain < 0:
                plain = len("".join(value))
            if char == "'":
                end = src.find("'", self.pos + 1)
                if end < 0:
                    end, self.complete = n, False
                chunk = src[self.pos + 1 : end]
                value.append(chunk)
                wvalue.append(chunk)
                self.pos = end + 1
            elif char == '"':
                self.pos += 1
                self._double_quoted(value, wvalue, inner)
            elif char == "^":  # windows: cmd.exe's escape
                if self.pos + 1 < n:
                    value.append(src[self.pos + 1])
                    wvalue.append(src[self.pos + 1])
                self.pos += 2
            elif char == "\\":
                following = self._peek()
                if following == "\n":
                    self.pos += 2
                elif following:
                    value.append(following)
                    wvalue.append("\\" + following)
                    self.pos += 2
                else:
                    value.append("\\")
                    wvalue.append("\\")
                    self.pos += 1
            elif char == "`":
                raw = self._backtick(inner)
                value.append(raw)
                wvalue.append(raw)
            else:  # "$"
                self._dollar(value, wvalue, inner, quoted=False)
        text, wtext = "".join(value), "".join(wvalue)
        if not text.isascii():
            # Quotes can separate a letter from its combining mark: compose them as the
            # cleaned text would, so that a word reads the same once requoted.
            text = unicodedata.normalize("NFKC", text)
            wtext = unicodedata.normalize("NFKC", wtext)
        return Word(text, wtext, len(text) if plain < 0 else min(plain, len(text)))

    def _double_quoted(self, value: list[str], wvalue: list[str], inner: list[RawPipeline]) -> None:
        src, n = self.src, self.n
        while self.pos < n:
            char = src[self.pos]
            if char == '"':
                self.pos += 1
                return
            if self.windows or char not in '\\$`"':
                run = self.pos + 1
                stop = '"' if self.windows else '\\$`"'
                while run < n and src[run] not in stop:
                    run += 1
                chunk = src[self.pos : run]
                value.append(chunk)
                wvalue.append(chunk)
                self.pos = run
            elif char == "\\":
                following = self._peek()
                if following == "\n":
                    self.pos += 2
                elif following in _DQ_ESCAPABLE and following:
                    value.append(following)
                    wvalue.append("\\" + following if following != '"' else following)
                    self.pos += 2
                else:
                    value.append("\\")
                    wvalue.append("\\")
                    self.pos += 1
            elif char == "`":
                raw = self._backtick(inner)
                value.append(raw)
                wvalue.append(raw)
            else:
                self._dollar(value, wvalue, inner, quoted=True)
        self.complete = False  # unterminated

    def _dollar(
        self, value: list[str], wvalue: list[str], inner: list[RawPipeline], *, quoted: bool
    ) -> None:
        src = self.src
        following = self._peek()
        if following == "(":
            if src.startswith("$((", self.pos):
                raw = self._arithmetic(inner)
            else:
                raw = self._substitution(inner, 2)
        elif following == "{":
            raw = self._parameter(inner)
        elif following == "'" and not quoted:
            decoded = self._ansi_c()
            value.append(decoded)
            wvalue.append(decoded)
            return
        elif following == '"' and not quoted:  # $"..." (locale translation)
            self.pos += 2
            self._double_quoted(value, wvalue, inner)
            return
        else:
            raw = "$"
            self.pos += 1
        value.append(raw)
        wvalue.append(raw)

    def _substitution(self, inner: list[RawPipeline], opener: int) -> str:
        """``$(...)``, ``<(...)`` or ``>(...)`` at the cursor: parsed into ``inner``; its source."""
        start = self.pos
        self.pos += opener
        if self.depth >= MAX_DEPTH:
            self.complete = False
            self._skip_balanced(1)
        else:
            self.depth += 1
            inner.extend(self.parse_list(closer=True))
            self.depth -= 1
        return self.src[start : self.pos]

    def _arithmetic(self, inner: list[RawPipeline]) -> str:
        """``$(( ... ))``: not a command, but ``$(...)`` inside it runs."""
        src, n = self.src, self.n
        start = self.pos
        self.pos += 3
        depth = 2
        while self.pos < n and depth:
            char = src[self.pos]
            if char == "$" and self._peek() == "(" and not src.startswith("$((", self.pos):
                self._substitution(inner, 2)
                continue
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            self.pos += 1
        if depth:
            self.complete = False
        return src[start : self.pos]

    def _parameter(self, inner: list[RawPipeline]) -> str:
        """``${...}``: one word even with blanks inside; substitutions in it run."""
        src, n = self.src, self.n
        start = self.pos
        self.pos += 2
        depth = 1
        while self.pos < n:
            char = src[self.pos]
            if char == "}":
                depth -= 1
                self.pos += 1
                if not depth:
                    return src[start : self.pos]
            elif char == "\\":
                self.pos += 2
            elif char == "'":
                end = src.find("'", self.pos + 1)
                self.pos = n if end < 0 else end + 1
            elif char == "$" and self._peek() in ("(", "{"):
                if self._peek() == "{":
                    depth += 1
                    self.pos += 2
                else:
                    self._substitution(inner, 2)
            elif char == "`":
                self._backtick(inner)
            else:
                self.pos += 1
        self.complete = False
        self.pos = min(self.pos, n)
        return src[start:n]

    def _backtick(self, inner: list[RawPipeline]) -> str:
        """A backtick substitution, its body (backslash escapes undone) parsed anew."""
        src, n = self.src, self.n
        start = self.pos
        self.pos += 1
        body: list[str] = []
        while self.pos < n:
            char = src[self.pos]
            if char == "`":
                self.pos += 1
                break
            if char == "\\" and self.pos + 1 < n:
                following = src[self.pos + 1]
                body.append(following if following in "`\\$" else "\\" + following)
                self.pos += 2
            else:
                body.append(char)
                self.pos += 1
        else:
            self.complete = False
        if self.depth >= MAX_DEPTH:
            self.complete = False
        else:
            nested = _Lexer("".join(body), False, self.depth + 1)
            inner.extend(nested.parse_list(closer=False))
            self.complete = self.complete and nested.complete
        return src[start : self.pos]

    def _skip_balanced(self, depth: int) -> None:
        """Past the ``)`` closing ``depth`` open parentheses, quotes respected (not parsed)."""
        src, n = self.src, self.n
        while self.pos < n and depth:
            char = src[self.pos]
            if char == "'":
                end = src.find("'", self.pos + 1)
                self.pos = n if end < 0 else end + 1
                continue
            if char == "\\":
                self.pos += 2
                continue
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            self.pos += 1
        self.pos = min(self.pos, n)

    def _ansi_c(self) -> str:
        """``$'...'`` at the cursor, decoded (``\\x72`` -> ``r``), then cleaned."""
        src, n = self.src, self.n
        self.pos += 2
        out: list[str] = []
        while self.pos < n:
            char = src[self.pos]
            if char == "'":
                self.pos += 1
                break
            if char != "\\" or self.pos + 1 >= n:
                out.append(char)
                self.pos += 1
                continue
            code = src[self.pos + 1]
            self.pos += 2
            if code in _ANSI_C_SIMPLE:
                out.append(_ANSI_C_SIMPLE[code])
            elif code in _OCTAL:
                digits = self._digits(code, _OCTAL, 2)
                out.append(chr(int(digits, 8) & 0xFF))
            elif code in "xuU":
                width = {"x": 2, "u": 4, "U": 8}[code]
                digits = self._digits("", _HEX, width)
                if not digits:
                    out.append("\\" + code)
                else:
                    number = int(digits, 16)
                    out.append(chr(number) if number <= 0x10FFFF else "\ufffd")
            elif code == "c" and self.pos < n:
                out.append(chr(ord(src[self.pos]) & 0x1F))
                self.pos += 1
            else:
                out.append("\\" + code)
        else:
            self.complete = False
        decoded = "".join(out)
        return clean_fragment(decoded)

    def _digits(self, first: str, allowed: frozenset[str], limit: int) -> str:
        src, n = self.src, self.n
        digits = first
        while self.pos < n and len(digits) < limit + len(first) and src[self.pos] in allowed:
            digits += src[self.pos]
            self.pos += 1
        return digits
