"""Unified diffs (``git diff``, ``git show``, ``diff -u``): hunks capped, headers kept.

Structure: a file starts at a ``diff ...`` line, or at a ``--- `` line
directly followed by ``+++ `` (plain ``diff -u``); a hunk starts at
``@@ -a,b +c,d @@`` and runs for the line counts its header gives (or to the
first line that cannot belong to a hunk: a marker, another header).

Caps, each cut leaving a marker with what it cut:

* a hunk keeps at most 40 changed lines and 80 lines in all
  (``[proxy: hunk cut: N more lines (+A -D) omitted]``);
* a file keeps at most 8 hunks (``[proxy: N more hunks of this file omitted
  (+A -D lines)]``);
* the whole diff keeps at most 600 changed lines and 24,000 characters of
  hunk bodies; later hunks are omitted, their files' headers still listed;
* lockfiles (``package-lock.json``, ``yarn.lock``, ``poetry.lock``...) keep
  their headers only.

Every header line and every line outside a hunk is kept; lines beyond 1,000
characters are cut in the middle, their first character (``+``, ``-``,
space) kept. A second pass finds every cap already met: idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import re2

from extproc.guards.compress.lines import COMMAND_LIMITS, cut_line, marker

__all__ = ["compress_diff", "is_diff"]

MAX_HUNK_CHANGED = 40
MAX_HUNK_LINES = 80
MAX_HUNKS_PER_FILE = 8
MAX_CHANGED = 600
#: Characters of hunk bodies kept in the whole diff.
MAX_BODY_CHARS = 24_000

_HUNK = re2.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_LOCKFILES = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "bun.lock",
        "poetry.lock",
        "pdm.lock",
        "uv.lock",
        "pipfile.lock",
        "cargo.lock",
        "gemfile.lock",
        "composer.lock",
        "go.sum",
        "flake.lock",
        "packages.lock.json",
    }
)


def _file_start(lines: Sequence[str], i: int) -> bool:
    line = lines[i]
    if line.startswith("diff "):
        return True
    return line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")


def is_diff(lines: Sequence[str]) -> bool:
    """A ``diff ...`` header line, or a ``--- `` line directly followed by ``+++ ``."""
    return any(
        _file_start(lines, i) for i in range(len(lines)) if lines[i].startswith(("diff ", "--- "))
    )


@dataclass(slots=True)
class _Hunk:
    header: str
    body: list[str]


@dataclass(slots=True)
class _File:
    #: Header and other lines (str) and hunks, in order.
    items: list[str | _Hunk] = field(default_factory=list)
    path: str = ""
    pair_seen: bool = False
    hunks: int = 0


def _path_of(line: str) -> str:
    """The file a header line names (the last word, ``a/``/``b/`` prefixes kept)."""
    word = line.rsplit(" ", 1)[-1].split("\t", 1)[0]
    return word.rsplit("/", 1)[-1].lower()


def _hunk_end(lines: Sequence[str], start: int, old: int, new: int) -> int:
    """Index after the hunk body starting at ``start``."""
    i, n = start, len(lines)
    while i < n and (old > 0 or new > 0):
        first = lines[i][:1]
        if first in (" ", ""):
            old, new = old - 1, new - 1
        elif first == "-":
            old -= 1
        elif first == "+":
            new -= 1
        elif first != "\\":
            break
        i += 1
    while i < n and lines[i].startswith("\\"):  # "\ No newline at end of file"
        i += 1
    return i


def _parse(lines: Sequence[str]) -> tuple[list[str], list[_File]]:
    preamble: list[str] = []
    files: list[_File] = []
    current: _File | None = None
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        starts = line.startswith("diff ") or (
            line.startswith("--- ")
            and i + 1 < n
            and lines[i + 1].startswith("+++ ")
            and (current is None or current.pair_seen or current.hunks > 0)
        )
        if starts:
            current = _File()
            files.append(current)
        if current is None:
            match = _HUNK.match(line) if line.startswith("@@ -") else None
            if match is None:
                preamble.append(line)
                i += 1
                continue
            current = _File()
            files.append(current)
        match = _HUNK.match(line) if line.startswith("@@ -") else None
        if match is not None:
            old = int(match.group(2)) if match.group(2) is not None else 1
            new = int(match.group(4)) if match.group(4) is not None else 1
            end = _hunk_end(lines, i + 1, old, new)
            current.items.append(_Hunk(line, list(lines[i + 1 : end])))
            current.hunks += 1
            i = end
            continue
        if line.startswith("--- ") and i + 1 < n and lines[i + 1].startswith("+++ "):
            current.pair_seen = True
        if line.startswith(("diff ", "+++ ")):
            current.path = _path_of(line)
        current.items.append(line)
        i += 1
    return preamble, files


def _counts(body: Sequence[str]) -> tuple[int, int]:
    added = sum(1 for line in body if line.startswith("+"))
    removed = sum(1 for line in body if line.startswith("-"))
    return added, removed


class _Omitted:
    """Hunks omitted in a row, reported by one marker."""

    __slots__ = ("added", "hunks", "reason", "removed")

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.hunks = self.added = self.removed = 0

    def add(self, hunk: _Hunk) -> None:
        added, removed = _counts(hunk.body)
        self.hunks += 1
        self.added += added
        self.removed += removed

    def line(self) -> str:
        noun = "hunk" if self.hunks == 1 else "hunks"
        return marker(f"{self.hunks} {noun} {self.reason} (+{self.added} -{self.removed} lines)")


def compress_diff(lines: Sequence[str]) -> list[str] | None:
    """The diff with its caps applied; None when it holds no file at all."""
    preamble, files = _parse(lines)
    if not files:
        return None
    max_line = COMMAND_LIMITS.max_line
    out = [cut_line(line, max_line) for line in preamble]
    budget = MAX_CHANGED
    chars = MAX_BODY_CHARS
    for file in files:
        lockfile = file.path in _LOCKFILES
        kept = 0
        omitted: _Omitted | None = None
        for item in file.items:
            if isinstance(item, str):
                if omitted is not None:
                    out.append(omitted.line())
                    omitted = None
                out.append(cut_line(item, max_line))
                continue
            reason = None
            if lockfile:
                reason = "of a lockfile omitted"
            elif kept >= MAX_HUNKS_PER_FILE:
                reason = "more of this file omitted"
            elif budget <= 0 or chars <= 0:
                reason = "omitted: the diff's budget of changed lines is spent"
            if reason is not None:
                if omitted is None:
                    omitted = _Omitted(reason)
                omitted.add(item)
                continue
            allowed = min(MAX_HUNK_CHANGED, budget)
            changed = taken = used = 0
            body = [cut_line(line, max_line) for line in item.body]
            for line in body:
                is_change = line[:1] in ("+", "-")
                if (
                    taken >= MAX_HUNK_LINES
                    or (is_change and changed >= allowed)
                    or used + len(line) + 1 > chars
                ):
                    break
                changed += is_change
                taken += 1
                used += len(line) + 1
            out.append(cut_line(item.header, max_line))
            out.extend(body[:taken])
            rest = item.body[taken:]
            if rest:
                added, removed = _counts(rest)
                noun = "line" if len(rest) == 1 else "lines"
                out.append(
                    marker(f"hunk cut: {len(rest)} more {noun} (+{added} -{removed}) omitted")
                )
            budget -= changed
            chars -= used
            kept += 1
        if omitted is not None:
            out.append(omitted.line())
    return out
