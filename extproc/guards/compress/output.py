"""compress_output: a tool's output, compressed according to what it is.

The kind comes from the command that produced the output when it is known
(``pytest``/``python -m pytest``/``uv run pytest``; ``grep``/``rg``/``ag``/
``git grep``; ``git diff``/``git show``/``git log -p``/``diff``), otherwise
from the content:

1. ``diff``: a ``diff ...`` line, or ``--- `` directly followed by ``+++ ``;
2. ``pytest``: a pytest section separator (``test session starts``,
   ``FAILURES``...) or its final summary line;
3. ``grep``: ``path:line:text`` on most lines (not when the text already
   carries proxy markers: a grouped output is not regrouped);
4. ``command``: anything else (the generic pipeline).

``npm test``, ``jest``, ``make test``, ``tox``... are not told apart by their
command: their output is judged by its content (pytest run by ``make`` is
still pytest). Each kind's compressor is a fixed point on its own output and
keeps the features that detected it, so ``compress(compress(x)) ==
compress(x)`` (tested as a property).

Texts under :data:`THRESHOLD` characters, and texts the compressor could not
make shorter, come back unchanged: the same object, ``saved_chars`` 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from extproc.guards.compress.diff_output import compress_diff, is_diff
from extproc.guards.compress.grep_output import compress_grep, is_grep
from extproc.guards.compress.lines import compress_lines, has_marker
from extproc.guards.compress.pytest_output import compress_pytest, is_pytest
from extproc.safety.commands import parse

__all__ = ["THRESHOLD", "Compressed", "Kind", "compress_output", "detect_kind", "kind_of_command"]

Kind = Literal["pytest", "command", "grep", "diff"]

#: Outputs shorter than this (characters) are returned as they are.
THRESHOLD = 1024

_SEARCH_PROGRAMS = frozenset({"grep", "egrep", "fgrep", "zgrep", "rg", "ag", "ack"})
_RUNNERS = frozenset({"uv", "poetry", "pipenv", "pdm", "hatch", "rye"})


@dataclass(frozen=True, slots=True)
class Compressed:
    """The compressed text, the kind it was compressed as, characters saved.

    ``kind`` is None when the text was under :data:`THRESHOLD` (not looked at).
    """

    text: str
    kind: Kind | None
    saved_chars: int


def _is_python(program: str) -> bool:
    if program == "py":
        return True
    rest = program.removeprefix("python")
    return rest != program and all(c.isdigit() or c == "." for c in rest)


def _argv_kind(argv: Sequence[str]) -> Kind | None:
    if not argv:
        return None
    program = argv[0]
    if program.endswith(".exe"):
        program = program[:-4]
    if program in ("pytest", "py.test"):
        return "pytest"
    if _is_python(program):
        for i, word in enumerate(argv[1:-1], start=1):
            if word == "-m":
                return "pytest" if argv[i + 1] in ("pytest", "py.test") else None
            if not word.startswith("-"):
                return None  # a script (or an option's value): not ``-m pytest``
        return None
    if program in _RUNNERS and len(argv) > 2 and argv[1] == "run":
        return _argv_kind(argv[2:])
    if program in _SEARCH_PROGRAMS:
        return "grep"
    if program == "git" and len(argv) > 1:
        sub = argv[1]
        if sub == "grep":
            return "grep"
        if sub in ("diff", "show") or (sub == "log" and ("-p" in argv or "--patch" in argv)):
            return "diff"
        return None
    if program == "diff" or (program in ("hg", "svn") and len(argv) > 1 and argv[1] == "diff"):
        return "diff"
    return None


def kind_of_command(command: str) -> Kind | None:
    """The output kind a shell command's output has, when its programs say so."""
    found: set[Kind] = set()
    for simple in parse(command).sequence:
        kind = _argv_kind(simple.argv)
        if kind is not None:
            found.add(kind)
    for kind in ("pytest", "diff", "grep"):
        if kind in found:
            return kind
    return None


def detect_kind(lines: Sequence[str]) -> Kind:
    """The kind of an output from its lines alone (see the module docstring)."""
    if is_diff(lines):
        return "diff"
    if is_pytest(lines):
        return "pytest"
    if not any(has_marker(line) for line in lines) and is_grep(lines):
        return "grep"
    return "command"


def compress_output(text: str, *, command: str | None = None) -> Compressed:
    """``text`` (a tool's output) compressed; ``command``: the shell command that
    produced it, when known. Linear in the length of ``text``."""
    if len(text) < THRESHOLD:
        return Compressed(text, None, 0)
    lines = text.split("\n")
    from_command = kind_of_command(command) if command else None
    kind: Kind = from_command or detect_kind(lines)
    out: list[str] | None = None
    if kind == "diff":
        out = compress_diff(lines)
    elif kind == "pytest":
        out = compress_pytest(lines)
    elif kind == "grep":
        out = compress_grep(lines, bare=from_command == "grep")
    if out is None:
        kind = "command"
        out = compress_lines(lines)
    result = "\n".join(out)
    if len(result) >= len(text):
        return Compressed(text, kind, 0)
    return Compressed(result, kind, len(text) - len(result))
