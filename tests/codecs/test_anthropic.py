"""The Anthropic Messages codec: golden vectors, bad input, SDK acceptance, round-trip property.

Golden vectors live in ``golden/anthropic/*.json``; their expected values were written from
WIRE_FORMATS.md §3 and §5 and docs/translation.md (not pasted from the codec's output). Every
face is checked: request decode/encode (same protocol and from an OpenAI Chat client), response
decode/encode, stream decode (whole and split at every byte), stream encode (re-encoded, passed
through, and from other protocols' events), errors. Client-facing output is fed to the official
``anthropic`` SDK, whose stream accumulator must rebuild the expected message.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import string
from collections.abc import Iterable
from typing import Any

import anthropic
import httpx2
import msgspec
import pytest
from anthropic.types import Message as SdkMessage
from anthropic.types import ModelInfo as SdkModelInfo
from hypothesis import given
from hypothesis import strategies as st

from extproc.canonical import (
    CanonicalError,
    CanonicalRequest,
    CanonicalResponse,
    Envelope,
    Finish,
    Message,
    ReasoningDelta,
    ReasoningPart,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    Usage,
    UsageReport,
)
from extproc.canonical.aggregate import aggregate_events, response_events
from extproc.codecs import CODECS, get_codec
from extproc.codecs.anthropic import AnthropicCodec, DecodeError
from extproc.codecs.base import ModelInfo, RequestMeta, ResponseContext
from extproc.codecs.openai_chat import OpenAIChatCodec
from extproc.errors import InvalidRequest
from tests.codecs.conftest import PROPERTY_SETTINGS, golden_params, load_golden

CODEC = AnthropicCodec()
GOLDEN = load_golden("anthropic")
REQUIRED_KEYS: dict[str, set[str]] = {
    "request": {"description", "headers", "wire", "canonical", "reencoded", "reencoded_headers"},
    "cross_request": {"description", "source", "model", "wire", "reencoded", "reencoded_headers"},
    "response": {
        "description",
        "request_model",
        "estimated_input_tokens",
        "wire",
        "canonical",
        "reencoded",
    },
    "error": {
        "description",
        "status",
        "retry_after",
        "body",
        "canonical",
        "reencoded",
        "client_status",
    },
    "stream": {
        "description",
        "request_model",
        "estimated_input_tokens",
        "transcript",
        "events",
        "aggregated",
        "client",
        "sdk_message",
        "passthrough_tail",
    },
    "stream_encode": {
        "description",
        "request_model",
        "estimated_input_tokens",
        "events",
        "client",
        "sdk_message",
    },
}

Decoded = list[tuple[bytes, list[StreamEvent]]]


# --------------------------------------------------------------------------------------------
# Helpers


def to_json(value: bytes) -> Any:
    return json.loads(value)


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def meta(headers: dict[str, str] | None = None) -> RequestMeta:
    return RequestMeta(path="/v1/messages", headers=headers or {})


def ctx(vector: dict[str, Any]) -> ResponseContext:
    return ResponseContext(
        vector["request_model"], estimated_input_tokens=vector["estimated_input_tokens"]
    )


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


def client_events(stream: bytes) -> list[dict[str, Any]]:
    """Split an Anthropic client stream, checking its framing: ``event:`` equal to the type."""
    if not stream:
        return []
    assert stream.endswith(b"\n\n"), stream[-40:]
    out: list[dict[str, Any]] = []
    for block in stream[:-2].split(b"\n\n"):
        lines = block.split(b"\n")
        assert len(lines) == 2, block
        assert lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), block
        name = lines[0][len(b"event: ") :].decode()
        data = to_json(lines[1][len(b"data: ") :])
        assert data["type"] == name, block
        out.append({"event": name, "data": data})
    return out


def sdk_client(handler: Any) -> anthropic.Anthropic:
    http = anthropic.DefaultHttpxClient(transport=httpx2.MockTransport(handler))
    return anthropic.Anthropic(api_key="sk-ant-fake", max_retries=0, http_client=http)


def project(message: Any) -> dict[str, Any]:
    """The parts of an SDK message the vectors pin down."""
    blocks: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text":
            blocks.append({"type": "text", "text": block.text})
        elif block.type == "thinking":
            blocks.append(
                {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
            )
        elif block.type == "redacted_thinking":
            blocks.append({"type": "redacted_thinking", "data": block.data})
        elif block.type == "tool_use":
            blocks.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
        else:
            blocks.append(block.to_dict())
    usage = message.usage
    projected_usage = {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.output_tokens_details is not None:
        projected_usage["output_tokens_details"] = usage.output_tokens_details.to_dict()
    return {
        "id": message.id,
        "model": message.model,
        "content": blocks,
        "stop_reason": message.stop_reason,
        "stop_sequence": message.stop_sequence,
        "usage": projected_usage,
    }


def sdk_stream_result(stream: bytes) -> dict[str, Any]:
    """What the official SDK's MessageStream accumulator makes of ``stream``."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=stream)

    client = sdk_client(handler)
    try:
        with client.messages.stream(
            model="m", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        ) as events:
            return project(events.get_final_message())
    except anthropic.APIStatusError as exc:
        return {"error": exc.type}


def error_body(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


# --------------------------------------------------------------------------------------------
# The golden files themselves and the codec's identity


def test_golden_files_are_well_formed() -> None:
    assert len(GOLDEN) >= 30
    for name, vector in GOLDEN.items():
        kind = vector.get("kind")
        assert kind in REQUIRED_KEYS, f"{name}: unknown kind {kind!r}"
        assert set(vector) - {"kind"} == REQUIRED_KEYS[kind], name
        assert name.startswith(f"{kind}_"), name


def test_codec_identity_and_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CODEC.name == "anthropic"
    assert CODEC.stream_content_type == "text/event-stream"
    assert CODEC.reports_input_early is True
    monkeypatch.setitem(CODECS, "anthropic", CODEC)
    assert get_codec("anthropic") is CODEC


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_golden_request_canonical_is_the_omit_defaults_form(vector: dict[str, Any]) -> None:
    request = msgspec.convert(vector["canonical"], CanonicalRequest)
    assert builtins(request) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "response"))
def test_golden_response_wire_parses_in_sdk(vector: dict[str, Any]) -> None:
    SdkMessage.model_validate(vector["wire"])
    SdkMessage.model_validate(vector["reencoded"])
    response = msgspec.convert(vector["canonical"], CanonicalResponse)
    assert builtins(response) == vector["canonical"]


# --------------------------------------------------------------------------------------------
# Requests


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_request_decode(vector: dict[str, Any]) -> None:
    request = CODEC.decode_request(copy.deepcopy(vector["wire"]), meta(vector["headers"]))
    assert builtins(request) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_request_encode(vector: dict[str, Any]) -> None:
    request = msgspec.convert(vector["canonical"], CanonicalRequest)
    encoded = CODEC.encode_request(request, request.model)
    assert encoded.path == "/messages"
    assert to_json(encoded.body) == vector["reencoded"]
    assert dict(encoded.headers) == vector["reencoded_headers"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_request_round_trip_through_the_envelope(vector: dict[str, Any]) -> None:
    """Decode, cross Envoy as JSON inside an Envelope, re-encode for the same protocol."""
    request = CODEC.decode_request(copy.deepcopy(vector["wire"]), meta(vector["headers"]))
    wire = msgspec.json.encode(Envelope(request=request, request_id="req-0001"))
    crossed = msgspec.json.decode(wire, type=Envelope).request
    assert crossed == request
    encoded = CODEC.encode_request(crossed, crossed.model)
    assert to_json(encoded.body) == vector["reencoded"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "cross_request"))
def test_request_from_an_openai_chat_client(vector: dict[str, Any]) -> None:
    assert vector["source"] == "openai-chat"
    request = OpenAIChatCodec().decode_request(
        copy.deepcopy(vector["wire"]), RequestMeta(path="/v1/chat/completions")
    )
    encoded = CODEC.encode_request(request, vector["model"], max_tokens_field="max_tokens")
    assert encoded.path == "/messages"
    assert to_json(encoded.body) == vector["reencoded"]
    assert dict(encoded.headers) == vector["reencoded_headers"]


def test_same_protocol_request_keeps_replay_tokens_and_cache_control() -> None:
    """The fidelity promises, spelled out: nothing an Anthropic client sent is lost."""
    wire = GOLDEN["request_claude_code_agent_turn"]["wire"]
    encoded = CODEC.encode_request(CODEC.decode_request(copy.deepcopy(wire), meta()), "m")
    text = encoded.body.decode()
    for token in (
        "ErUBCkYIBRgCIkB_sig2",  # a thinking signature
        "EmwKAhgBEgy3va3pzix_redacted",  # redacted thinking
        '"cache_control":{"type":"ephemeral"}',
        "web_search_20250305",  # a server tool
        '"type":"document"',  # an opaque block
        "clear_tool_uses_20250919",  # an unknown top-level field
    ):
        assert token in text, token


def test_other_protocols_never_get_anthropic_extras_or_replay_tokens() -> None:
    wire = GOLDEN["request_claude_code_agent_turn"]["wire"]
    request = CODEC.decode_request(copy.deepcopy(wire), meta({"anthropic-beta": "x"}))
    body = OpenAIChatCodec().encode_request(request, "gpt-4.1").body.decode()
    for token in ("cache_control", "ErUBCkYIBRgCIkB_sig2", "EmwKAhgB", "web_search_20250305"):
        assert token not in body, token
    # And the Anthropic encoder, for a request that came from elsewhere, drops them too.
    request.protocol = "openai-chat"
    request.hints = {}
    encoded = CODEC.encode_request(request, "claude-sonnet-4-5")
    text = encoded.body.decode()
    assert encoded.headers == {}
    for token in ("cache_control", "web_search", "clear_tool_uses", "thinking_type", "adaptive"):
        assert token not in text, token
    # Parts tagged with their own provider/protocol still belong to Anthropic: kept.
    for token in ("ErUBCkYIBRgCIkB_sig2", "EmwKAhgB", '"type":"document"'):
        assert token in text, token


def test_foreign_reasoning_history_is_dropped_and_anthropic_reasoning_kept() -> None:
    request = CanonicalRequest(
        protocol="gemini",
        model="gemini-2.5-pro",
        messages=[
            Message(role="user", content=[TextPart("Tide?")], plain=True),
            Message(
                role="assistant",
                content=[
                    ReasoningPart(
                        text="Gemini thought", signature="c2lnLWdlbWluaQ==", provider="gemini"
                    ),
                    ReasoningPart(text="Claude thought", signature="EqSig", provider="anthropic"),
                    ReasoningPart(text="unsigned", provider="anthropic"),
                    TextPart("Checking."),
                    ToolCallPart(id="call_0_0", name="lookup_tide", arguments='{"port":"Porto"}'),
                ],
            ),
            Message(
                role="tool",
                content=[ToolResultPart(tool_call_id="call_0_0", content=[TextPart("14:05")])],
            ),
        ],
    )
    body = to_json(CODEC.encode_request(request, "claude-sonnet-4-5").body)
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Claude thought", "signature": "EqSig"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_0_0", "name": "lookup_tide", "input": {"port": "Porto"}},
    ]
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "call_0_0",
                "content": [{"type": "text", "text": "14:05"}],
            }
        ],
    }


@pytest.mark.parametrize(
    ("reasoning", "max_tokens", "expected_thinking", "expected_max"),
    [
        ({"effort": "low"}, 4096, {"type": "enabled", "budget_tokens": 1024}, 4096),
        ({"effort": "medium"}, None, {"type": "enabled", "budget_tokens": 4096}, 8192),
        ({"effort": "high"}, None, {"type": "enabled", "budget_tokens": 16384}, 20480),
        ({"effort": "minimal"}, 1024, {"type": "enabled", "budget_tokens": 1024}, 5120),
        ({"effort": "xhigh"}, 64000, {"type": "enabled", "budget_tokens": 16384}, 64000),
        ({"effort": "none"}, None, {"type": "disabled"}, 8192),
        ({"enabled": False, "effort": "high"}, None, {"type": "disabled"}, 8192),
        ({"budget_tokens": 0}, None, {"type": "disabled"}, 8192),
        ({"budget_tokens": 500}, None, {"type": "enabled", "budget_tokens": 1024}, 8192),
        ({"budget_tokens": 10000}, 10000, {"type": "enabled", "budget_tokens": 10000}, 14096),
        (
            {"budget_tokens": -1, "enabled": True},
            None,
            {"type": "enabled", "budget_tokens": 4096},
            8192,
        ),
        ({"enabled": True}, None, {"type": "enabled", "budget_tokens": 4096}, 8192),
        ({"include_thoughts": True}, None, None, 8192),
        ({"summary": "auto"}, None, None, 8192),
    ],
)
def test_reasoning_controls_from_another_protocol(
    reasoning: dict[str, Any],
    max_tokens: int | None,
    expected_thinking: dict[str, Any] | None,
    expected_max: int,
) -> None:
    request = msgspec.convert(
        {
            "protocol": "gemini",
            "model": "g",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "reasoning": reasoning,
            **({"max_output_tokens": max_tokens} if max_tokens is not None else {}),
        },
        CanonicalRequest,
    )
    body = to_json(CODEC.encode_request(request, "claude-sonnet-4-5").body)
    assert body.get("thinking") == expected_thinking
    assert body["max_tokens"] == expected_max
    assert "output_config" not in body


def test_thinking_left_out_with_a_forced_tool_and_sampling_limited_when_on() -> None:
    base: dict[str, Any] = {
        "protocol": "openai-chat",
        "model": "o3",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "tools": [{"name": "f"}],
        "reasoning": {"effort": "low"},
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 5,
    }
    forced = msgspec.convert({**base, "tool_choice": {"mode": "required"}}, CanonicalRequest)
    body = to_json(CODEC.encode_request(forced, "c").body)
    assert "thinking" not in body
    assert body["tool_choice"] == {"type": "any"}
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.7, 0.8, 5)
    free = msgspec.convert({**base, "top_p": 0.97}, CanonicalRequest)
    body = to_json(CODEC.encode_request(free, "c").body)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert body["top_p"] == 0.97
    assert "temperature" not in body and "top_k" not in body


def test_thinking_kept_when_the_last_tool_call_carries_its_signed_thinking() -> None:
    request = msgspec.convert(
        {
            "protocol": "openai-responses",
            "model": "m",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Tide?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "reasoning",
                            "text": "t",
                            "signature": "EqS",
                            "provider": "anthropic",
                        },
                        {"type": "tool_call", "id": "toolu_1", "name": "f", "arguments": "{}"},
                    ],
                },
                {
                    "role": "tool",
                    "content": [{"type": "tool_result", "tool_call_id": "toolu_1"}],
                    "plain": True,
                },
            ],
            "reasoning": {"effort": "medium"},
        },
        CanonicalRequest,
    )
    body = to_json(CODEC.encode_request(request, "c").body)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": ""}
    ]


def test_cross_protocol_edge_cases_of_messages() -> None:
    request = msgspec.convert(
        {
            "protocol": "openai-chat",
            "model": "m",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": ""}], "plain": True},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}], "plain": True},
                {"role": "assistant", "content": [{"type": "text", "text": ""}], "plain": True},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "opaque",
                            "protocol": "openai-chat",
                            "data": {"type": "input_audio"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "image", "data": "AAAA", "media_type": "image/webp"}],
                },
            ],
            "tools": [{"name": "web", "opaque": {"type": "web_search"}}],
            "tool_choice": {"mode": "auto"},
            "parallel_tool_calls": False,
            "stop": [],
        },
        CanonicalRequest,
    )
    body = to_json(CODEC.encode_request(request, "claude").body)
    assert body == {
        "model": "claude",
        "max_tokens": 8192,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/webp", "data": "AAAA"},
                    }
                ],
            },
        ],
        "stop_sequences": [],
    }


def test_request_encode_rejects_a_non_base64_data_url() -> None:
    request = msgspec.convert(
        {
            "protocol": "openai-chat",
            "model": "m",
            "messages": [
                {"role": "user", "content": [{"type": "image", "url": "data:text/plain,hello"}]}
            ],
        },
        CanonicalRequest,
    )
    with pytest.raises(InvalidRequest) as caught:
        CODEC.encode_request(request, "claude")
    assert caught.value.status == 400


def test_passthrough_always_wins_and_max_tokens_field_is_ignored() -> None:
    request = CanonicalRequest(
        protocol="openai-chat",
        model="gpt",
        messages=[Message(role="user", content=[TextPart("hi")], plain=True)],
        max_output_tokens=64,
        passthrough={"top_k": 3, "service_tier": "standard_only"},
        hints={"max_tokens_field": "max_completion_tokens", "anthropic-beta": "x"},
    )
    encoded = CODEC.encode_request(request, "claude", max_tokens_field="max_completion_tokens")
    assert to_json(encoded.body) == {
        "model": "claude",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        "top_k": 3,
        "service_tier": "standard_only",
    }
    assert encoded.headers == {}  # hints of another protocol's client mean nothing here


@pytest.mark.parametrize(
    ("choice", "canonical", "parallel"),
    [
        ({"type": "auto"}, {"mode": "auto"}, None),
        ({"type": "any", "disable_parallel_tool_use": True}, {"mode": "required"}, False),
        ({"type": "tool", "name": "f"}, {"mode": "tool", "name": "f"}, None),
        ({"type": "none"}, {"mode": "none"}, None),
    ],
)
def test_tool_choice_forms(
    choice: dict[str, Any], canonical: dict[str, Any], parallel: bool | None
) -> None:
    body = {
        **body_with(),
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": choice,
    }
    request = CODEC.decode_request(copy.deepcopy(body), meta())
    assert builtins(request.tool_choice) == canonical
    assert request.parallel_tool_calls is parallel
    assert to_json(CODEC.encode_request(request, request.model).body) == body


def test_count_tokens_request_and_answer() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello"}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    }
    request = CODEC.decode_count_request(body, meta())
    assert request.max_output_tokens is None
    assert [m.role for m in request.messages] == ["system", "user"]
    assert to_json(CODEC.encode_count_response(2095)) == {"input_tokens": 2095}
    with pytest.raises(InvalidRequest):
        CODEC.decode_request(body, meta())  # a Messages request needs max_tokens


# -- bad input -------------------------------------------------------------------------------

USER = {"role": "user", "content": "Hello"}
_DROP = object()


def body_with(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [USER]}
    for key, value in fields.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


def with_content(content: Any, role: str = "user") -> dict[str, Any]:
    return body_with(messages=[{"role": role, "content": content}])


BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("model missing", body_with(model=_DROP), "model"),
    ("model not a string", body_with(model=4), "model"),
    ("model empty", body_with(model=" "), "model"),
    ("max_tokens missing", body_with(max_tokens=_DROP), "max_tokens"),
    ("max_tokens null", body_with(max_tokens=None), "max_tokens"),
    ("max_tokens a string", body_with(max_tokens="100"), "max_tokens"),
    ("max_tokens a fraction", body_with(max_tokens=10.5), "max_tokens"),
    ("max_tokens a bool", body_with(max_tokens=True), "max_tokens"),
    ("max_tokens zero", body_with(max_tokens=0), "max_tokens"),
    ("messages missing", body_with(messages=_DROP), "messages"),
    ("messages empty", body_with(messages=[]), "messages"),
    ("messages a string", body_with(messages="Hello"), "messages"),
    ("message not an object", body_with(messages=[USER, "Hello"]), "messages.1"),
    ("unknown role", body_with(messages=[{"role": "tool", "content": "x"}]), "messages.0.role"),
    ("role missing", body_with(messages=[{"content": "x"}]), "messages.0.role"),
    ("content missing", body_with(messages=[{"role": "user"}]), "messages.0.content"),
    ("content a number", with_content(3), "messages.0.content"),
    ("block not an object", with_content(["Hello"]), "messages.0.content.0"),
    ("block without type", with_content([{"text": "Hello"}]), "messages.0.content.0.type"),
    ("text not a string", with_content([{"type": "text", "text": 3}]), "messages.0.content.0.text"),
    ("image without source", with_content([{"type": "image"}]), "messages.0.content.0.source"),
    (
        "tool_use without id",
        with_content([{"type": "tool_use", "name": "f", "input": {}}], "assistant"),
        "messages.0.content.0.id",
    ),
    (
        "thinking not a string",
        with_content([{"type": "thinking", "thinking": None, "signature": "s"}], "assistant"),
        "messages.0.content.0.thinking",
    ),
    (
        "signature not a string",
        with_content([{"type": "thinking", "thinking": "t", "signature": 5}], "assistant"),
        "messages.0.content.0.signature",
    ),
    (
        "redacted_thinking without data",
        with_content([{"type": "redacted_thinking"}], "assistant"),
        "messages.0.content.0.data",
    ),
    (
        "tool_result without tool_use_id",
        with_content([{"type": "tool_result", "content": "x"}]),
        "messages.0.content.0.tool_use_id",
    ),
    (
        "tool_result content a number",
        with_content([{"type": "tool_result", "tool_use_id": "t", "content": 5}]),
        "messages.0.content.0.content",
    ),
    (
        "tool_result with a bad inner block",
        with_content([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text"}]}]),
        "messages.0.content.0.content.0.text",
    ),
    ("system a number", body_with(system=5), "system"),
    ("system block not text", body_with(system=[{"type": "image"}]), "system.0"),
    ("system text not a string", body_with(system=[{"type": "text", "text": 1}]), "system.0.text"),
    ("tools an object", body_with(tools={"name": "f"}), "tools"),
    ("tool not an object", body_with(tools=["f"]), "tools.0"),
    ("tool without name", body_with(tools=[{"input_schema": {}}]), "tools.0.name"),
    ("tool without input_schema", body_with(tools=[{"name": "f"}]), "tools.0.input_schema"),
    (
        "tool input_schema a list",
        body_with(tools=[{"name": "f", "input_schema": []}]),
        "tools.0.input_schema",
    ),
    (
        "tool description a number",
        body_with(tools=[{"name": "f", "input_schema": {}, "description": 1}]),
        "tools.0.description",
    ),
    ("tool_choice a string", body_with(tool_choice="auto"), "tool_choice"),
    ("temperature a string", body_with(temperature="hot"), "temperature"),
    ("temperature a bool", body_with(temperature=True), "temperature"),
    ("top_p a list", body_with(top_p=[1]), "top_p"),
    ("top_k a fraction", body_with(top_k=2.5), "top_k"),
    ("stop_sequences a string", body_with(stop_sequences="END"), "stop_sequences"),
    ("stop_sequences with a number", body_with(stop_sequences=["END", 5]), "stop_sequences"),
    ("metadata a string", body_with(metadata="u-1"), "metadata"),
    ("thinking a string", body_with(thinking="enabled"), "thinking"),
    (
        "thinking enabled without budget",
        body_with(thinking={"type": "enabled"}),
        "thinking.enabled.budget_tokens",
    ),
    ("output_config a list", body_with(output_config=[]), "output_config"),
    ("stream a string", body_with(stream="true"), "stream"),
]


@pytest.mark.parametrize(("body", "param"), [pytest.param(b, p, id=n) for n, b, p in BAD_REQUESTS])
def test_request_decode_rejects_bad_input(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        CODEC.decode_request(body, meta())
    error = caught.value
    assert error.status == 400
    assert error.error_type == "invalid_request_error"
    assert error.param == param
    assert error.message.startswith(f"{param}: ")


def test_request_accepts_integral_floats_and_unknown_blocks() -> None:
    body = body_with(
        max_tokens=100.0,
        messages=[{"role": "user", "content": [{"type": "container_upload", "file_id": "f1"}]}],
        thinking={"type": "between_tools"},
    )
    request = CODEC.decode_request(body, meta())
    assert request.max_output_tokens == 100
    assert builtins(request.messages[0].content) == [
        {
            "type": "opaque",
            "protocol": "anthropic",
            "data": {"type": "container_upload", "file_id": "f1"},
        }
    ]
    assert request.reasoning is None and request.extra["thinking"] == {"type": "between_tools"}
    assert to_json(CODEC.encode_request(request, request.model).body)["thinking"] == {
        "type": "between_tools"
    }


# --------------------------------------------------------------------------------------------
# Responses


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "response"))
def test_response_decode(vector: dict[str, Any]) -> None:
    response = CODEC.decode_response(json.dumps(vector["wire"]).encode())
    assert builtins(response) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "response"))
def test_response_encode(vector: dict[str, Any]) -> None:
    response = msgspec.convert(vector["canonical"], CanonicalResponse)
    body = CODEC.encode_response(response, ctx(vector))
    assert to_json(body) == vector["reencoded"]
    SdkMessage.model_validate_json(body)


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "response"))
def test_response_through_the_sdk(vector: dict[str, Any]) -> None:
    """The official client parses the answer it gets (non-streaming)."""
    body = CODEC.encode_response(
        CODEC.decode_response(json.dumps(vector["wire"]).encode()), ctx(vector)
    )

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=body)

    message = sdk_client(handler).messages.create(
        model="m", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.to_dict() == vector["reencoded"]


def test_response_encode_fills_id_model_usage_and_shows_foreign_reasoning() -> None:
    response = CanonicalResponse(
        id="",
        model="",
        content=[
            ReasoningPart(text="Gemini thinks.", signature="c2ln", provider="gemini"),
            ReasoningPart(redacted="opaque", provider="openai-responses"),
            TextPart(""),
            TextPart("Calling."),
            ToolCallPart(id="functions.f:0", name="f", arguments=""),
            ToolCallPart(id="call_2", name="g", arguments="[1, 2]"),
        ],
        finish_reason="stop",
    )
    body = to_json(
        CODEC.encode_response(response, ResponseContext("claude-x", estimated_input_tokens=77))
    )
    assert body["id"].startswith("msg_")
    assert body["model"] == "claude-x"
    assert body["content"] == [
        {"type": "thinking", "thinking": "Gemini thinks.", "signature": ""},
        {"type": "text", "text": "Calling."},
        {"type": "tool_use", "id": "functions_f_0", "name": "f", "input": {}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {"_raw_arguments": "[1, 2]"}},
    ]
    assert body["stop_reason"] == "tool_use"  # clients run tools on tool_use only
    assert body["usage"] == {
        "input_tokens": 77,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 0,
    }
    SdkMessage.model_validate(body)


@pytest.mark.parametrize(
    ("finish", "stop_sequence", "expected"),
    [
        ("stop", None, "end_turn"),
        ("stop", "END", "stop_sequence"),
        ("length", None, "max_tokens"),
        ("tool_calls", None, "tool_use"),
        ("content_filter", None, "refusal"),
        ("error", None, "end_turn"),
        ("other", None, "end_turn"),
        (None, None, "end_turn"),
    ],
)
def test_stop_reason_for_canonical_finishes(
    finish: Any, stop_sequence: str | None, expected: str
) -> None:
    response = CanonicalResponse(
        id="msg_1",
        model="m",
        content=[TextPart("x")],
        finish_reason=finish,
        stop_sequence=stop_sequence,
    )
    body = to_json(CODEC.encode_response(response, ResponseContext("m")))
    assert body["stop_reason"] == expected


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "other"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("a_reason_from_the_future", "other"),
    ],
)
def test_stop_reasons_from_the_provider(stop_reason: str, finish: str) -> None:
    wire = {"id": "msg_1", "model": "m", "content": [], "stop_reason": stop_reason, "usage": {}}
    response = CODEC.decode_response(json.dumps(wire).encode())
    assert response.finish_reason == finish
    # Whatever the provider said, an Anthropic client gets it back.
    assert (
        to_json(CODEC.encode_response(response, ResponseContext("m")))["stop_reason"] == stop_reason
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502</html>",
        b"[]",
        b'{"type": "message"}',
        b'{"content": {}}',
        b'{"content": ["text"]}',
        b'{"type": "error", "error": {"type": "api_error", "message": "boom"}}',
    ],
)
def test_response_decode_rejects_malformed_answers(body: bytes) -> None:
    # DecodeError is a ValueError: the router turns it into a 502 for the client.
    with pytest.raises(DecodeError):
        CODEC.decode_response(body)
    assert issubclass(DecodeError, ValueError)


# --------------------------------------------------------------------------------------------
# Errors, counts and models


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "error"))
def test_error_decode(vector: dict[str, Any]) -> None:
    error = CODEC.decode_error(vector["status"], error_body(vector["body"]), vector["retry_after"])
    assert builtins(error) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "error"))
def test_error_encode_and_client_status(vector: dict[str, Any]) -> None:
    error = msgspec.convert(vector["canonical"], CanonicalError)
    body = CODEC.encode_error(error)
    assert to_json(body) == vector["reencoded"]
    assert CODEC.client_status(vector["status"]) == vector["client_status"]


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (403, anthropic.PermissionDeniedError),
        (404, anthropic.NotFoundError),
        (413, anthropic.APIStatusError),
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (503, anthropic.OverloadedError),
        (504, anthropic.InternalServerError),
    ],
)
def test_errors_reach_the_sdk_as_its_own_exceptions(
    status: int, exception: type[anthropic.APIStatusError]
) -> None:
    error = CanonicalError(status, f"failure {status}", type="server_error")
    body = CODEC.encode_error(error)
    client_status = CODEC.client_status(status)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            client_status, headers={"content-type": "application/json"}, content=body
        )

    with pytest.raises(exception) as caught:
        sdk_client(handler).messages.create(
            model="m", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == client_status
    assert caught.value.body == to_json(body)


def test_error_decode_quotes_at_most_a_snippet_of_a_long_page() -> None:
    page = b"<html>" + "é".encode() * 500 + b"</html>"
    error = CODEC.decode_error(502, page, None)
    assert error.message.startswith("upstream answered HTTP 502: <html>")
    assert len(error.message) < 250


def test_proxy_errors_keep_anthropic_types() -> None:
    assert to_json(
        CODEC.encode_error(CanonicalError(400, "bad", type="invalid_request_error"))
    ) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad"},
    }
    # The proxy's own 404 (an OpenAI-style type) becomes Anthropic's not_found_error.
    assert (
        to_json(CODEC.encode_error(CanonicalError(404, "no", type="invalid_request_error")))[
            "error"
        ]["type"]
        == "not_found_error"
    )
    assert (
        to_json(CODEC.encode_error(CanonicalError(402, "pay", type="billing_error")))["error"][
            "type"
        ]
        == "billing_error"
    )
    assert (
        to_json(CODEC.encode_error(CanonicalError(418, "tea", type="weird")))["error"]["type"]
        == "invalid_request_error"
    )


def test_model_list_and_model_parse_in_the_sdk() -> None:
    models = [
        ModelInfo("claude-sonnet-4-5", "anthropic", "Claude Sonnet 4.5"),
        ModelInfo("gpt-4.1", "openai"),
    ]
    listing = to_json(CODEC.encode_model_list(models))
    assert listing["has_more"] is False
    assert (listing["first_id"], listing["last_id"]) == ("claude-sonnet-4-5", "gpt-4.1")
    parsed = [SdkModelInfo.model_validate(m) for m in listing["data"]]
    assert [(m.id, m.display_name, m.type) for m in parsed] == [
        ("claude-sonnet-4-5", "Claude Sonnet 4.5", "model"),
        ("gpt-4.1", "gpt-4.1", "model"),
    ]
    assert SdkModelInfo.model_validate_json(CODEC.encode_model(models[0])).id == "claude-sonnet-4-5"
    empty = to_json(CODEC.encode_model_list([]))
    assert empty == {"data": [], "has_more": False, "first_id": None, "last_id": None}

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200,
            headers={"content-type": "application/json"},
            content=CODEC.encode_model_list(models),
        )

    assert [m.id for m in sdk_client(handler).models.list()] == ["claude-sonnet-4-5", "gpt-4.1"]


# --------------------------------------------------------------------------------------------
# Streams from an Anthropic provider


def transcript_bytes(vector: dict[str, Any]) -> bytes:
    return "".join(vector["transcript"]).encode()


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
def test_stream_aggregate(vector: dict[str, Any]) -> None:
    events = [e for group in events_from(vector["events"]) for e in group]
    assert builtins(aggregate_events(events)) == vector["aggregated"]


def encode_groups(vector: dict[str, Any]) -> bytes:
    encoder = CODEC.stream_encoder(ctx(vector))
    out = b"".join(encoder.encode(group) for group in events_from(vector["events"]))
    return out + encoder.finish()


@pytest.mark.parametrize(
    "vector", golden_params(GOLDEN, "stream") + golden_params(GOLDEN, "stream_encode")
)
def test_stream_encode(vector: dict[str, Any]) -> None:
    """Re-encoding (the path for other protocols' streams, or events a stage changed)."""
    out = encode_groups(vector)
    assert client_events(out) == vector["client"]


@pytest.mark.parametrize(
    "vector", golden_params(GOLDEN, "stream") + golden_params(GOLDEN, "stream_encode")
)
def test_stream_encode_is_accepted_by_the_sdk(vector: dict[str, Any]) -> None:
    assert sdk_stream_result(encode_groups(vector)) == vector["sdk_message"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_pass_through(vector: dict[str, Any]) -> None:
    """Same protocol, nothing changed: raw events go out byte for byte, as translate.py does."""
    encoder = CODEC.stream_encoder(ctx(vector))
    out: list[bytes] = []
    for raw, events in decode_stream([transcript_bytes(vector)]):
        if encoder.can_pass_through(events):
            encoder.observe(events)
            out.append(raw)
        else:
            out.append(encoder.encode(events))
    tail = encoder.finish()
    assert b"".join(out) == transcript_bytes(vector)
    assert client_events(tail) == vector["passthrough_tail"]
    if vector["sdk_message"].get("error") is None:
        # The raw provider stream is what an Anthropic client sees: the SDK rebuilds the same
        # message from it (the two tool vectors also carry server blocks, pings, CRLF).
        result = sdk_stream_result(b"".join(out) + tail)
        assert result["stop_reason"] == vector["sdk_message"]["stop_reason"]


def test_pass_through_after_message_delta_only_needs_message_stop() -> None:
    vector = GOLDEN["stream_text"]
    data = transcript_bytes(vector)
    cut = data.index(b"event: message_stop")
    encoder = CODEC.stream_encoder(ctx(vector))
    out = b""
    for raw, events in decode_stream([data[:cut]]):
        assert encoder.can_pass_through(events)
        encoder.observe(events)
        out += raw
    out += encoder.finish()
    assert out == data
    assert encoder.finish() == b""


def test_stream_encoder_after_pass_through_continues_the_block_indexes() -> None:
    """A stage changed a later group: the encoder takes over with fresh block indexes."""
    vector = GOLDEN["stream_thinking_signature"]
    decoded = decode_stream([transcript_bytes(vector)])
    encoder = CODEC.stream_encoder(ctx(vector))
    out = b""
    for raw, events in decoded[:5]:  # message_start .. thinking block stop
        encoder.observe(events)
        out += raw
    out += encoder.encode([TextDelta("Changed by a stage.")])
    assert not encoder.can_pass_through([])
    out += encoder.encode([Finish("stop"), UsageReport(Usage(44, 20))]) + encoder.encode(
        [StreamEnd()]
    )
    tail = client_events(out[len(b"".join(r for r, _ in decoded[:5])) :])
    assert tail[0]["data"] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "text", "text": ""},
    }
    result = sdk_stream_result(out)
    assert result["content"][1] == {"type": "text", "text": "Changed by a stage."}
    assert result["stop_reason"] == "end_turn"


def test_stream_encoder_for_an_answer_that_arrived_whole() -> None:
    """The router streams a non-streamed answer to a streaming client via response_events."""
    vector = GOLDEN["response_thinking_two_tool_calls"]
    response = CODEC.decode_response(json.dumps(vector["wire"]).encode())
    encoder = CODEC.stream_encoder(ctx(vector))
    stream = encoder.encode(response_events(response)) + encoder.finish()
    names = [e["event"] for e in client_events(stream)]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    result = sdk_stream_result(stream)
    assert result == {
        "id": vector["wire"]["id"],
        "model": vector["wire"]["model"],
        "content": vector["wire"]["content"],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": vector["reencoded"]["usage"],
    }


def test_stream_encoder_without_usage_or_start_event() -> None:
    encoder = CODEC.stream_encoder(ResponseContext("claude-x", estimated_input_tokens=0))
    out = encoder.encode([TextDelta("Hi")]) + encoder.encode([Finish("length")]) + encoder.finish()
    events = client_events(out)
    start = events[0]["data"]["message"]
    assert start["id"].startswith("msg_") and start["model"] == "claude-x"
    assert start["usage"]["input_tokens"] == 0
    assert events[-2]["data"]["delta"]["stop_reason"] == "max_tokens"
    assert encoder.finish() == b""
    assert encoder.encode([TextDelta("late")]) == b""


def test_stream_encoder_late_tool_fragment_after_text_is_dropped() -> None:
    encoder = CODEC.stream_encoder(ResponseContext("m"))
    out = encoder.encode(
        [
            StreamStart(id="chatcmpl-1", model="m"),
            ToolCallStart(0, "call_1", "f"),
            ToolCallDelta(0, '{"a":'),
            TextDelta("interjection"),
            ToolCallDelta(0, "1}"),
            Finish("tool_calls"),
            StreamEnd(),
        ]
    )
    result = sdk_stream_result(out)
    # The block was closed by the text; a valid (partial) object is what the client keeps.
    assert result["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {}},
        {"type": "text", "text": "interjection"},
    ]


def test_stream_encoder_new_thinking_block_after_a_signature() -> None:
    encoder = CODEC.stream_encoder(ResponseContext("m"))
    out = encoder.encode(
        [
            StreamStart(id="msg_01X", model="claude", protocol="anthropic"),
            ReasoningDelta(text="one", signature="sig1"),
            ReasoningDelta(text="two"),
            ReasoningDelta(signature="sig2"),
            Finish("stop"),
            StreamEnd(),
        ]
    )
    assert sdk_stream_result(out)["content"] == [
        {"type": "thinking", "thinking": "one", "signature": "sig1"},
        {"type": "thinking", "thinking": "two", "signature": "sig2"},
    ]


def test_stream_decoder_reports_bad_json_and_ignores_empty_data() -> None:
    decoded = decode_stream([b"event: ping\ndata:\n\nevent: message_start\ndata: {oops}\n\n"])
    assert decoded[0][1] == []
    (error,) = decoded[1][1]
    assert builtins(error)["error"]["status"] == 502


def test_stream_decoder_tool_input_at_block_start() -> None:
    """Some compatible servers put the whole input in content_block_start."""
    transcript = (
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":5,'
        b'"delta":{"type":"input_json_delta","partial_json":"{}"}}\n\n'
    )
    events = [e for _, group in decode_stream([transcript]) for e in group]
    assert events == [ToolCallStart(0, "t1", "f"), ToolCallDelta(0, '{"a":1}')]


# --------------------------------------------------------------------------------------------
# Round-trip property: a valid Anthropic request decodes and re-encodes to itself

texts = st.text(st.characters(codec="utf-8"), max_size=16)
names = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=16)
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
    max_leaves=6,
)
json_objects = st.dictionaries(texts, json_values, max_size=3)
cache_control = st.just({"type": "ephemeral"}) | st.just({"type": "ephemeral", "ttl": "1h"})


@st.composite
def text_blocks(draw: st.DrawFn) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": draw(texts)}
    if draw(st.booleans()):
        block["cache_control"] = draw(cache_control)
    return block


@st.composite
def user_blocks(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "base64", "url", "document"]))
    if kind == "text":
        return draw(text_blocks())
    if kind == "base64":
        data = draw(st.text(string.ascii_letters + "+/", max_size=24))
        media = draw(st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"]))
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if kind == "url":
        return {
            "type": "image",
            "source": {"type": "url", "url": f"https://example.org/{draw(names)}.png"},
        }
    return {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": draw(texts)},
    }


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Alternating user/assistant turns; tool results answer the calls before them."""
    messages: list[dict[str, Any]] = []
    pending: list[str] = []
    for turn in range(draw(st.integers(1, 5))):
        if turn % 2 == 0:
            results: list[dict[str, Any]] = []
            for call_id in pending:
                result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
                result["content"] = draw(texts | st.lists(text_blocks(), max_size=2))
                if draw(st.booleans()):
                    result["is_error"] = draw(st.booleans())
                if draw(st.booleans()):
                    result["cache_control"] = draw(cache_control)
                results.append(result)
            extra_blocks = draw(st.lists(user_blocks(), max_size=2))
            content: Any
            if results or draw(st.booleans()) is True:
                content = results + extra_blocks
            else:
                content = draw(texts)
            messages.append({"role": "user", "content": content})
            pending = []
            continue
        blocks: list[dict[str, Any]] = []
        if draw(st.booleans()):
            blocks.append({"type": "redacted_thinking", "data": draw(names)})
        if draw(st.booleans()):
            blocks.append({"type": "thinking", "thinking": draw(texts), "signature": draw(names)})
        blocks += draw(st.lists(text_blocks(), max_size=2))
        for _ in range(draw(st.integers(0, 2))):
            call_id = f"toolu_{turn}_{len(pending)}_{draw(names)}"
            call: dict[str, Any] = {"type": "tool_use", "id": call_id, "name": draw(names)}
            call["input"] = draw(json_objects)
            if draw(st.integers(0, 3)) == 0:
                call["cache_control"] = draw(cache_control)
            blocks.append(call)
            pending.append(call_id)
        if draw(st.booleans()) and not any(b["type"] != "text" for b in blocks):
            messages.append({"role": "assistant", "content": draw(texts)})
        else:
            messages.append({"role": "assistant", "content": blocks})
    return messages


@st.composite
def tool_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        properties = draw(st.dictionaries(names, st.just({"type": "string"}), max_size=3))
        tool: dict[str, Any] = {
            "name": name,
            "input_schema": {"type": "object", "properties": properties},
        }
        if draw(st.booleans()):
            tool["description"] = draw(texts)
        if draw(st.booleans()):
            tool["cache_control"] = draw(cache_control)
        if draw(st.integers(0, 3)) == 0:
            tool["strict"] = draw(st.booleans())
        out.append(tool)
    if draw(st.integers(0, 3)) == 0:
        out.append({"type": "web_search_20250305", "name": "web_search", "max_uses": 3})
    return out


@st.composite
def anthropic_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": draw(names),
        "max_tokens": draw(st.integers(1, 200_000)),
        "messages": draw(conversations()),
    }
    if draw(st.booleans()):
        body["system"] = draw(texts | st.lists(text_blocks(), max_size=3))
    if draw(st.booleans()):
        body["tools"] = draw(tool_lists())
        choice: dict[str, Any] = draw(
            st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"}])
            | st.sampled_from([t["name"] for t in body["tools"]]).map(
                lambda n: {"type": "tool", "name": n}
            )
        )
        if choice["type"] != "none" and draw(st.booleans()):
            choice["disable_parallel_tool_use"] = draw(st.booleans())
        if draw(st.booleans()):
            body["tool_choice"] = choice
    for key in ("temperature", "top_p"):
        if draw(st.booleans()):
            body[key] = draw(st.floats(0, 1) | st.integers(0, 1))
    if draw(st.booleans()):
        body["top_k"] = draw(st.integers(1, 500))
    if draw(st.booleans()):
        body["stop_sequences"] = draw(st.lists(texts, max_size=3))
    if draw(st.booleans()):
        body["metadata"] = {"user_id": draw(names)}
    thinking = draw(
        st.none()
        | st.builds(lambda b: {"type": "enabled", "budget_tokens": b}, st.integers(1024, 64000))
        | st.just({"type": "disabled"})
        | st.just({"type": "adaptive"})
        | st.just({"type": "adaptive", "display": "omitted"})
        | st.just({"type": "enabled", "budget_tokens": 2048, "display": "summarized"})
    )
    if thinking is not None:
        body["thinking"] = thinking
    if draw(st.booleans()):
        body["output_config"] = {"effort": draw(st.sampled_from(["low", "medium", "high", "max"]))}
    stream = draw(st.sampled_from([None, False, True]))
    if stream is not None:
        body["stream"] = stream
    extras = st.fixed_dictionaries(
        {},
        optional={
            "service_tier": st.sampled_from(["auto", "standard_only"]),
            "container": names,
            "context_management": st.just({"edits": [{"type": "clear_tool_uses_20250919"}]}),
            "x_vendor_option": json_values,
        },
    )
    body.update(draw(extras))
    return body


def normalised(body: dict[str, Any]) -> dict[str, Any]:
    """What the same-protocol re-encoding of ``body`` must be (documented normalisations)."""
    expected = copy.deepcopy(body)
    if expected.get("stream") is False:
        del expected["stream"]  # "stream": false is the default
    return expected


@PROPERTY_SETTINGS
@given(anthropic_requests())
def test_request_round_trip_property(body: dict[str, Any]) -> None:
    wire = json.loads(json.dumps(body))
    request = CODEC.decode_request(copy.deepcopy(wire), meta({"anthropic-version": "2023-06-01"}))
    crossed = msgspec.json.decode(msgspec.json.encode(request), type=CanonicalRequest)
    assert crossed == request
    encoded = CODEC.encode_request(crossed, crossed.model)
    assert to_json(encoded.body) == normalised(wire)
    assert encoded.headers == {"anthropic-version": "2023-06-01"}


@PROPERTY_SETTINGS
@given(anthropic_requests())
def test_requests_translate_to_openai_chat_and_back(body: dict[str, Any]) -> None:
    """Any valid request also encodes for another protocol and comes back valid for Anthropic."""
    request = CODEC.decode_request(json.loads(json.dumps(body)), meta())
    chat = OpenAIChatCodec()
    chat_body = to_json(chat.encode_request(request, "gpt-4.1").body)
    back = chat.decode_request(chat_body, RequestMeta(path="/v1/chat/completions"))
    anthropic_body = to_json(CODEC.encode_request(back, "claude").body)
    assert anthropic_body["max_tokens"] >= 1
    # (Messages with nothing Anthropic accepts, e.g. only empty text, are left out.)
    roles = [m["role"] for m in anthropic_body["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles)), roles
    for message in anthropic_body["messages"]:
        content = message["content"]
        assert content, message
        if isinstance(content, list):
            kinds = [b["type"] for b in content]
            results = kinds.count("tool_result")
            assert kinds[:results] == ["tool_result"] * results, kinds
            for block in content:
                if block["type"] == "tool_use":
                    assert isinstance(block["input"], dict)
                if block["type"] == "text":
                    assert block["text"]


# --------------------------------------------------------------------------------------------
# In process, through the real router and stream translator (the registry patched locally)

PROXY_CONFIG = {
    "backends": {
        "openai": {"base_url": "http://127.0.0.1:9001/v1", "api_key": "sk-fake-openai"},
        "anthropic": {"base_url": "http://127.0.0.1:9002/v1", "api_key": "sk-ant-fake-backend"},
    },
    "default_backend": "openai:gpt-4o",
}
FROM_UPSTREAM = {"x-envoy-upstream-service-time": "3"}


@pytest.fixture
def proxy_app(monkeypatch: pytest.MonkeyPatch) -> Any:
    from extproc.config import build_config
    from extproc.processing import App

    monkeypatch.setitem(CODECS, "anthropic", CODEC)
    return App(build_config(PROXY_CONFIG))


def route(app: Any, path: str, payload: dict[str, Any], headers: dict[str, str]) -> Any:
    from extproc.processing import Continue
    from extproc.processing.factory import Processors

    router = Processors(app).router()
    first = router.request_headers({":method": "POST", ":path": path, **headers}, False)
    assert isinstance(first, Continue), first
    action = router.request_body(json.dumps(payload).encode(), True)
    return router, action


def stream_answer(router: Any, host: dict[str, str], chunks: list[bytes]) -> tuple[Any, bytes]:
    from extproc.processing import Continue

    head = router.response_headers(
        {":status": "200", **FROM_UPSTREAM, "content-type": "text/event-stream"}, False, host
    )
    assert isinstance(head, Continue) and head.response_body_mode in ("streamed", "full_duplex")
    out = b""
    for i, chunk in enumerate(chunks):
        step = router.response_body(chunk, i == len(chunks) - 1)
        assert isinstance(step, Continue)
        out += step.body or b""
    return head, out


CLAUDE_HEADERS = {
    "anthropic-version": "2023-06-01",
    "x-api-key": "sk-client",
    "anthropic-beta": "b1",
}


def test_in_process_claude_client_to_an_openai_backend(proxy_app: Any) -> None:
    payload = {
        "model": "openai:gpt-4o",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    router, action = route(proxy_app, "/anthropic/v1/messages", payload, CLAUDE_HEADERS)
    sent = json.loads(action.body)
    assert action.set_headers[":path"] == "/v1/chat/completions"
    assert "anthropic-beta" not in action.set_headers  # only for an Anthropic backend
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert sent["max_completion_tokens"] == 100  # the OpenAI backend type's field
    assert sent["stream_options"] == {"include_usage": True}
    chunks = [
        {
            "id": "c1",
            "model": "gpt-4o",
            "created": 1,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}],
        },
        {
            "id": "c1",
            "model": "gpt-4o",
            "created": 1,
            "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}],
        },
        {
            "id": "c1",
            "model": "gpt-4o",
            "created": 1,
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2},
        },
    ]
    sse = (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )
    head, out = stream_answer(
        router, {"instance": "openai", "schema": "openai-chat"}, [sse[:50], sse[50:], b""]
    )
    assert head.set_headers["content-type"] == "text/event-stream"
    events = client_events(out)
    assert events[0]["data"]["message"]["usage"]["input_tokens"] > 0  # the proxy's estimate
    assert sdk_stream_result(out) == {
        "id": "c1",
        "model": "gpt-4o",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 9,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 2,
        },
    }


def test_in_process_overload_becomes_529_and_count_tokens_and_models(proxy_app: Any) -> None:
    from extproc.processing import Continue, Reply

    payload = {
        "model": "openai:gpt-4o",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    router, _ = route(proxy_app, "/anthropic/v1/messages", payload, CLAUDE_HEADERS)
    error_body = json.dumps({"error": {"message": "overloaded", "type": "server_error"}}).encode()
    head = router.response_headers(
        {":status": "503", **FROM_UPSTREAM, "content-type": "application/json", "retry-after": "2"},
        False,
        {"instance": "openai", "schema": "openai-chat"},
    )
    assert isinstance(head, Continue)
    assert head.set_headers[":status"] == "529"  # Anthropic clients retry overload on 529
    answer = router.response_body(error_body, True)
    assert isinstance(answer, Continue) and answer.body is not None
    assert json.loads(answer.body) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "overloaded"},
    }
    count_payload = {
        "model": "openai:gpt-4o",
        "messages": [{"role": "user", "content": "hello there"}],
    }
    _, reply = route(
        proxy_app, "/anthropic/v1/messages/count_tokens", count_payload, CLAUDE_HEADERS
    )
    assert isinstance(reply, Reply) and reply.status == 200
    assert json.loads(reply.body)["input_tokens"] > 0
    from extproc.processing.factory import Processors

    listing = (
        Processors(proxy_app)
        .router()
        .request_headers({":method": "GET", ":path": "/anthropic/v1/models"}, True)
    )
    assert isinstance(listing, Reply)
    assert all(m["type"] == "model" for m in json.loads(listing.body)["data"])
    bad = {"model": "openai:gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    _, reply = route(proxy_app, "/anthropic/v1/messages", bad, CLAUDE_HEADERS)
    assert isinstance(reply, Reply) and reply.status == 400
    assert json.loads(reply.body) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


def test_in_process_openai_client_to_an_anthropic_backend(proxy_app: Any) -> None:
    payload = {
        "model": "anthropic:claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Tide?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"authorization": "Bearer sk-client", "anthropic-beta": "not-for-openai-clients"}
    router, action = route(proxy_app, "/v1/chat/completions", payload, headers)
    assert action.set_headers[":path"] == "/v1/messages"
    assert action.set_headers["x-api-key"] == "sk-ant-fake-backend"
    assert action.set_headers["anthropic-version"] == "2023-06-01"  # the backend type's default
    assert "anthropic-beta" not in action.set_headers
    assert json.loads(action.body) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 8192,
        "messages": [{"role": "user", "content": "Tide?"}],
        "stream": True,
    }
    transcript = transcript_bytes(GOLDEN["stream_two_tool_calls"])
    pieces = [transcript[i : i + 11] for i in range(0, len(transcript), 11)]
    _, out = stream_answer(router, {"instance": "anthropic", "schema": "anthropic"}, pieces)
    payloads = [
        json.loads(b[len(b"data: ") :]) for b in out.strip().split(b"\n\n") if b != b"data: [DONE]"
    ]
    calls = [c for p in payloads for ch in p["choices"] for c in ch["delta"].get("tool_calls", [])]
    assert [c["id"] for c in calls if "id" in c] == [
        "toolu_01Hc7Zr2KqP4mN8vWx3YbT5s",
        "toolu_01Mw2Lx9Qa5Ze3Rb7Uc4Kd8f",
    ]
    assert payloads[-1]["usage"]["prompt_tokens"] == 512
    assert out.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("tool_checks", [False, True], ids=["checks-off", "checks-on"])
def test_in_process_claude_client_to_an_anthropic_backend_passes_through(
    monkeypatch: pytest.MonkeyPatch, tool_checks: bool
) -> None:
    from extproc.config import build_config
    from extproc.processing import App

    monkeypatch.setitem(CODECS, "anthropic", CODEC)
    config = dict(PROXY_CONFIG)
    if not tool_checks:
        # The tool-call checks hold tool calls until complete (re-encoding them);
        # with them off nothing stands between the provider's bytes and the client.
        # (Tool-call repair too: it holds text that might be a call written as text,
        # and checks every call's arguments.)
        config.update(
            commands={"enabled": False},
            redaction={"answers": False},
            tool_repair={"enabled": False},
        )
    proxy_app = App(build_config(config))
    payload = copy.deepcopy(GOLDEN["request_claude_code_agent_turn"]["wire"])
    payload["model"] = "anthropic:claude-opus-4-1-20250805"
    router, action = route(proxy_app, "/v1/messages", payload, CLAUDE_HEADERS)
    assert action.set_headers["anthropic-beta"] == "b1"
    sent = json.loads(action.body)
    # Sessions (B2BUA): the provider gets a B-leg id in place of Claude Code's
    # metadata.user_id (its device and session ids); everything else as sent.
    assert re.fullmatch(r"leg-[0-9a-f]{32}", sent["metadata"].pop("user_id"))
    wire = copy.deepcopy(GOLDEN["request_claude_code_agent_turn"]["wire"])
    del wire["metadata"]["user_id"]
    assert sent == {**wire, "model": "claude-opus-4-1-20250805"}
    transcript = transcript_bytes(GOLDEN["stream_edge_cases_crlf_server_tools"])
    pieces = [transcript[i : i + 5] for i in range(0, len(transcript), 5)]
    _, out = stream_answer(router, {"instance": "anthropic", "schema": "anthropic"}, pieces)
    if not tool_checks:
        assert out == transcript  # byte for byte, pings, CRLF and server-tool blocks included
        return

    # Held and checked: the same message, block for block (the tool call arrives whole).
    def message(data: bytes) -> Any:
        decoder = CODEC.stream_decoder()
        return aggregate_events(e for _, evs in decoder.feed(data) + decoder.finish() for e in evs)

    def parts(data: bytes) -> list[Any]:
        # An empty tool input arrives as "" from the provider and "{}" re-encoded.
        return [
            (p.id, p.name, json.loads(p.arguments or "{}")) if isinstance(p, ToolCallPart) else p
            for p in message(data).content
        ]

    assert parts(out) == parts(transcript)
