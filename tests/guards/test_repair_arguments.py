"""Argument repair: json-repair cases, schema fills, drops, renames, refusals, caps."""

from __future__ import annotations

import json
from typing import Any

import pytest

from extproc.guards.repair import Repaired, repair_arguments

READ = {
    "type": "object",
    "properties": {
        "file_path": {"type": "string"},
        "limit": {"type": "integer", "default": 2000},
        "encoding": {"type": "string", "enum": ["utf-8"]},
        "mode": {"const": "r"},
    },
    "required": ["file_path", "limit", "encoding", "mode"],
    "additionalProperties": False,
}


def _ok(result: Repaired) -> dict[str, Any]:
    assert result.error is None, result.error
    value: dict[str, Any] = json.loads(result.arguments)
    return value


# --- syntax -------------------------------------------------------------------------


def test_valid_json_is_compacted_without_changes() -> None:
    result = repair_arguments('{ "path" : "a.py",\n "n": [1, 2] }', None)
    assert result.arguments == '{"path":"a.py","n":[1,2]}'
    assert result.changes == ()
    assert result.ok


def test_unicode_is_kept() -> None:
    assert repair_arguments('{"q": "Zürich \\u00e9"}', None).arguments == '{"q":"Zürich é"}'


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ('{"path": "a.py",}', {"path": "a.py"}),  # trailing comma
        ("{'path': 'a.py'}", {"path": "a.py"}),  # single quotes
        ('{path: "a.py", limit: 3}', {"path": "a.py", "limit": 3}),  # unquoted keys
        ('{"path": "a.py" // the file\n}', {"path": "a.py"}),  # line comment
        ('{"path": /* x */ "a.py"}', {"path": "a.py"}),  # block comment
        (
            '{"path": "a.py", "content": "line 1\nline 2',
            {"path": "a.py", "content": "line 1\nline 2"},
        ),
        ('{"cmd": ["ls", "-la"', {"cmd": ["ls", "-la"]}),  # truncated array and object
        ("{'ok': True, 'none': None}", {"ok": True, "none": None}),  # Python literals
        ('{"path": "a.py"}}', {"path": "a.py"}),  # extra closing bracket
        ('{"path": "a.py"}\n```', {"path": "a.py"}),  # a leaked fence after the value
        ('```json\n{"path": "a.py"}\n```', {"path": "a.py"}),  # fenced
    ],
)
def test_json_syntax_repaired(broken: str, expected: dict[str, Any]) -> None:
    result = repair_arguments(broken, None)
    assert _ok(result) == expected
    assert result.changes == ("json_syntax",)


def test_empty_arguments_are_an_empty_object() -> None:
    for empty in ("", "  \n"):
        result = repair_arguments(empty, None)
        assert result.arguments == "{}"
        assert result.changes == ("empty_arguments",)


def test_double_encoded_arguments_are_unwrapped() -> None:
    result = repair_arguments(json.dumps('{"path": "a.py"}'), None)
    assert _ok(result) == {"path": "a.py"}
    assert result.changes == ("double_encoded",)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('{"a": 1}{"b": 2}', "multiple_values"),  # json_repair would keep one silently
        ('{"a": 1} {"a": 2', "multiple_values"),
        ("[1, 2]", "not_object"),
        ('"just text"', "not_object"),
        ("null", "not_object"),
        ("hello world", "not_object"),
        ('{"a": NaN}', "non_finite_number"),
        ('{"a": Infinity,}', "non_finite_number"),
        ("[" * 100_000, "too_deep"),
        ('{"a":' * 100_000, "too_deep"),
    ],
)
def test_refusals(text: str, kind: str) -> None:
    result = repair_arguments(text, None)
    assert result.error is not None and result.error.startswith(kind + ":"), result.error
    assert result.arguments == text
    assert not result.ok


def test_size_caps() -> None:
    big = '{"content": "' + "x" * 2_000 + '"}'
    assert (
        repair_arguments(big, None, max_bytes=1_000).error == "too_large: arguments over 1000 bytes"
    )
    assert repair_arguments("{'a': 'é'}", None, max_bytes=11).ok  # 10 characters, 11 bytes
    assert repair_arguments("{'a': 'é'}", None, max_bytes=10).error is not None
    broken = big[:-1] + ","  # broken JSON goes to json_repair only when small
    refused = repair_arguments(broken, None, max_repair_bytes=1_000)
    assert refused.error is not None and refused.error.startswith("too_large:")
    assert repair_arguments(broken, None).ok
    valid = repair_arguments(big, None, max_repair_bytes=10)  # valid JSON never needs repair
    assert valid.ok and valid.changes == ()


# --- schema -------------------------------------------------------------------------


def test_required_filled_only_from_default_const_or_single_enum() -> None:
    result = repair_arguments('{"file_path": "a.py"}', READ)
    assert _ok(result) == {"file_path": "a.py", "limit": 2000, "encoding": "utf-8", "mode": "r"}
    assert result.changes == ("filled_default",)
    assert result.missing == ()


def test_required_without_default_stays_missing_without_error() -> None:
    result = repair_arguments('{"limit": 5}', READ)
    assert _ok(result) == {"limit": 5, "encoding": "utf-8", "mode": "r"}
    assert result.missing == ("/file_path",)


def test_enum_of_several_values_is_not_a_default() -> None:
    schema = {"type": "object", "properties": {"u": {"enum": ["c", "f"]}}, "required": ["u"]}
    result = repair_arguments("{}", schema)
    assert _ok(result) == {}
    assert result.missing == ("/u",)
    assert result.changes == ()


def test_additional_properties_false_drops_unknown() -> None:
    result = repair_arguments('{"file_path": "a", "limit": 1, "verbose": true}', READ)
    assert "verbose" not in _ok(result)
    assert "dropped_additional" in result.changes
    assert "dropped_additional /verbose" in result.details


def test_unknown_properties_kept_unless_forbidden() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    result = repair_arguments('{"a": "x", "b": 1}', schema)
    assert _ok(result) == {"a": "x", "b": 1}
    assert result.changes == ()
    with_patterns = {**schema, "additionalProperties": False, "patternProperties": {"^x-": {}}}
    assert _ok(repair_arguments('{"a": "x", "x-b": 1}', with_patterns)) == {"a": "x", "x-b": 1}


@pytest.mark.parametrize(
    "spelling", ["filePath", "FilePath", "file-path", "FILE_PATH", "file path"]
)
def test_near_miss_property_renamed(spelling: str) -> None:
    result = repair_arguments(json.dumps({spelling: "a.py", "limit": 1}), READ)
    assert _ok(result)["file_path"] == "a.py"
    assert spelling not in _ok(result)
    assert result.changes[0] == "renamed_property"


def test_rename_keeps_property_order() -> None:
    schema = {"type": "object", "properties": {"old_text": {}, "new_text": {}, "path": {}}}
    result = repair_arguments('{"path": "p", "oldText": "a", "newText": "b"}', schema)
    assert result.arguments == '{"path":"p","old_text":"a","new_text":"b"}'


def test_ambiguous_rename_refused() -> None:
    schema = {"type": "object", "properties": {"file_path": {}, "filePath": {}}}
    result = repair_arguments('{"FILE-PATH": "a"}', schema)
    assert result.error is not None and result.error.startswith("ambiguous_property:")
    assert "file_path" in result.error and "filePath" in result.error


def test_rename_onto_a_present_property_refused() -> None:
    result = repair_arguments('{"file_path": "a", "filePath": "b"}', READ)
    assert result.error is not None and result.error.startswith("ambiguous_property:")
    result = repair_arguments('{"filePath": "a", "File_Path": "b"}', READ)
    assert result.error is not None and result.error.startswith("ambiguous_property:")


def test_nested_objects_and_arrays_of_objects() -> None:
    schema = {
        "type": "object",
        "properties": {
            "options": {
                "type": "object",
                "properties": {"dry_run": {"type": "boolean", "default": False}},
                "required": ["dry_run"],
                "additionalProperties": False,
            },
            "edits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"old_text": {"type": "string"}, "new_text": {"type": "string"}},
                    "required": ["old_text", "new_text"],
                    "additionalProperties": False,
                },
            },
        },
    }
    text = (
        '{"options": {"x": 1}, '
        '"edits": [{"oldText": "a", "newText": "b", "why": "c"}, {"old_text": "d"}]}'
    )
    result = repair_arguments(text, schema)
    assert _ok(result) == {
        "options": {"dry_run": False},
        "edits": [{"old_text": "a", "new_text": "b"}, {"old_text": "d"}],
    }
    assert set(result.changes) == {"dropped_additional", "filled_default", "renamed_property"}
    assert result.missing == ("/edits/1/new_text",)


def test_type_coercion_only_when_the_schema_is_unambiguous() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "x": {"type": "number"},
            "b": {"type": "boolean"},
            "o": {"type": "object"},
            "a": {"type": ["array", "null"]},
            "s": {"type": ["string", "integer"]},
            "t": {"type": "string"},
        },
    }
    text = json.dumps(
        {"n": "10", "x": "2.5", "b": "false", "o": '{"k": 1}', "a": "[1]", "s": "3", "t": "4"}
    )
    result = repair_arguments(text, schema)
    assert _ok(result) == {
        "n": 10,
        "x": 2.5,
        "b": False,
        "o": {"k": 1},
        "a": [1],
        "s": "3",
        "t": "4",
    }
    assert result.changes == ("coerced_type",)
    kept = repair_arguments('{"n": "ten", "b": "yes", "o": "[1]", "x": "NaN"}', schema)
    assert _ok(kept) == {"n": "ten", "b": "yes", "o": "[1]", "x": "NaN"}
    assert kept.changes == ()


def test_schema_without_properties_or_odd_schemas() -> None:
    schemas: list[dict[str, Any] | None] = [
        None,
        {},
        {"type": "object"},
        {"anyOf": [{}]},
        {"properties": "bad"},
    ]
    for schema in schemas:
        assert _ok(repair_arguments('{"a": 1}', schema)) == {"a": 1}


def test_defaults_are_copied() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"tags": {"default": ["a"]}},
        "required": ["tags"],
    }
    first = repair_arguments("{}", schema)
    assert _ok(first) == {"tags": ["a"]}
    assert schema["properties"]["tags"]["default"] == ["a"]


def test_syntax_and_schema_changes_together() -> None:
    result = repair_arguments("{'filePath': 'a.py', 'limit': '5', 'extra': 1,}", READ)
    assert _ok(result) == {"file_path": "a.py", "limit": 5, "encoding": "utf-8", "mode": "r"}
    assert result.changes == (
        "json_syntax",
        "renamed_property",
        "dropped_additional",
        "coerced_type",
        "filled_default",
    )
