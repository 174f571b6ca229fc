"""Properties of compress_output on generated outputs: idempotent, never longer, accounted.

Generated texts mix pytest-like, grep-like, diff-like and log-like lines with
the awkward cases: repeated lines, lines beyond the cut length, separators,
``---``/``+++`` pairs, hunks whose counts lie, and lines that already carry
``[proxy: ...]`` markers.
"""

from __future__ import annotations

import pytest

from extproc.guards.compress import compress_output
from extproc.guards.compress.lines import Limits, compress_lines

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_WORDS = st.sampled_from(
    [
        "foo",
        "bar",
        "error",
        "x",
        "==",
        "::",
        "PASSED",
        "FAILED",
        "....",
        "[ 10%]",
        "src/a.py",
        "@@",
        "-",
        "+",
        "diff",
        "--",
        ":",
        "12",
        "[proxy: 3 lines omitted]",
        "é",
        "\t",
        "",
    ]
)
_FREE = st.lists(_WORDS, max_size=8).map(" ".join) | st.text(max_size=12)
_FILES = st.sampled_from(["a", "b", "test_x", "test_y", "mod", "a-1-b"])
_DIRS = st.sampled_from(["src", "tests", "src/pkg", "C:\\work\\src", "."])

_PYTEST = st.one_of(
    st.builds(
        lambda f, t, r, p: f"tests/{f}.py::test_{t} {r}{' ' * (40 - len(t))}[{p:3d}%]",
        _FILES,
        _FILES,
        st.sampled_from(["PASSED", "PASSED", "PASSED", "FAILED", "SKIPPED", "ERROR"]),
        st.integers(0, 100),
    ),
    st.builds(
        lambda f, r, p: f"tests/{f}.py {r}{' ' * 20}[{p:3d}%]",
        _FILES,
        st.text(alphabet="....sFx", min_size=1, max_size=60),
        st.integers(0, 100),
    ),
    st.builds(lambda n: "." * n + "  [ 50%]", st.integers(1, 80)),
    st.sampled_from(
        [
            "=" * 29 + " test session starts " + "=" * 30,
            "=" * 35 + " FAILURES " + "=" * 35,
            "=" * 37 + " ERRORS " + "=" * 37,
            "_" * 20 + " test_parse " + "_" * 20,
            "-" * 29 + " Captured stdout call " + "-" * 29,
            "-" * 29 + " Captured log call " + "-" * 29,
            "=" * 27 + " short test summary info " + "=" * 28,
            "=" * 31 + " warnings summary " + "=" * 31,
            "=" * 20 + " 2 failed, 30 passed, 1 skipped in 1.23s " + "=" * 20,
            "2 failed, 30 passed in 0.52s",
            "E       assert 1 == 2",
            ">       assert parse('2d') == 172800",
            "tests/test_x.py:12: AssertionError",
            "FAILED tests/test_x.py::test_parse - KeyError: 'd'",
            "PASSED tests/test_x.py::test_ok",
            "_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _",
        ]
    ),
)
_GREP = st.one_of(
    st.builds(lambda d, f, n, t: f"{d}/{f}.py:{n}:{t}", _DIRS, _FILES, st.integers(1, 999), _FREE),
    st.builds(lambda d, f, t: f"{d}/{f}.py:{t}", _DIRS, _FILES, _FREE),
    st.builds(lambda d, f, n, t: f"{d}/{f}.py-{n}-{t}", _DIRS, _FILES, st.integers(1, 999), _FREE),
    st.just("--"),
    st.just("grep: src/bin: binary file matches"),
)
_DIFF_LINE = st.one_of(
    st.builds(lambda t: "+" + t, _FREE),
    st.builds(lambda t: "-" + t, _FREE),
    st.builds(lambda t: " " + t, _FREE),
    st.just(""),
    st.just("\\ No newline at end of file"),
)


@st.composite
def _diff_file(draw: st.DrawFn) -> list[str]:
    name = draw(st.sampled_from(["src/a.py", "package-lock.json", "docs/b.md", "c d.txt"]))
    lines = [f"diff --git a/{name} b/{name}", "index 1234567..89abcde 100644"]
    if draw(st.booleans()):
        lines += [f"--- a/{name}", f"+++ b/{name}"]
    for _ in range(draw(st.integers(0, 12))):
        body = draw(st.lists(_DIFF_LINE, max_size=90))
        old = sum(1 for line in body if line[:1] in (" ", "-", ""))
        new = sum(1 for line in body if line[:1] in (" ", "+", ""))
        if draw(st.integers(0, 5)) == 0:  # a header that lies about its counts
            old, new = draw(st.integers(0, 99)), draw(st.integers(0, 99))
        lines.append(f"@@ -1,{old} +1,{new} @@ def f():")
        lines += body
    return lines


_LOG = st.one_of(
    _FREE,
    st.sampled_from(
        [
            "npm warn deprecated glob@7.2.3: Glob versions prior to v9 are no longer supported",
            "npm ERR! code ERESOLVE",
            "--- a/x.py",
            "+++ b/x.py",
            "[proxy: repeated 3 more times]",
            "  [proxy: 2 more matches in this file omitted]",
        ]
    ),
    st.builds(
        lambda c, n: c * n,
        st.sampled_from(["a", "=", "_", "+", "-", ".", " x", "é"]),
        st.integers(900, 2600),
    ),
)


def _repeat(line: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.tuples(line, st.integers(1, 3) | st.integers(1, 40)).map(lambda p: [p[0]] * p[1])


def _text(lines: st.SearchStrategy[list[str]], max_size: int) -> st.SearchStrategy[str]:
    chunks = st.lists(lines, min_size=1, max_size=max_size)
    return chunks.map(lambda cs: "\n".join(line for chunk in cs for line in chunk))


_TEXTS = st.one_of(
    _text(_repeat(_PYTEST) | _repeat(_LOG), 80),
    _text(_repeat(_GREP) | _repeat(_LOG), 80),
    _text(_diff_file() | _repeat(_LOG), 12),
    _text(_repeat(_LOG), 80),
    _text(_repeat(_PYTEST | _GREP | _DIFF_LINE | _LOG) | _diff_file(), 40),
)
_COMMANDS = st.sampled_from(
    [None, "pytest -v", "git diff", "grep -rn foo .", "rg foo", "npm install", "make test"]
)
_SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SETTINGS
@given(_TEXTS, _COMMANDS)
def test_idempotent_and_never_longer(text: str, command: str | None) -> None:
    first = compress_output(text, command=command)
    assert len(first.text) <= len(text)
    assert first.saved_chars == len(text) - len(first.text)
    if first.saved_chars == 0:
        assert first.text is text
    second = compress_output(first.text, command=command)
    assert second.text == first.text, (first.kind, second.kind)


@_SETTINGS
@given(_TEXTS)
def test_generic_pipeline_within_limits_and_fixed(text: str) -> None:
    limits = Limits(max_lines=40, max_chars=3000, keep_important=3)
    once = compress_lines(text.split("\n"), limits)
    assert len(once) <= limits.max_lines
    assert len("\n".join(once)) <= limits.max_chars
    assert compress_lines(once, limits) == once
