"""The stage contract, through the ROUTER role (no gRPC, no Envoy).

Provider answers are made by the codecs' own encoders (what each API sends),
and the client's bytes are read back with the client's codec: a stage's
change must be visible on every path — same-protocol JSON and stream (where
the provider's bytes would otherwise pass through), cross-protocol, and the
Responses encoder that follows the provider's own events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from extproc.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    Finish,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    Usage,
)
from extproc.canonical.aggregate import aggregate_events, response_events
from extproc.codecs import get_codec
from extproc.codecs.base import ResponseContext
from extproc.config import build_config
from extproc.errors import PermissionDenied
from extproc.pipeline import (
    AnswerFilter,
    Block,
    Emit,
    EndAnswer,
    Pipeline,
    Reject,
    RequestContext,
    Respond,
    Rewrite,
    Stage,
    ToolCheck,
    ToolVerdict,
)
from extproc.processing import App, Continue, Reply
from extproc.processing.factory import Processors

BACKENDS = {
    "openai": {"base_url": "http://127.0.0.1:9001/v1", "api_key": "sk-fake-a"},
    "anthropic": {"base_url": "http://127.0.0.1:9002/v1", "api_key": "sk-fake-b"},
    "gemini": {"base_url": "http://127.0.0.1:9003/v1beta", "api_key": "fake-c"},
    "openai-responses": {"base_url": "http://127.0.0.1:9004/v1", "api_key": "sk-fake-d"},
}
SCHEMA = {
    "openai": "openai-chat",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "openai-responses": "openai-responses",
}
FROM_UPSTREAM = {"x-envoy-upstream-service-time": "3"}
PAIRS = [
    ("openai-chat", "openai"),
    ("anthropic", "anthropic"),
    ("gemini", "gemini"),
    ("openai-responses", "openai-responses"),
    ("anthropic", "openai"),
    ("openai-chat", "gemini"),
    ("gemini", "openai-responses"),
    ("openai-responses", "anthropic"),
]


def make_app(*stages: Stage) -> App:
    config = {
        "backends": BACKENDS,
        "metrics": {"enabled": False},
        "redaction": {"enabled": False},
        "commands": {"enabled": False},
    }
    app = App(build_config(config))
    routing = app.pipeline.stages[-1]
    app.pipeline = Pipeline([*stages, routing])
    return app


def client_request(
    protocol: str, instance: str, stream: bool, text: str = "hello"
) -> tuple[dict[str, str], bytes]:
    model = f"{instance}:m-1"
    if protocol == "openai-chat":
        data: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
        path = "/v1/chat/completions"
        if stream:
            data["stream"] = True
            data["stream_options"] = {"include_usage": True}
    elif protocol == "openai-responses":
        data = {"model": model, "input": text, "stream": stream}
        path = "/v1/responses"
    elif protocol == "anthropic":
        data = {
            "model": model,
            "max_tokens": 100,
            "messages": [{"role": "user", "content": text}],
            "stream": stream,
        }
        path = "/anthropic/v1/messages"
    else:
        data = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        path = f"/v1beta/models/{model}:{action}"
    headers = {
        ":method": "POST",
        ":path": path,
        "content-type": "application/json",
        "x-request-id": "req-1",
        "anthropic-version": "2023-06-01",
    }
    return headers, json.dumps(data).encode()


ANSWER = CanonicalResponse(
    id="resp_1",
    model="m-1",
    content=[TextPart("the answer is here")],
    finish_reason="stop",
    usage=Usage(input_tokens=3, output_tokens=4),
)


def provider_json(schema: str, answer: CanonicalResponse = ANSWER) -> bytes:
    return get_codec(schema).encode_response(answer, ResponseContext(request_model="m-1"))


def provider_stream(schema: str, events: list[StreamEvent]) -> list[bytes]:
    """The provider's stream as separate wire events (one body chunk each)."""
    encoder = get_codec(schema).stream_encoder(
        ResponseContext(request_model="m-1", include_usage=True)
    )
    out = [encoder.encode([event]) for event in events]
    out.append(encoder.finish())
    return [chunk for chunk in out if chunk]


def run(
    app: App,
    protocol: str,
    instance: str,
    *,
    stream: bool,
    answer: CanonicalResponse = ANSWER,
    events: list[StreamEvent] | None = None,
) -> tuple[Any, list[Any]]:
    """Send one request and answer through the ROUTER role; the client's bytes and actions."""
    router = Processors(app).router()
    headers, payload = client_request(protocol, instance, stream)
    assert isinstance(router.request_headers(headers, False), Continue)
    action = router.request_body(payload, True)
    if not isinstance(action, Continue | Reply):
        action = asyncio.run(_wait(action))
    if isinstance(action, Reply):
        return action, []
    assert isinstance(action, Continue)
    schema = SCHEMA[instance]
    host = {"instance": instance, "schema": schema}
    if stream:
        head = router.response_headers(
            {":status": "200", **FROM_UPSTREAM, "content-type": "text/event-stream"}, False, host
        )
        # Answer stages: the ROUTER role may end the client's stream itself.
        assert isinstance(head, Continue) and head.response_body_mode == "full_duplex"
        chunks = provider_stream(schema, events or response_events(answer))
        actions = [router.response_body(c, i == len(chunks) - 1) for i, c in enumerate(chunks)]
        body = b"".join(a.body or b"" for a in actions if isinstance(a, Continue))
        return body, actions
    head = router.response_headers(
        {":status": "200", **FROM_UPSTREAM, "content-type": "application/json"}, False, host
    )
    assert isinstance(head, Continue) and head.response_body_mode is None
    raw = provider_json(schema, answer)
    done = router.response_body(raw, True)
    assert isinstance(done, Continue)
    return (raw if done.body is None else done.body), [done]


async def _wait(pending: Any) -> Any:
    return await pending


def client_answer(protocol: str, body: bytes, stream: bool) -> CanonicalResponse:
    codec = get_codec(protocol)
    if not stream:
        return codec.decode_response(body)
    decoder = codec.stream_decoder()
    events = [e for _, evs in decoder.feed(body) + decoder.finish() for e in evs]
    return aggregate_events(events)


def text_of(response: CanonicalResponse) -> str:
    return "".join(p.text for p in response.content if isinstance(p, TextPart))


# -- stages used by the tests -------------------------------------------------------


class Shout(Stage):
    """Upper-cases answer text; edits the request's text in place."""

    name = "shout"

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> None:
        part = request.messages[-1].content[0]
        assert isinstance(part, TextPart)
        part.text += " [edited]"  # the natural, in-place way

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter:
        return _Upper()


class _Upper(AnswerFilter):
    name = "shout"

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        if not any(isinstance(e, TextDelta) for e in events):
            return None
        return Emit([TextDelta(e.text.upper()) if isinstance(e, TextDelta) else e for e in events])


@pytest.mark.parametrize(("protocol", "instance"), PAIRS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_rewriting_stage_is_honoured_on_every_path(
    protocol: str, instance: str, stream: bool
) -> None:
    app = make_app(Shout())
    body, _ = run(app, protocol, instance, stream=stream)
    assert text_of(client_answer(protocol, body, stream)) == "THE ANSWER IS HERE"


@pytest.mark.parametrize(("protocol", "instance"), PAIRS[:4])
def test_a_request_edited_in_place_reaches_the_provider(protocol: str, instance: str) -> None:
    app = make_app(Shout())
    router = Processors(app).router()
    headers, payload = client_request(protocol, instance, False)
    router.request_headers(headers, False)
    action = router.request_body(payload, True)
    assert isinstance(action, Continue) and action.body is not None
    assert b"hello [edited]" in action.body


@pytest.mark.parametrize(("protocol", "instance"), PAIRS[:4])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_without_a_change_same_protocol_bytes_pass_through(
    protocol: str, instance: str, stream: bool
) -> None:
    app = make_app(_Reader())
    body, _ = run(app, protocol, instance, stream=stream)
    schema = SCHEMA[instance]
    expected = (
        provider_json(schema)
        if not stream
        else b"".join(provider_stream(schema, response_events(ANSWER)))
    )
    if not stream or protocol in ("openai-chat", "anthropic"):
        # (Gemini and Responses streams re-frame some events even without a stage.)
        assert body == expected
    assert text_of(client_answer(protocol, body, stream)) == "the answer is here"


class _Reader(Stage):
    name = "reader"

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter:
        return AnswerFilter()


# -- answering and refusing ------------------------------------------------------------


class Answers(Stage):
    name = "answers"

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> Respond:
        return Respond(
            CanonicalResponse(
                id="proxy-1",
                model=request.model,
                content=[TextPart("answered by the proxy")],
                finish_reason="stop",
                usage=Usage(),
            )
        )


@pytest.mark.parametrize("protocol", ["openai-chat", "anthropic", "gemini", "openai-responses"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_stage_answers_in_the_clients_dialect(protocol: str, stream: bool) -> None:
    reply, _ = run(make_app(Answers()), protocol, "openai", stream=stream)
    assert isinstance(reply, Reply) and reply.status == 200
    expected_type = get_codec(protocol).stream_content_type if stream else "application/json"
    assert reply.headers["content-type"] == expected_type
    assert text_of(client_answer(protocol, reply.body, stream)) == "answered by the proxy"


class AsyncRefuses(Stage):
    name = "refuses"

    async def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> Reject:  # type: ignore[override]
        await asyncio.sleep(0)
        return Reject(PermissionDenied("not today", code="nope"))


def test_an_async_stage_refuses_in_the_clients_dialect() -> None:
    reply, _ = run(make_app(AsyncRefuses()), "anthropic", "openai", stream=False)
    assert isinstance(reply, Reply) and reply.status == 403
    error = json.loads(reply.body)
    assert error["type"] == "error" and error["error"]["message"] == "not today"


# -- holding, flushing, ending early ---------------------------------------------------


class HoldAll(Stage):
    """Holds every text delta until the content is over."""

    name = "hold"

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter:
        return _Hold()


class _Hold(AnswerFilter):
    name = "hold"

    def __init__(self) -> None:
        self.held: list[str] = []

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        if not any(isinstance(e, TextDelta) for e in events):
            return None
        self.held += [e.text for e in events if isinstance(e, TextDelta)]
        return Emit([e for e in events if not isinstance(e, TextDelta)])

    def on_flush(self) -> Emit | None:
        if not self.held:
            return None
        text, self.held = "".join(self.held), []
        return Emit([TextDelta(f"<{text}>")])


STREAM_EVENTS: list[StreamEvent] = [
    *response_events(ANSWER)[:1],
    TextDelta("one "),
    TextDelta("two "),
    TextDelta("three"),
    Finish("stop"),
    *response_events(ANSWER)[-2:],
]


@pytest.mark.parametrize(("protocol", "instance"), PAIRS)
def test_held_events_are_released_before_the_end(protocol: str, instance: str) -> None:
    body, _ = run(make_app(HoldAll()), protocol, instance, stream=True, events=STREAM_EVENTS)
    answer = client_answer(protocol, body, True)
    assert text_of(answer) == "<one two three>"
    assert answer.finish_reason == "stop"


@pytest.mark.parametrize(("protocol", "instance"), PAIRS)
def test_order_later_stages_see_what_earlier_ones_emitted(protocol: str, instance: str) -> None:
    body, _ = run(
        make_app(HoldAll(), Shout()), protocol, instance, stream=True, events=STREAM_EVENTS
    )
    assert text_of(client_answer(protocol, body, True)) == "<ONE TWO THREE>"
    body, _ = run(
        make_app(Shout(), HoldAll()), protocol, instance, stream=True, events=STREAM_EVENTS
    )
    assert text_of(client_answer(protocol, body, True)) == "<ONE TWO THREE>"


class CutAfter(Stage):
    """Ends the answer at the second text delta (a loop breaker would)."""

    name = "cut"

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter:
        return _Cut()


class _Cut(AnswerFilter):
    name = "cut"

    def __init__(self) -> None:
        self.seen = 0

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        for i, event in enumerate(events):
            if isinstance(event, TextDelta):
                self.seen += 1
                if self.seen == 2:
                    return Emit(list(events[:i]), end=EndAnswer("length", note="[cut]"))
        return None


@pytest.mark.parametrize(("protocol", "instance"), PAIRS)
def test_ending_early_closes_the_stream_and_cancels_the_upstream(
    protocol: str, instance: str
) -> None:
    body, actions = run(make_app(CutAfter()), protocol, instance, stream=True, events=STREAM_EVENTS)
    answer = client_answer(protocol, body, True)
    assert text_of(answer) == "one [cut]"
    assert answer.finish_reason == "length"
    assert answer.usage is not None  # usage so far (estimated)
    # The chunk that carries the end tells Envoy the answer is complete (Envoy then
    # resets the upstream request); later chunks send nothing.
    ends = [i for i, a in enumerate(actions) if isinstance(a, Continue) and a.stream_end]
    assert ends and ends[0] < len(actions) - 1
    assert all(not a.body for a in actions[ends[0] + 1 :] if isinstance(a, Continue))


@pytest.mark.parametrize(("protocol", "instance"), PAIRS)
def test_ending_early_in_a_whole_answer(protocol: str, instance: str) -> None:
    answer = CanonicalResponse(
        id="r", model="m-1", content=[TextPart("x")], finish_reason="stop", usage=Usage(1, 1)
    )
    app = make_app(CutAfter(), Shout())
    body, _ = run(app, protocol, instance, stream=False, answer=answer)
    # One text part is one delta: nothing is cut, but the later stage still runs.
    assert text_of(client_answer(protocol, body, False)) == "X"


class Broken(Stage):
    name = "broken"

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter:
        return _Raises()


class _Raises(AnswerFilter):
    name = "broken"

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        if any(isinstance(e, TextDelta) for e in events):
            raise RuntimeError("bug")
        return None


def test_a_failing_stage_fails_closed_in_a_stream() -> None:
    app = make_app(Broken())
    router = Processors(app).router()
    headers, payload = client_request("openai-chat", "openai", True)
    router.request_headers(headers, False)
    router.request_body(payload, True)
    router.response_headers(
        {":status": "200", **FROM_UPSTREAM, "content-type": "text/event-stream"},
        False,
        {"instance": "openai", "schema": "openai-chat"},
    )
    chunks = provider_stream("openai-chat", STREAM_EVENTS)
    sent = b""
    for i, chunk in enumerate(chunks):
        try:
            action = router.response_body(chunk, i == len(chunks) - 1)
        except Exception as exc:  # the servicer turns this into internal_error
            action = router.internal_error("response_body", exc)
        assert isinstance(action, Continue)
        sent += action.body or b""
        if action.stream_end:
            break  # the client's stream ends here: Envoy stops reading the provider
    else:
        pytest.fail("the stream did not end when the stage failed")
    assert i < len(chunks) - 1
    assert b"one" not in sent and b"internal_error" in sent


# -- the tool-call gate -----------------------------------------------------------------


class NoRm(Stage):
    name = "no-rm"

    def __init__(self, error: bool = False) -> None:
        self.error = error

    def tool_check(self, ctx: RequestContext, request: CanonicalRequest) -> ToolCheck:
        return _NoRm(self.error)


class _NoRm:
    name = "no-rm"

    def __init__(self, error: bool) -> None:
        self.error = error

    def check(self, call: ToolCallPart) -> ToolVerdict | None:
        if "rm -rf" in call.arguments:
            error = PermissionDenied("no rm", code="blocked") if self.error else None
            return Block("rm is not allowed here", error=error)
        if "SECRET" in call.arguments:
            return Rewrite(call.arguments.replace("SECRET", "[hidden]"))
        return None


def tool_events(*commands: str) -> list[StreamEvent]:
    events: list[StreamEvent] = [*response_events(ANSWER)[:1], TextDelta("Running it.")]
    for i, command in enumerate(commands):
        arguments = json.dumps({"command": command})
        events += [
            ToolCallStart(index=i, id=f"call_{i}", name="Bash"),
            ToolCallDelta(index=i, arguments=arguments[:5]),
            ToolCallDelta(index=i, arguments=arguments[5:]),
        ]
    return [*events, Finish("tool_calls"), *response_events(ANSWER)[-2:]]


def calls_of(answer: CanonicalResponse) -> list[ToolCallPart]:
    return [p for p in answer.content if isinstance(p, ToolCallPart)]


@pytest.mark.parametrize(("protocol", "instance"), PAIRS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_blocked_tool_call_becomes_a_note_and_a_plain_stop(
    protocol: str, instance: str, stream: bool
) -> None:
    events = tool_events("ls", "rm -rf /")
    answer = aggregate_events(events)
    body, _ = run(make_app(NoRm()), protocol, instance, stream=stream, events=events, answer=answer)
    got = client_answer(protocol, body, stream)
    assert calls_of(got) == []
    assert "rm is not allowed here" in text_of(got)
    assert "The other 1 tool call(s)" in text_of(got)
    assert text_of(got).startswith("Running it.")
    assert got.finish_reason == "stop"


@pytest.mark.parametrize(("protocol", "instance"), PAIRS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_allowed_and_rewritten_tool_calls_arrive_whole(
    protocol: str, instance: str, stream: bool
) -> None:
    events = tool_events("ls -la", "echo SECRET")
    answer = aggregate_events(events)
    body, _ = run(make_app(NoRm()), protocol, instance, stream=stream, events=events, answer=answer)
    got = client_answer(protocol, body, stream)
    calls = calls_of(got)
    assert [json.loads(c.arguments)["command"] for c in calls] == ["ls -la", "echo [hidden]"]
    assert got.finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_error_action_refuses_in_dialect(stream: bool) -> None:
    events = tool_events("rm -rf ~")
    answer = aggregate_events(events)
    body, _ = run(
        make_app(NoRm(error=True)),
        "anthropic",
        "openai",
        stream=stream,
        events=events,
        answer=answer,
    )
    assert b"no rm" in body and b"rm -rf" not in body
    if not stream:
        assert json.loads(body)["type"] == "error"


def anthropic_stream_is_well_formed(body: bytes) -> None:
    """Every delta belongs to a block that was started and not yet stopped."""
    open_blocks: set[int] = set()
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = next((line[5:] for line in block.split(b"\n") if line.startswith(b"data:")), None)
        if data is None:
            continue
        event = json.loads(data)
        kind = event["type"]
        if kind == "content_block_start":
            assert event["index"] not in open_blocks
            open_blocks.add(event["index"])
        elif kind == "content_block_delta":
            assert event["index"] in open_blocks, event
        elif kind == "content_block_stop":
            open_blocks.remove(event["index"])
    assert not open_blocks


def default_safety_app(*extra: Stage) -> App:
    """The default safety stages (redaction, commands) and ``extra``, before routing."""
    app = App(build_config({"backends": BACKENDS, "metrics": {"enabled": False}}))
    *stages, routing = app.pipeline.stages
    app.pipeline = Pipeline([*stages, *extra, routing])
    return app


@pytest.mark.parametrize(("protocol", "instance"), PAIRS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_held_text_goes_out_before_held_tool_calls(
    protocol: str, instance: str, stream: bool
) -> None:
    """Redaction holds "it." (it could still grow), the gate holds the call: order is kept."""
    events = tool_events("ls -la")
    answer = aggregate_events(events)
    body, _ = run(
        default_safety_app(), protocol, instance, stream=stream, events=events, answer=answer
    )
    got = client_answer(protocol, body, stream)
    assert [type(p).__name__ for p in got.content] == ["TextPart", "ToolCallPart"]
    assert text_of(got) == "Running it."
    if stream and protocol == "anthropic":
        anthropic_stream_is_well_formed(body)


def test_a_whole_answer_keeps_its_tool_calls_source_fields() -> None:
    """Held and checked tool calls keep what events do not carry (a replay token)."""
    from extproc.pipeline import AnswerChain, ToolCallGate

    call = ToolCallPart(id="c1", name="Bash", arguments='{"command":"ls"}', extra={"sig": "x"})
    answer = CanonicalResponse(
        id="r", model="m", content=[TextPart("ok"), call], finish_reason="tool_calls"
    )
    final, failure = AnswerChain([ToolCallGate([])]).whole(answer)
    assert failure is None and final is not answer  # the gate held (changed) it
    [kept] = [p for p in final.content if isinstance(p, ToolCallPart)]
    assert kept.extra == {"sig": "x"} and kept.arguments == call.arguments
