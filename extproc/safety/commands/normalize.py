"""Command text -> the simple commands it would run, in a canonical form.

:func:`normalize` turns what an agent asked a shell to run into a flat,
de-duplicated list of :class:`SimpleCommand` (argv and text), which the rules
match. :func:`parse` also returns the pipelines (for rules about what is piped
into what), the cleaned text and whether everything could be read.

Steps
    1. :func:`~extproc.safety.commands.lexer.clean`: ANSI escapes, control and
       format characters removed, Unicode NFKC.
    2. :func:`~extproc.safety.commands.lexer.lex`: words, quotes (``'...'``,
       ``"..."``, ``$'...'``, backslashes), operators (``&&`` ``||`` ``;``
       ``|`` ``&``, newlines, subshells, ``{ ...; }``), redirections,
       heredocs; substitutions (``$(...)``, backticks, ``<(...)``,
       ``>(...)``) become commands of their own, listed before the command
       that contains them.
    3. Per command: reserved words (``if``, ``then``, ``do``, ``{``, ``!``...)
       and leading ``NAME=value`` assignments dropped; the program reduced to
       its name, in lower case (``/usr/bin/git`` -> ``git``,
       ``C:\\Windows\\cmd.exe`` -> ``cmd``, ``RM`` -> ``rm``: case-insensitive
       file systems run it); unquoted brace lists expanded (``{/,}`` -> ``/``);
       wrappers unwrapped (``sudo``, ``doas``, ``pkexec``, ``env``,
       ``command``, ``builtin``, ``exec``, ``nohup``, ``time``, ``nice``,
       ``timeout``, ``stdbuf``, ``ionice``, ``setsid``, ``unbuffer``,
       ``xargs``, ``watch``, ``busybox``, ``chroot``, ``taskset``, ``chrt``,
       ``faketime``, ``flock``, ``runuser``, ``strace``, ``ltrace``,
       ``unshare``, ``systemd-run``, ``caffeinate``, ``proxychains``,
       ``torsocks``); command strings parsed as commands (``bash|sh|zsh|...
       -c``, a shell reading a heredoc or here-string, ``eval``, ``env -S``,
       ``watch``, ``su|runuser|sg|script|flock -c``, ``cmd /c``,
       ``powershell -Command`` and ``-EncodedCommand``, ``find -exec ...
       ;``); git's global options
       (``-C dir``, ``-c k=v``, ``--git-dir=``, ``--work-tree=``...) removed.
    4. Redirections go to the end of argv as operator and target
       (``echo x > /dev/sda`` -> ``echo x > /dev/sda``; ``2>/dev/null rm x``
       -> ``rm x 2> /dev/null``); a heredoc becomes a here-string
       (``<<<`` and its body), so its text is visible to the rules.

The result is idempotent: normalising ``" ; ".join(c.text for c in normalize(x))``
gives the same argvs (see :mod:`extproc.safety.commands.quoting`), except
where nesting went beyond ``MAX_DEPTH`` (the text is then incomplete).

Nothing is expanded or executed: ``$HOME``, ``~`` and globs stay as written.
Bounded: text beyond ``MAX_LENGTH`` is cut and nesting beyond ``MAX_DEPTH``
is not unwrapped; both mark the result incomplete.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from extproc.safety.commands.braces import expand_braces, has_braces
from extproc.safety.commands.lexer import (
    MAX_DEPTH,
    MAX_LENGTH,
    RawCommand,
    RawPipeline,
    Redirect,
    Word,
    clean,
    lex,
)
from extproc.safety.commands.quoting import RESERVED, is_assignment, render
from extproc.safety.commands.unwrap import (
    C_OPTION_PROGRAMS,
    SHELLS,
    WINDOWS_PROGRAMS,
    WRAPPERS,
    c_option_body,
    cmd_body,
    env_split_body,
    git_subcommand_start,
    powershell_body,
    program_name,
    shell_body,
    watch_body,
    word_text,
)

__all__ = ["ParsedCommand", "SimpleCommand", "normalize", "parse"]

#: Wrappers unwrapped from one command at most (``sudo sudo ... rm``).
_MAX_WRAPPERS = 64
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
_HEREDOC_OPS = ("<<", "<<-")


@dataclass(frozen=True, slots=True)
class SimpleCommand:
    """One program run: its argv (program name first, redirections last) and
    ``text``, the argv joined with single spaces (arguments that need it quoted)."""

    argv: tuple[str, ...]
    text: str
    #: The wrappers unwrapped to reach it, outermost first (``("sudo", "xargs")``):
    #: ``xargs`` means more arguments come from standard input. Not compared.
    wrappers: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class ParsedCommand:
    """Everything a command text would run."""

    #: Every simple command, de-duplicated, substitutions before their users.
    commands: tuple[SimpleCommand, ...]
    #: The same in the order they run, repeats kept (``cd a; rm x; cd b; rm x``),
    #: each with the wrappers it was reached through.
    sequence: tuple[SimpleCommand, ...]
    #: Pipelines of two or more stages, each stage as it reads its input.
    pipelines: tuple[tuple[SimpleCommand, ...], ...]
    #: The command text after cleaning (ANSI escapes removed, NFKC), cut to ``MAX_LENGTH``.
    text: str
    #: False when the text was too long, nested too deep or left a quote open.
    complete: bool


def normalize(command: str) -> list[SimpleCommand]:
    """The simple commands ``command`` would run, normalised (see the module docstring)."""
    return list(parse(command).commands)


def parse(command: str) -> ParsedCommand:
    """:func:`normalize` with pipelines, the cleaned text and completeness."""
    complete = len(command) <= MAX_LENGTH
    text = clean(command[:MAX_LENGTH])
    if len(text) > MAX_LENGTH:
        text, complete = text[:MAX_LENGTH], False
    builder = _Builder()
    builder.text(text, windows=False, depth=0, redirects=())
    return ParsedCommand(
        commands=tuple(builder.commands.values()),
        sequence=tuple(builder.sequence),
        pipelines=tuple(builder.pipelines.values()),
        text=text,
        complete=complete and builder.complete,
    )


_Pair = tuple[str, str | None]


class _Builder:
    __slots__ = ("commands", "complete", "pipelines", "sequence")

    def __init__(self) -> None:
        self.commands: dict[tuple[str, ...], SimpleCommand] = {}
        self.sequence: list[SimpleCommand] = []
        self.pipelines: dict[tuple[tuple[str, ...], ...], tuple[SimpleCommand, ...]] = {}
        self.complete = True

    def text(
        self, text: str, *, windows: bool, depth: int, redirects: Sequence[_Pair]
    ) -> list[SimpleCommand]:
        """Parse ``text``; the stages of its first pipeline (what reads its standard input)."""
        lexed = lex(text, windows=windows, depth=depth)
        self.complete = self.complete and lexed.complete
        first: list[SimpleCommand] | None = None
        for pipeline in lexed.pipelines:
            stages = self.pipeline(pipeline, windows, depth, redirects)
            if first is None:
                first = stages
        return first or []

    def pipeline(
        self, pipeline: RawPipeline, windows: bool, depth: int, redirects: Sequence[_Pair]
    ) -> list[SimpleCommand]:
        stages: list[SimpleCommand] = []
        for raw in pipeline.commands:
            stages.extend(self.command(raw, windows, depth, redirects))
        if len(stages) > 1:
            self.pipelines.setdefault(tuple(stage.argv for stage in stages), tuple(stages))
        return stages

    def emit(
        self, words: list[str], redirects: Sequence[_Pair], wrappers: Sequence[str] = ()
    ) -> SimpleCommand | None:
        argv = tuple(words) + tuple(
            token for op, target in redirects for token in (op, target) if token is not None
        )
        if not argv:
            return None
        existing = self.commands.get(argv)
        if existing is None:
            command = SimpleCommand(argv, render(words, redirects), tuple(wrappers))
            self.commands[argv] = command
        elif existing.wrappers != tuple(wrappers):
            command = SimpleCommand(argv, existing.text, tuple(wrappers))
        else:
            command = existing
        self.sequence.append(command)
        return existing or command

    def body(
        self, text: str, windows: bool, depth: int, redirects: Sequence[_Pair]
    ) -> list[SimpleCommand] | None:
        """The commands of a command string (``bash -c TEXT``); None beyond the depth bound."""
        if depth + 1 > MAX_DEPTH:
            self.complete = False
            return None
        if windows:
            text = clean(text)
        heads = self.text(text, windows=windows, depth=depth + 1, redirects=redirects)
        if not heads and redirects:
            command = self.emit([], redirects)
            return [command] if command is not None else []
        return heads

    def command(
        self, raw: RawCommand, windows: bool, depth: int, extra: Sequence[_Pair]
    ) -> list[SimpleCommand]:
        """Emit ``raw`` (its substitutions first); the stages it stands for in its pipeline."""
        for inner in raw.inner:
            self.pipeline(inner, windows, depth, ())
        own = [_pair(redirect) for redirect in raw.redirects]
        if any(target is None and not _is_dup(op) for op, target in own):
            # "cat >" with nothing after: a syntax error the shell refuses; dropped.
            self.complete = False
            own = [(op, target) for op, target in own if target is not None or _is_dup(op)]
        redirects = [*own, *extra]
        words: Sequence[Word] = self.expand(raw.words)
        wrappers: list[str] = []
        lowered = ""
        for _ in range(_MAX_WRAPPERS):
            words = _strip_leading(words)
            if not words:
                break
            lowered = program_name(words[0]).lower()
            wrapper = WRAPPERS.get(lowered)
            body_redirects: Sequence[_Pair] = redirects
            body, body_windows = self.command_string(words, lowered), False
            if body is None and wrapper is not None:
                start = wrapper(words)
                if start is not None:
                    if start >= len(words):
                        break  # nothing wrapped: the wrapper itself is the command
                    wrappers.append(lowered)
                    words = words[start:]
                    continue
            elif body is None and lowered in SHELLS:
                kind, body = shell_body(words)
                if kind == "stdin":
                    body, body_redirects = _stdin_script(redirects)
            elif body is None and lowered in ("cmd", "powershell", "pwsh"):
                body = cmd_body(words) if lowered == "cmd" else powershell_body(words)
                body_windows = True
            if body is None:
                break
            heads = self.body(body, body_windows, depth, body_redirects)
            if heads is None:
                break
            return heads
        else:
            self.complete = False  # wrappers of wrappers beyond the bound: not unwrapped
            lowered = ""
        return self.finish(words, redirects, windows, depth, wrappers, lowered)

    def expand(self, words: list[Word]) -> list[Word]:
        """Unquoted brace lists expanded (``{/,}`` -> ``/``), as bash does before running."""
        if not any("{" in word.value for word in words) or not any(
            word.is_plain and has_braces(word.value) for word in words
        ):
            return words
        out: list[Word] = []
        for word in words:
            expanded = expand_braces(word.value) if word.is_plain else None
            if expanded is None:
                self.complete = self.complete and not (word.is_plain and has_braces(word.value))
                out.append(word)
                continue
            for item in expanded:
                if item:  # bash drops the empty words of an expansion
                    text = _nfkc(item)
                    out.append(Word(text, text, len(text)))
        return out

    @staticmethod
    def command_string(words: Sequence[Word], lowered: str) -> str | None:
        """The command text a POSIX program runs from its arguments (``eval``, ``su -c``,
        ``env -S``, ``watch`` without ``-x``), if it is such a program."""
        if lowered in C_OPTION_PROGRAMS:
            return c_option_body(words)
        if lowered == "eval":
            return " ".join(word.value for word in words[1:]) or None
        if lowered == "env":
            return env_split_body(words)
        if lowered == "watch" and WRAPPERS["watch"](words) is None:
            return watch_body(words)
        return None

    def finish(
        self,
        words: Sequence[Word],
        redirects: Sequence[_Pair],
        windows: bool,
        depth: int,
        wrappers: Sequence[str] = (),
        lowered: str = "",
    ) -> list[SimpleCommand]:
        argv: list[str] = []
        if words:
            lowered = lowered or program_name(words[0]).lower()
            windows = windows or lowered in WINDOWS_PROGRAMS
            argv = [lowered, *(word_text(word, windows) for word in words[1:])]
            if lowered == "git":
                argv = [argv[0], *argv[git_subcommand_start(argv) :]]
            elif lowered == "find":
                self.find_exec(words, windows, depth)
        command = self.emit(argv, redirects, wrappers)
        return [command] if command is not None else []

    def find_exec(self, words: Sequence[Word], windows: bool, depth: int) -> None:
        """The commands of ``find ... -exec CMD ... ;`` (and ``-execdir``, ``-ok``)."""
        if depth + 1 > MAX_DEPTH:
            self.complete = False
            return
        index = 1
        while index < len(words):
            if words[index].value in _FIND_EXEC:
                end = index + 1
                while end < len(words) and words[end].value not in (";", "+"):
                    end += 1
                if end > index + 1:
                    inner = RawCommand(list(words[index + 1 : end]))
                    self.command(inner, windows, depth + 1, ())
                index = end
            index += 1


def _strip_leading(words: Sequence[Word]) -> Sequence[Word]:
    """Without leading reserved words (``if``, ``{``, ``!``...) and ``NAME=value`` assignments."""
    index = 0
    while index < len(words):
        word = words[index]
        text = word.value
        if (word.is_plain and text in RESERVED) or (
            is_assignment(text) and word.plain > text.index("=")
        ):
            index += 1
        else:
            break
    return words[index:] if index else words


def _nfkc(text: str) -> str:
    """Pieces of a word can compose once apart (``{a,b}`` + a combining mark)."""
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def _is_dup(op: str) -> bool:
    """``2>&1``, ``>&-``: a descriptor copied or closed (no target word)."""
    return op[-1:] in "0123456789-" and "&" in op


def _split_fd(op: str) -> tuple[str, str]:
    """``2>>`` -> (``2``, ``>>``)."""
    stripped = op.lstrip("0123456789")
    return op[: len(op) - len(stripped)], stripped


def _pair(redirect: Redirect) -> _Pair:
    """A redirection as (operator, target); a heredoc as a here-string of its body."""
    fd, op = _split_fd(redirect.op)
    if op in _HEREDOC_OPS:
        return fd + "<<<", redirect.body or ""
    target = redirect.target
    return redirect.op, (word_text(target, False) if target is not None else None)


def _stdin_script(redirects: Sequence[_Pair]) -> tuple[str | None, list[_Pair]]:
    """A shell reading standard input: the script from its heredoc or here-string, and
    the other redirections (which apply to the script's commands)."""
    for index in range(len(redirects) - 1, -1, -1):
        op, target = redirects[index]
        if _split_fd(op)[1] == "<<<":
            return target or "", [*redirects[:index], *redirects[index + 1 :]]
    return None, list(redirects)
