"""Markers and the line-level steps every compressor shares.

Every removal leaves a marker line (or, for a cut line, an inline marker):
``[proxy: <what was removed, how much>]``, so the model knows something is
missing and how much. Lines that contain the marker prefix are never
structural for the compressors (never a pytest separator, a grep hit, a
repeated line to collapse): that keeps a second pass from reading its own
markers as content, which is what makes compression idempotent.

The generic pipeline, :func:`compress_lines`, is: long lines cut in the
middle, then consecutive duplicate lines collapsed, then (above a line or
character limit) head and tail kept with the omitted middle counted, a few
error-looking lines of the middle kept as well. Its output is within the
limits and has no collapsible run, so it is its own fixed point.

All steps are single passes over the lines (no regular expressions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "COMMAND_LIMITS",
    "MARKER_PREFIX",
    "Limits",
    "collapse_repeats",
    "compress_lines",
    "cut_line",
    "has_marker",
    "head_tail",
    "marker",
    "text_size",
]

MARKER_PREFIX = "[proxy: "
#: Characters reserved per marker line (with its newline) in a head/tail budget.
_MARKER_RESERVE = 64
#: Lower-cased substrings that make a line of an omitted middle worth keeping.
_IMPORTANT = ("error", "fail", "fatal", "exception", "traceback", "panic", "err!")


@dataclass(frozen=True, slots=True)
class Limits:
    """When the generic pipeline cuts: lines, characters, one line's characters."""

    max_lines: int = 200
    max_chars: int = 8000
    max_line: int = 1000
    #: Error-looking lines kept from an omitted middle (each with a marker).
    keep_important: int = 8


#: Long command output: 200 lines / 8 KB.
COMMAND_LIMITS = Limits()


def marker(what: str) -> str:
    """A marker line: ``[proxy: what]``."""
    return f"{MARKER_PREFIX}{what}]"


def has_marker(line: str) -> bool:
    """The line carries a proxy marker (and is therefore never read as content)."""
    return MARKER_PREFIX in line


def text_size(lines: Sequence[str]) -> int:
    """Characters of ``"\\n".join(lines)``."""
    return sum(len(line) for line in lines) + max(len(lines) - 1, 0)


def cut_line(line: str, max_line: int) -> str:
    """``line`` cut in the middle (start and end kept) when longer than ``max_line``."""
    if len(line) <= max_line:
        return line
    head = max_line * 3 // 5
    tail = max_line // 5
    cut = len(line) - head - tail
    return f"{line[:head]} {marker(f'{cut} chars cut')} {line[-tail:]}"


def collapse_repeats(lines: Sequence[str]) -> list[str]:
    """Runs of identical lines as the line and ``[proxy: repeated N more times]``.

    A run is collapsed only when that saves characters; marker lines are never
    collapsed. No collapsible run is left, so a second pass changes nothing.
    """
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        j = i + 1
        if not has_marker(line):
            while j < n and lines[j] == line:
                j += 1
        run = j - i
        if run > 1:
            note = marker(f"repeated {run - 1} more times")
            if (run - 1) * (len(line) + 1) > len(note) + 1:
                out.append(line)
                out.append(note)
                i = j
                continue
        out.extend(lines[i:j])
        i = j
    return out


def _important(line: str) -> bool:
    low = line.lower()
    return any(word in low for word in _IMPORTANT) and not has_marker(line)


def _omitted(lines: Sequence[str], start: int, end: int) -> str:
    count = end - start
    chars = text_size(lines[start:end]) + 1
    noun = "line" if count == 1 else "lines"
    return marker(f"{count} {noun} ({chars} chars) omitted")


def head_tail(lines: Sequence[str], limits: Limits) -> list[str]:
    """Within ``limits``: the first and last lines, error-looking lines of the middle,
    a marker for every omitted stretch. Unchanged when already within the limits.

    Lines must already be at most ``limits.max_line`` long (see :func:`cut_line`).
    """
    n = len(lines)
    if n <= limits.max_lines and text_size(lines) <= limits.max_chars:
        return list(lines)
    keep = min(limits.keep_important, limits.max_lines // 10)
    important_chars = limits.max_chars // 8 if keep else 0
    avail_lines = limits.max_lines - (2 * keep + 1)
    avail_chars = limits.max_chars - important_chars - (keep + 1) * _MARKER_RESERVE
    head_lines = avail_lines * 2 // 5
    head_chars = avail_chars * 2 // 5
    tail_lines = avail_lines - head_lines
    tail_chars = avail_chars - head_chars
    # The tail first: the end of an output (the error, the summary) matters most.
    t, used = 0, 0
    while t < min(tail_lines, n) and used + len(lines[n - 1 - t]) + 1 <= tail_chars:
        used += len(lines[n - 1 - t]) + 1
        t += 1
    h, used = 0, 0
    while h < min(head_lines, n - t) and used + len(lines[h]) + 1 <= head_chars:
        used += len(lines[h]) + 1
        h += 1
    middle: list[int] = []
    used = 0
    for index in range(h, n - t):
        if len(middle) >= keep:
            break
        line = lines[index]
        if _important(line) and used + len(line) + 1 <= important_chars:
            middle.append(index)
            used += len(line) + 1
    out = list(lines[:h])
    previous = h
    for index in middle:
        if index > previous:
            out.append(_omitted(lines, previous, index))
        out.append(lines[index])
        previous = index + 1
    if n - t > previous:
        out.append(_omitted(lines, previous, n - t))
    out.extend(lines[n - t :])
    return out


def compress_lines(lines: Sequence[str], limits: Limits = COMMAND_LIMITS) -> list[str]:
    """The generic pipeline: cut long lines, collapse repeats, keep head and tail."""
    cut = [cut_line(line, limits.max_line) for line in lines]
    return head_tail(collapse_repeats(cut), limits)
