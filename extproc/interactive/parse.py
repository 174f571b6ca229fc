"""In-chat commands: find ``!/name(args)`` in a user's message (pure: no I/O).

Grammar (the prefix is ``!/`` unless told otherwise)::

    command  = prefix name [ "(" [ argument { "," argument } ] ")" ]
    name     = letter { letter | digit | "-" | "_" }          (at most 64)
    argument = [ key "=" ] value
    value    = '"' ... '"' | "'" ... "'" | plain               (\\" \\' \\\\ escape)

A command starts where the prefix stands at the start of the text, after
whitespace, or straight after another command (``!/max!/no-think`` is two), so
``http://x!/y`` and ``a!/b`` are prose. A prefix with no name after it (``!/ ``,
``!/(``) is prose too. A plain value runs to the next ``,`` or ``)`` outside
nested ``(...)``/``[...]`` (routing expressions such as
``a[weight=2,first]|b``) and is stripped. A command never spans lines: one
whose argument list is not closed on its line is malformed, and so is
everything after it on that line. Markdown code (fenced blocks, inline
backtick spans) is not scanned.

Malformed commands are reported as :class:`CommandSyntaxError` and, like the
well-formed ones, removed from :attr:`Scan.remainder`. There, a line left with
nothing but whitespace goes; the spaces either side of a command collapse to
one (none before ``.,;:!?)]}``: ``"use !/max."`` -> ``"use."``); the text is
stripped. Removing never makes new commands or new code fences (a fence marker
brought to the start of a line gets a backslash before it), so scanning the
remainder again finds nothing.

Every pass is linear in the text: ``str.find`` for the prefix and backticks,
and anchored, possessive character-class patterns (which cannot backtrack).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_PREFIX",
    "MAX_ARGS_CHARS",
    "MAX_COMMANDS",
    "MAX_NAME_CHARS",
    "Command",
    "CommandSyntaxError",
    "Scan",
    "has_prefix",
    "scan",
    "strip_commands",
]

DEFAULT_PREFIX: Final = "!/"
MAX_NAME_CHARS: Final = 64
#: characters between a command's parentheses
MAX_ARGS_CHARS: Final = 4096
#: commands honoured per text; later ones are errors (and removed)
MAX_COMMANDS: Final = 32

# Anchored (used with .match) and possessive: none of these can backtrack.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*+")
_KEY = re.compile(r"([A-Za-z][A-Za-z0-9_-]*+)[^\S\n]*+=")
_SPACE = re.compile(r"[^\S\n]*+")
_BLANK = re.compile(r"\s*+")
_PLAIN = re.compile(r"[^,()\[\]\n]*+")
_QUOTED = {'"': re.compile(r'[^"\\\n]*+'), "'": re.compile(r"[^'\\\n]*+")}
_RUNS = {"`": re.compile(r"`++"), "~": re.compile(r"~++")}

# A removed command followed by one of these takes the space before it along
# ("use !/max." -> "use."); followed by anything else it leaves one space.
_TIGHT: Final = frozenset(".,;:!?)]}")
_TOO_MANY: Final = f"too many commands (at most {MAX_COMMANDS} in one message)"


@dataclass(frozen=True, slots=True)
class Command:
    """One well-formed command, as typed."""

    #: lower-case: letters, digits, ``-`` and ``_``
    name: str
    #: positional arguments, unquoted
    args: tuple[str, ...]
    #: ``key=value`` arguments in order; keys lower-case, ``_`` spelled ``-``
    kwargs: tuple[tuple[str, str], ...]
    #: the exact source text, prefix included
    text: str
    #: offsets of :attr:`text` in the scanned text
    start: int
    end: int


class CommandSyntaxError(ValueError):
    """A malformed command: what is wrong (:attr:`reason`) and where (:attr:`text`)."""

    def __init__(self, reason: str, text: str, start: int = 0, end: int | None = None) -> None:
        self.reason = reason
        #: the offending source text, prefix included
        self.text = text
        self.start = start
        self.end = start + len(text) if end is None else end
        snippet = text if len(text) <= 60 else text[:57] + "..."
        super().__init__(f"{snippet}: {reason}")

    def __reduce__(self) -> tuple[type[CommandSyntaxError], tuple[str, str, int, int]]:
        return type(self), (self.reason, self.text, self.start, self.end)


@dataclass(frozen=True, slots=True)
class Scan:
    """What :func:`scan` found, and the text without it."""

    commands: tuple[Command, ...]
    errors: tuple[CommandSyntaxError, ...]
    #: the text with every command (well-formed or not) removed and the
    #: whitespace around them tidied; the text itself when nothing was removed
    remainder: str


def has_prefix(text: str, prefix: str = DEFAULT_PREFIX) -> bool:
    """Whether ``text`` could hold a command at all (a substring test)."""
    _check_prefix(prefix)
    return prefix in text


def strip_commands(text: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``text`` without its commands: ``text`` itself when it has none."""
    _check_prefix(prefix)
    if prefix not in text:
        return text
    return scan(text, prefix).remainder


def scan(text: str, prefix: str = DEFAULT_PREFIX) -> Scan:
    """The commands in ``text``, its malformed commands, and the rest of it."""
    _check_prefix(prefix)
    if prefix not in text:
        return Scan((), (), text)
    found: list[_Found] = []
    for start, end in _paragraphs(text):
        _scan_region(text, start, end, prefix, found)
    if not found:
        return Scan((), (), text)
    commands: list[Command] = []
    errors: list[CommandSyntaxError] = []
    for f in found:
        source = text[f.start : f.end]
        if f.problem is None and len(commands) < MAX_COMMANDS:
            commands.append(Command(f.name, f.args, f.kwargs, source, f.start, f.end))
        else:
            errors.append(CommandSyntaxError(f.problem or _TOO_MANY, source, f.start, f.end))
    return Scan(tuple(commands), tuple(errors), _tidy(text, found, prefix))


def _check_prefix(prefix: str) -> None:
    if not prefix or any(c.isspace() or c in "`\\" for c in prefix):
        raise ValueError(
            f"command prefix {prefix!r}: must be non-empty, without whitespace, "
            "backticks or backslashes"
        )


def _skip(pattern: re.Pattern[str], text: str, pos: int, end: int) -> int:
    """Where ``pattern`` (which may match nothing) stops matching at ``pos``."""
    m = pattern.match(text, pos, end)
    return pos if m is None else m.end()


# -- markdown layout: fenced code, paragraphs --------------------------------------


def _fence_run(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The fence marker (3+ backticks or tildes, up to 3 spaces in) opening a line."""
    i = start
    while i < end and i - start < 4 and text[i] == " ":
        i += 1
    if i - start > 3 or i >= end or text[i] not in _RUNS:
        return None
    j = _skip(_RUNS[text[i]], text, i, end)
    return (i, j) if j - i >= 3 else None


def _opens_fence(text: str, start: int, end: int) -> tuple[str, int] | None:
    run = _fence_run(text, start, end)
    if run is None:
        return None
    i, j = run
    # a backtick fence's info string holds no backticks: "```a```" is inline code
    if text[i] == "`" and text.find("`", j, end) >= 0:
        return None
    return text[i], j - i


def _closes_fence(text: str, start: int, end: int, fence: tuple[str, int]) -> bool:
    run = _fence_run(text, start, end)
    if run is None:
        return False
    i, j = run
    return text[i] == fence[0] and j - i >= fence[1] and _skip(_BLANK, text, j, end) == end


def _line_bounds(text: str, pos: int) -> tuple[int, int]:
    """Where the line at ``pos`` ends (before its line break), and where the next starts."""
    nl = text.find("\n", pos)
    if nl < 0:
        return len(text), len(text)
    return (nl - 1 if nl > pos and text[nl - 1] == "\r" else nl), nl + 1


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """The paragraphs outside fenced code: where commands are, and inline code spans end."""
    fences = "```" in text or "~~~" in text
    if not fences and "`" not in text:
        return [(0, len(text))]  # no code at all, and commands end at line ends anyway
    regions: list[tuple[int, int]] = []
    fence: tuple[str, int] | None = None
    para_start = para_end = -1
    pos, n = 0, len(text)
    while pos <= n:
        end, nxt = _line_bounds(text, pos)
        code = True
        if fence is not None:
            if _closes_fence(text, pos, end, fence):
                fence = None
        elif fences and (opened := _opens_fence(text, pos, end)) is not None:
            fence = opened
        else:
            code = False
        if code or _skip(_BLANK, text, pos, end) == end:
            if para_start >= 0:
                regions.append((para_start, para_end))
                para_start = -1
        else:
            if para_start < 0:
                para_start = pos
            para_end = end
        if nxt == n and end == n:
            break
        pos = nxt
    if para_start >= 0:
        regions.append((para_start, para_end))
    return regions


class _Ticks:
    """A paragraph's backtick runs, to pair code-span openers with closers in linear time."""

    __slots__ = ("_at", "_next")

    def __init__(self, text: str, start: int, end: int) -> None:
        self._at: dict[int, list[int]] = {}
        self._next: dict[int, int] = {}
        pos = text.find("`", start, end)
        while pos >= 0:
            run_end = _skip(_RUNS["`"], text, pos, end)
            self._at.setdefault(run_end - pos, []).append(pos)
            pos = text.find("`", run_end, end)

    def closer(self, opener: int, length: int) -> int:
        """The first run of exactly ``length`` backticks after ``opener``, or -1.

        Openers come in increasing order, so each length's cursor only moves on.
        """
        at = self._at.get(length, [])
        k = self._next.get(length, 0)
        while k < len(at) and at[k] <= opener:
            k += 1
        self._next[length] = k
        return at[k] if k < len(at) else -1


# -- commands ----------------------------------------------------------------------


@dataclass(slots=True)
class _Found:
    start: int
    end: int
    name: str
    args: tuple[str, ...]
    kwargs: tuple[tuple[str, str], ...]
    #: what is wrong with it; None for a well-formed command
    problem: str | None


class _Malformed(Exception):
    """An argument list that cannot be read to its end: the command takes its line."""

    def __init__(self, problem: str, at: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.at = at


def _scan_region(text: str, start: int, end: int, prefix: str, out: list[_Found]) -> None:
    """Append the commands of one paragraph, skipping its inline code spans."""
    ticks: _Ticks | None = None
    i = start
    after = -1  # end of the last command: a prefix right there needs no space before it
    at_prefix = at_tick = -1  # the next prefix and backtick (``end``: no backtick)
    while i < end:
        if at_prefix < i:
            at_prefix = text.find(prefix, i, end)
            if at_prefix < 0:
                return
        if at_tick < i:
            at_tick = text.find("`", i, end)
            if at_tick < 0:
                at_tick = end
        if at_tick < at_prefix:
            if ticks is None:
                ticks = _Ticks(text, start, end)
            run_end = _skip(_RUNS["`"], text, at_tick, end)
            closer = ticks.closer(at_tick, run_end - at_tick)
            i = run_end if closer < 0 else closer + run_end - at_tick
            continue
        p = at_prefix
        if p != after and p > 0 and not text[p - 1].isspace():
            i = p + 1
            continue
        found = _parse(text, p, len(prefix), end)
        if found is None:
            i = p + 1
            continue
        out.append(found)
        i = after = found.end


def _parse(text: str, start: int, prefix_len: int, bound: int) -> _Found | None:
    """The command whose prefix is at ``start``; None when no name follows it."""
    name_start = start + prefix_len
    name_end = _skip(_NAME, text, name_start, bound)
    if name_end == name_start:
        return None
    name = text[name_start:name_end].lower()
    problem = None
    if name_end - name_start > MAX_NAME_CHARS:
        problem = f"command name longer than {MAX_NAME_CHARS} characters"
    if name_end >= bound or text[name_end] != "(":
        return _Found(start, name_end, name, (), (), problem)
    try:
        args, kwargs, end, arg_problem = _read_args(text, name_end + 1, bound)
    except _Malformed as exc:
        return _Found(start, _line_end(text, exc.at, bound), name, (), (), exc.problem)
    return _Found(start, end, name, args, kwargs, problem or arg_problem)


def _line_end(text: str, pos: int, bound: int) -> int:
    nl = text.find("\n", pos, bound)
    if nl < 0:
        return bound
    return nl - 1 if nl > 0 and text[nl - 1] == "\r" else nl


def _read_args(
    text: str, pos: int, bound: int
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], int, str | None]:
    """Read the arguments after "(" at ``pos``: (args, kwargs, end, problem).

    A problem found on the way (an empty argument, say) is returned and the list
    still read to its ")"; one that leaves its end unknown raises :class:`_Malformed`.
    """
    limit = min(bound, pos + MAX_ARGS_CHARS + 1)
    args: list[str] = []
    kwargs: list[tuple[str, str]] = []
    problem: str | None = None
    i = _skip(_SPACE, text, pos, limit)
    if i < limit and text[i] == ")":
        return (), (), i + 1, None
    while True:
        i = _skip(_SPACE, text, i, limit)
        key = None
        m = _KEY.match(text, i, limit)
        if m is not None:
            key = m.group(1).lower().replace("_", "-")
            i = _skip(_SPACE, text, m.end(), limit)
        if i < limit and text[i] in _QUOTED:
            value, i = _read_quoted(text, i, limit, bound)
            i = _skip(_SPACE, text, i, limit)
            if i >= limit:
                raise _stopped(limit, bound, "missing ')'")
            if text[i] not in ",)":
                problem = problem or "unexpected text after a closing quote"
                i = _read_plain(text, i, limit, bound)
        else:
            value_start = i
            i = _read_plain(text, i, limit, bound)
            value = text[value_start:i].strip()
            if not value:
                problem = problem or (f"missing value for {key!r}" if key else "empty argument")
        if key is None:
            args.append(value)
        else:
            kwargs.append((key, value))
        if text[i] == ")":
            return tuple(args), tuple(kwargs), i + 1, problem
        i += 1  # the ","


def _stopped(limit: int, bound: int, problem: str) -> _Malformed:
    if limit < bound:
        return _Malformed(f"arguments longer than {MAX_ARGS_CHARS} characters", limit)
    return _Malformed(problem, limit)


def _read_plain(text: str, i: int, limit: int, bound: int) -> int:
    """Skip a plain value: to the "," or ")" that ends it, outside nested brackets."""
    depth = 0
    while True:
        i = _skip(_PLAIN, text, i, limit)
        if i >= limit:
            raise _stopped(limit, bound, "missing ')'")
        c = text[i]
        if c == "\n":
            raise _Malformed("missing ')'", i)
        if c in "([":
            depth += 1
        elif c in ")]":
            if depth:
                depth -= 1
            elif c == ")":
                return i
        elif not depth:  # ","
            return i
        i += 1


def _read_quoted(text: str, i: int, limit: int, bound: int) -> tuple[str, int]:
    """Read a quoted value at ``i``: (value, the position after its closing quote)."""
    quote = text[i]
    pattern = _QUOTED[quote]
    parts: list[str] = []
    i += 1
    while True:
        j = _skip(pattern, text, i, limit)
        parts.append(text[i:j])
        if j >= limit:
            raise _stopped(limit, bound, "unterminated quote")
        c = text[j]
        if c == quote:
            return "".join(parts), j + 1
        if c == "\n":
            raise _Malformed("unterminated quote", j)
        # a backslash: escapes the quote and itself, and is kept before anything else
        if j + 1 < limit and text[j + 1] in (quote, "\\"):
            parts.append(text[j + 1])
            i = j + 2
        else:
            parts.append("\\")
            i = j + 1


# -- the remainder -----------------------------------------------------------------


def _tidy(text: str, found: list[_Found], prefix: str) -> str:
    """``text`` without the ``found`` spans (each within one line), tidied."""
    out: list[str] = []
    done = 0  # text[:done] is dealt with; always the start of a line
    k = 0
    while k < len(found):
        nl = text.rfind("\n", done, found[k].start)
        start = done if nl < 0 else nl + 1
        end, nxt = _line_bounds(text, found[k].start)
        first = k
        while k < len(found) and found[k].start < end:
            k += 1
        out.append(text[done:start])
        content = _tidy_line(text, start, end, found[first:k], prefix)
        if content is not None:
            out.extend((content, text[end:nxt]))
        done = nxt
    out.append(text[done:])
    result = "".join(out).rstrip()
    # lstrip, but not so as to bring a fence marker to the start of the first line
    m = len(result) - len(result.lstrip())
    if m == len(result):
        return ""
    start = result.rfind("\n", 0, m) + 1
    end, _ = _line_bounds(result, m)
    if _opens_fence(result, m, end) is not None and _opens_fence(result, start, end) is None:
        return "\\" + result[m:]
    return result[m:]


def _tidy_line(text: str, start: int, end: int, spans: list[_Found], prefix: str) -> str | None:
    """One line without its commands; None when nothing else was on it."""
    parts: list[str] = []  # never an empty string
    head = text[start : spans[0].start]
    if head:
        parts.append(head)
    has_text = bool(head) and not head.isspace()
    for n, span in enumerate(spans):
        seg = text[span.end : spans[n + 1].start if n + 1 < len(spans) else end]
        if not has_text:  # at the start of the line: keep its indent
            rest = seg.lstrip()
            if rest:
                parts.append(rest)
                has_text = True
        elif not seg or seg[0].isspace():  # spaces around the command collapse to one
            _rstrip_parts(parts)
            rest = seg.lstrip()
            if rest:
                parts.extend((" ", rest))
        else:  # text right after the command ("!/max." or "!/max)")
            _rstrip_parts(parts)
            if seg[0] not in _TIGHT or _makes_prefix(parts, seg, prefix):
                parts.append(" ")
            parts.append(seg)
    return _defuse("".join(parts)) if has_text else None


def _rstrip_parts(parts: list[str]) -> None:
    while parts:
        last = parts[-1]
        if not last[-1].isspace():
            return
        stripped = last.rstrip()
        if stripped:
            parts[-1] = stripped
            return
        parts.pop()


def _makes_prefix(parts: list[str], seg: str, prefix: str) -> bool:
    """Whether joining ``seg`` straight onto ``parts`` spells the prefix across the seam."""
    need = len(prefix) - 1
    if need <= 0:
        return False
    tail: list[str] = []
    for part in reversed(parts):
        tail.append(part[-need:])
        need -= len(tail[-1])
        if need <= 0:
            break
    return prefix in "".join(reversed(tail)) + seg[: len(prefix) - 1]


def _defuse(line: str) -> str:
    """Escape a fence marker that removing commands brought to the start of a line.

    ``!/max ```` must not open a code block the original text did not have: that
    would change which later text is code.
    """
    if _opens_fence(line, 0, len(line)) is None:
        return line
    indent = len(line) - len(line.lstrip(" "))
    return line[:indent] + "\\" + line[indent:]
