"""The OpenAI Chat Completions codec: golden vectors, bad input, and a round-trip property.

Golden vectors live in ``golden/openai_chat/*.json``; their expected values were written from
WIRE_FORMATS.md §1 and §5 (not pasted from the codec's output). Every face is checked:
request decode/encode, response decode/encode, stream decode (whole and split at every byte)
and encode (re-encoded and passed through), error decode/encode.
"""

from __future__ import annotations

import copy
import json
import string
from collections.abc import Iterable
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from extproc.canonical import (
    CanonicalError,
    CanonicalRequest,
    CanonicalResponse,
    Envelope,
    Finish,
    Message,
    ReasoningPart,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    UsageReport,
)
from extproc.canonical.aggregate import aggregate_events, response_events
from extproc.canonical.events import ToolCallStart
from extproc.codecs import get_codec
from extproc.codecs.base import RequestMeta, ResponseContext
from extproc.codecs.openai_chat import DecodeError, OpenAIChatCodec
from extproc.errors import InvalidRequest
from tests.codecs.conftest import PROPERTY_SETTINGS, golden_params, load_golden

CODEC = OpenAIChatCodec()
META = RequestMeta(path="/v1/chat/completions")
GOLDEN = load_golden("openai_chat")
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
        "client_with_usage",
        "client_without_usage",
        "passthrough_tail",
    },
}

SDK_FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter", "function_call"}

Decoded = list[tuple[bytes, list[StreamEvent]]]


# --------------------------------------------------------------------------------------------
# Helpers


def to_json(value: bytes) -> Any:
    return json.loads(value)


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def events_from(groups: list[list[dict[str, Any]]]) -> list[list[StreamEvent]]:
    return [msgspec.convert(group, list[StreamEvent]) for group in groups]


def decode_stream(chunks: Iterable[bytes]) -> Decoded:
    decoder = CODEC.stream_decoder()
    out: Decoded = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out + decoder.finish()


def comparable(decoded: Decoded) -> list[tuple[bytes, Any]]:
    return [(raw, builtins(events)) for raw, events in decoded]


def is_comment_block(block: bytes) -> bool:
    return all(line.startswith(b":") for line in block.splitlines() if line)


def is_usage_block(block: bytes) -> bool:
    """A data event that only carries the include_usage report (``choices: []``)."""
    if not block.startswith(b"data: {"):
        return False
    data = to_json(block[len(b"data: ") :])
    return data.get("choices") == [] and data.get("usage") is not None


def client_payloads(stream: bytes) -> list[Any]:
    """Split a Chat Completions client stream into payloads, checking its framing (§1.4)."""
    if not stream:
        return []
    assert stream.endswith(b"\n\n"), stream[-40:]
    payloads: list[Any] = []
    for block in stream[:-2].split(b"\n\n"):
        assert block.startswith(b"data: "), block[:40]
        assert b"\n" not in block and b"\r" not in block, "one data line per event, no event:"
        payload = block[len(b"data: ") :]
        payloads.append("[DONE]" if payload == b"[DONE]" else to_json(payload))
    return payloads


def check_chunks_parse_in_sdk(payloads: list[Any]) -> None:
    for payload in payloads:
        if isinstance(payload, dict) and "error" not in payload:
            ChatCompletionChunk.model_validate(payload)


def error_body(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


# --------------------------------------------------------------------------------------------
# The golden files themselves


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
def test_golden_response_wire_parses_in_sdk(vector: dict[str, Any]) -> None:
    if vector["wire"]["choices"][0]["finish_reason"] in SDK_FINISH_REASONS:
        ChatCompletion.model_validate(vector["wire"])  # (compat servers may send others)
    ChatCompletion.model_validate(vector["reencoded"])
    response = msgspec.convert(vector["canonical"], CanonicalResponse)
    assert builtins(response) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_golden_stream_transcript_parses_in_sdk(vector: dict[str, Any]) -> None:
    payloads = client_payloads(
        b"".join(b for b in map(str.encode, vector["transcript"]) if not is_comment_block(b))
    )
    check_chunks_parse_in_sdk(payloads)
    check_chunks_parse_in_sdk(vector["client_with_usage"])
    check_chunks_parse_in_sdk(vector["client_without_usage"])


# --------------------------------------------------------------------------------------------
# Requests


def test_registry_serves_the_codec() -> None:
    codec = get_codec("openai-chat")
    assert isinstance(codec, OpenAIChatCodec)
    assert codec.name == "openai-chat"
    assert codec.stream_content_type == "text/event-stream"


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_request_decode(vector: dict[str, Any]) -> None:
    request = CODEC.decode_request(copy.deepcopy(vector["wire"]), META)
    assert builtins(request) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_request_encode(vector: dict[str, Any]) -> None:
    request = msgspec.convert(vector["canonical"], CanonicalRequest)
    encoded_ = CODEC.encode_request(request, request.model)
    path, body = encoded_.path, encoded_.body
    assert path == "/chat/completions"
    assert to_json(body) == vector["reencoded"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_request_round_trip_through_the_envelope(vector: dict[str, Any]) -> None:
    """Decode, cross Envoy as JSON inside an Envelope, re-encode for the same protocol."""
    request = CODEC.decode_request(copy.deepcopy(vector["wire"]), META)
    wire = msgspec.json.encode(Envelope(request=request, request_id="req-0001"))
    crossed = msgspec.json.decode(wire, type=Envelope).request
    assert crossed == request
    encoded_ = CODEC.encode_request(crossed, crossed.model)
    _, body = encoded_.path, encoded_.body
    assert to_json(body) == vector["reencoded"]


def test_request_encode_for_another_protocols_request() -> None:
    """A canonical request from another protocol: extras and opaque shapes are not sent."""
    vector = GOLDEN["request_newer_shapes_kept_verbatim"]
    request = msgspec.convert(vector["canonical"], CanonicalRequest)
    request.protocol = "anthropic-messages"
    request.hints = {}  # hints describe an openai-chat client's wire form; none here
    encoded_ = CODEC.encode_request(request, "o4-mini-2025-04-16")
    _, body = encoded_.path, encoded_.body
    assert to_json(body) == {
        "model": "o4-mini-2025-04-16",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Transcribe, then check the log file."}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "I can read the log."}]},
            {"role": "user", "content": "What time is it on the server?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_T1m3N0w000000001",
                        "type": "function",
                        "function": {"name": "get_server_time", "arguments": ""},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_T1m3N0w000000001",
                "content": "2026-01-01T12:00:00Z",
            },
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_server_time",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "max_tokens": 4096,
        "reasoning_effort": "minimal",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    encoded_ = CODEC.encode_request(request, "m", max_tokens_field="max_completion_tokens")
    _, body = encoded_.path, encoded_.body
    assert to_json(body)["max_completion_tokens"] == 4096


def test_request_encode_hints_and_passthrough() -> None:
    request = CanonicalRequest(
        protocol="gemini",
        model="gemini-2.5-flash",
        messages=[Message(role="user", content=[TextPart("hi")], plain=True)],
        stop=["END"],
        max_output_tokens=64,
        hints={"stop_form": "string"},
        passthrough={"top_k": 5},
    )
    encoded_ = CODEC.encode_request(request, "gpt-4.1", max_tokens_field="max_completion_tokens")
    _, body = encoded_.path, encoded_.body
    # stop_form describes an openai-chat client's own wire form; it means nothing here.
    assert to_json(body) == {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "hi"}],
        "stop": ["END"],
        "max_completion_tokens": 64,
        "top_k": 5,
    }


# -- bad input -------------------------------------------------------------------------------

USER = {"role": "user", "content": "Hello"}
CALL = {
    "id": "call_0000000000000001",
    "type": "function",
    "function": {"name": "f", "arguments": "{}"},
}


def body_with(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4.1", "messages": [USER]}
    for key, value in fields.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


_DROP = object()

BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("model missing", body_with(model=_DROP), "model"),
    ("model not a string", body_with(model=4), "model"),
    ("model empty", body_with(model=""), "model"),
    ("model null", body_with(model=None), "model"),
    ("messages missing", body_with(messages=_DROP), "messages"),
    ("messages empty", body_with(messages=[]), "messages"),
    ("messages a string", body_with(messages="Hello"), "messages"),
    ("messages an object", body_with(messages=USER), "messages"),
    ("message not an object", body_with(messages=[USER, "Hello"]), "messages[1]"),
    ("message null", body_with(messages=[None]), "messages[0]"),
    ("unknown role", body_with(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
    ("role missing", body_with(messages=[{"content": "x"}]), "messages[0].role"),
    ("role not a string", body_with(messages=[{"role": 1, "content": "x"}]), "messages[0].role"),
    (
        "tool message without tool_call_id",
        body_with(
            messages=[
                USER,
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "content": "42"},
            ]
        ),
        "messages[2].tool_call_id",
    ),
    (
        "tool_call_id not a string",
        body_with(messages=[{"role": "tool", "tool_call_id": 7, "content": "42"}]),
        "messages[0].tool_call_id",
    ),
    ("user content null", body_with(messages=[{"role": "user", "content": None}]), "messages[0]"),
    ("user content a number", body_with(messages=[{"role": "user", "content": 3}]), "messages[0]"),
    (
        "content part not an object",
        body_with(messages=[{"role": "user", "content": ["Hello"]}]),
        "messages[0]",
    ),
    (
        "image part without url",
        body_with(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        "messages[0]",
    ),
    (
        "tool_calls not an array",
        body_with(messages=[{"role": "assistant", "content": None, "tool_calls": CALL}]),
        "messages[0]",
    ),
    (
        "tool call without function",
        body_with(
            messages=[{"role": "assistant", "content": None, "tool_calls": [{"id": "call_1"}]}]
        ),
        "messages[0].tool_calls[0]",
    ),
    (
        "tool call name not a string",
        body_with(
            messages=[
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": 1}}],
                }
            ]
        ),
        "messages[0].tool_calls[0]",
    ),
    ("temperature a string", body_with(temperature="hot"), "temperature"),
    ("temperature a bool", body_with(temperature=True), "temperature"),
    ("top_p a list", body_with(top_p=[1]), "top_p"),
    ("presence_penalty a string", body_with(presence_penalty="0.5"), "presence_penalty"),
    ("frequency_penalty an object", body_with(frequency_penalty={}), "frequency_penalty"),
    ("max_tokens a string", body_with(max_tokens="100"), "max_tokens"),
    ("max_tokens a fraction", body_with(max_tokens=10.5), "max_tokens"),
    ("max_tokens a bool", body_with(max_tokens=True), "max_tokens"),
    (
        "max_completion_tokens a string",
        body_with(max_completion_tokens="x"),
        "max_completion_tokens",
    ),
    ("seed a string", body_with(seed="42"), "seed"),
    ("stop a number", body_with(stop=5), "stop"),
    ("stop with a number", body_with(stop=["END", 5]), "stop"),
    ("stop an object", body_with(stop={"a": "b"}), "stop"),
    ("tools a string", body_with(tools="lookup_tide"), "tools"),
    ("tools an object", body_with(tools={"type": "function"}), "tools"),
    ("tool not an object", body_with(tools=["lookup_tide"]), "tools[0]"),
    ("function tool without function", body_with(tools=[{"type": "function"}]), "tools[0]"),
    (
        "function tool name not a string",
        body_with(tools=[{"type": "function", "function": {"name": 3}}]),
        "tools[0]",
    ),
    ("tool_choice an unknown mode", body_with(tool_choice="sometimes"), "tool_choice"),
    ("tool_choice a number", body_with(tool_choice=1), "tool_choice"),
    ("tool_choice a bool", body_with(tool_choice=True), "tool_choice"),
    ("tool_choice a list", body_with(tool_choice=["auto"]), "tool_choice"),
    ("parallel_tool_calls a string", body_with(parallel_tool_calls="yes"), "parallel_tool_calls"),
    ("stream a string", body_with(stream="true"), "stream"),
    ("stream_options a bool", body_with(stream=True, stream_options=True), "stream_options"),
    ("stream_options a list", body_with(stream=True, stream_options=[]), "stream_options"),
    ("reasoning_effort a number", body_with(reasoning_effort=1), "reasoning_effort"),
    ("user a number", body_with(user=12345), "user"),
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


def test_request_accepts_integral_floats_for_integer_fields() -> None:
    request = CODEC.decode_request(body_with(max_tokens=100.0, seed=7.0), META)
    assert request.max_output_tokens == 100
    assert request.seed == 7


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


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "response"))
def test_response_round_trip(vector: dict[str, Any]) -> None:
    response = CODEC.decode_response(json.dumps(vector["wire"]).encode())
    body = CODEC.encode_response(response, ResponseContext(vector["request_model"]))
    assert to_json(body) == vector["reencoded"]
    ChatCompletion.model_validate_json(body)


def test_response_encode_fills_missing_id_and_model() -> None:
    response = CanonicalResponse(id="", model="", created=1767225600, content=[TextPart("ok")])
    body = to_json(CODEC.encode_response(response, ResponseContext("gpt-4.1")))
    assert body["model"] == "gpt-4.1"
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in body


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502</html>",
        b"[]",
        b'{"object": "chat.completion"}',
        b'{"choices": {}}',
        b'{"choices": [5]}',
        b'{"choices": [{"message": "hello"}]}',
        b'{"choices": [{"message": {"tool_calls": {"id": "call_1"}}}]}',
        b'{"choices": [{"message": {"tool_calls": ["call_1"]}}]}',
        b'{"choices": [{"message": {"tool_calls": [{"id": "c", "function": "f"}]}}]}',
    ],
)
def test_response_decode_rejects_malformed_answers(body: bytes) -> None:
    # DecodeError is a ValueError: the router turns it into a 502 for the client.
    with pytest.raises(DecodeError):
        CODEC.decode_response(body)
    assert issubclass(DecodeError, ValueError)


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


def test_error_decode_quotes_at_most_a_snippet_of_a_long_page() -> None:
    page = b"<html>" + "é".encode() * 500 + b"</html>"
    error = CODEC.decode_error(502, page, None)
    assert error.message.startswith("upstream answered HTTP 502: <html>")
    assert len(error.message) < 250


# --------------------------------------------------------------------------------------------
# Streams


def transcript_bytes(vector: dict[str, Any]) -> bytes:
    return "".join(vector["transcript"]).encode()


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_decode(vector: dict[str, Any]) -> None:
    decoded = decode_stream([transcript_bytes(vector)])
    assert [builtins(events) for _, events in decoded] == vector["events"]
    blocks = [b.encode() for b in vector["transcript"] if not is_comment_block(b.encode())]
    assert [raw for raw, _ in decoded] == blocks


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_decode_split_at_every_byte(vector: dict[str, Any]) -> None:
    data = transcript_bytes(vector)
    whole = comparable(decode_stream([data]))
    for cut in range(len(data) + 1):
        assert comparable(decode_stream([data[:cut], data[cut:]])) == whole, cut
    one_byte_chunks = [data[i : i + 1] for i in range(len(data))]
    assert comparable(decode_stream(one_byte_chunks)) == whole


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_aggregate(vector: dict[str, Any]) -> None:
    events = [e for group in events_from(vector["events"]) for e in group]
    assert builtins(aggregate_events(events)) == vector["aggregated"]


@pytest.mark.parametrize("include_usage", [True, False], ids=["with_usage", "without_usage"])
@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_encode(vector: dict[str, Any], include_usage: bool) -> None:
    """Re-encoding (the cross-protocol path): the encoder's own chunks."""
    encoder = CODEC.stream_encoder(
        ResponseContext(vector["request_model"], include_usage=include_usage)
    )
    out = b"".join(encoder.encode(group) for group in events_from(vector["events"]))
    out += encoder.finish()
    payloads = client_payloads(out)
    expected = vector["client_with_usage" if include_usage else "client_without_usage"]
    assert payloads == expected
    check_chunks_parse_in_sdk(payloads)


@pytest.mark.parametrize("include_usage", [True, False], ids=["with_usage", "without_usage"])
@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_pass_through(vector: dict[str, Any], include_usage: bool) -> None:
    """Same protocol, nothing changed: raw events go out byte for byte, as translate.py does,
    except the usage chunk when the client did not ask for it (the proxy always asks)."""
    encoder = CODEC.stream_encoder(
        ResponseContext(vector["request_model"], include_usage=include_usage)
    )
    out: list[bytes] = []
    for raw, events in decode_stream([transcript_bytes(vector)]):
        if encoder.can_pass_through(events):
            encoder.observe(events)
            out.append(raw)
        else:
            out.append(encoder.encode(events))
    tail = encoder.finish()
    blocks = [b.encode() for b in vector["transcript"]]
    kept = [
        b for b in blocks if not is_comment_block(b) and (include_usage or not is_usage_block(b))
    ]
    assert b"".join(out) == b"".join(kept)
    assert client_payloads(tail) == vector["passthrough_tail"]


def test_stream_usage_on_the_finish_chunk_is_hidden_from_clients_that_did_not_ask() -> None:
    """Some servers attach usage to the finish chunk instead of a separate one."""
    head = '"id":"chatcmpl-Us1","object":"chat.completion.chunk","created":1767226100,"model":"m"'
    transcript = (
        f'data: {{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":"Hi"}},'
        '"finish_reason":null}]}\n\n'
        f'data: {{{head},"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}],'
        '"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n'
        "data: [DONE]\n\n"
    ).encode()
    decoded = decode_stream([transcript])
    assert [type(e) for e in decoded[1][1]] == [Finish, UsageReport]
    encoder = CODEC.stream_encoder(ResponseContext("m", include_usage=False))
    out = b""
    for raw, events in decoded:
        if encoder.can_pass_through(events):
            encoder.observe(events)
            out += raw
        else:
            out += encoder.encode(events)
    out += encoder.finish()
    payloads = client_payloads(out)
    assert payloads[1] == {
        "id": "chatcmpl-Us1",
        "object": "chat.completion.chunk",
        "created": 1767226100,
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
    }
    assert payloads[-1] == "[DONE]"
    assert not any(isinstance(p, dict) and p.get("usage") for p in payloads)


def test_stream_decoder_accepts_interleaved_tool_call_indexes() -> None:
    def chunk(calls: list[dict[str, Any]]) -> str:
        payload = {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": calls}}]}
        return f"data: {json.dumps(payload)}\n\n"

    transcript = "".join(
        [
            chunk([{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"a'}}]),
            chunk([{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": ""}}]),
            chunk([{"index": 1, "function": {"arguments": '{"b":2}'}}]),
            chunk([{"index": 0, "function": {"arguments": '":1}'}}]),
            "data: [DONE]\n\n",
        ]
    ).encode()
    events = [e for _, group in decode_stream([transcript]) for e in group]
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.id, s.name) for s in starts] == [(0, "call_a", "f"), (1, "call_b", "g")]
    deltas = [(e.index, e.arguments) for e in events if isinstance(e, ToolCallDelta)]
    assert deltas == [(0, '{"a'), (1, '{"b":2}'), (0, '":1}')]
    response = aggregate_events(events)
    assert [builtins(p) for p in response.content] == [
        {"type": "tool_call", "id": "call_a", "name": "f", "arguments": '{"a":1}'},
        {"type": "tool_call", "id": "call_b", "name": "g", "arguments": '{"b":2}'},
    ]


def test_stream_decoder_ignores_other_choices_and_reports_bad_json() -> None:
    transcript = (
        b'data: {"id":"c","choices":[{"index":1,"delta":{"content":"other"}},'
        b'{"index":0,"delta":{"content":"mine"}}]}\n\n'
        b"data: {not json}\n\n"
    )
    decoded = decode_stream([transcript])
    assert [e for e in decoded[0][1] if isinstance(e, TextDelta)] == [TextDelta("mine")]
    (error,) = decoded[1][1]
    assert builtins(error)["type"] == "error"
    assert builtins(error)["error"]["status"] == 502


def test_stream_decoder_flushes_a_last_event_without_blank_line() -> None:
    decoded = decode_stream([b'data: {"id":"c","choices":[]}\n\ndata: [DONE]'])
    # The raw bytes get the blank line the provider left out (pass-through safety).
    assert decoded[-1] == (b"data: [DONE]\n\n", [StreamEnd()])


def test_stream_encoder_for_an_answer_that_arrived_whole() -> None:
    """The router streams a non-streamed answer to a streaming client via response_events."""
    vector = GOLDEN["response_reasoning_content_compat"]
    response = msgspec.convert(vector["canonical"], CanonicalResponse)
    assert isinstance(response.content[0], ReasoningPart)
    encoder = CODEC.stream_encoder(ResponseContext("reasoner-fake-1", include_usage=True))
    payloads = client_payloads(encoder.encode(response_events(response)) + encoder.finish())
    check_chunks_parse_in_sdk(payloads)
    deltas = [p["choices"][0]["delta"] for p in payloads if isinstance(p, dict) and p["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "The table says 14:05 for Porto."},
        {"content": "High tide is at 14:05."},
        {},
    ]
    assert payloads[-2]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 12}
    assert payloads[-1] == "[DONE]"


# --------------------------------------------------------------------------------------------
# Round-trip property: a valid request decodes and re-encodes to itself (same protocol)

_KNOWN_TOP_LEVEL = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
    "user",
)

texts = st.text(st.characters(codec="utf-8"), max_size=24)
names = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=20)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(texts, json_values, max_size=3)
call_ids = st.text(string.ascii_letters + string.digits, min_size=8, max_size=24).map(
    lambda s: f"call_{s}"
)


@st.composite
def text_parts(draw: st.DrawFn) -> dict[str, Any]:
    return {"type": "text", "text": draw(texts)}


@st.composite
def user_parts(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "image", "data_image", "audio", "file"]))
    if kind == "text":
        return {"type": "text", "text": draw(texts)}
    if kind in ("image", "data_image"):
        url = (
            f"https://example.com/img/{draw(names)}.png"
            if kind == "image"
            else "data:image/jpeg;base64," + draw(st.text(string.ascii_letters + "+/", max_size=40))
        )
        image: dict[str, Any] = {"url": url}
        if draw(st.booleans()):
            image["detail"] = draw(st.sampled_from(["auto", "low", "high"]))
        return {"type": "image_url", "image_url": image}
    if kind == "audio":
        audio = {"data": draw(st.text(string.ascii_letters, max_size=16)), "format": "wav"}
        return {"type": "input_audio", "input_audio": audio}
    return {"type": "file", "file": {"file_id": f"file-{draw(names)}"}}


def content(parts: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    return texts | st.lists(parts, min_size=1, max_size=3)


@st.composite
def messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 5))):
        role = draw(st.sampled_from(["system", "developer", "user", "assistant"]))
        message: dict[str, Any] = {"role": role}
        if role == "assistant":
            assistant_parts = text_parts() | st.builds(
                lambda r: {"type": "refusal", "refusal": r}, texts
            )
            message["content"] = draw(st.none() | content(assistant_parts))
            calls = draw(
                st.lists(
                    st.builds(
                        lambda i, n, a: {
                            "id": i,
                            "type": "function",
                            "function": {"name": n, "arguments": a},
                        },
                        call_ids,
                        names,
                        st.just("") | json_objects.map(json.dumps),
                    ),
                    max_size=3,
                    unique_by=lambda c: c["id"],
                )
            )
            if calls:
                message["tool_calls"] = calls
            if draw(st.booleans()):
                message["refusal"] = draw(st.none() | texts)
        elif role == "user":
            message["content"] = draw(content(user_parts()))
        else:
            message["content"] = draw(content(text_parts()))
        if draw(st.booleans()):
            message["name"] = draw(names)
        out.append(message)
        for call in message.get("tool_calls", []):
            result: dict[str, Any] = {
                "role": "tool",
                "tool_call_id": call["id"],
                "content": draw(content(text_parts())),
            }
            if draw(st.integers(0, 4)) == 0:
                result["name"] = call["function"]["name"]
            out.append(result)
    return out


@st.composite
def tools(draw: st.DrawFn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        function: dict[str, Any] = {"name": name}
        if draw(st.booleans()):
            function["description"] = draw(texts)
        if draw(st.booleans()):
            properties = draw(st.dictionaries(names, st.just({"type": "string"}), max_size=3))
            function["parameters"] = {"type": "object", "properties": properties}
        if draw(st.booleans()):
            function["strict"] = draw(st.booleans())
        out.append({"type": "function", "function": function})
    if draw(st.integers(0, 3)) == 0:
        out.append({"type": "custom", "custom": {"name": draw(names)}})
    return out


@st.composite
def chat_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(names), "messages": draw(messages())}
    if draw(st.booleans()):
        body["tools"] = draw(tools())
        function_names = [t["function"]["name"] for t in body["tools"] if "function" in t]
        body["tool_choice"] = draw(
            st.sampled_from(["auto", "none", "required"])
            | st.sampled_from(function_names).map(
                lambda n: {"type": "function", "function": {"name": n}}
            )
            | st.just({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}})
        )
        if draw(st.booleans()):
            body["parallel_tool_calls"] = draw(st.booleans())
    numbers = st.floats(-2, 2, allow_nan=False) | st.integers(-2, 2)
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if draw(st.booleans()):
            body[key] = draw(numbers | st.none())
    if draw(st.booleans()):
        key = draw(st.sampled_from(["max_tokens", "max_completion_tokens"]))
        body[key] = draw(st.integers(1, 200_000))
    if draw(st.booleans()):
        body["stop"] = draw(texts | st.lists(texts, max_size=4))
    if draw(st.booleans()):
        body["seed"] = draw(st.integers(-(2**31), 2**31))
    if draw(st.booleans()):
        body["user"] = draw(names)
    if draw(st.booleans()):
        body["reasoning_effort"] = draw(
            st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh", "max"])
        )
    stream = draw(st.sampled_from([None, False, True]))
    if stream is not None:
        body["stream"] = stream
    if stream and draw(st.booleans()):
        options: dict[str, Any] = {}
        if draw(st.booleans()):
            options["include_usage"] = draw(st.booleans())
        if draw(st.booleans()):
            options["include_obfuscation"] = draw(st.booleans())
        body["stream_options"] = options
    extras = st.fixed_dictionaries(
        {},
        optional={
            "n": st.integers(1, 4),
            "logit_bias": st.dictionaries(
                st.integers(0, 100_000).map(str), st.integers(-100, 100), max_size=3
            ),
            "response_format": st.sampled_from(
                [{"type": "text"}, {"type": "json_object"}, {"type": "json_schema"}]
            ),
            "logprobs": st.booleans(),
            "top_logprobs": st.integers(0, 20),
            "service_tier": st.sampled_from(["auto", "default", "flex"]),
            "metadata": st.dictionaries(names, texts, max_size=3),
            "store": st.booleans(),
            "safety_identifier": names,
            "x_vendor_option": json_values,
        },
    )
    body.update(draw(extras))
    return body


def normalised(body: dict[str, Any]) -> dict[str, Any]:
    """What the same-protocol re-encoding of ``body`` must be (documented normalisations)."""
    expected = copy.deepcopy(body)
    for key in _KNOWN_TOP_LEVEL:
        if key in expected and expected[key] is None:
            del expected[key]  # a null known field means "not set"
    if expected.get("stream") is False:
        del expected["stream"]  # "stream": false is the default
    if expected.get("stream"):
        # The proxy always asks the upstream for usage and hides it again when not asked for.
        expected["stream_options"] = {**expected.get("stream_options", {}), "include_usage": True}
    return expected


@PROPERTY_SETTINGS
@given(chat_requests())
def test_request_round_trip_property(body: dict[str, Any]) -> None:
    wire = json.loads(json.dumps(body))
    request = CODEC.decode_request(copy.deepcopy(wire), META)
    crossed = msgspec.json.decode(msgspec.json.encode(request), type=CanonicalRequest)
    assert crossed == request
    encoded_ = CODEC.encode_request(crossed, crossed.model)
    encoded = encoded_.body
    assert to_json(encoded) == normalised(wire)


def test_same_protocol_keeps_unknown_fields_of_parts_calls_and_tools() -> None:
    """Provider extensions (cache_control, replay tokens, tool flags) survive openai -> openai."""
    wire = {
        "model": "gpt-fake-1",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "long doc", "cache_control": {"type": "ephemeral"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.org/a.png"},
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_fake_7",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                        "extra_content": {"google": {"thought_signature": "c2lnLWZha2U="}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_fake_7", "content": "ok"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object"}, "x-flag": 1},
                "cache_control": {"type": "ephemeral"},
            }
        ],
    }
    request = CODEC.decode_request(wire, META)
    encoded_ = CODEC.encode_request(request, "gpt-fake-1")
    _, body = encoded_.path, encoded_.body
    assert json.loads(body) == wire
    # Another protocol never receives them.
    request.protocol = "another-protocol"
    encoded_ = CODEC.encode_request(request, "gpt-fake-1")
    _, other = encoded_.path, encoded_.body
    text = other.decode()
    assert "cache_control" not in text and "extra_content" not in text and "x-flag" not in text


def test_text_only_content_from_other_protocols_goes_as_a_string() -> None:
    """llama.cpp's server (and older vLLM) reject arrays outside user messages."""
    from extproc.canonical import CanonicalRequest, Message, TextPart

    request = CanonicalRequest(
        protocol="anthropic",
        model="m",
        messages=[
            Message(role="system", content=[TextPart("You are terse."), TextPart("Be kind.")]),
            Message(role="user", content=[TextPart("hi")]),
            Message(role="assistant", content=[TextPart("hello")]),
        ],
    )
    sent = json.loads(CODEC.encode_request(request, "m").body)
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse.\n\nBe kind."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
