"""The loop-detection stage over canonical answers.

A looping stream ends at the loop; a whole answer is cut to one occurrence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.canonical import (
    CanonicalResponse,
    Finish,
    ReasoningDelta,
    ReasoningPart,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    Usage,
    UsageReport,
)
from extproc.guards.loops import LoopConfig, find_loop
from extproc.pipeline.answer import AnswerChain
from extproc.pipeline.stages.loops import LoopFilter

CORPUS = Path(__file__).resolve().parents[1] / "guards" / "corpus" / "loops"
LOOPING = "Here is the list you asked for. " + "I am sorry, I cannot do that. " * 60
CLEAN = "\n".join(f"| row {i} | value {i * 7} | ok |" for i in range(80))


def chain() -> tuple[AnswerChain, list[str]]:
    cuts: list[str] = []
    return AnswerChain([LoopFilter(LoopConfig(), True, cuts.append)]), cuts


def stream(text: str, size: int) -> tuple[str, list[StreamEvent], list[str]]:
    answer, cuts = chain()
    out: list[StreamEvent] = []
    for i in range(0, len(text), size):
        events, _ = answer.feed([TextDelta(text=text[i : i + size])])
        out += events
        if answer.ended is not None:
            break
    if answer.ended is None:
        events, _ = answer.feed([Finish(reason="stop"), UsageReport(Usage(1, 2)), StreamEnd()])
        out += events
    out += answer.finish()
    return "".join(e.text for e in out if isinstance(e, TextDelta)), out, cuts


@pytest.mark.parametrize("size", [1, 7, 64, 4096])
def test_a_looping_stream_ends_at_the_loop_with_a_note(size: int) -> None:
    text, events, cuts = stream(LOOPING, size)
    found = find_loop(LOOPING)
    assert found is not None and cuts == ["text"]
    body, _, note = text.partition("\n\n[proxy: answer cut")
    assert note.startswith(": the model was repeating itself")
    # Nothing past the point of detection went out; the answer ends with stop.
    assert LOOPING.startswith(body) and len(body) <= found.end
    # The chain closes with stop (the translator adds usage so far and the end).
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"


def test_a_whole_looping_answer_keeps_one_occurrence() -> None:
    answer, cuts = chain()
    response = CanonicalResponse(
        id="r", model="m", content=[TextPart(text=LOOPING)], finish_reason="length"
    )
    final, failure = answer.whole(response)
    assert failure is None and cuts == ["text"]
    [part] = final.content
    assert isinstance(part, TextPart)
    found = find_loop(LOOPING)
    assert found is not None
    assert part.text.startswith(LOOPING[: found.start + found.period] + "\n\n[proxy: answer cut")
    assert final.finish_reason == "stop"


@pytest.mark.parametrize("size", [3, 50])
def test_clean_repetitive_text_passes_untouched(size: int) -> None:
    text, _, cuts = stream(CLEAN, size)
    assert text == CLEAN and cuts == []


def test_the_real_model_corpus_clean_answers_pass() -> None:
    for path in sorted((CORPUS / "clean").glob("*.txt")):
        text, _, cuts = stream(path.read_text(), 20)
        assert cuts == [], path.name
        assert text == path.read_text()


def test_a_whole_answer_whose_thinking_looped_keeps_its_answer() -> None:
    answer, _ = chain()
    thinking = "Let me think about it once more. " * 60
    response = CanonicalResponse(
        id="r",
        model="m",
        content=[ReasoningPart(text=thinking), TextPart(text="The answer is 4.")],
        finish_reason="stop",
    )
    final, failure = answer.whole(response)
    assert failure is None and final is response  # the loop ended by itself


def test_a_stream_looping_in_its_thinking_is_cut() -> None:
    answer, cuts = chain()
    out: list[StreamEvent] = []
    for _ in range(80):
        events, _ = answer.feed([ReasoningDelta(text="Let me think about it once more. ")])
        out += events
        if answer.ended is not None:
            break
    assert answer.ended is not None and cuts == ["reasoning"]
