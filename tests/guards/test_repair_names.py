"""Tool-name repair: exact, then one unique near miss, never a guess."""

from __future__ import annotations

import pytest

from extproc.guards.repair import repair_tool_name
from extproc.guards.repair.names import property_key

TOOLS = ["read_file", "write_to_file", "Bash", "mcp__github__create_issue", "list-files"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("read_file", "read_file"),
        ("Read_File", "read_file"),
        ("read-file", "read_file"),
        ("READ-FILE", "read_file"),
        (" read_file\n", "read_file"),
        ("functions.read_file", "read_file"),
        ("functions.Read-File", "read_file"),
        ("bash", "Bash"),
        ("list_files", "list-files"),
        ("MCP__GITHUB__CREATE_ISSUE", "mcp__github__create_issue"),
        ("readfile", None),  # only case and -/_ are forgiven for tool names
        ("read", None),
        ("", None),
        ("delete_everything", None),
    ],
)
def test_repair_tool_name(name: str, expected: str | None) -> None:
    assert repair_tool_name(name, TOOLS) == expected


def test_ambiguous_names_are_not_guessed() -> None:
    tools = {"read_file", "Read-File", "read-file"}
    assert repair_tool_name("read_file", tools) == "read_file"
    assert repair_tool_name("READ_FILE", tools) is None
    assert repair_tool_name("x", set()) is None


def test_a_tool_literally_named_with_the_prefix_wins() -> None:
    assert repair_tool_name("functions.x", ["functions.x", "x"]) == "functions.x"


def test_property_key() -> None:
    keys = {
        property_key(n) for n in ("filePath", "file_path", "FILE-PATH", "File Path", "filepath")
    }
    assert keys == {"filepath"}
