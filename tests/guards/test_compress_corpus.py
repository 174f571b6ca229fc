"""compress_output on realistic outputs (tests/guards/corpus/outputs): what survives, what is saved.

* ``pytest_verbose.txt``: ``pytest -v``, 26 tests, 24 PASSED lines, 2 failures;
* ``pytest_progress.txt``: default pytest output, 866 tests in 40 files, 2
  failures, skips, an xfail and a warnings summary;
* ``npm_install.txt``: an ``npm install`` log (deprecations, EBADENGINE
  blocks, a node-gyp build repeating one compiler warning, a postinstall
  repeating one Node deprecation warning);
* ``grep_rn.txt``: ``grep -rn "return None" extproc --include=*.py`` (this
  repository, 80+ files);
* ``git_diff.txt``: ``git show`` of a commit of this repository (21 files,
  62 hunks, new docs pages).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from extproc.guards.compress import compress_output
from extproc.guards.compress.diff_output import (
    MAX_CHANGED,
    MAX_HUNK_CHANGED,
    MAX_HUNKS_PER_FILE,
    _Hunk,
    _parse,
)
from extproc.guards.compress.grep_output import parse_hit
from extproc.guards.compress.lines import MARKER_PREFIX, has_marker

OUTPUTS = Path(__file__).parent / "corpus" / "outputs"
COMMANDS = {
    "pytest_verbose.txt": "python -m pytest -v tests",
    "pytest_progress.txt": "pytest tests",
    "npm_install.txt": "npm install",
    "grep_rn.txt": "grep -rn 'return None' extproc --include=*.py",
    "git_diff.txt": "git show HEAD",
}
#: Minimum share of characters saved per corpus file.
MIN_SAVED = {
    "pytest_verbose.txt": 0.40,
    "pytest_progress.txt": 0.40,
    "npm_install.txt": 0.50,
    "grep_rn.txt": 0.45,
    "git_diff.txt": 0.55,
}


def _read(name: str) -> str:
    return (OUTPUTS / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("with_command", [True, False])
def test_saved_and_idempotent(name: str, with_command: bool) -> None:
    text = _read(name)
    command = COMMANDS[name] if with_command else None
    result = compress_output(text, command=command)
    assert result.saved_chars == len(text) - len(result.text)
    assert result.saved_chars >= MIN_SAVED[name] * len(text), (name, result.saved_chars)
    again = compress_output(result.text, command=command)
    assert again.text == result.text
    assert again.saved_chars == 0


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_kind_from_command_and_from_content(name: str) -> None:
    text = _read(name)
    expected = {"pytest": "pytest", "npm": "command", "grep": "grep", "git": "diff"}
    kind = expected[name.split("_")[0]]
    assert compress_output(text, command=COMMANDS[name]).kind == kind
    assert compress_output(text).kind == kind


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end)]


@pytest.mark.parametrize("name", ["pytest_verbose.txt", "pytest_progress.txt"])
def test_pytest_failures_survive_whole(name: str) -> None:
    text = _read(name)
    out = compress_output(text, command=COMMANDS[name]).text
    # The whole FAILURES section, every traceback line in order, is there verbatim.
    failures = _section(text, "=" * 35 + " FAILURES", "= short test summary info")
    failures = failures[: failures.rindex("\n") + 1]
    assert failures in out
    for line in text.splitlines():
        if line.startswith("FAILED ") or "failed," in line:
            assert line in out.splitlines(), line
    assert "test_retries_default" in out
    assert "test_parse_duration_days" in out
    assert out.rstrip("\n").splitlines()[-1] == text.rstrip("\n").splitlines()[-1]


def test_pytest_verbose_drops_passed_lines() -> None:
    text = _read("pytest_verbose.txt")
    out = compress_output(text).text
    assert not any(" PASSED " in line for line in out.splitlines() if not has_marker(line))
    removed = sum(int(n) for n in re.findall(r"\[proxy: (\d+) PASSED lines? removed\]", out))
    assert removed == text.count(" PASSED ") == 24
    # The lines of the failing tests stay, in their place.
    assert "tests/test_config.py::test_retries_default FAILED" in out


def test_pytest_progress_keeps_non_dot_lines() -> None:
    text = _read("pytest_progress.txt")
    out = compress_output(text).text
    progress = [line for line in text.splitlines() if line.endswith("%]")]
    kept = [line for line in progress if set(line.split()[1]) != {"."}]
    dropped = len(progress) - len(kept)
    assert kept and dropped > 30
    for line in kept:  # F, s and x results keep their file's line
        assert line in out.splitlines()
    pattern = r"\[proxy: (\d+) progress lines? of passing tests removed\]"
    assert sum(int(n) for n in re.findall(pattern, out)) == dropped
    assert "warnings summary" in out and "DeprecationWarning" in out


def test_npm_log_head_tail_and_repeats() -> None:
    text = _read("npm_install.txt")
    out = compress_output(text, command="npm install").text
    lines = out.split("\n")
    assert len(lines) <= 200 and len(out) <= 8000
    # the end of the log is the outcome: kept
    for line in (
        "added 1432 packages, and audited 1433 packages in 48s",
        "Run `npm audit` for details.",
    ):
        assert line in lines
    assert "[proxy: repeated 13 more times]" in lines
    assert "[proxy: repeated 8 more times]" in lines
    # Every removed line is accounted for by a marker.
    repeated = sum(int(n) for n in re.findall(r"\[proxy: repeated (\d+) more times\]", out))
    omitted = sum(int(n) for n in re.findall(r"\[proxy: (\d+) lines? \(\d+ chars\) omitted\]", out))
    kept = sum(1 for line in lines if not has_marker(line))
    assert kept + repeated + omitted == len(text.split("\n"))
    # an error line from the omitted middle would be kept; here the one error is in the head
    assert any("ERR!" in line for line in lines)


def test_grep_names_every_file_and_counts_every_match() -> None:
    text = _read("grep_rn.txt")
    out = compress_output(text, command=COMMANDS["grep_rn.txt"]).text
    assert len(out) <= 8000
    hits = [parse_hit(line) for line in text.splitlines()]
    per_file = Counter(hit[0] for hit in hits if hit is not None)
    assert len(per_file) > 60
    shown: Counter[str] = Counter()
    for line in out.splitlines():
        match = re.search(r"\[proxy: (\d+) more match(?:es)? in this file omitted\]", line)
        path = line.split(":", 1)[0]
        shown[path] += 1 + (int(match.group(1)) if match else 0)
    assert {path: shown[path] for path in per_file} == dict(per_file)


def _diff_counts(text: str) -> dict[str, tuple[int, int]]:
    """Per file (its ``diff --git`` line): added and removed lines, kept or announced."""
    _, files = _parse(text.split("\n"))
    counts: dict[str, tuple[int, int]] = {}
    for file in files:
        header = next(item for item in file.items if isinstance(item, str))
        added = removed = 0
        for item in file.items:
            if isinstance(item, _Hunk):
                added += sum(1 for line in item.body if line.startswith("+"))
                removed += sum(1 for line in item.body if line.startswith("-"))
            elif item.startswith(MARKER_PREFIX):
                found = re.search(r"\(\+(\d+) -(\d+)", item)
                assert found is not None, item
                added += int(found.group(1))
                removed += int(found.group(2))
        counts[header] = (added, removed)
    return counts


def test_diff_caps_and_accounting() -> None:
    text = _read("git_diff.txt")
    out = compress_output(text, command="git show HEAD").text
    # headers: every line that is not in a hunk survives
    headers = [
        line
        for line in text.splitlines()
        if line.startswith(("diff --git", "index ", "--- ", "+++ "))
    ]
    out_lines = out.splitlines()
    for line in headers:
        assert line in out_lines
    _, files = _parse(out.split("\n"))
    total = 0
    for file in files:
        hunks = [item for item in file.items if isinstance(item, _Hunk)]
        assert len(hunks) <= MAX_HUNKS_PER_FILE
        for hunk in hunks:
            changed = sum(1 for line in hunk.body if line.startswith(("+", "-")))
            assert changed <= MAX_HUNK_CHANGED
            total += changed
    assert total <= MAX_CHANGED
    # every added and removed line is either kept or counted by a marker
    assert _diff_counts(out) == _diff_counts(text)


def test_under_threshold_is_the_same_object() -> None:
    text = "tests/test_a.py::test_one PASSED [ 50%]\n" * 10
    assert len(text) < 1024
    result = compress_output(text, command="pytest -v")
    assert result.text is text and result.kind is None and result.saved_chars == 0
