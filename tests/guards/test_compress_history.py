"""compact_history: superseded results stubbed, others compressed, in place and idempotently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from extproc.canonical.model import Message, TextPart, ToolCallPart, ToolResultPart
from extproc.guards.compress import compact_history

OUTPUTS = Path(__file__).parent / "corpus" / "outputs"
VERBOSE = (OUTPUTS / "pytest_verbose.txt").read_text(encoding="utf-8")
GREP = (OUTPUTS / "grep_rn.txt").read_text(encoding="utf-8")
FILE = "".join(f"{n:6}\tline {n} of the module, long enough to matter\n" for n in range(1, 80))


class Chat:
    """A conversation built call by call (assistant call, then its result)."""

    def __init__(self) -> None:
        self.messages: list[Message] = [
            Message("system", [TextPart("You are a coding agent.")]),
            Message("user", [TextPart("Fix the failing tests.")]),
        ]
        self._n = 0

    def call(
        self, name: str, args: dict[str, Any], result: str, *, role: str = "user", **extra: Any
    ) -> str:
        self._n += 1
        call_id = f"call_{self._n}"
        self.messages.append(Message("assistant", [ToolCallPart(call_id, name, json.dumps(args))]))
        part = ToolResultPart(call_id, [TextPart(result, extra=extra or None)])
        self.messages.append(Message(role, [part]))  # type: ignore[arg-type]
        return call_id

    def result(self, call_id: str) -> str:
        for message in self.messages:
            for part in message.content:
                if isinstance(part, ToolResultPart) and part.tool_call_id == call_id:
                    return "".join(i.text for i in part.content if isinstance(i, TextPart))
        raise KeyError(call_id)


def _snapshot(messages: list[Message]) -> bytes:
    return msgspec.json.encode(messages)


def test_reads_and_runs_superseded_latest_kept() -> None:
    chat = Chat()
    r1 = chat.call("Read", {"file_path": "src/app.py"}, FILE)
    b1 = chat.call("Bash", {"command": "pytest -v", "description": "run tests"}, VERBOSE)
    e1 = chat.call("Edit", {"file_path": "src/app.py", "old_string": "a", "new_string": "b"}, "ok")
    r2 = chat.call("Read", {"file_path": "src/app.py"}, FILE)
    b2 = chat.call("Bash", {"command": "pytest -v"}, VERBOSE)
    report = compact_history(chat.messages)
    assert chat.result(r1) == "[proxy: superseded by a later read of src/app.py — see below]"
    assert chat.result(b1) == "[proxy: superseded by a later run of `pytest -v` — see below]"
    assert chat.result(e1) == "ok"
    assert chat.result(r2) == FILE  # the newest read stays, and reads are never compressed
    assert chat.result(b2) == VERBOSE  # the latest result: not seen by the model yet
    assert (report.stubbed, report.compressed) == (2, 0)
    stubs = len(chat.result(r1)) + len(chat.result(b1))
    assert report.chars_saved == len(FILE) + len(VERBOSE) - stubs
    assert report.tokens_saved > (len(FILE) + len(VERBOSE)) // 4 - 100

    # Idempotent: nothing more to do, nothing reported.
    before = _snapshot(chat.messages)
    again = compact_history(chat.messages)
    assert not again.changed and again.tokens_saved == 0
    assert again.chars_before == again.chars_after == report.chars_after
    assert _snapshot(chat.messages) == before


def test_keep_latest_false_compresses_the_latest_too() -> None:
    chat = Chat()
    b1 = chat.call("Bash", {"command": "python -m pytest -v tests"}, VERBOSE)
    report = compact_history(chat.messages, keep_latest=False)
    assert report.compressed == 1
    assert "[proxy: 17 PASSED lines removed]" in chat.result(b1)
    assert "test_parse_duration_days" in chat.result(b1)
    assert compact_history(chat.messages, keep_latest=False).changed is False


def test_older_results_compressed_after_a_newer_assistant_turn() -> None:
    chat = Chat()
    g1 = chat.call(
        "Grep", {"pattern": "return None", "path": "extproc", "output_mode": "content"}, GREP
    )
    b1 = chat.call("Bash", {"command": "pytest -v"}, VERBOSE)
    chat.messages.append(Message("assistant", [TextPart("Two tests fail; fixing.")]))
    report = compact_history(chat.messages)
    assert report.compressed == 2 and report.stubbed == 0
    assert len(chat.result(g1)) < len(GREP) // 2
    assert "PASSED lines removed" in chat.result(b1)


def test_partial_and_whole_reads() -> None:
    chat = Chat()
    p1 = chat.call("Read", {"file_path": "a.py", "offset": 10, "limit": 20}, FILE)
    w1 = chat.call("Read", {"file_path": "a.py"}, FILE)
    p2 = chat.call("Read", {"file_path": "a.py", "offset": 10, "limit": 20}, FILE)
    p3 = chat.call("Read", {"file_path": "a.py", "offset": 50}, FILE)
    compact_history(chat.messages)
    assert chat.result(p1).startswith("[proxy: superseded")  # by the whole read w1
    assert chat.result(w1) == FILE  # a later partial read does not cover a whole read
    assert chat.result(p2) == FILE and chat.result(p3) == FILE


def test_cat_in_a_codex_shell_call_is_a_read() -> None:
    chat = Chat()
    c1 = chat.call("shell", {"command": ["bash", "-lc", "cat ./src/app.py"], "workdir": ""}, FILE)
    chat.call("read_file", {"path": "src/app.py"}, FILE)
    compact_history(chat.messages)
    assert chat.result(c1) == "[proxy: superseded by a later read of src/app.py — see below]"


def test_workdir_and_arguments_tell_resources_apart() -> None:
    chat = Chat()
    g1 = chat.call(
        "run_shell_command", {"command": "git status", "directory": "a"}, "x" * 2000, role="tool"
    )
    g2 = chat.call(
        "run_shell_command", {"command": "git status", "directory": "b"}, "y" * 2000, role="tool"
    )
    s1 = chat.call("Grep", {"pattern": "foo", "path": "src"}, "src/a.py:1:foo\n" * 3)
    s2 = chat.call("Grep", {"pattern": "foo", "path": "tests"}, "tests/a.py:1:foo\n" * 3)
    s3 = chat.call("Grep", {"pattern": "foo", "path": "src"}, "src/a.py:1:foo\n" * 3)
    compact_history(chat.messages)
    assert not chat.result(g1).startswith("[proxy:") and not chat.result(g2).startswith("[proxy:")
    assert chat.result(s1) == "[proxy: superseded by a later search for `foo` in src — see below]"
    assert chat.result(s2).startswith("tests/a.py") and chat.result(s3).startswith("src/a.py")


def test_stub_keeps_cache_control_and_parts_are_not_mutated() -> None:
    chat = Chat()
    r1 = chat.call("Read", {"file_path": "a.py"}, FILE, cache_control={"type": "ephemeral"})
    original = chat.messages[3].content[0]
    copy = msgspec.json.encode(original)
    chat.call("Read", {"file_path": "a.py"}, FILE)
    compact_history(chat.messages)
    stub = chat.messages[3].content[0]
    assert isinstance(stub, ToolResultPart) and stub is not original
    assert stub.content == [
        TextPart(chat.result(r1), extra={"cache_control": {"type": "ephemeral"}})
    ]
    assert msgspec.json.encode(original) == copy


def test_other_tools_compressed_only_for_known_content() -> None:
    chat = Chat()
    diff = (OUTPUTS / "git_diff.txt").read_text(encoding="utf-8")
    d1 = chat.call("mcp__github__get_pull_request_diff", {"number": 7}, diff)
    w1 = chat.call("WebFetch", {"url": "https://example.com"}, "Some article text. " * 800)
    chat.messages.append(Message("assistant", [TextPart("Done.")]))
    report = compact_history(chat.messages)
    assert report.compressed == 1
    assert len(chat.result(d1)) < len(diff) // 2  # a diff, whatever the tool
    assert chat.result(w1) == "Some article text. " * 800  # unknown content: left alone


def test_results_without_calls_and_bad_arguments() -> None:
    messages = [
        Message("assistant", [ToolCallPart("c1", "Read", "{not json")]),
        Message(
            "user",
            [ToolResultPart("c1", [TextPart("x")]), ToolResultPart("orphan", [TextPart("y")])],
        ),
        Message("assistant", [TextPart("ok")]),
    ]
    report = compact_history(messages)
    assert not report.changed


def test_an_error_result_supersedes_nothing() -> None:
    chat = Chat()
    b1 = chat.call("Bash", {"command": "pytest -v"}, VERBOSE)
    chat.call("Bash", {"command": "pytest -v"}, "Command timed out after 2m 0s")
    error = chat.messages[-1].content[0]
    assert isinstance(error, ToolResultPart)
    chat.messages[-1].content[0] = msgspec.structs.replace(error, is_error=True)
    chat.messages.append(Message("assistant", [TextPart("It timed out; the first run stands.")]))
    report = compact_history(chat.messages)
    assert report.stubbed == 0 and report.compressed == 1
    assert "test_parse_duration_days" in chat.result(b1)
