"""grep/ripgrep output: hits grouped by file, capped per file.

A hit is ``path:line:text`` (``grep -n``, ``rg -n``, ``git grep -n``; a
``--column`` number stays in the text) or, when the command is known to be a
search, ``path:text`` (``grep -r`` without ``-n``, ``rg`` without a
terminal). Context lines of ``-A/-B/-C`` (``path-12-text``, ``--``) join the
group of the file they follow. Consecutive hits of one file become::

    src/app.py:
      12: import os
      40: import sys
      [proxy: 31 more matches in this file omitted]

A file with a single hit keeps grep's own line. The per-file cap is the
largest of 10, 5, 3, 2 entries that keeps the whole within the generic limits
(200 lines / 8 KB); failing that, every file gets one line, its first hit
and the count of the others (``src/app.py:12:import os  [proxy: 32 more
matches in this file omitted]``), so that a search over many files still
names them; the generic pipeline follows. Hit texts beyond 300 characters
(minified code) are cut in the middle.

Parsing is a scan for the first colon (after a Windows drive letter) and the
digits after it: no regular expression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from extproc.guards.compress.lines import (
    COMMAND_LIMITS,
    compress_lines,
    cut_line,
    has_marker,
    marker,
    text_size,
)

__all__ = ["compress_grep", "is_grep", "parse_hit"]

_CAPS = (10, 5, 3, 2, 1)
_MAX_HIT_TEXT = 300
_MAX_PATH = 512


def _path_start(line: str) -> int:
    """2 after a Windows drive letter (``C:\\``, ``C:/``), else 0."""
    if len(line) > 2 and line[1] == ":" and line[0].isalpha() and line[2] in "\\/":
        return 2
    return 0


def parse_hit(line: str, *, bare: bool = False) -> tuple[str, str | None, str] | None:
    """``(path, line number or None, text)`` of a grep hit line, else None.

    ``bare`` also accepts ``path:text`` with a path-looking path (no blank, a
    ``/`` or a ``.``) and a non-empty text.
    """
    if not line or line[0] in " \t" or has_marker(line):
        return None
    colon = line.find(":", _path_start(line))
    if colon <= 0 or colon > _MAX_PATH:
        return None
    path = line[:colon]
    if path[-1] in " \t" or "\t" in path:
        return None
    digits = colon + 1
    end = digits
    while end < len(line) and line[end].isdigit():
        end += 1
    if end > digits and end < len(line) and line[end] == ":":
        return path, line[digits:end], line[end + 1 :]
    text = line[colon + 1 :]
    if bare and text and " " not in path and ("/" in path or "." in path):
        return path, None, text
    return None


def is_grep(lines: Sequence[str]) -> bool:
    """``path:line:text`` on at least 60 % of the non-empty lines (and 5 of them)."""
    hits = nonempty = 0
    for line in lines:
        if not line:
            continue
        nonempty += 1
        hit = parse_hit(line)
        if hit is not None and " " not in hit[0]:
            hits += 1
    return hits >= 5 and hits * 5 >= nonempty * 3


@dataclass(slots=True)
class _Entry:
    number: str | None
    text: str
    #: ":" for a hit, "-" for a context line ("--" lines: number None, sep "").
    sep: str

    @property
    def is_hit(self) -> bool:
        return self.sep == ":"

    def indented(self) -> str:
        if self.number is None:
            return f"  {self.text}"
        return f"  {self.number}{self.sep} {self.text}"

    def inline(self, path: str) -> str:
        """The hit as grep printed it (``path:12:text``), text cut."""
        if self.number is None:
            return f"{path}:{self.text}"
        return f"{path}:{self.number}:{self.text}"


@dataclass(slots=True)
class _Group:
    path: str
    entries: list[_Entry] = field(default_factory=list)


def _context(line: str, path: str) -> _Entry | None:
    """``path-12-text`` (a context line of ``path``) as an entry, or ``--``."""
    if line == "--":
        return _Entry(None, "--", "")
    if not line.startswith(path) or line[len(path) : len(path) + 1] != "-":
        return None
    start = end = len(path) + 1
    while end < len(line) and line[end].isdigit():
        end += 1
    if end == start or line[end : end + 1] != "-":
        return None
    return _Entry(line[start:end], cut_line(line[end + 1 :], _MAX_HIT_TEXT), "-")


def _parse(lines: Sequence[str], bare: bool) -> list[str | _Group]:
    items: list[str | _Group] = []
    group: _Group | None = None
    for line in lines:
        hit = parse_hit(line, bare=bare)
        if (hit is None or hit[1] is None) and group is not None and not has_marker(line):
            # A context line of the current file (also when it would read as a bare hit).
            context = _context(line, group.path)
            if context is not None:
                group.entries.append(context)
                continue
        if hit is not None:
            path, number, text = hit
            if group is None or group.path != path:
                group = _Group(path)
                items.append(group)
            group.entries.append(_Entry(number, cut_line(text, _MAX_HIT_TEXT), ":"))
            continue
        group = None
        items.append(line)
    return items


def _omitted(rest: Sequence[_Entry]) -> str:
    matches = sum(1 for entry in rest if entry.is_hit)
    noun = "match" if matches == 1 else "matches"
    if matches == len(rest):
        return marker(f"{matches} more {noun} in this file omitted")
    return marker(f"{len(rest)} more lines ({matches} {noun}) in this file omitted")


def _render(items: Sequence[str | _Group], cap: int) -> list[str]:
    """Groups of more than one entry as a header and indented entries (``cap`` of
    them); a lone hit, and with ``cap`` 1 every group, as one grep-like line."""
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
            continue
        first, rest = item.entries[0], item.entries[1:]
        if not rest and first.is_hit:
            out.append(first.inline(item.path))
        elif cap == 1 and first.is_hit:
            out.append(f"{first.inline(item.path)}  {_omitted(rest)}")
        else:
            out.append(f"{item.path}:")
            out.extend(entry.indented() for entry in item.entries[:cap])
            if item.entries[cap:]:
                out.append("  " + _omitted(item.entries[cap:]))
    return out


def compress_grep(lines: Sequence[str], *, bare: bool = False) -> list[str] | None:
    """Grep output grouped and capped; None when no line is a hit."""
    items = _parse(lines, bare)
    if not any(isinstance(item, _Group) for item in items):
        return None
    limits = COMMAND_LIMITS
    rendered: list[str] = []
    for cap in _CAPS:
        rendered = _render(items, cap)
        if len(rendered) <= limits.max_lines and text_size(rendered) <= limits.max_chars:
            break
    return compress_lines(rendered, limits)
