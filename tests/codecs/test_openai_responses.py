"""The OpenAI Responses codec: golden vectors, the official SDK, cross-protocol cases, bad input.

Golden vectors live in ``golden/openai_responses/*.json``; their expected values were written
from WIRE_FORMATS.md §2 and §5 and the mapping rules in the codec's docstrings (not pasted
from the codec's output). Every face is checked: request decode/encode, response
decode/encode, stream decode (whole and split at every byte) and encode (re-encoded and passed
through), error decode/encode. Client streams are fed to the official ``openai`` SDK (every
event validated against its ``ResponseStreamEvent`` types, and its stream accumulator run over
the bytes to rebuild the final Response).
"""

from __future__ import annotations

import copy
import json
import string
from collections.abc import Iterable
from typing import Any, cast

import httpx
import msgspec
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

import extproc.codecs
from extproc.canonical import (
    CanonicalError,
    CanonicalRequest,
    CanonicalResponse,
    Envelope,
    Finish,
    ImagePart,
    Message,
    OpaquePart,
    Reasoning,
    ReasoningDelta,
    ReasoningPart,
    ResponseFormat,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolChoice,
    ToolResultPart,
    Usage,
    UsageReport,
)
from extproc.canonical.aggregate import aggregate_events, response_events
from extproc.codecs.base import REQUIRES_PROTOCOL, ModelInfo, RequestMeta, ResponseContext
from extproc.codecs.openai_chat import DecodeError, OpenAIChatCodec
from extproc.codecs.openai_responses import OpenAIResponsesCodec
from extproc.errors import InvalidRequest
from tests.codecs.conftest import PROPERTY_SETTINGS, golden_params, load_golden

CODEC = OpenAIResponsesCodec()
CHAT = OpenAIChatCodec()
META = RequestMeta(path="/v1/responses")
GOLDEN = load_golden("openai_responses")
CHAT_GOLDEN = load_golden("openai_chat")
REQUIRED_KEYS: dict[str, set[str]] = {
    "request": {"description", "wire", "canonical", "reencoded"},
    "response": {"description", "request_model", "wire", "canonical", "reencoded"},
    "error": {"description", "status", "retry_after", "body", "canonical", "reencoded"},
    "stream": {
        "description",
        "request_model",
        "transcript",
        "events",
        "aggregated",
        "client",
        "passthrough_tail",
    },
}
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)

Decoded = list[tuple[bytes, list[StreamEvent]]]


# --------------------------------------------------------------------------------------------
# Helpers


def to_json(value: bytes) -> Any:
    return json.loads(value)


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def events_from(groups: list[list[dict[str, Any]]]) -> list[list[StreamEvent]]:
    return [msgspec.convert(group, list[StreamEvent]) for group in groups]


def flat(groups: Iterable[list[StreamEvent]]) -> list[StreamEvent]:
    return [event for group in groups for event in group]


def decode_stream(chunks: Iterable[bytes], codec: Any = CODEC) -> Decoded:
    decoder = codec.stream_decoder()
    out: Decoded = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    finished: Decoded = decoder.finish()
    return out + finished


def comparable(decoded: Decoded) -> list[tuple[bytes, Any]]:
    return [(raw, builtins(events)) for raw, events in decoded]


def client_events(stream: bytes) -> list[dict[str, Any]]:
    """Split a Responses client stream into payloads, checking its framing (§2.4)."""
    if not stream:
        return []
    assert stream.endswith(b"\n\n"), stream[-40:]
    payloads: list[dict[str, Any]] = []
    for block in stream[:-2].split(b"\n\n"):
        event_line, data_line = block.split(b"\n")
        assert event_line.startswith(b"event: ") and data_line.startswith(b"data: "), block[:60]
        payload = to_json(data_line[len(b"data: ") :])
        assert list(payload)[:2] == ["type", "sequence_number"]
        assert event_line[len(b"event: ") :].decode() == payload["type"]
        payloads.append(payload)
    return payloads


def check_sequence(payloads: list[dict[str, Any]]) -> None:
    """Gap-free sequence numbers from 0."""
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))


def check_events_in_sdk(payloads: list[dict[str, Any]]) -> None:
    """Every event parses strictly as the SDK's ``ResponseStreamEvent`` union."""
    for payload in payloads:
        STREAM_EVENT.validate_python(payload)


def sdk_stream(stream: bytes) -> Response:
    """Run the official SDK's stream accumulator over ``stream``; the final Response."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream)

    client = openai.OpenAI(
        api_key="sk-test",
        base_url="http://proxy.test/v1",
        max_retries=0,
        # (newer SDKs are built on httpx2 and still take an httpx client)
        http_client=cast(Any, httpx.Client(transport=httpx.MockTransport(handler))),
    )
    with client.responses.stream(model="m", input="hi") as events:
        seen = list(events)
        if seen and seen[-1].type == "response.incomplete":
            return seen[-1].response  # get_final_response() wants response.completed
        return events.get_final_response()


def answer_of(response: Response) -> dict[str, Any]:
    """What a client reads from a final Response: reasoning, text, calls."""
    reasoning = [
        "".join(s.text for s in item.summary)
        for item in response.output
        if item.type == "reasoning"
    ]
    calls = [
        (item.call_id, item.name, item.arguments)
        for item in response.output
        if item.type == "function_call"
    ]
    return {"reasoning": "".join(reasoning), "text": response.output_text, "calls": calls}


def canonical_answer(response: CanonicalResponse) -> dict[str, Any]:
    return {
        "reasoning": "".join(p.text for p in response.content if isinstance(p, ReasoningPart)),
        "text": "".join(p.text for p in response.content if isinstance(p, TextPart)),
        "calls": [
            (p.id, p.name, p.arguments or "{}")
            for p in response.content
            if isinstance(p, ToolCallPart)
        ],
    }


def encode_events(groups: list[list[StreamEvent]], model: str = "m") -> bytes:
    encoder = CODEC.stream_encoder(ResponseContext(model))
    return b"".join(encoder.encode(group) for group in groups) + encoder.finish()


def error_body(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


def transcript_bytes(vector: dict[str, Any]) -> bytes:
    return "".join(vector["transcript"]).encode()


# --------------------------------------------------------------------------------------------
# The golden files themselves and the codec's surface


def test_golden_files_are_well_formed() -> None:
    assert len(GOLDEN) >= 20
    for name, vector in GOLDEN.items():
        kind = vector.get("kind")
        assert kind in REQUIRED_KEYS, f"{name}: unknown kind {kind!r}"
        assert set(vector) - {"kind"} == REQUIRED_KEYS[kind], name
        assert name.startswith(f"{kind}_"), name


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_golden_request_canonical_is_the_omit_defaults_form(vector: dict[str, Any]) -> None:
    request = msgspec.convert(vector["canonical"], CanonicalRequest)
    assert builtins(request) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "response"))
def test_golden_response_reencoded_parses_in_sdk(vector: dict[str, Any]) -> None:
    # Strictly: the proxy's own answers carry every field the current SDK requires (the
    # provider examples follow the documented wire, which lacks e.g. cache_write_tokens).
    Response.model_validate(vector["reencoded"])
    response = msgspec.convert(vector["canonical"], CanonicalResponse)
    assert builtins(response) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_golden_stream_transcript_and_client_are_well_formed(vector: dict[str, Any]) -> None:
    check_sequence(client_events(transcript_bytes(vector)))  # framing of the provider's stream
    check_sequence(vector["client"])
    check_events_in_sdk(vector["client"])
    check_events_in_sdk(vector["passthrough_tail"])


def test_codec_surface(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(extproc.codecs.CODECS, "openai-responses", CODEC)
    assert extproc.codecs.get_codec("openai-responses") is CODEC
    assert CODEC.name == "openai-responses"
    assert CODEC.stream_content_type == "text/event-stream"
    assert CODEC.reports_input_early is False
    assert CODEC.client_status(529) == 503
    assert CODEC.client_status(429) == 429
    assert to_json(CODEC.encode_count_response(1873)) == {
        "object": "response.input_tokens",
        "input_tokens": 1873,
    }
    model = ModelInfo(id="gpt-5", owned_by="openai")
    assert to_json(CODEC.encode_model(model)) == {
        "id": "gpt-5",
        "object": "model",
        "created": 0,
        "owned_by": "openai",
    }
    models = to_json(CODEC.encode_model_list([model]))
    assert models["object"] == "list" and models["data"][0]["id"] == "gpt-5"


def test_count_request_takes_the_create_body() -> None:
    vector = GOLDEN["request_reference_stream"]
    counted = CODEC.decode_count_request(copy.deepcopy(vector["wire"]), META)
    assert builtins(counted) == vector["canonical"]


# --------------------------------------------------------------------------------------------
# Requests


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_request_decode(vector: dict[str, Any]) -> None:
    request = CODEC.decode_request(copy.deepcopy(vector["wire"]), META)
    assert builtins(request) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_request_encode(vector: dict[str, Any]) -> None:
    request = msgspec.convert(vector["canonical"], CanonicalRequest)
    encoded = CODEC.encode_request(request, request.model)
    assert encoded.path == "/responses"
    assert dict(encoded.headers) == {}
    assert to_json(encoded.body) == vector["reencoded"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_request_round_trip_through_the_envelope(vector: dict[str, Any]) -> None:
    """Decode, cross Envoy as JSON inside an Envelope, re-encode for the same protocol."""
    request = CODEC.decode_request(copy.deepcopy(vector["wire"]), META)
    wire = msgspec.json.encode(Envelope(request=request, request_id="req-0001"))
    crossed = msgspec.json.decode(wire, type=Envelope).request
    assert crossed == request
    assert to_json(CODEC.encode_request(crossed, crossed.model).body) == vector["reencoded"]


def test_server_side_state_needs_a_responses_backend() -> None:
    for field, value in (("previous_response_id", "resp_1"), ("conversation", "conv_1")):
        request = CODEC.decode_request({"model": "gpt-5", field: value}, META)
        assert request.hints[REQUIRES_PROTOCOL] == "openai-responses"
        assert request.messages == []
        assert to_json(CODEC.encode_request(request, "gpt-5").body) == {
            "model": "gpt-5",
            field: value,
            "store": False,
        }
    # A stored item referenced by id is server-side state too.
    reference = CODEC.decode_request(
        {"model": "gpt-5", "input": [{"type": "item_reference", "id": "msg_abc"}, {"id": "rs_1"}]},
        META,
    )
    assert reference.hints[REQUIRES_PROTOCOL] == "openai-responses"
    plain = CODEC.decode_request({"model": "gpt-5", "input": "hi"}, META)
    assert REQUIRES_PROTOCOL not in plain.hints


def test_chat_request_encoded_for_responses() -> None:
    """The Chat §1.2 reference request, decoded by the Chat codec, sent to a Responses backend."""
    vector = CHAT_GOLDEN["request_reference_stream_include_usage"]
    request = CHAT.decode_request(
        copy.deepcopy(vector["wire"]), RequestMeta(path="/v1/chat/completions")
    )
    body = to_json(CODEC.encode_request(request, "gpt-4.1").body)
    image = vector["wire"]["messages"][1]["content"][1]["image_url"]["url"]
    assert body == {
        "model": "gpt-4.1",
        # the leading developer message is the Responses system prompt
        "instructions": "Answer in one sentence.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this picture?"},
                    {"type": "input_image", "image_url": image, "detail": "auto"},
                ],
            },
            # the Chat tool call id is the call_id; no fc_ item id is invented
            {
                "type": "function_call",
                "call_id": "call_k3Q9fT2mWc8pLx01",
                "name": "lookup_tide",
                "arguments": '{"port":"Porto"}',
            },
            {
                "type": "function_call_output",
                "call_id": "call_k3Q9fT2mWc8pLx01",
                "output": '{"high":"14:05"}',
            },
        ],
        "tools": [
            {
                "type": "function",
                "name": "lookup_tide",
                "description": "Tide times for a port",
                "parameters": vector["wire"]["tools"][0]["function"]["parameters"],
                "strict": False,
            }
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "temperature": 0.7,
        "top_p": 1.0,
        "max_output_tokens": 800,
        "reasoning": {"effort": "low"},
        "store": False,
        "stream": True,
        # stop has no Responses field; stream_options.include_usage does not exist there
    }


def test_other_protocol_request_rules() -> None:
    """System prompts, replay tokens, tools, images, reasoning controls from another protocol."""
    request = CanonicalRequest(
        protocol="anthropic",
        model="claude-x",
        messages=[
            Message(role="system", content=[TextPart("Be brief.")]),
            Message(role="system", content=[TextPart("Use metric units.")]),
            Message(
                role="user",
                content=[
                    TextPart("Look:", extra={"cache_control": {"type": "ephemeral"}}),
                    ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
                ],
            ),
            Message(
                role="assistant",
                content=[
                    ReasoningPart(text="thinking", signature="sig-anthropic", provider="anthropic"),
                    ReasoningPart(text="", redacted="blob", provider="anthropic"),
                    TextPart("Calling."),
                    ToolCallPart(id="toolu_01", name="lookup", arguments=""),
                ],
            ),
            Message(
                role="user",
                content=[
                    ToolResultPart(tool_call_id="toolu_01", content=[TextPart("42")]),
                    TextPart("And now?"),
                ],
            ),
            Message(role="developer", content=[TextPart("Late note.")]),
            Message(role="user", content=[OpaquePart(protocol="anthropic", data={"type": "doc"})]),
        ],
        tools=[
            Tool(name="lookup", description="Looks up", extra={"cache_control": {}}),
            Tool(name="bash", opaque={"type": "bash_20250124", "name": "bash"}),
        ],
        tool_choice=ToolChoice(mode="tool", name="lookup"),
        stop=["END"],
        seed=7,
        top_k=40,
        reasoning=Reasoning(budget_tokens=6000, include_thoughts=True),
        response_format=ResponseFormat(type="json_object"),
        extra={"metadata": {"user_id": "u1"}, "store": True},
        passthrough={"service_tier": "flex"},
    )
    body = to_json(CODEC.encode_request(request, "gpt-5").body)
    assert body == {
        "model": "gpt-5",
        "instructions": "Be brief.\n\nUse metric units.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look:"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,iVBORw0KGgo=",
                        "detail": "auto",
                    },
                ],
            },
            # Anthropic thinking cannot be replayed to OpenAI: dropped
            {"role": "assistant", "content": [{"type": "output_text", "text": "Calling."}]},
            {"type": "function_call", "call_id": "toolu_01", "name": "lookup", "arguments": ""},
            # tool results inside a user message come first, as their own items
            {"type": "function_call_output", "call_id": "toolu_01", "output": "42"},
            {"role": "user", "content": [{"type": "input_text", "text": "And now?"}]},
            # a system prompt that is not leading stays where it was
            {"role": "developer", "content": [{"type": "input_text", "text": "Late note."}]},
            # the user message held only an Anthropic-only part: nothing is left to send
        ],
        "tools": [
            {
                "type": "function",
                "name": "lookup",
                "description": "Looks up",
                "parameters": {"type": "object", "properties": {}},
                "strict": False,
            }
        ],
        "tool_choice": {"type": "function", "name": "lookup"},
        "reasoning": {"effort": "medium", "summary": "auto"},
        "text": {"format": {"type": "json_object"}},
        "store": False,
        "service_tier": "flex",
    }


def test_replay_tokens_only_from_this_protocol() -> None:
    own = ReasoningPart(
        text="t", provider="openai-responses", extra={"id": "rs_1", "encrypted_content": "enc"}
    )
    without_id = ReasoningPart(text="t", provider="openai-responses")
    foreign = ReasoningPart(text="t", provider="gemini", extra={"id": "rs_2"})
    request = CanonicalRequest(
        protocol="openai-chat",
        model="m",
        messages=[Message(role="assistant", content=[own, without_id, foreign, TextPart("x")])],
    )
    body = to_json(CODEC.encode_request(request, "m").body)
    assert body["input"] == [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}]}
        | {"encrypted_content": "enc"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "x"}]},
    ]


def test_tiny_output_limits_of_other_protocols_are_raised_to_the_minimum() -> None:
    request = CanonicalRequest(
        protocol="anthropic",
        model="m",
        messages=[Message(role="user", content=[TextPart("quota?")])],
        max_output_tokens=1,
    )
    assert to_json(CODEC.encode_request(request, "m").body)["max_output_tokens"] == 16
    request.protocol = "openai-responses"  # a Responses client's own value is its business
    assert to_json(CODEC.encode_request(request, "m").body)["max_output_tokens"] == 1


def test_request_with_no_tools_left_sends_no_tool_choice() -> None:
    request = CanonicalRequest(
        protocol="openai-chat",
        model="m",
        messages=[Message(role="user", content=[TextPart("hi")], plain=True)],
        tools=[Tool(name="x", opaque={"type": "custom", "custom": {"name": "x"}})],
        tool_choice=ToolChoice(mode="required"),
        reasoning=Reasoning(enabled=False),
    )
    assert to_json(CODEC.encode_request(request, "m").body) == {
        "model": "m",
        "input": [{"role": "user", "content": "hi"}],
        "store": False,
    }


def test_responses_request_encoded_for_chat() -> None:
    """A Codex turn sent to a Chat backend: no replay tokens, no custom or hosted tools."""
    vector = GOLDEN["request_codex_agent_turn"]
    request = CODEC.decode_request(copy.deepcopy(vector["wire"]), META)
    body = to_json(CHAT.encode_request(request, "gpt-4.1").body)
    text = json.dumps(body)
    assert "encrypted" not in text and "gAAAA" not in text
    assert "apply_patch" not in text and "web_search" not in text
    assert "responses_field" not in text and "prompt_cache_key" not in text
    assert [t["function"]["name"] for t in body["tools"]] == ["shell"]
    assert body["messages"][0] == {"role": "system", "content": "You are Codex, a coding agent."}
    assert body["messages"][1]["role"] == "developer"
    call = next(m for m in body["messages"] if m.get("tool_calls"))
    assert call["tool_calls"][0]["id"] == "call_Sh3llRun01"
    result = next(m for m in body["messages"] if m["role"] == "tool")
    assert result == {"role": "tool", "tool_call_id": "call_Sh3llRun01", "content": "1 failed"}
    assert body["reasoning_effort"] == "high"


# -- bad input -------------------------------------------------------------------------------

_DROP = object()


def body_with(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-5", "input": "Hello"}
    for key, value in fields.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("model missing", body_with(model=_DROP), "model"),
    ("model not a string", body_with(model=5), "model"),
    ("model empty", body_with(model=" "), "model"),
    ("input missing", body_with(input=_DROP), "input"),
    ("input a number", body_with(input=3), "input"),
    ("input an object", body_with(input={"role": "user", "content": "x"}), "input"),
    ("item not an object", body_with(input=["Hello"]), "input[0]"),
    ("item without type or role", body_with(input=[{"content": "x"}]), "input[0].type"),
    ("item type not a string", body_with(input=[{"type": 5}]), "input[0].type"),
    ("unknown role", body_with(input=[{"role": "robot", "content": "x"}]), "input[0].role"),
    (
        "content a number",
        body_with(input=[{"role": "user", "content": 5}]),
        "input[0].content",
    ),
    ("content missing", body_with(input=[{"role": "user"}]), "input[0].content"),
    (
        "content part not an object",
        body_with(input=[{"role": "user", "content": ["x"]}]),
        "input[0].content[0]",
    ),
    (
        "text part without text",
        body_with(input=[{"role": "user", "content": [{"type": "input_text"}]}]),
        "input[0].content[0].text",
    ),
    (
        "function_call without call_id",
        body_with(input=[{"type": "function_call", "name": "f", "arguments": "{}"}]),
        "input[0].call_id",
    ),
    (
        "function_call without name",
        body_with(input=[{"type": "function_call", "call_id": "c", "arguments": "{}"}]),
        "input[0].name",
    ),
    (
        "function_call_output without call_id",
        body_with(input=[{"type": "function_call_output", "output": "x"}]),
        "input[0].call_id",
    ),
    (
        "function_call_output with an object output",
        body_with(input=[{"type": "function_call_output", "call_id": "c", "output": {"a": 1}}]),
        "input[0].output",
    ),
    ("instructions a list", body_with(instructions=["be brief"]), "instructions"),
    ("tools an object", body_with(tools={"type": "function"}), "tools"),
    ("tool not an object", body_with(tools=["f"]), "tools[0]"),
    ("function tool without name", body_with(tools=[{"type": "function"}]), "tools[0].name"),
    ("tool_choice unknown", body_with(tool_choice="sometimes"), "tool_choice"),
    ("tool_choice a number", body_with(tool_choice=1), "tool_choice"),
    ("parallel_tool_calls a string", body_with(parallel_tool_calls="yes"), "parallel_tool_calls"),
    ("max_output_tokens a string", body_with(max_output_tokens="100"), "max_output_tokens"),
    ("max_output_tokens a fraction", body_with(max_output_tokens=10.5), "max_output_tokens"),
    ("temperature a string", body_with(temperature="hot"), "temperature"),
    ("top_p a bool", body_with(top_p=True), "top_p"),
    ("stream a string", body_with(stream="true"), "stream"),
    ("user a number", body_with(user=5), "user"),
    ("reasoning a string", body_with(reasoning="high"), "reasoning"),
    ("reasoning.effort a number", body_with(reasoning={"effort": 3}), "reasoning.effort"),
    ("reasoning.summary a bool", body_with(reasoning={"summary": True}), "reasoning.summary"),
    ("text a string", body_with(text="json"), "text"),
]


@pytest.mark.parametrize(
    ("body", "param"), [pytest.param(b, p, id=name) for name, b, p in BAD_REQUESTS]
)
def test_request_decode_rejects_bad_input(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        CODEC.decode_request(body, META)
    error = caught.value
    assert error.status == 400
    assert error.error_type == "invalid_request_error"
    assert error.param == param
    assert error.message


def test_request_missing_model_has_its_own_code() -> None:
    with pytest.raises(InvalidRequest) as caught:
        CODEC.decode_request(body_with(model=_DROP), META)
    assert caught.value.code == "missing_model"


def test_request_accepts_integral_floats_and_lenient_arguments() -> None:
    request = CODEC.decode_request(
        body_with(
            max_output_tokens=100.0,
            input=[
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": {"a": 1}},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
        ),
        META,
    )
    assert request.max_output_tokens == 100
    call = request.messages[0].content[0]
    assert isinstance(call, ToolCallPart) and call.arguments == '{"a":1}'


# --------------------------------------------------------------------------------------------
# Responses


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "response"))
def test_response_decode(vector: dict[str, Any]) -> None:
    response = CODEC.decode_response(json.dumps(vector["wire"]).encode())
    assert builtins(response) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "response"))
def test_response_encode(vector: dict[str, Any]) -> None:
    response = msgspec.convert(vector["canonical"], CanonicalResponse)
    body = CODEC.encode_response(response, ResponseContext(vector["request_model"]))
    assert to_json(body) == vector["reencoded"]
    Response.model_validate_json(body)


def test_response_encode_for_another_protocols_answer() -> None:
    """Anthropic reasoning is shown (not replayable); empty args become {}; ids are filled."""
    response = CanonicalResponse(
        id="msg_01Abc",
        model="",
        created=1767225600,
        content=[
            ReasoningPart(text="Let me check.", signature="sig", provider="anthropic"),
            ReasoningPart(text="", redacted="opaque", provider="anthropic"),
            TextPart("Checking."),
            ToolCallPart(id="toolu_01", name="lookup", arguments=""),
        ],
        finish_reason="tool_calls",
        usage=Usage(input_tokens=20, output_tokens=10, cache_write_tokens=5),
    )
    body = to_json(CODEC.encode_response(response, ResponseContext("claude-x")))
    Response.model_validate(body)
    assert body["id"] == "resp_proxy_msg_01Abc"
    assert body["model"] == "claude-x"
    assert body["status"] == "completed"
    assert body["output"] == [
        {
            "type": "reasoning",
            "id": "rs_proxy_msg_01Abc_0",
            "summary": [{"type": "summary_text", "text": "Let me check."}],
        },
        {
            "type": "message",
            "id": "msg_proxy_msg_01Abc_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {
            "type": "function_call",
            "id": "fc_proxy_msg_01Abc_2",
            "call_id": "toolu_01",
            "name": "lookup",
            "arguments": "{}",
            "status": "completed",
        },
    ]
    assert body["usage"]["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 5}


def test_proxy_made_ids_come_back_without_replay_value() -> None:
    """A client replays the answer above: proxy ids are dropped, the reasoning is not replayed."""
    response = CanonicalResponse(
        id="chatcmpl-1",
        model="m",
        created=1,
        content=[ReasoningPart(text="hm"), TextPart("hi"), ToolCallPart(id="call_1", name="f")],
    )
    output = to_json(CODEC.encode_response(response, ResponseContext("m")))["output"]
    request = CODEC.decode_request(
        {
            "model": "m",
            "input": [
                *output,
                {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
            ],
        },
        META,
    )
    body = to_json(CODEC.encode_request(request, "m").body)
    assert "proxy" not in json.dumps(body)
    assert [item.get("type") for item in body["input"]] == [
        "message",
        "function_call",
        "function_call_output",
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502</html>",
        b"[]",
        b'{"object": "response"}',
        b'{"output": {}}',
        b'{"output": [5]}',
        b'{"output": [{"type": "function_call", "name": "f"}]}',
        b'{"output": [{"type": "message", "content": ["hi"]}]}',
    ],
)
def test_response_decode_rejects_malformed_answers(body: bytes) -> None:
    with pytest.raises(DecodeError):
        CODEC.decode_response(body)


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "error"))
def test_error_decode(vector: dict[str, Any]) -> None:
    error = CODEC.decode_error(vector["status"], error_body(vector["body"]), vector["retry_after"])
    assert builtins(error) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "error"))
def test_error_encode(vector: dict[str, Any]) -> None:
    error = msgspec.convert(vector["canonical"], CanonicalError)
    assert to_json(CODEC.encode_error(error)) == vector["reencoded"]


# --------------------------------------------------------------------------------------------
# Streams: decoding


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_decode(vector: dict[str, Any]) -> None:
    decoded = decode_stream([transcript_bytes(vector)])
    assert [builtins(events) for _, events in decoded] == vector["events"]
    assert [raw for raw, _ in decoded] == [b.encode() for b in vector["transcript"]]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_decode_split_at_every_byte(vector: dict[str, Any]) -> None:
    data = transcript_bytes(vector)
    whole = comparable(decode_stream([data]))
    for cut in range(len(data) + 1):
        assert comparable(decode_stream([data[:cut], data[cut:]])) == whole, cut
    one_byte_chunks = [data[i : i + 1] for i in range(len(data))]
    assert comparable(decode_stream(one_byte_chunks)) == whole


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_decode_with_crlf_line_ends(vector: dict[str, Any]) -> None:
    data = transcript_bytes(vector).replace(b"\n", b"\r\n")
    events = [builtins(events) for _, events in decode_stream([data])]
    assert events == vector["events"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_aggregate(vector: dict[str, Any]) -> None:
    events = flat(events_from(vector["events"]))
    assert builtins(aggregate_events(events)) == vector["aggregated"]


def test_stream_decoder_only_terminal_event_and_odd_inputs() -> None:
    """A server that sends only the terminal event; [DONE], bad JSON and unknown events."""
    response = {
        "id": "resp_x",
        "object": "response",
        "created_at": 1.5,
        "status": "completed",
        "model": "m",
        "output": [
            {"type": "reasoning", "id": "rs_x", "summary": [{"type": "summary_text", "text": "r"}]},
            {"type": "message", "id": "msg_x", "content": [{"type": "refusal", "refusal": "no"}]},
        ],
        "usage": None,
    }
    transcript = (
        "event: response.completed\ndata: "
        + json.dumps({"type": "response.completed", "sequence_number": 0, "response": response})
        + '\n\ndata: {"type":"response.mystery"}\n\ndata: [DONE]\n\ndata: {oops}\n\n'
    ).encode()
    decoded = decode_stream([transcript])
    assert builtins(decoded[0][1]) == [
        {
            "type": "start",
            "id": "resp_x",
            "model": "m",
            "created": 1,
            "protocol": "openai-responses",
        },
        {"type": "reasoning", "text": "r"},
        {"type": "text", "text": "no"},
        {"type": "finish", "reason": "stop"},
        {"type": "end"},
    ]
    assert decoded[1][1] == [] and decoded[2][1] == []
    (error,) = decoded[3][1]
    assert isinstance(error, StreamError) and error.error.status == 502


def test_stream_decoder_arguments_only_in_done_events() -> None:
    def event(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    transcript = "".join(
        [
            event({"type": "response.output_item.added", "output_index": 0, "item": {
                "type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f",
                "arguments": ""}}),
            event({"type": "response.function_call_arguments.done", "item_id": "fc_1",
                   "output_index": 0, "arguments": '{"a":1}'}),
            event({"type": "response.function_call_arguments.delta", "item_id": "fc_2",
                   "delta": '{"b"'}),
            event({"type": "response.output_text.done", "output_index": 3, "item_id": "msg_1",
                   "content_index": 0, "text": "whole"}),
            event({"type": "response.incomplete", "response": {
                "id": "resp_1", "incomplete_details": {"reason": "content_filter"}}}),
        ]
    ).encode()  # fmt: skip
    events = flat(events for _, events in decode_stream([transcript]))
    assert builtins(events) == [
        {"type": "tool_start", "index": 0, "id": "call_1", "name": "f"},
        {"type": "tool_delta", "index": 0, "arguments": '{"a":1}'},
        {"type": "tool_start", "index": 1, "id": "fc_2", "name": ""},
        {"type": "tool_delta", "index": 1, "arguments": '{"b"'},
        {"type": "text", "text": "whole"},
        {"type": "start", "id": "resp_1", "protocol": "openai-responses"},
        {"type": "finish", "reason": "content_filter"},
        {"type": "end"},
    ]


# --------------------------------------------------------------------------------------------
# Streams: encoding for Responses clients


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_encode(vector: dict[str, Any]) -> None:
    """Re-encoding (the cross-protocol path): the encoder's own events."""
    out = encode_events(events_from(vector["events"]), vector["request_model"])
    payloads = client_events(out)
    assert payloads == vector["client"]
    check_sequence(payloads)
    check_events_in_sdk(payloads)


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_encode_is_accepted_by_the_sdk(vector: dict[str, Any]) -> None:
    """The SDK's stream accumulator rebuilds the answer the events spell (or raises an error)."""
    out = encode_events(events_from(vector["events"]), vector["request_model"])
    if any(event["type"] == "error" for event in vector["client"]):
        with pytest.raises(openai.APIError):
            sdk_stream(out)
        return
    final = sdk_stream(out)
    expected = msgspec.convert(vector["aggregated"], CanonicalResponse)
    assert answer_of(final) == canonical_answer(expected)
    assert final.id.startswith("resp_")
    usage = expected.usage
    assert usage is not None and final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        usage.input_tokens,
        usage.output_tokens,
    )


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_pass_through(vector: dict[str, Any]) -> None:
    """Same protocol, nothing changed: raw events go out byte for byte, as translate.py does."""
    encoder = CODEC.stream_encoder(ResponseContext(vector["request_model"]))
    out: list[bytes] = []
    for raw, events in decode_stream([transcript_bytes(vector)]):
        assert encoder.can_pass_through(events)
        encoder.observe(events)
        out.append(raw)
    tail = encoder.finish()
    assert b"".join(out) == transcript_bytes(vector)
    assert client_events(tail) == vector["passthrough_tail"]
    check_sequence(client_events(b"".join(out) + tail))


def pass_through_then_change(
    vector: dict[str, Any], change_at: int, change: Any, *, with_raw: bool
) -> bytes:
    """Pass events through until group ``change_at``, which a stage changes; re-encode after."""
    encoder = CODEC.stream_encoder(ResponseContext(vector["request_model"]))
    out = b""
    for position, (raw, events) in enumerate(decode_stream([transcript_bytes(vector)])):
        changed = change(events) if position == change_at else events
        if changed is events and encoder.can_pass_through(events):
            if with_raw:
                encoder.observe(events, raw)
            else:
                encoder.observe(events)
            out += raw
        else:
            out += encoder.encode(changed)
    return out + encoder.finish()


def test_stream_changed_mid_call_keeps_the_providers_items() -> None:
    """A stage repairs the second call's arguments: the client keeps the provider's item ids."""
    vector = GOLDEN["stream_two_function_calls"]

    def repair(events: list[StreamEvent]) -> list[StreamEvent]:
        return [ToolCallDelta(index=1, arguments='{"city":"Lisbon"}')]

    out = pass_through_then_change(vector, 8, repair, with_raw=True)
    payloads = client_events(out)
    check_sequence(payloads)
    check_events_in_sdk(payloads)
    final = sdk_stream(out)
    assert [(i.id, i.call_id, i.arguments) for i in final.output if i.type == "function_call"] == [
        ("fc_01", "call_Q7r1Ns5Lp3", '{"port":"Porto"}'),
        ("fc_02", "call_M2v8Hk4Dd9", '{"city":"Lisbon"}'),
    ]
    assert final.usage is not None and final.usage.total_tokens == 268


def test_stream_changed_mid_message_keeps_the_providers_items() -> None:
    vector = GOLDEN["stream_hosted_web_search"]

    def redact(events: list[StreamEvent]) -> list[StreamEvent]:
        return [TextDelta("[redacted]")]

    out = pass_through_then_change(vector, 9, redact, with_raw=True)
    payloads = client_events(out)
    check_sequence(payloads)
    final = sdk_stream(out)
    assert final.output_text == "[redacted]"
    # The hosted tool item the canonical model cannot express is still in the final output.
    assert [(i.type, i.id) for i in final.output] == [
        ("web_search_call", "ws_w91"),
        ("message", "msg_w92"),
    ]


def test_stream_changed_without_raw_events_stays_well_formed() -> None:
    """Without the raw events the encoder infers the items: numbering and order stay right."""
    vector = GOLDEN["stream_text"]

    def redact(events: list[StreamEvent]) -> list[StreamEvent]:
        return [TextDelta(" is [redacted].")]

    payloads = client_events(pass_through_then_change(vector, 5, redact, with_raw=False))
    check_sequence(payloads)
    check_events_in_sdk(payloads)
    assert [p["type"] for p in payloads[5:]] == [
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert payloads[5]["output_index"] == 0 and payloads[5]["delta"] == " is [redacted]."
    assert payloads[-1]["response"]["output"][0]["content"][0]["text"] == "Low tide is [redacted]."


def test_stream_error_injected_after_pass_through() -> None:
    """A stage ends the stream (e.g. loop detection): error + response.failed, numbered on."""
    vector = GOLDEN["stream_text"]
    encoder = CODEC.stream_encoder(ResponseContext("m"))
    out = b""
    for raw, events in decode_stream([transcript_bytes(vector)])[:5]:
        encoder.observe(events, raw)
        out += raw
    out += encoder.error(CanonicalError(400, "loop detected", type="invalid_request_error"))
    assert encoder.finish() == b"" and encoder.error(CanonicalError(500, "again")) == b""
    payloads = client_events(out)
    check_sequence(payloads)
    check_events_in_sdk(payloads)
    assert payloads[5]["error"] == {
        "type": "invalid_request_error",
        "code": "invalid_request_error",
        "message": "loop detected",
        "param": None,
    }
    failed = payloads[6]["response"]
    assert failed["id"] == "resp_7f3a" and failed["status"] == "failed"
    assert failed["error"] == {"code": "invalid_prompt", "message": "loop detected"}
    assert failed["output"][0]["id"] == "msg_7f3b"  # learned from the raw events
    with pytest.raises(openai.APIError, match="loop detected"):
        sdk_stream(out)


@pytest.mark.parametrize(
    "name",
    [
        "stream_two_tool_calls",
        "stream_text_include_usage",
        "stream_reasoning_content_compat",
        "stream_tool_call_empty_arguments",
    ],
)
def test_chat_streams_reencoded_for_responses_clients(name: str) -> None:
    """Chat Completions provider streams, decoded by the Chat codec, for a Responses client."""
    vector = CHAT_GOLDEN[name]
    groups = [events for _, events in decode_stream(["".join(vector["transcript"]).encode()], CHAT)]
    out = encode_events(groups, vector["request_model"])
    payloads = client_events(out)
    check_sequence(payloads)
    check_events_in_sdk(payloads)
    final = sdk_stream(out)
    assert answer_of(final) == canonical_answer(aggregate_events(flat(groups)))
    assert final.status == "completed"


def test_stream_encoder_interleaved_tool_calls_and_text() -> None:
    """Deltas of several calls interleave; text after a call opens a new message item."""
    groups: list[list[StreamEvent]] = [
        [ToolCallStart(index=0, id="call_a", name="f"), ToolCallDelta(index=0, arguments='{"a')],
        [ToolCallStart(index=1, id="call_b", name="g")],
        [ToolCallDelta(index=1, arguments='{"b":2}'), ToolCallDelta(index=0, arguments='":1}')],
        [TextDelta("done")],
        [ToolCallDelta(index=2, arguments="{}")],  # a call never started: opened implicitly
        [Finish("tool_calls")],
        [UsageReport(Usage(input_tokens=5, output_tokens=3))],
        [StreamEnd()],
    ]
    out = encode_events(groups)
    payloads = client_events(out)
    check_sequence(payloads)
    check_events_in_sdk(payloads)
    assert payloads[0]["response"]["id"].startswith("resp_proxy_")  # no StreamStart came
    final = sdk_stream(out)
    assert answer_of(final)["calls"] == [
        ("call_a", "f", '{"a":1}'),
        ("call_b", "g", '{"b":2}'),
        ("call_2", "", "{}"),
    ]
    assert [item.type for item in final.output] == [
        "function_call",
        "function_call",
        "message",
        "function_call",
    ]
    assert final.output_text == "done"
    assert final.usage is not None and final.usage.total_tokens == 8


def test_stream_encoder_for_an_answer_that_arrived_whole() -> None:
    """The router streams a non-streamed answer to a streaming client via response_events."""
    vector = GOLDEN["response_text_reasoning"]
    response = msgspec.convert(vector["canonical"], CanonicalResponse)
    out = encode_events([response_events(response)])
    final = sdk_stream(out)
    assert answer_of(final) == canonical_answer(response)
    # stream events carry no provider: a replay token never reaches the client this way
    assert "gAAAA" not in out.decode()


def test_stream_encoder_ignores_signature_only_reasoning_and_maps_finishes() -> None:
    for reason, kind, details in (
        ("length", "response.incomplete", {"reason": "max_output_tokens"}),
        ("content_filter", "response.incomplete", {"reason": "content_filter"}),
        ("error", "response.failed", None),
        ("other", "response.completed", None),
    ):
        groups: list[list[StreamEvent]] = [
            [StreamStart(id="resp_1", model="m", created=1)],
            [ReasoningDelta(signature="sig"), ReasoningDelta(redacted="x")],
            [TextDelta("t")],
            [Finish(reason)],  # type: ignore[arg-type]
        ]
        payloads = client_events(encode_events(groups))
        check_events_in_sdk(payloads)
        assert all("reasoning" not in p["type"] for p in payloads)
        assert payloads[-1]["type"] == kind
        assert payloads[-1]["response"]["incomplete_details"] == details


# --------------------------------------------------------------------------------------------
# Round-trip property: a valid request decodes and re-encodes to itself (same protocol)

texts = st.text(st.characters(codec="utf-8"), max_size=16)
names = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=16)
hexes = st.text("0123456789abcdef", min_size=6, max_size=16)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def input_parts(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "image", "file"]))
    if kind == "text":
        return {"type": "input_text", "text": draw(texts)}
    if kind == "image":
        part = {"type": "input_image", "image_url": f"https://example.org/{draw(names)}.png"}
        if draw(st.booleans()):
            part["detail"] = draw(st.sampled_from(["auto", "low", "high"]))
        return part
    return {"type": "input_file", "file_id": f"file-{draw(names)}"}


@st.composite
def assistant_items(draw: st.DrawFn, calls: list[str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["reasoning", "message", "function_call", "web_search_call"]))
        if kind == "reasoning":
            summary = draw(
                st.lists(
                    st.builds(lambda t: {"type": "summary_text", "text": t}, texts), max_size=2
                )
            )
            item: dict[str, Any] = {"type": "reasoning", "id": f"rs_{draw(hexes)}"}
            item["summary"] = summary
            if draw(st.booleans()):
                item["encrypted_content"] = draw(names)
        elif kind == "message":
            content: Any = draw(
                texts
                | st.lists(
                    st.builds(
                        lambda t: {"type": "output_text", "text": t, "annotations": []}, texts
                    )
                    | st.builds(lambda t: {"type": "refusal", "refusal": t}, texts),
                    min_size=1,
                    max_size=2,
                )
            )
            item = {"role": "assistant", "content": content}
            if draw(st.booleans()):
                item = {"type": "message", "id": f"msg_{draw(hexes)}", "status": "completed"} | item
        elif kind == "function_call":
            call_id = f"call_{draw(hexes)}_{len(calls)}"
            calls.append(call_id)
            item = {
                "type": "function_call",
                "call_id": call_id,
                "name": draw(names),
                "arguments": draw(st.just("") | st.dictionaries(names, texts).map(json.dumps)),
            }
            if draw(st.booleans()):
                item["id"] = f"fc_{draw(hexes)}"
                item["status"] = "completed"
        else:
            item = {"type": "web_search_call", "id": f"ws_{draw(hexes)}", "status": "completed"}
        items.append(item)
    return items


@st.composite
def input_items(draw: st.DrawFn) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 4))):
        role = draw(st.sampled_from(["user", "system", "developer", "assistant"]))
        if role == "assistant":
            calls: list[str] = []
            items.extend(draw(assistant_items(calls)))
            for call_id in calls:
                output: Any = draw(
                    texts
                    | st.lists(
                        st.builds(lambda t: {"type": "input_text", "text": t}, texts),
                        min_size=1,
                        max_size=2,
                    )
                )
                items.append({"type": "function_call_output", "call_id": call_id, "output": output})
            continue
        parts = (
            input_parts()
            if role == "user"
            else st.builds(lambda t: {"type": "input_text", "text": t}, texts)
        )
        message: dict[str, Any] = {
            "role": role,
            "content": draw(texts | st.lists(parts, min_size=1, max_size=3)),
        }
        if draw(st.booleans()):
            message = {"type": "message", **message}
        items.append(message)
    return items


@st.composite
def responses_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(names), "input": draw(texts | input_items())}
    if draw(st.booleans()):
        body["instructions"] = draw(texts)
    if draw(st.booleans()):
        tools: list[dict[str, Any]] = []
        for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
            tool: dict[str, Any] = {"type": "function", "name": name}
            for key, value in (
                ("description", texts),
                ("parameters", st.just({"type": "object", "properties": {}})),
                ("strict", st.booleans()),
            ):
                if draw(st.booleans()):
                    tool[key] = draw(value)
            tools.append(tool)
        if draw(st.booleans()):
            tools.append({"type": "custom", "name": draw(names), "description": draw(texts)})
        body["tools"] = tools
        body["tool_choice"] = draw(
            st.sampled_from(["auto", "none", "required"])
            | st.sampled_from([t["name"] for t in tools]).map(
                lambda n: {"type": "function", "name": n}
            )
            | st.just({"type": "allowed_tools", "mode": "auto", "tools": []})
        )
    for key, strategy in (
        ("parallel_tool_calls", st.booleans()),
        ("temperature", st.floats(0, 2, allow_nan=False)),
        ("top_p", st.floats(0, 1, allow_nan=False)),
        ("max_output_tokens", st.integers(16, 100_000)),
        ("user", names),
        ("stream", st.booleans()),
        ("store", st.booleans()),
        ("include", st.just(["reasoning.encrypted_content"])),
        ("metadata", st.dictionaries(names, texts, max_size=2)),
        ("truncation", st.sampled_from(["auto", "disabled"])),
        ("x_vendor_option", json_values),
    ):
        if draw(st.booleans()):
            body[key] = draw(strategy)
    if draw(st.booleans()):
        reasoning: dict[str, Any] = {}
        if draw(st.booleans()):
            reasoning["effort"] = draw(st.sampled_from(["minimal", "low", "medium", "high"]))
        if draw(st.booleans()):
            reasoning["summary"] = draw(st.sampled_from(["auto", "concise", "detailed"]))
        body["reasoning"] = reasoning
    if draw(st.booleans()):
        text: dict[str, Any] = {}
        if draw(st.booleans()):
            text["format"] = draw(
                st.sampled_from([{"type": "text"}, {"type": "json_object"}])
                | st.builds(
                    lambda n, s: {"type": "json_schema", "name": n, "schema": {}, "strict": s},
                    names,
                    st.booleans(),
                )
            )
        if draw(st.booleans()):
            text["verbosity"] = draw(st.sampled_from(["low", "medium", "high"]))
        body["text"] = text
    return body


def normalised(body: dict[str, Any]) -> dict[str, Any]:
    """What the same-protocol re-encoding of ``body`` must be (documented normalisations)."""
    expected = copy.deepcopy(body)
    if expected.get("stream") is False:
        del expected["stream"]  # "stream": false is the default
    expected.setdefault("store", False)  # store is false unless the client said otherwise
    return expected


@PROPERTY_SETTINGS
@given(responses_requests())
def test_request_round_trip_property(body: dict[str, Any]) -> None:
    wire = json.loads(json.dumps(body))
    request = CODEC.decode_request(copy.deepcopy(wire), META)
    crossed = msgspec.json.decode(msgspec.json.encode(request), type=CanonicalRequest)
    assert crossed == request
    assert to_json(CODEC.encode_request(crossed, crossed.model).body) == normalised(wire)
