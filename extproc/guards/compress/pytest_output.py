"""pytest output: failures kept whole, passing tests' lines dropped.

pytest prints sections between ``=`` separator lines (``===== FAILURES
=====``). Per section:

* before the first separator and in ``test session starts``: the lines of
  passing tests are dropped (``-v``'s ``path::test PASSED [ 40%]``, xdist's
  ``[gw0] [ 40%] PASSED path::test``, and progress lines made only of dots,
  ``tests/test_x.py ........ [ 40%]`` or ``-q``'s ``....... [ 40%]``); each
  run of them becomes one ``[proxy: N ... removed]`` line. Lines with an
  ``F``, ``E``, ``s``, ``x`` (a test that did not simply pass) are kept. Then
  the generic cap (200 lines / 8 KB).
* ``FAILURES`` and ``ERRORS``: kept verbatim, every traceback whole, except
  the ``Captured stdout/stderr/log`` subsections, capped at 40 lines / 4 KB
  (head and tail, the middle counted).
* ``short test summary info``: verbatim but for ``PASSED`` entries (``-rA``),
  dropped as above; the final summary line (``=== 2 failed, 120 passed in
  4.2s ===``) is a separator, always kept.
* anything else (``warnings summary``, ``PASSES``, ``slowest durations``,
  coverage tables...): the generic pipeline with the 40 lines / 4 KB cap,
  separator line kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import re2

from extproc.guards.compress.lines import (
    COMMAND_LIMITS,
    Limits,
    compress_lines,
    has_marker,
    marker,
)

__all__ = ["compress_pytest", "is_pytest"]

SECTION_LIMITS = Limits(max_lines=40, max_chars=4000, keep_important=2)

# Separators: "=== title ===" (sections), "___ test ___" and "--- Captured ... ---".
_SECTION = re2.compile(r"^={3,} (.+) ={3,}\s*$")
_SUBSECTION = re2.compile(r"^[_-]{3,} (.+) [_-]{3,}\s*$")
_SUMMARY = re2.compile(
    r"^(?:=+ )?(?:no tests ran|\d+ (?:passed|failed|errors?|skipped|deselected|xfailed"
    r"|xpassed|warnings?|rerun|subtests? passed|subtests? failed)\b).* in \d+(?:\.\d+)?s\b"
)
_PASSED = re2.compile(r"^\S+::\S.* PASSED(?:\s+\[\s*\d+%\])?\s*$")
_PASSED_XDIST = re2.compile(r"^\[gw\d+\] \[\s*\d+%\] PASSED \S")
_DOTS = re2.compile(r"^(?:\S+ )?\.+\s*(?:\[\s*\d+%\])?\s*$")
_KNOWN_TITLES = ("test session starts", "failures", "errors", "short test summary info")


def _section_title(line: str) -> str | None:
    if not line.startswith("===") or has_marker(line):
        return None
    match = _SECTION.match(line)
    return match.group(1).strip().lower() if match else None


def is_pytest(lines: Sequence[str]) -> bool:
    """pytest output: a known section separator or a final summary line."""
    for line in lines:
        if has_marker(line):
            continue
        title = _section_title(line)
        if title is not None and title in _KNOWN_TITLES:
            return True
        if line and line[0] in "=0123456789n" and " in " in line and _SUMMARY.match(line):
            return True
    return False


def _passing(line: str) -> str | None:
    """``"passed"`` for a PASSED line, ``"progress"`` for a dots-only progress line."""
    if has_marker(line) or not line:
        return None
    if "PASSED" in line and (
        _PASSED.match(line)
        or _PASSED_XDIST.match(line)
        or (line.startswith("PASSED ") and "::" in line)  # -rA/-rP summary entries
    ):
        return "passed"
    if "." in line and _DOTS.match(line):
        return "progress"
    return None


def _drop_passing(lines: Sequence[str]) -> list[str]:
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        kind = _passing(lines[i])
        if kind is None:
            out.append(lines[i])
            i += 1
            continue
        j, kinds, chars = i, set(), 0
        while j < n and (k := _passing(lines[j])) is not None:
            kinds.add(k)
            chars += len(lines[j]) + 1
            j += 1
        count = j - i
        if kinds == {"passed"}:
            what = f"{count} PASSED {'line' if count == 1 else 'lines'} removed"
        elif kinds == {"progress"}:
            what = f"{count} progress {'line' if count == 1 else 'lines'} of passing tests removed"
        else:
            what = f"{count} lines of passing tests removed"
        note = marker(what)
        if chars > len(note) + 1:
            out.append(note)
        else:
            out.extend(lines[i:j])
        i = j
    return out


def _failures(lines: Sequence[str]) -> list[str]:
    """A FAILURES/ERRORS body: verbatim but for the captured-output subsections."""
    out: list[str] = []
    captured: list[str] | None = None
    for line in lines:
        title = None
        if line[:3] in ("___", "---") and not has_marker(line):
            match = _SUBSECTION.match(line)
            title = match.group(1).strip().lower() if match else None
        if title is not None:
            if captured is not None:
                out.extend(compress_lines(captured, SECTION_LIMITS))
            out.append(line)
            captured = [] if title.startswith("captured ") else None
        elif captured is not None:
            captured.append(line)
        else:
            out.append(line)
    if captured is not None:
        out.extend(compress_lines(captured, SECTION_LIMITS))
    return out


def compress_pytest(lines: Sequence[str]) -> list[str]:
    """pytest output, compressed section by section (see the module docstring)."""
    out: list[str] = []
    title: str | None = None  # None: before the first separator
    body: list[str] = []

    def flush() -> None:
        if title is None or title == "test session starts":
            out.extend(compress_lines(_drop_passing(body), COMMAND_LIMITS))
        elif title in ("failures", "errors"):
            out.extend(_failures(body))
        elif title == "short test summary info":
            out.extend(_drop_passing(body))
        else:
            out.extend(compress_lines(body, SECTION_LIMITS))

    for line in lines:
        found = _section_title(line)
        if found is None:
            body.append(line)
            continue
        flush()
        out.append(line)
        title, body = found, []
    flush()
    return out
