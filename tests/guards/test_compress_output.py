"""compress_output by kind: what each compressor keeps, cuts and says it cut."""

from __future__ import annotations

import re
import time

import pytest

from extproc.guards.compress import compress_output, detect_kind, kind_of_command


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        ("pytest -x tests", "pytest"),
        ("python -m pytest", "pytest"),
        ("py -3 -m pytest", "pytest"),
        ("uv run pytest", "pytest"),
        ("cd repo && python3 -m pytest tests/unit 2>&1 | tail -40", "pytest"),
        ("bash -lc 'pytest -q'", "pytest"),
        ("grep -rn foo src", "grep"),
        ("rg -n 'def main' .", "grep"),
        ("git grep -n TODO", "grep"),
        ("git diff", "diff"),
        ("git -C repo diff --cached", "diff"),
        ("git show HEAD~1", "diff"),
        ("git log -p -3", "diff"),
        ("diff -u a.txt b.txt", "diff"),
        ("git log --oneline", None),
        ("npm test", None),
        ("npx jest", None),
        ("python script.py -m pytest", None),
        ("ls -la", None),
    ],
)
def test_kind_of_command(command: str, kind: str | None) -> None:
    assert kind_of_command(command) == kind


def _log(n: int, width: int = 60) -> list[str]:
    return [f"step {i:05d}: " + "x" * width for i in range(n)]


def test_command_head_tail_with_error_from_the_middle() -> None:
    lines = _log(1000)
    lines[500] = "ld: error: undefined symbol: compress_block"
    text = "\n".join(lines)
    result = compress_output(text, command="make")
    out = result.text.split("\n")
    assert result.kind == "command"
    assert len(out) <= 200 and len(result.text) <= 8000
    assert out[0] == lines[0] and out[-1] == lines[-1]
    assert "ld: error: undefined symbol: compress_block" in out
    omitted = [
        int(n) for n in re.findall(r"\[proxy: (\d+) lines \(\d+ chars\) omitted\]", result.text)
    ]
    assert len(omitted) == 2
    assert sum(omitted) + sum(1 for line in out if not line.startswith("[proxy:")) == 1000


def test_repeats_collapsed_with_count() -> None:
    text = "\n".join(["start", *["WARN: retrying connection to db:5432"] * 60, "done"])
    out = compress_output(text).text
    assert (
        out == "start\nWARN: retrying connection to db:5432\n[proxy: repeated 59 more times]\ndone"
    )


def test_long_line_cut_in_the_middle() -> None:
    text = "head " + "m" * 50_000 + " tail"
    out = compress_output(text).text
    assert out.startswith("head mmm") and out.endswith("mmm tail")
    assert "[proxy: 49210 chars cut]" in out and len(out) <= 1000


def test_grep_context_lines_grouped() -> None:
    lines = []
    for f in range(3):
        for n in range(1, 40, 3):
            lines += [
                f"src/m{f}.py-{n}-before",
                f"src/m{f}.py:{n + 1}:    hit = find(x)",
                f"src/m{f}.py-{n + 2}-after",
                "--",
            ]
    text = "\n".join(lines)
    result = compress_output(text, command="grep -rn -C1 find src")
    out = result.text.split("\n")
    assert result.kind == "grep"
    assert "src/m1.py:" in out
    assert "  2: " + "    hit = find(x)" in out and "  3- after" in out
    assert any(
        re.fullmatch(r"  \[proxy: \d+ more lines \(\d+ matches\) in this file omitted\]", line)
        for line in out
    )


def test_grep_bare_paths_only_when_the_command_is_a_search() -> None:
    text = "\n".join(f"src/mod{i // 20}.py:    import os  # {i}" for i in range(80))
    assert compress_output(text).kind == "command"
    result = compress_output(text, command="grep -r 'import os' src")
    assert result.kind == "grep"
    assert "src/mod0.py:" in result.text.split("\n")


def _hunk(n_added: int, start: int = 1) -> list[str]:
    return [f"@@ -{start},0 +{start},{n_added} @@", *[f"+line {i}" for i in range(n_added)]]


def test_diff_lockfile_and_hunk_caps() -> None:
    lines = [
        "diff --git a/package-lock.json b/package-lock.json",
        "index 1111111..2222222 100644",
        "--- a/package-lock.json",
        "+++ b/package-lock.json",
        *_hunk(300),
        "diff --git a/src/app.py b/src/app.py",
        "index 3333333..4444444 100644",
        "--- a/src/app.py",
        "+++ b/src/app.py",
        *[line for k in range(10) for line in _hunk(3 if k else 100, 10 * k + 1)],
    ]
    out = compress_output("\n".join(lines), command="git diff").text.split("\n")
    assert "[proxy: 1 hunk of a lockfile omitted (+300 -0 lines)]" in out
    assert "[proxy: hunk cut: 60 more lines (+60 -0) omitted]" in out
    assert "[proxy: 2 hunks more of this file omitted (+6 -0 lines)]" in out
    for header in lines:
        if header.startswith(("diff --git", "index ", "--- ", "+++ ")):
            assert header in out


def test_pytest_captured_output_capped_traceback_whole() -> None:
    traceback = [
        "    def test_sync():",
        "        client = Client()",
        ">       client.sync()",
        "",
        "tests/test_sync.py:9: ",
        "_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ ",
        "    def sync(self):",
        ">       raise TimeoutError('sync timed out after 30s')",
        "E       TimeoutError: sync timed out after 30s",
        "",
        "src/client.py:40: TimeoutError",
    ]
    text = "\n".join(
        [
            "=" * 29 + " test session starts " + "=" * 30,
            "collected 1 item",
            "",
            "tests/test_sync.py F                                                     [100%]",
            "",
            "=" * 35 + " FAILURES " + "=" * 35,
            "_" * 31 + " test_sync " + "_" * 32,
            "",
            *traceback,
            "-" * 29 + " Captured log call " + "-" * 30,
            *[f"DEBUG    client:client.py:31 retry {i}: waiting for lock" for i in range(500)],
            "=" * 27 + " short test summary info " + "=" * 28,
            "FAILED tests/test_sync.py::test_sync - TimeoutError: sync timed out after 30s",
            "=" * 34 + " 1 failed in 30.12s " + "=" * 34,
        ]
    )
    result = compress_output(text, command="pytest")
    out = result.text
    assert result.kind == "pytest"
    assert "\n".join(traceback) in out
    assert "retry 0: waiting" in out and "retry 499: waiting" in out
    assert re.search(r"\[proxy: \d+ lines \(\d+ chars\) omitted\]", out)
    assert out.endswith("=" * 34 + " 1 failed in 30.12s " + "=" * 34)
    assert len(out) < len(text) // 5


def test_detect_kind() -> None:
    assert detect_kind(["--- a/x", "+++ b/x", "@@ -1 +1 @@", "-a", "+b"]) == "diff"
    assert detect_kind(["....F", "1 failed, 4 passed in 0.12s"]) == "pytest"
    assert detect_kind([f"src/a{i}.py:{i}:x" for i in range(10)]) == "grep"
    assert (
        detect_kind([f"src/a{i}.py:{i}:x" for i in range(10)] + ["[proxy: 3 lines omitted]"])
        == "command"
    )
    assert detect_kind(["hello", "world"]) == "command"


@pytest.mark.parametrize(
    "text",
    [
        "a" * 5_000_000,
        "a:" * 2_000_000,
        "\n".join(["src/a.py:1:" + ":" * 40] * 100_000),
        "\n".join(["=== x " * 50 + "==="] * 50_000),
        "\n".join(["@@ -1,99999 +1,99999 @@", *["-" * 40] * 100_000]),
        "\n" * 1_000_000,
        "tests/t.py " + "." * 3_000_000 + " [ 50%]",
    ],
    ids=["one-line", "colons", "grep-colons", "separators", "huge-hunk", "newlines", "dots"],
)
def test_linear_on_large_inputs(text: str) -> None:
    start = time.perf_counter()
    for command in (None, "pytest", "grep -rn x", "git diff"):
        compress_output(text, command=command)
    assert time.perf_counter() - start < 20


def test_pytest_ra_summary_drops_passed_entries() -> None:
    summary = [f"PASSED tests/test_m.py::test_case_{i}" for i in range(60)]
    text = "\n".join(
        [
            "=" * 27 + " short test summary info " + "=" * 28,
            *summary[:30],
            "FAILED tests/test_m.py::test_broken - assert 1 == 2",
            *summary[30:],
            "=" * 24 + " 1 failed, 60 passed in 0.31s " + "=" * 24,
        ]
    )
    out = compress_output(text).text.split("\n")
    assert out[1:4] == [
        "[proxy: 30 PASSED lines removed]",
        "FAILED tests/test_m.py::test_broken - assert 1 == 2",
        "[proxy: 30 PASSED lines removed]",
    ]
