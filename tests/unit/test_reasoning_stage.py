"""Reasoning controls: the mode per request and the filter over every split of a stream.

The filter runs in an :class:`AnswerChain` fed one event per chunk (as a stream arrives);
``<think>`` tags are split at every point of the text, in two and three deltas, and the
result must be the same as for the whole text. End to end, the real pipeline answers with
the provider's codec and the client reads the answer with its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from extproc.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    Finish,
    ReasoningDelta,
    ReasoningPart,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from extproc.config.sessions import ReasoningConfig, ReasoningRuleConfig
from extproc.errors import InvalidRequest
from extproc.pipeline import AnswerChain, RequestContext
from extproc.pipeline.stages.reasoning import MODE_HEADER, ReasoningFilter, ReasoningStage
from extproc.processing import Continue
from tests.unit.test_session_stages import Proxy, chat

# -- the filter over event sequences ------------------------------------------------------


def run_chain(mode: str, think: str, events: Sequence[StreamEvent]) -> list[StreamEvent]:
    """The events the client gets, each input event fed as its own chunk."""
    chain = AnswerChain([ReasoningFilter(mode, think)])  # type: ignore[arg-type]
    out: list[StreamEvent] = []
    for event in events:
        emitted, _ = chain.feed([event])
        out += emitted
    return out + chain.finish()


def channels(events: Sequence[StreamEvent]) -> tuple[str, str]:
    """(visible text, reasoning text) of the events."""
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    return text, reasoning


def splits(text: str) -> Iterator[list[str]]:
    """``text`` as one delta, and split into two and three deltas at every point."""
    yield [text]
    for i in range(len(text) + 1):
        yield [text[:i], text[i:]]
    for i in range(1, len(text)):
        for j in range(i + 1, len(text)):
            yield [text[:i], text[i:j], text[j:]]


TAGGED = "<think>plan A</think>\n\nThe answer.<thinking>more</thinking> Done <b>ok</b> a<c"

TAG_CASES = [
    ("passthrough", "reasoning", ("The answer.Done <b>ok</b> a<c", "plan Amore")),
    ("passthrough", "drop", ("The answer.Done <b>ok</b> a<c", "")),
    ("drop", "reasoning", ("The answer.Done <b>ok</b> a<c", "")),
    ("drop", "drop", ("The answer.Done <b>ok</b> a<c", "")),
    ("coerce_to_content", "drop", ("The answer.Done <b>ok</b> a<c", "")),
    (
        "coerce_to_content",
        "reasoning",
        (
            "<think>\nplan A\n</think>\n\nThe answer.<think>\nmore\n</think>\n\nDone <b>ok</b> a<c",
            "",
        ),
    ),
    ("coerce_to_content", "keep", (TAGGED, "")),
    ("drop", "keep", (TAGGED, "")),
]


@pytest.mark.parametrize(("mode", "think", "expected"), TAG_CASES)
def test_think_tags_split_at_every_point(mode: str, think: str, expected: tuple[str, str]) -> None:
    for deltas in splits(TAGGED):
        events: list[StreamEvent] = [TextDelta(d) for d in deltas]
        out = run_chain(mode, think, [*events, Finish("stop")])
        assert channels(out) == expected, deltas
        assert out[-1] == Finish("stop")
        if think != "keep":  # what the splitter emits is never empty
            assert not any(isinstance(e, TextDelta | ReasoningDelta) and not e.text for e in out)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("passthrough", ("", "still thinking")),
        ("coerce_to_content", ("<think>\nstill thinking\n</think>\n\n", "")),
        ("drop", ("", "")),
    ],
)
def test_a_think_block_never_closed_is_reasoning(mode: str, expected: tuple[str, str]) -> None:
    for deltas in splits("<think>still thinking"):
        out = run_chain(mode, "reasoning", [TextDelta(d) for d in deltas])
        assert channels(out) == expected, deltas


@pytest.mark.parametrize(
    "text", ["a <thin b", "x </think> y", "<THINK>no</THINK>", "< think>", "<"]
)
def test_text_that_only_looks_like_a_tag_is_text(text: str) -> None:
    for deltas in splits(text):
        out = run_chain("passthrough", "reasoning", [TextDelta(d) for d in deltas])
        assert channels(out) == (text, ""), deltas


PROVIDER_REASONING: list[StreamEvent] = [
    ReasoningDelta("step 1, "),
    ReasoningDelta("step 2", signature="sig"),
    TextDelta("Ans"),
    TextDelta("wer"),
    Finish("stop"),
]


@pytest.mark.parametrize(
    ("mode", "think", "expected"),
    [
        ("passthrough", "reasoning", ("Answer", "step 1, step 2")),
        ("passthrough", "drop", ("Answer", "step 1, step 2")),
        ("coerce_to_content", "keep", ("<think>\nstep 1, step 2\n</think>\n\nAnswer", "")),
        ("coerce_to_content", "reasoning", ("<think>\nstep 1, step 2\n</think>\n\nAnswer", "")),
        ("drop", "keep", ("Answer", "")),
        ("drop", "drop", ("Answer", "")),
    ],
)
def test_the_providers_reasoning_per_mode(mode: str, think: str, expected: tuple[str, str]) -> None:
    out = run_chain(mode, think, PROVIDER_REASONING)
    assert channels(out) == expected
    if mode == "passthrough":
        # Replay tokens stay on the reasoning they came with.
        assert [e.signature for e in out if isinstance(e, ReasoningDelta)] == [None, "sig"]


def test_coerced_reasoning_closes_before_a_tool_call() -> None:
    events: list[StreamEvent] = [
        ReasoningDelta("I should list files"),
        ToolCallStart(index=0, id="c1", name="ls"),
        ToolCallDelta(index=0, arguments="{}"),
        Finish("tool_calls"),
    ]
    out = run_chain("coerce_to_content", "keep", events)
    assert out[:2] == [
        TextDelta("<think>\nI should list files"),
        TextDelta("\n</think>\n\n"),
    ]
    assert isinstance(out[2], ToolCallStart) and out[-1] == Finish("tool_calls")


def test_coerced_reasoning_at_the_end_is_closed_before_the_finish() -> None:
    out = run_chain("coerce_to_content", "keep", [ReasoningDelta("only this"), Finish("stop")])
    assert out == [
        TextDelta("<think>\nonly this"),
        TextDelta("\n</think>\n\n"),
        Finish("stop"),
    ]


def test_coercing_several_reasoning_blocks() -> None:
    events: list[StreamEvent] = [
        ReasoningDelta("one"),
        TextDelta("A"),
        ReasoningDelta("two"),
        TextDelta("B"),
    ]
    out = run_chain("coerce_to_content", "keep", events)
    assert channels(out) == ("<think>\none\n</think>\n\nA<think>\ntwo\n</think>\n\nB", "")


def test_a_signature_only_reasoning_event_opens_no_block() -> None:
    events: list[StreamEvent] = [ReasoningDelta("", signature="sig"), TextDelta("A")]
    assert channels(run_chain("coerce_to_content", "keep", events)) == ("A", "")


def test_events_without_text_pass_untouched() -> None:
    chain = AnswerChain([ReasoningFilter("drop", "reasoning")])
    assert chain.feed([ToolCallStart(index=0, id="c", name="ls")]) == (
        [ToolCallStart(index=0, id="c", name="ls")],
        False,
    )


def test_held_text_is_not_overtaken_by_a_tool_call() -> None:
    events: list[StreamEvent] = [
        TextDelta("compare a<"),
        ToolCallStart(index=0, id="c1", name="ls"),
        ToolCallDelta(index=0, arguments="{}"),
        Finish("tool_calls"),
    ]
    out = run_chain("passthrough", "reasoning", events)
    first_call = next(i for i, e in enumerate(out) if isinstance(e, ToolCallStart))
    assert all(not isinstance(e, TextDelta) for e in out[first_call:])


# -- the mode of a request -----------------------------------------------------------------


def ctx_with(headers: dict[str, str]) -> RequestContext:
    return RequestContext(
        request_id="r", frontend="openai-chat", method="POST", path="/", headers=headers
    )


STAGE = ReasoningStage(
    ReasoningConfig(
        mode="drop",
        rules=[
            ReasoningRuleConfig(agents=["curl/*", "python-requests/*"], mode="coerce_to_content"),
            ReasoningRuleConfig(agents=["curl/8*"], mode="passthrough"),  # never reached
        ],
    )
)


@pytest.mark.parametrize(
    ("headers", "mode"),
    [
        ({}, "drop"),
        ({"user-agent": "claude-cli/2.1"}, "drop"),
        ({"user-agent": "curl/8.5.0"}, "coerce_to_content"),  # the first rule that matches
        ({"user-agent": "CURL/7"}, "coerce_to_content"),  # case-insensitive
        ({"user-agent": "my curl/8"}, "drop"),  # the whole agent
        ({MODE_HEADER: "passthrough", "user-agent": "curl/8"}, "passthrough"),
        ({MODE_HEADER: " Coerce_To_Content "}, "coerce_to_content"),
    ],
)
def test_header_then_agent_rules_then_the_default(headers: dict[str, str], mode: str) -> None:
    assert STAGE.mode(ctx_with(headers)) == mode


@pytest.mark.parametrize("value", ["", "loud", "coerce", "passthrough,drop"])
def test_an_unknown_mode_header_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        STAGE.mode(ctx_with({MODE_HEADER: value}))
    assert caught.value.code == "invalid_reasoning_mode"
    assert caught.value.message == (
        f"{MODE_HEADER} must be one of passthrough, coerce_to_content, drop, not {value!r}"
    )


def test_passthrough_that_keeps_tags_needs_no_filter() -> None:
    stage = ReasoningStage(ReasoningConfig())
    request = CanonicalRequest(protocol="openai-chat", model="m")
    ctx = ctx_with({})
    assert stage.mode(ctx) == "passthrough"
    assert stage.answer_filter(ctx, request) is None
    assert stage.answer_filter(ctx_with({MODE_HEADER: "drop"}), request) is not None
    tags = ReasoningStage(ReasoningConfig(think_tags="reasoning"))
    assert tags.answer_filter(ctx_with({}), request) is not None


# -- through the pipeline ------------------------------------------------------------------


@pytest.fixture
def proxies() -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def make(**config: Any) -> Proxy:
        proxy = Proxy(**config)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


THOUGHTFUL = CanonicalResponse(
    id="msg_1",
    model="claude-x",
    content=[ReasoningPart("Let me think.", signature="sig-1"), TextPart("42")],
    finish_reason="stop",
    usage=Usage(input_tokens=3, output_tokens=5),
)


def ask(proxy: Proxy, *, stream: bool, headers: dict[str, str] | None = None) -> Any:
    """An OpenAI Chat client asks an Anthropic backend that thinks."""
    return proxy.send(
        "openai-chat",
        {
            "model": "anthropic:claude-x",
            "messages": [{"role": "user", "content": "the answer?"}],
            "stream": stream,
        },
        headers=headers,
        answer=THOUGHTFUL,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_coerce_to_content_end_to_end(proxies: Callable[..., Proxy], stream: bool) -> None:
    proxy = proxies()
    result = ask(proxy, stream=stream, headers={MODE_HEADER: "coerce_to_content"})
    answer = result.client_answer()
    text = "".join(p.text for p in answer.content if isinstance(p, TextPart))
    assert text == "<think>\nLet me think.\n</think>\n\n42"
    assert not any(isinstance(p, ReasoningPart) for p in answer.content)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_drop_end_to_end_by_config(proxies: Callable[..., Proxy], stream: bool) -> None:
    proxy = proxies(reasoning={"mode": "drop"})
    answer = ask(proxy, stream=stream).client_answer()
    assert [type(p).__name__ for p in answer.content] == ["TextPart"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_passthrough_keeps_reasoning(proxies: Callable[..., Proxy], stream: bool) -> None:
    answer = ask(proxies(), stream=stream).client_answer()
    reasoning = [p for p in answer.content if isinstance(p, ReasoningPart)]
    assert reasoning and reasoning[0].text == "Let me think."


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_think_tags_from_an_open_model_become_reasoning(
    proxies: Callable[..., Proxy], stream: bool
) -> None:
    proxy = proxies(reasoning={"think_tags": "reasoning"})
    tagged = CanonicalResponse(
        id="c1",
        model="qwen",
        content=[TextPart("<think>hmm</think>\n\nDone.")],
        finish_reason="stop",
        usage=Usage(1, 1),
    )
    result = proxy.send(
        "anthropic",
        {
            "model": "openai:qwen",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "q"}],
            "stream": stream,
        },
        answer=tagged,
    )
    answer = result.client_answer()
    assert [(type(p).__name__, getattr(p, "text", "")) for p in answer.content] == [
        ("ReasoningPart", "hmm"),
        ("TextPart", "Done."),
    ]


def test_a_bad_mode_header_is_a_400_in_the_clients_dialect(proxies: Callable[..., Proxy]) -> None:
    proxy = proxies()
    result = proxy.send(
        "anthropic",
        {"model": "openai:m", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}]},
        headers={MODE_HEADER: "loud"},
    )
    assert result.reply.status == 400
    error = result.error()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert MODE_HEADER in error["error"]["message"]


def test_the_mode_header_does_not_reach_the_provider(proxies: Callable[..., Proxy]) -> None:
    result = chat(proxies(), "hi", headers={MODE_HEADER: "drop"})
    assert isinstance(result.head, Continue) and MODE_HEADER in result.head.remove_headers
