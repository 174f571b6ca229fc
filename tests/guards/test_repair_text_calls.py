"""Tool calls written as text: the corpus (recall, false positives) and the formats one by one.

``corpus/toolcalls/tools.json`` declares the tools (name -> parameters schema).
``corpus/toolcalls/calls/NAME.txt`` is a model's answer that holds calls;
``NAME.json`` the calls expected (``{"calls": [{"name", "arguments"}], "text"?}``,
``text`` being the prose left over, checked when given). ``benign/NAME.txt``
is an answer that must stay text, in one piece and streamed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from extproc.guards.repair import (
    MAX_TEXT_BYTES,
    TextCalls,
    TextCallSniffer,
    extract_text_calls,
)

CORPUS = Path(__file__).parent / "corpus" / "toolcalls"
TOOLS: dict[str, Any] = json.loads((CORPUS / "tools.json").read_text(encoding="utf-8"))


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


POSITIVE = sorted((CORPUS / "calls").glob("*.txt"))
BENIGN = sorted((CORPUS / "benign").glob("*.txt"))


def _calls(found: TextCalls | None) -> list[tuple[str, Any]] | None:
    if found is None:
        return None
    return [(call.name, json.loads(call.arguments)) for call in found.calls]


def _expected(path: Path) -> dict[str, Any]:
    expected: dict[str, Any] = json.loads(_read(path.with_suffix(".json")))
    return expected


def _stream(
    text: str, size: int, tools: dict[str, Any] = TOOLS
) -> tuple[str, str, TextCalls | None]:
    sniffer = TextCallSniffer(tools)
    emitted = "".join(sniffer.feed(text[i : i + size]) for i in range(0, len(text), size))
    held, calls = sniffer.finish()
    return emitted, held, calls


def test_corpus_recall() -> None:
    assert len(POSITIVE) >= 40
    misses = []
    for path in POSITIVE:
        text, expected = _read(path), _expected(path)
        found = extract_text_calls(text, TOOLS)
        want = [(c["name"], c["arguments"]) for c in expected["calls"]]
        if _calls(found) != want or (
            "text" in expected and found and found.text != expected["text"]
        ):
            misses.append((path.name, _calls(found), found.text if found else None))
    recall = 1 - len(misses) / len(POSITIVE)
    print(f"\ntext-call corpus: {len(POSITIVE)} answers with calls, recall {recall:.1%}")
    assert not misses, misses


def test_corpus_false_positives() -> None:
    assert len(BENIGN) >= 40
    false_positives = []
    for path in BENIGN:
        text = _read(path)
        found = extract_text_calls(text, TOOLS)
        streamed = [_stream(text, size) for size in (1, 5, len(text))]
        if found is not None or any(
            calls is not None or out + held != text for out, held, calls in streamed
        ):
            false_positives.append((path.name, _calls(found)))
    print(f"\nbenign corpus: {len(BENIGN)} answers, {len(false_positives)} false positives")
    assert not false_positives, false_positives


@pytest.mark.parametrize("path", POSITIVE, ids=lambda p: p.stem)
@pytest.mark.parametrize("size", [1, 3, 17, 1 << 20])
def test_corpus_streamed(path: Path, size: int) -> None:
    """Streamed in any chunk size: the same calls, and not one byte altered."""
    text = _read(path)
    emitted, held, calls = _stream(text, size)
    assert emitted + held == text
    assert _calls(calls) == _calls(extract_text_calls(text, TOOLS))


def test_prose_before_a_call_streams_before_the_call_ends() -> None:
    text = _read(CORPUS / "calls" / "cline_read_file.txt")
    sniffer = TextCallSniffer(TOOLS)
    out = sniffer.feed(text[: text.index("<read_file>") + 3])
    assert out == "I need to look at the current configuration before changing anything.\n\n"
    assert sniffer.holding


# --- formats and edge cases -------------------------------------------------------

WEATHER = {"get_weather": TOOLS["get_weather"]}


def _one(text: str, tools: dict[str, Any] = TOOLS) -> tuple[str, Any]:
    found = extract_text_calls(text, tools)
    assert found is not None, text
    assert len(found.calls) == 1
    return found.calls[0].name, json.loads(found.calls[0].arguments)


def test_arguments_are_compact_json() -> None:
    found = extract_text_calls(
        '{"name": "get_weather", "arguments": {"location": "Zürich"}}', WEATHER
    )
    assert found is not None
    assert found.calls[0].arguments == '{"location":"Zürich"}'
    assert found.calls[0].format == "json"


def test_openai_arguments_string_must_hold_an_object() -> None:
    bad = '{"type": "function", "function": {"name": "get_weather", "arguments": "Paris"}}'
    assert extract_text_calls(bad, WEATHER) is None


def test_bare_json_only_as_tail() -> None:
    call = '{"name": "get_weather", "arguments": {"location": "Oslo"}}'
    assert _one(f"Checking.\n{call}\n  ") == ("get_weather", {"location": "Oslo"})
    assert extract_text_calls(f"{call}\nThen I will answer.", TOOLS) is None


def test_bare_json_must_be_strict() -> None:
    assert (
        extract_text_calls("{'name': 'get_weather', 'arguments': {'location': 'Oslo'}}", TOOLS)
        is None
    )


def test_fence_json_is_lenient_but_not_past_prose() -> None:
    assert (
        _one("```json\n{name: 'get_weather', arguments: {location: 'Oslo'},}\n```")[0]
        == "get_weather"
    )
    trailing = "```\n{'name': 'get_weather', 'arguments': {'location': 'Oslo'}} was sent\n```"
    assert extract_text_calls(trailing, TOOLS) is None


def test_second_value_is_not_repaired_away() -> None:
    text = '```json\n{"name": "get_weather", "arguments": {"location": "A"}}\n{broken\n```'
    assert extract_text_calls(text, TOOLS) is None


def test_json_with_extra_keys_is_not_a_call() -> None:
    text = '{"name": "get_weather", "arguments": {"location": "Oslo"}, "description": "x"}'
    assert extract_text_calls(text, TOOLS) is None


def test_undeclared_tool_in_any_format() -> None:
    texts = [
        '{"name": "nope", "arguments": {}}',
        "<nope>\n<path>x</path>\n</nope>",
        '<function_calls><invoke name="nope"><parameter name="a">1</parameter></invoke>'
        "</function_calls>",
        'TOOL CALL: nope {"a": 1}',
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
    ]
    for text in texts:
        assert extract_text_calls(text, TOOLS) is None, text


def test_one_undeclared_invoke_spoils_the_block() -> None:
    text = (
        '<function_calls><invoke name="Bash"><parameter name="command">ls</parameter></invoke>'
        '<invoke name="nope"><parameter name="a">1</parameter></invoke></function_calls>'
    )
    assert extract_text_calls(text, TOOLS) is None


def test_xml_values_typed_by_schema_only() -> None:
    tools = {
        "t": {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}}
    }
    assert _one("<t>\n<n>10</n>\n<s>10</s>\n</t>", tools) == ("t", {"n": 10, "s": "10"})
    assert _one("<t><n>ten</n></t>", tools) == ("t", {"n": "ten"})
    assert _one("<t><x>1</x><n>2</n></t>", {"t": None}) == ("t", {"x": "1", "n": "2"})


def test_xml_value_whitespace() -> None:
    tools = {
        "w": {"type": "object", "properties": {"c": {"type": "string"}, "p": {"type": "string"}}}
    }
    text = "<w>\n<p>  a.py  </p>\n<c>\n    indented\n  more\n  </c>\n</w>"
    assert _one(text, tools) == ("w", {"p": "a.py", "c": "    indented\n  more"})


def test_xml_value_may_contain_its_closing_tag() -> None:
    tools = {"w": {"type": "object", "properties": {"content": {"type": "string"}, "path": {}}}}
    text = "<w>\n<content>\na</content> b\n</content>\n<path>x</path>\n</w>"
    assert _one(text, tools) == ("w", {"content": "a</content> b", "path": "x"})


def test_xml_repeated_parameter_is_not_a_call() -> None:
    assert extract_text_calls("<read_file><path>a</path><path>b</path></read_file>", TOOLS) is None


def test_xml_empty_call_needs_no_required_parameters() -> None:
    assert extract_text_calls("<read_file></read_file>", TOOLS) is None
    assert _one("<get_current_time>\n</get_current_time>") == ("get_current_time", {})


def test_xml_unclosed_is_text() -> None:
    assert extract_text_calls("<read_file>\n<path>a.py</path>\n", TOOLS) is None


def test_xml_tag_names_are_exact() -> None:
    assert extract_text_calls("<Read_File><path>a</path></Read_File>", TOOLS) is None


def test_tool_call_line_must_end_the_line() -> None:
    assert extract_text_calls('TOOL CALL: read_file {"path": "a"} and more', TOOLS) is None
    assert _one('Checking\n  TOOL_CALL: read_file {"path": "a"}\n') == ("read_file", {"path": "a"})


def test_tool_call_line_with_call_json() -> None:
    text = 'TOOL CALL: {"name": "read_file", "arguments": {"path": "a"}}'
    assert _one(text) == ("read_file", {"path": "a"})


def test_nothing_inside_code_fences() -> None:
    text = "```python\nx = 1\n```\n"
    inner = '<read_file>\n<path>a</path>\n</read_file>\nTOOL CALL: read_file {"path": "a"}\n'
    assert extract_text_calls("```python\n" + inner + "```\n", TOOLS) is None
    assert extract_text_calls("~~~~\n" + "```json\n" + inner + "```\n~~~~\n", TOOLS) is None
    after = text + '{"name": "read_file", "arguments": {"path": "a"}}'
    assert _one(after) == ("read_file", {"path": "a"})


def test_fence_first_line_decides() -> None:
    call = '{"name": "read_file", "arguments": {"path": "a"}}'
    assert _one(f"```\n\n{call}\n```") == ("read_file", {"path": "a"})
    assert extract_text_calls(f"```json\nThe call:\n{call}\n```", TOOLS) is None


def test_unclosed_fence_at_the_end() -> None:
    text = '```json\n{"name": "read_file", "arguments": {"path": "a"}}\n'
    assert _one(text) == ("read_file", {"path": "a"})


def test_near_miss_names_resolve_only_when_unique() -> None:
    tools = {"read_file": None, "Read-File": None, "list_files": None}
    assert extract_text_calls('{"name": "READ_FILE", "arguments": {}}', tools) is None
    assert _one('{"name": "List-Files", "arguments": {}}', tools) == ("list_files", {})


def test_implausible_arguments_are_not_a_call() -> None:
    text = '{"name": "read_file", "arguments": {"encoding": "utf-8"}}'
    assert extract_text_calls(text, TOOLS) is None
    near_miss = '{"name": "Read", "arguments": {"filePath": "a"}}'
    assert _one(near_miss) == ("Read", {"filePath": "a"})


def test_no_tools_or_too_big() -> None:
    call = '{"name": "read_file", "arguments": {"path": "a"}}'
    assert extract_text_calls(call, {}) is None
    assert extract_text_calls(" " * MAX_TEXT_BYTES + call, TOOLS) is None
    assert extract_text_calls("", TOOLS) is None


def test_leftover_text_joins_pieces() -> None:
    text = (
        "First.\n\n<read_file><path>a</path></read_file>\n\nMiddle.\n"
        "<read_file><path>b</path></read_file>   \n\nLast.  "
    )
    found = extract_text_calls(text, TOOLS)
    assert found is not None
    assert [json.loads(c.arguments)["path"] for c in found.calls] == ["a", "b"]
    assert found.text == "First.\n\nMiddle.\n\nLast."


def test_hostile_texts_stay_fast() -> None:
    """Linear scanning: inputs built to defeat naive candidate retries finish quickly."""
    import time

    hostile = [
        "<read_file>" * 20_000,
        "<read_file><path>" * 15_000,
        "{" * 200_000,
        '{"a": ' * 40_000,
        "[{" * 100_000,
        "\nTOOL CALL: read_file {" * 10_000,
        '<function_calls><invoke name="x">' * 7_000,
        "\n```json\n{" * 20_000,
        '{"name": "read_file", "arguments": {"path": "a"}} ' * 4_000,
        "<tool_call>{" * 20_000,
    ]
    for text in hostile:
        start = time.perf_counter()
        extract_text_calls(text, TOOLS)
        sniffer = TextCallSniffer(TOOLS)
        for i in range(0, len(text), 4096):
            sniffer.feed(text[i : i + 4096])
        sniffer.finish()
        elapsed = time.perf_counter() - start
        assert elapsed < 2.0, (text[:40], elapsed)
