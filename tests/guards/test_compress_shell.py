"""quiet_pytest, powershell_chains and detect_powershell."""

from __future__ import annotations

import pytest

from extproc.guards.compress import detect_powershell, powershell_chains, quiet_pytest


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("pytest", "pytest -q -rfE"),
        ("pytest tests/unit -x", "pytest -q -rfE tests/unit -x"),
        ("python -m pytest", "python -m pytest -q -rfE"),
        (
            "python3.11 -m pytest -p no:cacheprovider",
            "python3.11 -m pytest -q -rfE -p no:cacheprovider",
        ),
        (".venv/bin/python -m pytest tests", ".venv/bin/python -m pytest -q -rfE tests"),
        ("FOO=1 uv run pytest", "FOO=1 uv run pytest -q -rfE"),
        ("py.test", "py.test -q -rfE"),
        (
            "cd /repo && python -m pytest tests 2>&1 | tail -50",
            "cd /repo && python -m pytest -q -rfE tests 2>&1 | tail -50",
        ),
        ("pytest -k 'not slow'", "pytest -q -rfE -k 'not slow'"),
        ("pytest -kverbose", "pytest -q -rfE -kverbose"),  # -k's value, not -v
        ("(cd x && pytest)", "(cd x && pytest -q -rfE)"),
        ("pytest a; pytest -q b", "pytest -q -rfE a; pytest -q b"),
        (
            "C:\\Python311\\python.exe -m pytest tests\\unit",
            "C:\\Python311\\python.exe -m pytest -q -rfE tests\\unit",
        ),
    ],
)
def test_quiet_pytest(command: str, expected: str) -> None:
    assert quiet_pytest(command) == expected


@pytest.mark.parametrize(
    "command",
    [
        "pytest -v",
        "pytest -xvs tests",
        "pytest -q",
        "pytest -ra",
        "pytest --verbose",
        "pytest --verbosity=2",
        "pytest --help",
        "python script.py -m pytest",
        "python -m mypy .",
        "echo pytest-is-fun",
        "echo 'pytest tests'",
        "npm test",
        "git commit -m 'run pytest'",
    ],
)
def test_quiet_pytest_leaves_alone(command: str) -> None:
    assert quiet_pytest(command) is None


def test_quiet_pytest_custom_flags() -> None:
    assert quiet_pytest("pytest", flags="-q --tb=short") == "pytest -q --tb=short"


@pytest.mark.parametrize(
    ("command", "conditional", "sequential"),
    [
        ("cd build && npm test", "cd build; if ($?) { npm test }", "cd build; npm test"),
        ("a && b && c", "a; if ($?) { b; if ($?) { c } }", "a; b; c"),
        ("a || b", "a; if (-not $?) { b }", None),
        ("a && b || c", None, None),  # mixed: no faithful flat form
        ('echo "x && y"', None, None),
        ("echo 'x && y' && echo z", "echo 'x && y'; if ($?) { echo z }", "echo 'x && y'; echo z"),
        ('echo "a`"&&b" && c', 'echo "a`"&&b"; if ($?) { c }', 'echo "a`"&&b"; c'),
        ("if ($x) { a && b }", None, None),  # only top-level chains
        ("a | b && c; d && e", "a | b; if ($?) { c }; d; if ($?) { e }", "a | b; c; d; e"),
        (
            "npm test 2>&1 && echo ok",
            "npm test 2>&1; if ($?) { echo ok }",
            "npm test 2>&1; echo ok",
        ),
        ("a &&", None, None),
        ("a # b && c", None, None),
        (
            '@"\nx && y\n"@ | Out-File f && type f',
            '@"\nx && y\n"@ | Out-File f; if ($?) { type f }',
            '@"\nx && y\n"@ | Out-File f; type f',
        ),
        ("  a && b  ", "  a; if ($?) { b }  ", "  a; b  "),
        ("a\nb && c", "a\nb; if ($?) { c }", "a\nb; c"),
        ("Get-ChildItem", None, None),
    ],
)
def test_powershell_chains(command: str, conditional: str | None, sequential: str | None) -> None:
    assert powershell_chains(command) == conditional
    assert powershell_chains(command, conditional=False) == sequential


# What the agents write (tests/agents/node_modules, see extproc/guards/compress/shell.py).
CLAUDE_WINDOWS = """# Environment
You have been invoked in the following environment:
 - Primary working directory: C:\\Users\\dev\\repo
 - Is a git repository: true
 - Platform: win32
 - Shell: PowerShell
 - OS Version: 10.0.26100"""
CLAUDE_GIT_BASH = CLAUDE_WINDOWS.replace("Shell: PowerShell", "Shell: bash")
CLAUDE_BOTH = CLAUDE_WINDOWS.replace(
    "Shell: PowerShell",
    "Shell: PowerShell (primary); Bash tool also available for POSIX scripts"
    " \u2014 each takes its own syntax.",
)
CLAUDE_PS7_TOOL = (
    "PowerShell edition: PowerShell 7+ (pwsh)\n"
    "   - Pipeline chain operators `&&` and `||` ARE available"
)
CLAUDE_PS51_TOOL = (
    "PowerShell edition: Windows PowerShell 5.1 (powershell.exe)\n"
    "   - Pipeline chain operators `&&` and `||` are NOT available"
)
CODEX = "<environment_context>\n  <cwd>C:\\work</cwd>\n  <shell>{}</shell>\n</environment_context>"
GEMINI = (
    "<session_context>\nThis is the Gemini CLI. We are setting up the context for our chat.\n"
    "My operating system is: {}\n</session_context>"
)
GEMINI_TOOL = (
    "This tool executes a given shell command as `powershell.exe -NoProfile -Command <command>`."
)
LINUX = CLAUDE_WINDOWS.replace("win32", "linux").replace("Shell: PowerShell", "Shell: zsh")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CLAUDE_WINDOWS, True),
        (CLAUDE_BOTH, True),
        (CLAUDE_GIT_BASH, False),
        (CLAUDE_WINDOWS + "\n" + CLAUDE_PS51_TOOL, True),
        (CLAUDE_WINDOWS + "\n" + CLAUDE_PS7_TOOL, False),
        (CODEX.format("powershell"), True),
        (CODEX.format("bash"), False),
        (CODEX.format("cmd"), False),
        (GEMINI.format("win32"), True),
        (GEMINI.format("linux"), False),
        (GEMINI_TOOL, True),
        (LINUX, False),
        ("Platform: win32", False),  # cmd.exe or Git Bash: && works
        ("", False),
    ],
)
def test_detect_powershell(text: str, expected: bool) -> None:
    assert detect_powershell(text) is expected
