"""The tool-loop engine: the corpus (full recall, no false positives), counts, periods, notes.

``corpus/tool_loops/loops/*.json`` must each be found as their ``expect`` says;
``corpus/tool_loops/benign/*.json`` must never be. A corpus file holds
``{"description", "style", "expect", "messages"}``; a message is one of::

    {"role": "system" | "user", "text": ...}
    {"role": "assistant", "text": ... (optional), "calls": [{"name", "args"}]}
    {"role": "results", "results": [{"text", "error" (optional)}]}

``args`` is a JSON value (encoded as the call's arguments) or a string (used as
is). ``results`` answer the calls of the assistant message before them, in
order. Every file is checked in two shapes: the results of one turn in one
``user`` message (Anthropic's wire shape) and one ``tool`` message per result
(what the codecs decode to).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from extproc.canonical.model import ImagePart, Message, TextPart, ToolCallPart, ToolResultPart
from extproc.guards.tool_loops import (
    REFUSAL_MARKER,
    STEERING_MARKER,
    ToolLoop,
    ToolLoopConfig,
    find_tool_loop,
    normalize_arguments,
    normalize_output,
    refusal_message,
    steering_note,
)

CORPUS = Path(__file__).parent / "corpus" / "tool_loops"
LOOPS = sorted((CORPUS / "loops").glob("*.json"))
BENIGN = sorted((CORPUS / "benign").glob("*.json"))


# -- building histories ------------------------------------------------------------------


def convert(doc: dict[str, Any], *, grouped: bool) -> list[Message]:
    """A corpus conversation as canonical messages."""
    out: list[Message] = []
    pending: list[str] = []
    n = 0
    for m in doc["messages"]:
        role = m["role"]
        if role in ("system", "user"):
            out.append(Message(role=role, content=[TextPart(m["text"])]))
        elif role == "assistant":
            parts: list[Any] = [TextPart(m["text"])] if m.get("text") else []
            pending = []
            for call in m.get("calls", []):
                n += 1
                args = call["args"]
                text = args if isinstance(args, str) else json.dumps(args)
                parts.append(ToolCallPart(id=f"call_{n}", name=call["name"], arguments=text))
                pending.append(f"call_{n}")
            out.append(Message(role="assistant", content=parts))
        else:
            assert role == "results", role
            results = [
                ToolResultPart(
                    tool_call_id=call_id,
                    content=[TextPart(r["text"])] if r["text"] else [],
                    is_error=r.get("error", False),
                )
                for call_id, r in zip(pending, m["results"], strict=True)
            ]
            if grouped:
                out.append(Message(role="user", content=list(results)))
            else:
                out.extend(Message(role="tool", content=[r]) for r in results)
    return out


Step = tuple[str, Any, str] | tuple[str, Any, str, bool]


class History:
    """A small history builder: each step is one assistant call and its result."""

    def __init__(self) -> None:
        self.messages: list[Message] = [Message(role="user", content=[TextPart("Fix the bug.")])]
        self.n = 0

    def call(self, name: str, args: Any, output: str, error: bool = False) -> History:
        self.n += 1
        call_id = f"c{self.n}"
        text = args if isinstance(args, str) else json.dumps(args)
        self.messages.append(
            Message(role="assistant", content=[ToolCallPart(id=call_id, name=name, arguments=text)])
        )
        self.messages.append(
            Message(
                role="tool",
                content=[ToolResultPart(call_id, content=[TextPart(output)], is_error=error)],
            )
        )
        return self

    def steps(self, steps: Iterable[Step]) -> History:
        for step in steps:
            self.call(*step)
        return self

    def text(self, role: str, text: str) -> History:
        self.messages.append(Message(role=role, content=[TextPart(text)]))  # type: ignore[arg-type]
        return self


PYTEST = ("bash", {"command": "pytest -q"}, "F\nFAILED test_x.py::test_a\n1 failed in 0.31s", True)


def run(n: int, step: Step = PYTEST) -> History:
    return History().steps([step] * n)


def find(history: History | Sequence[Message], **config: int) -> ToolLoop | None:
    messages = history.messages if isinstance(history, History) else history
    return find_tool_loop(messages, ToolLoopConfig(**config))


# -- the corpus --------------------------------------------------------------------------


def test_corpus_size() -> None:
    assert len(LOOPS) >= 15
    assert len(BENIGN) >= 15
    print(f"\ntool-loop corpus: {len(LOOPS)} loops, {len(BENIGN)} benign look-alikes")


@pytest.mark.parametrize("grouped", [False, True], ids=["tool-messages", "user-messages"])
def test_corpus_loops_recall(grouped: bool) -> None:
    misses = []
    for path in LOOPS:
        doc = json.loads(path.read_text(encoding="utf-8"))
        want = doc["expect"]
        loop = find_tool_loop(convert(doc, grouped=grouped))
        got = None
        if loop is not None:
            got = {key: getattr(loop, key) for key in want}
        if got != want:
            misses.append((path.stem, want, got))
    print(f"\nloops: {len(LOOPS) - len(misses)}/{len(LOOPS)} found as expected")
    assert not misses, misses


@pytest.mark.parametrize("grouped", [False, True], ids=["tool-messages", "user-messages"])
def test_corpus_benign_no_false_positives(grouped: bool) -> None:
    false_positives = []
    for path in BENIGN:
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert doc["expect"] is None
        loop = find_tool_loop(convert(doc, grouped=grouped))
        if loop is not None:
            false_positives.append((path.stem, loop))
    print(f"\nbenign: {len(false_positives)}/{len(BENIGN)} false positives")
    assert not false_positives, false_positives


def test_corpus_loop_counts_follow_the_tail() -> None:
    """Drop the last two calls: a period-1 same_call count drops by two (or the loop goes)."""
    for path in LOOPS:
        doc = json.loads(path.read_text(encoding="utf-8"))
        messages = convert(doc, grouped=False)
        full = find_tool_loop(messages)
        assert full is not None
        cut = messages
        for _ in range(2):
            last_call = max(
                i
                for i, m in enumerate(cut)
                if m.role == "assistant" and any(isinstance(p, ToolCallPart) for p in m.content)
            )
            cut = cut[:last_call]
        shorter = find_tool_loop(cut)
        if shorter is not None and shorter.kind == full.kind == "same_call" and full.period == 1:
            assert shorter.count == full.count - 2, path.stem


# -- thresholds, steering, refusal -------------------------------------------------------


def test_below_threshold_is_no_loop() -> None:
    assert find(run(1)) is None
    assert find(run(3)) is None


def test_threshold_then_steering_then_refusal() -> None:
    seen = []
    for n in range(4, 9):
        loop = find(run(n))
        assert loop is not None
        assert (loop.kind, loop.name, loop.count, loop.period) == ("same_call", "bash", n, 1)
        assert loop.steered_before is False
        seen.append((loop.repeats_since_note, loop.refuse))
    assert seen == [(0, False), (1, False), (2, True), (3, True), (4, True)]


def test_custom_thresholds() -> None:
    loop = find(run(3), same_call=3, refuse_after=1, window=8)
    assert loop is not None and loop.count == 3 and not loop.refuse
    loop = find(run(4), same_call=3, refuse_after=1, window=8)
    assert loop is not None and loop.refuse
    # refuse_after 0: refuse at the threshold, never steer
    loop = find(run(4), refuse_after=0)
    assert loop is not None and loop.refuse and loop.repeats_since_note == 0
    assert find(run(4), same_call=5, same_output=5) is None


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ToolLoopConfig(same_call=1)
    with pytest.raises(ValueError):
        ToolLoopConfig(same_output=1)
    with pytest.raises(ValueError):
        ToolLoopConfig(refuse_after=-1)
    with pytest.raises(ValueError):
        ToolLoopConfig(window=5)  # 4 + 2 calls can never fit
    ToolLoopConfig(window=6)


def test_note_in_history_counts_from_the_note() -> None:
    history = run(4)
    loop = find(history)
    assert loop is not None
    # a stage put the note into the answer (an assistant turn the client resends)
    history.text("assistant", steering_note(loop))
    loop = find(history)
    assert loop is not None and loop.steered_before and loop.repeats_since_note == 0
    history.call(*PYTEST)
    loop = find(history)
    assert loop is not None and loop.steered_before
    assert (loop.count, loop.repeats_since_note, loop.refuse) == (5, 1, False)
    history.call(*PYTEST)
    loop = find(history)
    assert loop is not None and (loop.repeats_since_note, loop.refuse) == (2, True)


def test_note_given_late_is_counted_from_the_note_not_the_count() -> None:
    history = run(6).text("assistant", f"{STEERING_MARKER} You repeat yourself.")
    history.call(*PYTEST)
    loop = find(history)
    assert loop is not None
    assert (loop.count, loop.steered_before, loop.repeats_since_note, loop.refuse) == (
        7,
        True,
        1,
        False,
    )


def test_note_before_the_loop_began_is_ignored() -> None:
    history = History().text("assistant", f"{STEERING_MARKER} an older loop")
    history.call("read_file", {"path": "a.py"}, "a")
    history.steps([PYTEST] * 6)
    loop = find(history)
    assert loop is not None
    assert (loop.steered_before, loop.repeats_since_note, loop.refuse) == (False, 2, True)


def test_marker_in_a_tool_output_is_not_a_note() -> None:
    grep = ("bash", {"command": "grep -rn 'repeated tool call' extproc"}, STEERING_MARKER)
    loop = find(run(6, grep))
    assert loop is not None and not loop.steered_before and loop.refuse


def test_steering_note_and_refusal_message() -> None:
    loop = find(run(4))
    assert loop is not None
    note = steering_note(loop)
    assert note.startswith(STEERING_MARKER)
    assert "`bash`" in note and "4 times" in note and "`pytest -q`" in note
    assert "ask the user" in note
    refusal = refusal_message(loop)
    assert refusal.startswith(REFUSAL_MARKER)
    assert "`bash`" in refusal and "4 times" in refusal
    assert STEERING_MARKER not in refusal

    a = ("edit_file", {"path": "x.py", "old": "a", "new": "b"}, "old text not found", True)
    loop = find(History().steps([a, PYTEST] * 4))
    assert loop is not None and loop.period == 2
    assert "`edit_file -> bash`" in steering_note(loop)
    assert "edit_file -> bash" in refusal_message(loop)

    loop = find(same_output_history(4))
    assert loop is not None and loop.kind == "same_output"
    assert "same failing output" in steering_note(loop)
    assert "same failing output" in refusal_message(loop)


def test_arguments_are_short_and_on_one_line() -> None:
    long = {"command": "python - <<'EOF'\n" + "print('x')\n" * 50 + "EOF"}
    loop = find(run(4, ("bash", long, "x")))
    assert loop is not None
    assert "\n" not in loop.arguments and len(loop.arguments) <= 100
    assert loop.arguments.endswith("…")
    loop = find(run(4, ("read_file", {"path": "a.py", "limit": 10}, "x")))
    assert loop is not None and loop.arguments == '{"limit": 10, "path": "a.py"}'
    loop = find(run(4, ("custom", "not json at all", "x")))
    assert loop is not None and loop.arguments == "not json at all"
    loop = find(run(4, ("shell", {"command": ["bash", "-lc", "make"]}, "x")))
    assert loop is not None and loop.arguments == "bash -lc make"


# -- periods -----------------------------------------------------------------------------


def step(name: str, output: str = "same") -> Step:
    return (name, {"arg": name}, output)


def test_period_two() -> None:
    loop = find(History().steps([step("a"), step("b")] * 4))
    assert loop is not None
    assert (loop.kind, loop.period, loop.count, loop.name, loop.cycle) == (
        "same_call",
        2,
        4,
        "b",
        ("a", "b"),
    )
    # ending mid-cycle: the newest call occurred 4 times
    loop = find(History().steps([step("a"), step("b")] * 3 + [step("a")]))
    assert loop is not None and (loop.period, loop.count, loop.name) == (2, 4, "a")
    assert find(History().steps([step("a"), step("b")] * 3)) is None


def test_period_three() -> None:
    cycle = [step("read_a"), step("read_b"), step("test")]
    loop = find(History().steps(cycle * 4))
    assert loop is not None
    assert (loop.period, loop.count, loop.cycle) == (3, 4, ("read_a", "read_b", "test"))
    assert find(History().steps(cycle * 3)) is None
    # the look-back is window cycles, so a period-3 loop reaches its refusal count too
    loop = find(History().steps(cycle * 6))
    assert loop is not None and (loop.count, loop.refuse) == (6, True)


def test_period_four_is_not_recognised() -> None:
    cycle = [step("a"), step("b"), step("c"), step("d")]
    assert find(History().steps(cycle * 4)) is None


def test_smallest_period_wins() -> None:
    loop = find(run(8))
    assert loop is not None and loop.period == 1 and loop.count == 8


def test_other_work_in_between_breaks_the_row() -> None:
    other = ("read_file", {"path": "b.py"}, "b")
    assert find(History().steps([step("a")] * 2 + [other] + [step("a")] * 2)) is None
    assert find(History().steps([step("a")] * 3 + [other] + [step("a")] * 3)) is None


def test_a_loop_is_about_now() -> None:
    history = run(6).call("read_file", {"path": "b.py"}, "b")
    assert find(history) is None
    history = History().steps([step("a")] * 2)
    history.steps([(f"t{i}", {"i": i}, str(i)) for i in range(30)])
    history.steps([step("a")] * 2)
    assert find(history) is None


def test_count_is_capped_by_the_window() -> None:
    loop = find(run(40))
    assert loop is not None and loop.count == 12
    loop = find(History().steps([step("a"), step("b")] * 40))
    assert loop is not None and loop.count == 12


def test_the_same_call_with_changing_output_is_progress() -> None:
    poll = [("bash", {"command": "tail -1 job.log"}, f"{i}% done") for i in range(10, 100, 10)]
    assert find(History().steps(poll)) is None


# -- same output -------------------------------------------------------------------------

FAILURE = (
    "Traceback (most recent call last):\n"
    '  File "/repo/app.py", line 3, in <module>\n'
    "    from invoicer.db import connect\n"
    "ModuleNotFoundError: No module named 'invoicer.db'\n"
)


def same_output_history(n: int, output: str = FAILURE, error: bool = False) -> History:
    history = History()
    for i in range(n):
        history.call("edit_file", {"path": "app.py", "text": f"attempt {i}"}, "File edited.")
        history.call("bash", {"command": "python app.py"}, output, error)
    return history


def test_same_failing_output_after_different_edits() -> None:
    assert find(same_output_history(3)) is None
    loop = find(same_output_history(4))
    assert loop is not None
    assert (loop.kind, loop.name, loop.count, loop.arguments) == (
        "same_output",
        "bash",
        4,
        "python app.py",
    )
    loop = find(same_output_history(6))
    assert loop is not None and (loop.count, loop.refuse) == (6, True)


def test_identical_success_is_not_a_loop() -> None:
    ok = "   Compiling app v0.1.0\n    Finished dev [unoptimized] target(s) in 0.42s\n" * 3
    assert find(same_output_history(6, ok)) is None


def test_is_error_alone_marks_a_failure() -> None:
    plain = "the widget could not be frobnicated because the frobnicator is offline. " * 3
    assert find(same_output_history(4, plain)) is None
    assert find(same_output_history(4, plain, error=True)) is not None


def test_short_errors_tie_only_the_same_call() -> None:
    missing = "File does not exist."
    probes = [("read_file", {"path": f"conf{i}.yaml"}, missing, True) for i in range(8)]
    assert find(History().steps(probes)) is None
    # the same call failing the same short way, with other work between: counted
    history = History()
    for i in range(4):
        history.call("read_file", {"path": "conf.yaml"}, missing, True)
        history.call("bash", {"command": f"ls dir{i}"}, f"file{i}")
    history.call("read_file", {"path": "conf.yaml"}, missing, True)
    loop = find(history)
    assert loop is not None and (loop.kind, loop.count) == ("same_output", 5)


def test_empty_failure_output_is_no_loop() -> None:
    greps = [("bash", {"command": f"grep -rn p{i} src"}, "", True) for i in range(8)]
    assert find(History().steps(greps)) is None


def test_same_output_only_within_the_window() -> None:
    history = History()
    for i in range(4):
        history.call("bash", {"command": "python app.py"}, FAILURE)
        for j in range(3):
            history.call("read_file", {"path": f"f{i}{j}.py"}, f"{i}{j}")
    history.call("bash", {"command": "python app.py"}, FAILURE)
    # 5 occurrences, but only the last 12 calls count: 3 of them
    assert find(history) is None
    assert find(history, window=20) is not None


# -- human turns -------------------------------------------------------------------------


def test_a_human_turn_ends_the_loop() -> None:
    history = run(8).text("user", "Stop. The bug is in conftest.py; read it first.")
    assert find(history) is None
    history.steps([PYTEST] * 3)
    assert find(history) is None
    history.call(*PYTEST)
    loop = find(history)
    assert loop is not None and loop.count == 4 and not loop.refuse


def test_agent_texts_are_not_human_turns() -> None:
    for text in (
        "<system-reminder>\nThe file a.py was modified.\n</system-reminder>",
        "   ",
        f"{REFUSAL_MARKER} The proxy stopped this request",
        f"{STEERING_MARKER} You have called",
    ):
        history = run(3).text("user", text)
        history.call(*PYTEST)
        loop = find(history)
        assert loop is not None and loop.count == 4, text
    # system and developer messages are never human turns
    history = run(3).text("system", "Be brief.").text("developer", "Be careful.")
    assert find(history.call(*PYTEST)) is not None


def test_a_pasted_image_is_a_human_turn() -> None:
    history = run(5)
    history.messages.append(Message(role="user", content=[ImagePart(url="data:image/png;base64,")]))
    history.call(*PYTEST)
    assert find(history) is None


def test_results_with_text_in_one_user_message_are_no_human_turn() -> None:
    messages = [Message(role="user", content=[TextPart("go")])]
    for i in range(4):
        call_id = f"toolu_{i}"
        messages.append(
            Message(
                role="assistant",
                content=[ToolCallPart(call_id, "Bash", '{"command": "pytest"}')],
            )
        )
        messages.append(
            Message(
                role="user",
                content=[
                    ToolResultPart(call_id, [TextPart("1 failed")], is_error=True),
                    TextPart("Some hook said something."),
                ],
            )
        )
    loop = find_tool_loop(messages)
    assert loop is not None and loop.count == 4


# -- pairing results ---------------------------------------------------------------------


def test_reused_call_ids_pair_with_the_latest_call() -> None:
    messages: list[Message] = [Message(role="user", content=[TextPart("go")])]
    for i in range(5):
        messages.append(Message(role="assistant", content=[ToolCallPart("call_0", "poll", "{}")]))
        messages.append(
            Message(role="tool", content=[ToolResultPart("call_0", [TextPart(f"{i * 20}%")])])
        )
    assert find_tool_loop(messages) is None
    for message in messages[2::2]:
        result = message.content[0]
        assert isinstance(result, ToolResultPart)
        result.content = [TextPart("0%")]
    assert find_tool_loop(messages) is not None


def test_parallel_calls_and_missing_results() -> None:
    messages: list[Message] = [Message(role="user", content=[TextPart("go")])]
    for _ in range(4):
        messages.append(
            Message(role="assistant", content=[ToolCallPart("x", "ls", "{}")])
        )  # no results at all (a client that dropped them)
    loop = find_tool_loop(messages)
    assert loop is not None and loop.count == 4
    # one turn of four parallel, identical calls counts four times
    parallel = Message(
        role="assistant", content=[ToolCallPart(f"p{i}", "ls", "{}") for i in range(4)]
    )
    results = [
        Message(role="tool", content=[ToolResultPart(f"p{i}", [TextPart("a b")])]) for i in range(4)
    ]
    loop = find_tool_loop([messages[0], parallel, *results])
    assert loop is not None and loop.count == 4


def test_empty_and_callless_histories() -> None:
    assert find_tool_loop([]) is None
    assert find(History().text("assistant", "Hello")) is None


# -- normalisation -----------------------------------------------------------------------


def test_normalize_arguments() -> None:
    assert normalize_arguments('{"b": 1, "a": [2, {"d": 3, "c": 4}]}') == (
        '{"a":[2,{"c":4,"d":3}],"b":1}'
    )
    # command whitespace is not significant...
    assert normalize_arguments('{"command": "  pytest   -q\\n"}') == normalize_arguments(
        '{"command":"pytest -q"}'
    )
    assert normalize_arguments('{"cmd": ["bash", "-lc", "ls  -la "]}') == normalize_arguments(
        '{"cmd": ["bash", "-lc", "ls -la"]}'
    )
    # ...nor the free-text description next to it...
    assert normalize_arguments(
        '{"command": "pytest", "description": "Run tests"}'
    ) == normalize_arguments('{"command": "pytest", "description": "Run the tests again"}')
    # ...but a description without a command is content
    assert normalize_arguments('{"title": "x", "description": "a"}') != normalize_arguments(
        '{"title": "x", "description": "b"}'
    )
    # file contents and patterns keep their whitespace
    for key in ("content", "new_string", "pattern"):
        assert normalize_arguments(json.dumps({key: "a  b"})) != normalize_arguments(
            json.dumps({key: "a b"})
        )
    # text that is not JSON is compared stripped, as is
    assert normalize_arguments("  ls -la \n") == "ls -la"
    assert normalize_arguments("ls  -la") != normalize_arguments("ls -la")
    assert normalize_arguments('{"broken": ') == '{"broken":'
    assert normalize_arguments("") == ""
    deep = "[" * 100_000 + "]" * 100_000
    assert normalize_arguments(deep) == deep  # too deep to parse: the raw text


def test_description_variants_are_one_call() -> None:
    steps: list[Step] = [
        ("Bash", {"command": "pytest  -q", "description": d}, "1 failed")
        for d in ("Run tests", "Re-run the tests", "Check again", "Run tests once more")
    ]
    loop = find(History().steps(steps))
    assert loop is not None and (loop.kind, loop.count) == ("same_call", 4)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("started 2026-12-07T10:00:00Z", "started 2026-12-08T11:59:31.123+01:00"),
        ("at 10:00:00 done", "at 23:01:59.5 done"),
        ("1 failed, 2 passed in 0.42s", "1 failed, 2 passed in 12.03s"),
        ("Time: 2.345 s", "Time: 0.4 s"),
        ("took 1m 03s", "took 12m 59s"),
        ("after 0 ms", "after 13 ms"),
        ("/tmp/tmpk2j3_x9a/a.py", "/tmp/tmpzz81q_0b/a.py"),
        ("/tmp/pytest-of-u/pytest-17/t0", "/tmp/pytest-of-u/pytest-3/t0"),
        ("/tmp/go-build123456/b001", "/tmp/go-build987654/b001"),
        ("/var/folders/x1/abc123/T/foo", "/var/folders/y2/def456/T/foo"),
        ("worker pid 4242 up", "worker pid=31337 up"),
        ("Process Group PGID: 48213", "Process Group PGID: 1002"),
        ("<Conn at 0x7f3a9c0d2e50>", "<Conn at 0x7f11aa0b9c10>"),
        ("req 123e4567-e89b-12d3-a456-426614174000", "req 00000000-0000-4000-8000-000000000000"),
        ('{"duration_seconds": 1.7}', '{"duration_seconds": 10.25}'),
        ("==== 1 failed in 0.4s ====", "=== 1 failed in 10.42s ======"),
        ("a  \nb\t\n\n\n", "a\nb"),
        ("x\r\ny", "x\ny"),
        ("\x1b[31mFAILED\x1b[0m", "FAILED"),
    ],
)
def test_normalize_output_ignores_volatile_parts(a: str, b: str) -> None:
    assert normalize_output(a) == normalize_output(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("3 failed, 2 passed", "2 failed, 3 passed"),
        ("line 41", "line 42"),
        ("  indented", "indented"),
        ("/tmp/proj/a.py", "/tmp/proj/b.py"),
        ("commit 1a2b3c4", "commit 9f8e7d6"),
        ("a\nb", "a b"),
        ("exit 1", "exit 2"),
    ],
)
def test_normalize_output_keeps_meaningful_differences(a: str, b: str) -> None:
    assert normalize_output(a) != normalize_output(b)


def test_long_outputs_are_normalised_at_their_ends_only() -> None:
    body = "".join(f"line {i}\n" for i in range(20_000))
    a = "started 2026-12-07T10:00:00Z\n" + body + "1 failed in 0.42s\n"
    b = "started 2026-12-08T11:30:00Z\n" + body + "1 failed in 12.5s\n"
    assert normalize_output(a) == normalize_output(b)
    # the middle is compared exactly: a volatile part there tells them apart
    c = a.replace("line 10000\n", "line 10000 in 0.1s\n")
    d = a.replace("line 10000\n", "line 10000 in 0.2s\n")
    assert normalize_output(c) != normalize_output(d)
    assert normalize_output(a) != normalize_output(a.replace("line 9999\n", "line 9998\n"))


def test_is_error_is_part_of_the_output() -> None:
    steps: list[Step] = [("bash", {"command": "make"}, "done", i % 2 == 0) for i in range(8)]
    loop = find(History().steps(steps))
    # the same text with alternating error flags: not 8 repeats, a period-2 cycle of 4
    assert loop is not None and (loop.period, loop.count) == (2, 4)


# -- size --------------------------------------------------------------------------------


def test_long_histories_complete() -> None:
    """2,000-message histories (no timing asserts: RE2 and one pass keep it linear)."""
    big = "x" * 20_000 + "\n"
    varied = History()
    for i in range(1000):
        varied.call("read_file", {"path": f"f{i}.py", "text": big}, big + str(i))
    assert len(varied.messages) >= 2000
    assert find(varied) is None

    same = History()
    for _ in range(1000):
        same.call("bash", {"command": "pytest"}, "1 failed " * 2000)
    loop = find(same)
    assert loop is not None and loop.count == 12

    text_only = [
        Message(role="assistant" if i % 2 else "tool", content=[TextPart("a " * 500)])
        for i in range(2000)
    ]
    assert find_tool_loop(text_only) is None

    hostile = "0" * 50_000 + ":" + "1" * 50_000 + "/tmp/" + "a" * 50_000
    assert normalize_output(hostile)
    assert find(run(6, ("bash", {"command": "x"}, hostile))) is not None
