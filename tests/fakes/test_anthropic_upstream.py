"""Tests for the fake Anthropic Messages upstream, against the running server.

The official ``anthropic`` SDK checks that the fake is accepted as the real thing (answers,
streams with tool use and thinking, errors as the SDK's own exception classes); raw sockets and
httpx check the wire details (framing, keep-alive, chunked bodies, faults); the Anthropic codec
checks that what the proxy sends passes the fake's validation and what the fake answers decodes.
"""

from __future__ import annotations

import copy
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import httpx2
import msgspec
import pytest

from extproc.canonical.aggregate import aggregate_events
from extproc.codecs.anthropic import AnthropicCodec
from extproc.codecs.base import RequestMeta
from extproc.codecs.openai_chat import OpenAIChatCodec
from tests.fakes._testing import (
    RawConnection,
    assert_fault_arguments_rejected,
    assert_requests_recorded,
    cli_process,
    free_port,
    wait_until,
)
from tests.fakes.anthropic_upstream import FakeAnthropic, default_answer

API_KEY = "sk-ant-fake-provider-key"
VERSION = {"anthropic-version": "2023-06-01"}
MODEL = "claude-sonnet-4-6"
USER_MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]
BODY: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": USER_MESSAGES}
TRICKY_ARGUMENTS = '{"city":"Zürich","note":"a \\"quoted\\" word\\n","n":[1,2,3],"e":"🌊"}'


# --------------------------------------------------------------------------------------------
# Helpers


def sse_payloads(chunks: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) per chunk; each chunk must be exactly one Anthropic SSE event."""
    out = []
    for chunk in chunks:
        lines = chunk.decode().split("\n")
        assert lines[2:] == ["", ""] and lines[0].startswith("event: "), chunk
        assert lines[1].startswith("data: "), chunk
        name, data = lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])
        assert data["type"] == name
        out.append((name, data))
    return out


def assert_anthropic_error(body: Any, *, type_: str) -> None:
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["type"] == type_
    assert body["request_id"].startswith("req_")


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(name="gamma") as server:
        yield server


@pytest.fixture
def client(fake: FakeAnthropic) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=fake.sdk_base_url, api_key=API_KEY, max_retries=0, timeout=5.0
    )


@pytest.fixture
def http(fake: FakeAnthropic) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, timeout=5.0, headers=VERSION) as session:
        yield session


@pytest.fixture
def raw(fake: FakeAnthropic) -> Iterator[RawConnection]:
    with RawConnection(fake.port, headers=VERSION) as connection:
        yield connection


# --------------------------------------------------------------------------------------------
# The SDK accepts the fake


def test_base_urls(fake: FakeAnthropic) -> None:
    assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
    assert fake.sdk_base_url == f"http://127.0.0.1:{fake.port}"


def test_sdk_non_streaming_default_answer(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    raw_response = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=256, messages=USER_MESSAGES
    )
    message = raw_response.parse()
    assert raw_response.headers["request-id"].startswith("req_")
    assert raw_response.headers["content-type"] == "application/json"
    assert raw_response.headers["anthropic-organization-id"]
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.model == MODEL and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == f"gamma says hello to {MODEL}"  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0
    recorded = fake.chat_requests()[0]
    assert recorded.json["messages"] == USER_MESSAGES
    # This SDK sends its key as a bearer token; the proxy (and curl users) send x-api-key.
    assert recorded.headers["authorization"] == f"Bearer {API_KEY}"
    assert recorded.headers["anthropic-version"]


def test_sdk_non_streaming_scripted_thinking_and_tool_calls(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.queue_response(
        "Checking both.",
        tool_calls=[("lookup_tide", '{"port":"Porto"}'), ("get_time", "")],
        thinking="Tide and time are independent.",
        prompt_tokens=2000,
        completion_tokens=44,
        cached_tokens=1500,
        cache_creation_tokens=100,
        reasoning_tokens=12,
    )
    message = client.messages.create(model=MODEL, max_tokens=4096, messages=USER_MESSAGES)
    kinds = [block.type for block in message.content]
    assert kinds == ["thinking", "text", "tool_use", "tool_use"]
    thinking, _, tide, clock = message.content
    assert thinking.thinking == "Tide and time are independent."  # type: ignore[union-attr]
    assert thinking.signature  # type: ignore[union-attr]
    assert (tide.name, tide.input) == ("lookup_tide", {"port": "Porto"})  # type: ignore[union-attr]
    assert (clock.name, clock.input) == ("get_time", {})  # type: ignore[union-attr]
    assert tide.id != clock.id and tide.id.startswith("toolu_")  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (400, 1500)
    assert (usage.cache_creation_input_tokens, usage.output_tokens) == (100, 44)
    assert usage.output_tokens_details is not None
    assert usage.output_tokens_details.thinking_tokens == 12


def test_scripts_are_consumed_in_order(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.queue_response("first", finish_reason="length")
    fake.queue_response("second", stop_sequence="\nEND")
    fake.queue_response("third", finish_reason="pause_turn")
    fake.queue_response(redacted_thinking="EmwKAhgB")
    answers = [
        client.messages.create(model=MODEL, max_tokens=64, messages=USER_MESSAGES) for _ in range(5)
    ]
    assert [(a.stop_reason, a.stop_sequence) for a in answers] == [
        ("max_tokens", None),
        ("stop_sequence", "\nEND"),
        ("pause_turn", None),
        ("end_turn", None),
        ("end_turn", None),
    ]
    assert answers[3].content[0].type == "redacted_thinking"
    assert answers[4].content[0].text == f"gamma says hello to {MODEL}"  # type: ignore[union-attr]


def test_queue_response_validation(fake: FakeAnthropic) -> None:
    with pytest.raises(ValueError):
        fake.queue_response()
    with pytest.raises(ValueError):
        fake.queue_response(tool_calls=[("f", "[1, 2]")])
    with pytest.raises(ValueError):
        fake.queue_response("x", finish_reason="because")


def test_sdk_streaming_text(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=256, messages=USER_MESSAGES) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()
    assert "".join(texts) == f"gamma says hello to {MODEL}"
    assert len(texts) >= 5
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 1


def test_sdk_stream_accumulates_tool_use_and_thinking(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    scripted = [("lookup_weather", TRICKY_ARGUMENTS), ("ping", ""), ("lookup_tide", '{"a":1}')]
    fake.queue_response("Checking.", tool_calls=scripted, thinking="Weather, then tide.")
    with client.messages.stream(
        model=MODEL,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=USER_MESSAGES,
    ) as stream:
        kinds = {event.type for event in stream}
        message = stream.get_final_message()
    assert {"thinking", "signature", "text", "input_json"} <= kinds
    assert [block.type for block in message.content] == [
        "thinking",
        "text",
        "tool_use",
        "tool_use",
        "tool_use",
    ]
    assert message.content[0].thinking == "Weather, then tide."  # type: ignore[union-attr]
    assert message.content[0].signature.startswith("Eq")  # type: ignore[union-attr]
    calls = [(b.name, b.input) for b in message.content[2:]]  # type: ignore[union-attr]
    assert calls == [(name, json.loads(args) if args else {}) for name, args in scripted]
    assert message.stop_reason == "tool_use"


def test_sdk_count_tokens_and_models(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(model=MODEL, messages=USER_MESSAGES, system="Be brief.")
    assert (
        counted.input_tokens
        == len(
            json.dumps({"system": "Be brief.", "messages": USER_MESSAGES}, separators=(",", ":"))
        )
        // 4
    )
    assert [model.id for model in client.models.list()] == [MODEL, "claude-haiku-4-5-20251001"]
    assert client.models.retrieve(MODEL).display_name
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.models.retrieve("claude-nope")
    assert caught.value.type == "not_found_error"


# --------------------------------------------------------------------------------------------
# Wire details


def test_sse_framing(raw: RawConnection) -> None:
    raw.send_json("/v1/messages", {**BODY, "stream": True})
    response = raw.read_response()
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["request-id"].startswith("req_")
    assert "content-length" not in response.headers
    assert response.chunks is not None
    events = sse_payloads(response.chunks)  # one event per HTTP chunk, event: == type
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert b"[DONE]" not in response.body
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] > 0
    assert names[2] == "content_block_start" and names[-3] == "content_block_stop"
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 1
    assert delta["usage"]["input_tokens"] == start["usage"]["input_tokens"]  # cumulative


def test_stream_tool_use_deltas_follow_the_wire_format(
    fake: FakeAnthropic, raw: RawConnection
) -> None:
    fake.queue_response(tool_calls=[("lookup_tide", '{"port":"Porto"}'), ("get_time", "")])
    raw.send_json("/v1/messages", {**BODY, "stream": True})
    response = raw.read_response()
    assert response.chunks is not None
    events = [data for _, data in sse_payloads(response.chunks)]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [
        (s["index"], s["content_block"]["name"], s["content_block"]["input"]) for s in starts
    ] == [
        (0, "lookup_tide", {}),
        (1, "get_time", {}),
    ]
    fragments = {
        i: [
            e["delta"]["partial_json"]
            for e in events
            if e["type"] == "content_block_delta" and e["index"] == i
        ]
        for i in (0, 1)
    }
    assert fragments[0][0] == "" and len(fragments[0]) > 2
    assert "".join(fragments[0]) == '{"port":"Porto"}'
    assert fragments[1] == [""]  # no arguments: only the empty fragment
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_chunked_request_body(fake: FakeAnthropic, raw: RawConnection) -> None:
    body = json.dumps(BODY).encode()
    pieces = [body[:10], body[10:25], body[25:]]
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
    raw.send("POST", "/v1/messages", headers={"transfer-encoding": "chunked"})
    raw.sock.sendall(framed + b"0\r\nx-trailer: yes\r\n\r\n")
    response = raw.read_response()
    assert response.status == 200
    assert json.loads(response.body)["content"][0]["text"] == f"gamma says hello to {MODEL}"
    assert fake.chat_requests()[0].body == body


def test_keep_alive_serves_several_requests_on_one_connection(
    fake: FakeAnthropic, raw: RawConnection
) -> None:
    raw.send_json("/v1/messages", BODY)
    assert raw.read_response().status == 200
    raw.send("GET", "/v1/models")
    assert raw.read_response().status == 200
    raw.send_json("/v1/messages", {**BODY, "stream": True})
    assert raw.read_response().chunks is not None
    raw.send_json("/v1/messages/count_tokens", {"model": MODEL, "messages": USER_MESSAGES})
    assert raw.read_response().status == 200
    assert fake.connections_accepted == 1
    assert (fake.request_count, fake.chat_request_count) == (4, 2)


def test_connection_close_is_honoured(raw: RawConnection) -> None:
    raw.send("GET", "/v1/models", headers={"connection": "close"})
    assert raw.read_response().headers["connection"] == "close"
    assert raw.peer_closed()


def test_requests_are_recorded(fake: FakeAnthropic, http: httpx.Client) -> None:
    assert_requests_recorded(fake, http, "/messages", BODY)


# --------------------------------------------------------------------------------------------
# Endpoints and validation


def test_unknown_paths_and_methods(http: httpx.Client) -> None:
    missing = http.get("/nowhere")
    assert missing.status_code == 404
    assert_anthropic_error(missing.json(), type_="not_found_error")
    wrong_method = http.get("/messages")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert_anthropic_error(wrong_method.json(), type_="invalid_request_error")
    assert http.post("/models", json={}).status_code == 405


TOOL_TURN: list[Any] = [
    {"role": "user", "content": "Tide?"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}},
            {"type": "tool_use", "id": "toolu_2", "name": "u", "input": {"a": 1}},
        ],
    },
]
RESULT_1 = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "14:05"}
RESULT_2 = {
    "type": "tool_result",
    "tool_use_id": "toolu_2",
    "content": [{"type": "text", "text": "x"}],
}


def body_with(**fields: Any) -> dict[str, Any]:
    body = copy.deepcopy(BODY)
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None or k == "max_tokens"}


INVALID: list[tuple[str, Any, str]] = [
    ("not json", b"{oops", "error parsing the body"),
    ("array body", [1, 2], "error parsing the body"),
    ("model missing", {"max_tokens": 5, "messages": USER_MESSAGES}, "model: Field required"),
    (
        "max_tokens missing",
        {"model": MODEL, "messages": USER_MESSAGES},
        "max_tokens: Field required",
    ),
    ("max_tokens zero", body_with(max_tokens=0), "max_tokens"),
    ("messages missing", {"model": MODEL, "max_tokens": 5}, "messages: Field required"),
    ("messages empty", body_with(messages=[]), "at least one message"),
    ("role tool", body_with(messages=[{"role": "tool", "content": "x"}]), "messages.0.role"),
    (
        "system message with an image",
        body_with(
            messages=[
                USER_MESSAGES[0],
                {
                    "role": "system",
                    "content": [{"type": "image", "source": {"type": "url", "url": "u"}}],
                },
            ]
        ),
        "system messages hold text blocks only",
    ),
    (
        "system message between calls and results",
        body_with(
            messages=[
                *TOOL_TURN,
                {"role": "system", "content": "x"},
                {"role": "user", "content": [RESULT_1, RESULT_2]},
            ]
        ),
        "without `tool_result`",
    ),
    ("empty content", body_with(messages=[{"role": "user", "content": ""}]), "non-empty content"),
    (
        "empty text block",
        body_with(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]),
        "text content blocks must be non-empty",
    ),
    (
        "block without type",
        body_with(messages=[{"role": "user", "content": [{"text": "x"}]}]),
        "messages.0.content.0",
    ),
    (
        "tool_use input a string",
        body_with(
            messages=[
                USER_MESSAGES[0],
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}],
                },
            ]
        ),
        "tool_use.input",
    ),
    (
        "tool_use without result",
        body_with(messages=[*TOOL_TURN, {"role": "user", "content": [RESULT_1]}]),
        "toolu_2",
    ),
    ("tool_use at the end", body_with(messages=TOOL_TURN), "without `tool_result`"),
    (
        "tool_result after text",
        body_with(
            messages=[
                *TOOL_TURN,
                {"role": "user", "content": [RESULT_1, {"type": "text", "text": "hm"}, RESULT_2]},
            ]
        ),
        "must come before any other content",
    ),
    (
        "unexpected tool_use_id",
        body_with(
            messages=[
                USER_MESSAGES[0],
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [RESULT_1]},
            ]
        ),
        "unexpected `tool_use_id`",
    ),
    ("temperature above 1", body_with(temperature=1.5), "temperature"),
    ("budget too small", body_with(thinking={"type": "enabled", "budget_tokens": 500}), "1024"),
    (
        "max_tokens not above the budget",
        body_with(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 2048}),
        "`max_tokens` must be greater than `thinking.budget_tokens`",
    ),
    ("unknown thinking type", body_with(thinking={"type": "sometimes"}), "thinking"),
    ("tool_choice without tools", body_with(tool_choice={"type": "auto"}), "tool_choice"),
    ("stream a string", body_with(stream="yes"), "stream"),
]


@pytest.mark.parametrize(("body", "snippet"), [pytest.param(b, s, id=n) for n, b, s in INVALID])
def test_invalid_messages_requests_get_400(http: httpx.Client, body: Any, snippet: str) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post("/messages", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert_anthropic_error(response.json(), type_="invalid_request_error")
    assert snippet in response.json()["error"]["message"]


def test_anthropic_version_header_is_required(fake: FakeAnthropic) -> None:
    response = httpx.post(f"{fake.base_url}/messages", json=BODY)
    assert response.status_code == 400
    assert_anthropic_error(response.json(), type_="invalid_request_error")
    assert "anthropic-version" in response.json()["error"]["message"]


def test_valid_tool_loops_are_accepted(client: anthropic.Anthropic) -> None:
    # Results split over two consecutive user messages are merged, as the API does.
    messages = [
        *TOOL_TURN,
        {"role": "user", "content": [RESULT_1]},
        {"role": "user", "content": [RESULT_2, {"type": "text", "text": "Go on."}]},
    ]
    message = client.messages.create(model=MODEL, max_tokens=64, messages=messages)
    assert message.stop_reason == "end_turn"
    # A final assistant prefill may be empty-ish; consecutive same-role text turns are fine.
    # The SDK's mid-conversation system message (as the codec forwards it) is accepted.
    inline = [USER_MESSAGES[0], {"role": "system", "content": "Answer in Portuguese."}]
    assert client.messages.create(model=MODEL, max_tokens=64, messages=inline).content
    prefill = [
        USER_MESSAGES[0],
        {"role": "user", "content": "More."},
        {"role": "assistant", "content": ""},
    ]
    assert client.messages.create(model=MODEL, max_tokens=64, messages=prefill).content


def test_sdk_raises_bad_request(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=64, messages=[])
    assert caught.value.type == "invalid_request_error"
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")


def test_strict_models_rejects_unknown_models() -> None:
    with FakeAnthropic(strict_models=True) as fake:
        sdk = anthropic.Anthropic(base_url=fake.sdk_base_url, api_key=API_KEY, max_retries=0)
        with pytest.raises(anthropic.NotFoundError) as caught:
            sdk.messages.create(model="claude-nope", max_tokens=5, messages=USER_MESSAGES)
        assert caught.value.type == "not_found_error"


def test_expected_api_key() -> None:
    with FakeAnthropic(expected_api_key=API_KEY) as fake:
        good = anthropic.Anthropic(base_url=fake.sdk_base_url, api_key=API_KEY, max_retries=0)
        bad = anthropic.Anthropic(base_url=fake.sdk_base_url, api_key="sk-ant-wrong", max_retries=0)
        bearer = anthropic.Anthropic(base_url=fake.sdk_base_url, auth_token=API_KEY, max_retries=0)
        assert good.messages.create(model=MODEL, max_tokens=5, messages=USER_MESSAGES).content
        assert bearer.messages.create(model=MODEL, max_tokens=5, messages=USER_MESSAGES).content
        with pytest.raises(anthropic.AuthenticationError) as caught:
            bad.messages.create(model=MODEL, max_tokens=5, messages=USER_MESSAGES)
        assert caught.value.type == "authentication_error"
        assert "sk-ant-wrong" not in str(caught.value)
        with pytest.raises(anthropic.AuthenticationError):
            bad.models.list()
        missing = httpx.get(f"{fake.base_url}/models", headers=VERSION)
        assert missing.status_code == 401
        assert_anthropic_error(missing.json(), type_="authentication_error")
        keyed = {**VERSION, "x-api-key": API_KEY}
        assert httpx.get(f"{fake.base_url}/models", headers=keyed).status_code == 200
        wrong = httpx.get(f"{fake.base_url}/models", headers={**keyed, "x-api-key": "nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["message"] == "invalid x-api-key"


def test_path_prefix() -> None:
    with FakeAnthropic(name="proxyish", path_prefix="/anthropic/v1/") as fake:
        assert fake.base_url == f"http://127.0.0.1:{fake.port}/anthropic/v1"
        answer = httpx.post(f"{fake.base_url}/messages", json=BODY, headers=VERSION).json()
        assert answer["content"][0]["text"] == f"proxyish says hello to {MODEL}"
        assert (
            httpx.post(f"http://127.0.0.1:{fake.port}/v1/messages", headers=VERSION).status_code
            == 404
        )


# --------------------------------------------------------------------------------------------
# Faults


@pytest.mark.parametrize(
    ("status", "type_", "retry_after"),
    [
        (400, "invalid_request_error", None),
        (401, "authentication_error", None),
        (403, "permission_error", None),
        (404, "not_found_error", None),
        (413, "request_too_large", None),
        (429, "rate_limit_error", "1"),
        (500, "api_error", None),
        (503, "overloaded_error", "1"),
        (504, "timeout_error", None),
        (529, "overloaded_error", "1"),
        (418, "invalid_request_error", None),
        (502, "api_error", None),
    ],
)
def test_status_fault(
    fake: FakeAnthropic, http: httpx.Client, status: int, type_: str, retry_after: str | None
) -> None:
    fake.set_fault(status=status, count=2)
    for response in (http.post("/messages", json=BODY), http.get("/models")):
        assert response.status_code == status
        assert response.headers.get("retry-after") == retry_after
        assert response.headers["request-id"].startswith("req_")
        assert_anthropic_error(response.json(), type_=type_)
    assert http.get("/models").status_code == 200
    assert fake.active_faults() == {}


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (403, anthropic.PermissionDeniedError),
        (404, anthropic.NotFoundError),
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ],
)
def test_status_fault_maps_to_sdk_errors(
    fake: FakeAnthropic,
    client: anthropic.Anthropic,
    status: int,
    error: type[anthropic.APIStatusError],
) -> None:
    fake.set_fault(status=status, count=1)
    with pytest.raises(error) as caught:
        client.messages.create(model=MODEL, max_tokens=5, messages=USER_MESSAGES)
    assert caught.value.status_code == status


def test_sdk_retries_overload_after_retry_after(fake: FakeAnthropic) -> None:
    fake.set_fault(status=529, retry_after=0.05, count=1)
    sdk = anthropic.Anthropic(
        base_url=fake.sdk_base_url, api_key=API_KEY, max_retries=1, timeout=5.0
    )
    message = sdk.messages.create(model=MODEL, max_tokens=5, messages=USER_MESSAGES)
    assert message.content[0].text == f"gamma says hello to {MODEL}"  # type: ignore[union-attr]
    assert fake.chat_request_count == 2


def test_fault_until_cleared_and_chat_only(fake: FakeAnthropic, http: httpx.Client) -> None:
    fake.set_fault(status=500, chat_only=True)
    for _ in range(3):
        assert http.post("/messages", json=BODY).status_code == 500
        assert http.get("/models").status_code == 200
        count = {"model": MODEL, "messages": USER_MESSAGES}
        assert http.post("/messages/count_tokens", json=count).status_code == 200
    assert fake.active_faults()["status"]["value"] == 500
    fake.clear_faults()
    assert http.post("/messages", json=BODY).status_code == 200


def test_fault_argument_validation(fake: FakeAnthropic) -> None:
    bad_knobs: list[dict[str, Any]] = [
        {"status": 200},
        {"status": 600},
        {"count": 0, "delay": 1},
        {"stall_after": -1},
        {"retry_after": 1},
        {"chunk_delay": -0.1},
    ]
    assert_fault_arguments_rejected(fake, bad_knobs)


def test_delay_holds_back_the_response_headers(fake: FakeAnthropic, raw: RawConnection) -> None:
    fake.set_fault(delay=0.3, count=1)
    started = time.monotonic()
    raw.send("GET", "/v1/models")
    raw.assert_silent(raw.read_head, 0.1)
    assert raw.read_response().status == 200
    assert time.monotonic() - started >= 0.3
    assert fake.active_faults() == {}


def test_reset_aborts_with_rst(
    fake: FakeAnthropic, raw: RawConnection, client: anthropic.Anthropic
) -> None:
    fake.set_fault(reset=True, count=2)
    raw.send_json("/v1/messages", BODY)
    with pytest.raises(ConnectionResetError):
        raw.read_head()
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(model=MODEL, max_tokens=5, messages=USER_MESSAGES)
    assert fake.chat_request_count == 2  # the requests were read before the reset
    assert client.messages.create(model=MODEL, max_tokens=5, messages=USER_MESSAGES).content


def test_refuse_then_restore_on_the_same_port(
    fake: FakeAnthropic, raw: RawConnection, client: anthropic.Anthropic
) -> None:
    port = fake.port
    raw.send("GET", "/v1/models")
    assert raw.read_response().status == 200
    fake.set_fault(refuse=True)
    assert fake.refused
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1.0)
    assert raw.peer_closed()  # the open keep-alive connection was dropped
    with pytest.raises(anthropic.APIConnectionError):
        client.models.list()
    assert fake.active_faults()["refuse"]["value"] is True
    fake.restore()
    assert fake.port == port and not fake.refused
    assert client.models.list().data
    fake.set_fault(refuse=True)
    fake.clear_faults("refuse")
    assert client.models.list().data


def _start_stream(raw: RawConnection) -> None:
    raw.send_json("/v1/messages", {**BODY, "stream": True})
    status, headers = raw.read_head()
    assert status == 200 and headers["transfer-encoding"] == "chunked"


def test_stall_after_then_clear(fake: FakeAnthropic, raw: RawConnection) -> None:
    fake.set_fault(stall_after=3, count=1)
    _start_stream(raw)
    first = [raw.read_chunk() or b"" for _ in range(3)]
    assert [name for name, _ in sse_payloads(first)] == [
        "message_start",
        "ping",
        "content_block_start",
    ]
    raw.assert_silent(raw.read_chunk, 0.2)
    fake.clear_faults()
    rest = raw.read_chunks()
    events = sse_payloads(first + rest)
    assert events[-1][0] == "message_stop"
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == f"gamma says hello to {MODEL}"


def test_stall_ends_when_the_client_goes_away(fake: FakeAnthropic) -> None:
    fake.set_fault(stall_after=0)
    sdk = anthropic.Anthropic(
        base_url=fake.sdk_base_url, api_key=API_KEY, max_retries=0, timeout=0.3
    )
    # The headers came: the SDK meets the read timeout while iterating, as its HTTP client's.
    with (
        pytest.raises((anthropic.APITimeoutError, httpx2.TimeoutException)),
        sdk.messages.stream(model=MODEL, max_tokens=5, messages=USER_MESSAGES) as stream,
    ):
        for _event in stream:
            pass
    sdk.close()
    wait_until(lambda: fake.open_connections == 0)
    assert fake.active_faults()["stall_after"]["value"] == 0  # until cleared


def test_stream_knobs_ignore_non_streaming_requests(
    fake: FakeAnthropic, http: httpx.Client
) -> None:
    fake.set_fault(stall_after=1, midstream_error=1, chunk_delay=1.0, count=1)
    assert http.post("/messages", json=BODY).status_code == 200
    assert set(fake.active_faults()) == {"stall_after", "midstream_error", "chunk_delay"}


def test_midstream_error(
    fake: FakeAnthropic, raw: RawConnection, client: anthropic.Anthropic
) -> None:
    fake.set_fault(midstream_error=4, count=2)
    raw.send_json("/v1/messages", {**BODY, "stream": True})
    response = raw.read_response()
    assert response.headers["connection"] == "close"
    assert response.chunks is not None and len(response.chunks) == 5
    name, error = sse_payloads(response.chunks)[-1]
    assert name == "error"
    assert error == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert b"message_stop" not in response.body
    assert raw.peer_closed()
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model=MODEL, max_tokens=5, messages=USER_MESSAGES) as stream,
    ):
        for event in stream:
            received.append(event.type)
    assert caught.value.type == "overloaded_error"
    assert received[0] == "message_start" and "text" in received


def test_chunk_delay_spaces_the_events(fake: FakeAnthropic, raw: RawConnection) -> None:
    fake.queue_response("abcdefgh")  # start, ping, block start, 2 deltas, stop, delta, stop
    fake.set_fault(chunk_delay=0.03, count=1)
    _start_stream(raw)
    arrivals = raw.chunk_arrivals()
    assert len(arrivals) == 8
    assert arrivals[-1] - arrivals[0] >= 7 * 0.03 * 0.9


# --------------------------------------------------------------------------------------------
# The Anthropic codec against the fake: what the proxy sends passes, what it gets decodes


def test_codec_requests_from_an_openai_client_pass_the_fakes_validation(
    fake: FakeAnthropic, http: httpx.Client
) -> None:
    codec = AnthropicCodec()
    chat_body = {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tide and time in Porto?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "tide", "arguments": '{"port":"Porto"}'},
                    },
                    {
                        "id": "functions.time:1",
                        "type": "function",
                        "function": {"name": "time", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "14:05"},
            {"role": "tool", "tool_call_id": "functions.time:1", "content": "12:00"},
            {"role": "user", "content": "Thanks!"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "tide", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "time"}},
        ],
        "reasoning_effort": "high",
        "max_tokens": 1000,
        "temperature": 1.7,
        "stream": True,
    }
    request = OpenAIChatCodec().decode_request(chat_body, RequestMeta())
    fake.queue_response("On it.", tool_calls=[("tide", '{"port":"Lisboa"}')], thinking="Again.")
    encoded = codec.encode_request(request, MODEL)
    response = http.post(
        encoded.path.lstrip("/"), content=encoded.body, headers=dict(encoded.headers)
    )
    assert response.status_code == 200, response.text
    decoder = codec.stream_decoder()
    decoded = decoder.feed(response.content) + decoder.finish()
    answer = aggregate_events([event for _, events in decoded for event in events])
    kinds = [msgspec.to_builtins(part)["type"] for part in answer.content]
    assert kinds == ["reasoning", "text", "tool_call"]
    assert answer.finish_reason == "tool_calls"
    assert answer.usage is not None and answer.usage.input_tokens > 0


def test_codec_same_protocol_round_trip_through_the_fake(
    fake: FakeAnthropic, http: httpx.Client
) -> None:
    codec = AnthropicCodec()
    body = {
        "model": MODEL,
        "max_tokens": 4096,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            *TOOL_TURN,
            {"role": "user", "content": [RESULT_1, RESULT_2, {"type": "text", "text": "Go on."}]},
        ],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    headers = {**VERSION, "anthropic-beta": "interleaved-thinking-2025-05-14"}
    request = codec.decode_request(copy.deepcopy(body), RequestMeta(headers=headers))
    encoded = codec.encode_request(request, MODEL)
    assert json.loads(encoded.body) == body
    assert dict(encoded.headers) == headers
    fake.queue_response("Done.", thinking="Fine.", prompt_tokens=900, cached_tokens=800)
    response = http.post("messages", content=encoded.body, headers=dict(encoded.headers))
    answer = codec.decode_response(response.content)
    assert answer.usage is not None
    assert (answer.usage.input_tokens, answer.usage.cached_input_tokens) == (900, 800)
    assert fake.chat_requests()[-1].headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"


# --------------------------------------------------------------------------------------------
# Lifecycle, concurrency and the command line


def test_stop_frees_the_port_for_a_new_server() -> None:
    with FakeAnthropic(name="one") as first:
        port = first.port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1.0)
    with FakeAnthropic(port=port, name="two") as second:
        answer = httpx.post(f"{second.base_url}/messages", json=BODY, headers=VERSION).json()
        assert answer["content"][0]["text"] == f"two says hello to {MODEL}"


def test_concurrent_streams(fake: FakeAnthropic) -> None:
    def stream_once(_: int) -> str:
        with httpx.Client(base_url=fake.base_url, timeout=5.0, headers=VERSION) as session:
            body = {**BODY, "stream": True}
            with session.stream("POST", "/messages", json=body) as response:
                lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        deltas = [json.loads(line[6:]) for line in lines]
        return "".join(d["delta"]["text"] for d in deltas if d["type"] == "content_block_delta")

    with ThreadPoolExecutor(max_workers=16) as pool:
        texts = list(pool.map(stream_once, range(32)))
    assert texts == [f"gamma says hello to {MODEL}"] * 32


def test_command_line_with_control_api() -> None:
    control_port = free_port()
    args = ["--name", "cli", "--control-port", str(control_port), "--api-key", API_KEY]
    with cli_process("anthropic_upstream", *args) as port:
        base_url = f"http://127.0.0.1:{port}/v1"
        headers = {**VERSION, "x-api-key": API_KEY}
        control = f"http://127.0.0.1:{control_port}"
        answer = httpx.post(f"{base_url}/messages", json=BODY, headers=headers).json()
        assert answer["content"][0]["text"] == f"cli says hello to {MODEL}"
        assert httpx.post(f"{control}/faults", json={"bogus": 1}).status_code == 400
        armed = httpx.post(f"{control}/faults", json={"status": 529, "count": 1})
        assert armed.json()["status"]["value"] == 529
        faulted = httpx.post(f"{base_url}/messages", json=BODY, headers=headers)
        assert (faulted.status_code, faulted.headers["retry-after"]) == (529, "1")
        counts = httpx.get(f"{control}/requests/count").json()
        assert (counts["count"], counts["chat"]) == (2, 2)
        assert httpx.delete(f"{control}/requests").json() == {"count": 0}
        httpx.post(f"{control}/faults", json={"refuse": True})
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base_url}/models", headers=headers)
        assert httpx.delete(f"{control}/faults").json() == {}
        assert httpx.get(f"{base_url}/models", headers=headers).status_code == 200


def test_answer_chars_stretches_the_default_answer() -> None:
    assert default_answer("gamma", MODEL) == f"gamma says hello to {MODEL}"
    assert len(default_answer("gamma", MODEL, 1000)) == 1000
    with FakeAnthropic(name="long", answer_chars=256, chunk_chars=4) as fake:
        expected = default_answer("long", MODEL, 256)
        answer = httpx.post(f"{fake.base_url}/messages", json=BODY, headers=VERSION).json()
        assert answer["content"][0]["text"] == expected
        with RawConnection(fake.port, headers=VERSION) as raw:
            raw.send_json("/v1/messages", {**BODY, "stream": True})
            response = raw.read_response()
        assert response.chunks is not None
        pieces = [
            data["delta"]["text"]
            for name, data in sse_payloads(response.chunks)
            if name == "content_block_delta"
        ]
        assert len(pieces) == 64 and "".join(pieces) == expected
    with pytest.raises(ValueError, match="answer_chars"):
        FakeAnthropic(answer_chars=0)
