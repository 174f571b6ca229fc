"""Tests for the fake OpenAI Chat Completions upstream, against the running server.

The official ``openai`` SDK checks that the fake is accepted as the real thing; raw sockets and
httpx check the wire details (framing, keep-alive, chunked bodies, faults).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.fakes._testing import (
    REPO_ROOT,
    RawConnection,
    assert_fault_arguments_rejected,
    assert_openai_error,
    assert_requests_recorded,
    cli_process,
    free_port,
    wait_until,
)
from tests.fakes.openai_upstream import FakeOpenAI, default_answer

API_KEY = "sk-fake-provider-key"
USER_MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]
CHAT_BODY: dict[str, Any] = {"model": "gpt-4o-mini", "messages": USER_MESSAGES}


# --------------------------------------------------------------------------------------------
# Helpers


def chunk_payloads(chunks: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(chunk[len(b"data: ") :]) for chunk in chunks if chunk != b"data: [DONE]\n\n"]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(name="alpha") as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0, timeout=5.0)


@pytest.fixture
def http(fake: FakeOpenAI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, timeout=5.0) as session:
        yield session


@pytest.fixture
def raw(fake: FakeOpenAI) -> Iterator[RawConnection]:
    with RawConnection(fake.port) as connection:
        yield connection


# --------------------------------------------------------------------------------------------
# The SDK accepts the fake


def test_sdk_non_streaming_default_answer(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    raw_response = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=USER_MESSAGES
    )
    completion = raw_response.parse()
    assert raw_response.headers["x-request-id"].startswith("req_")
    assert raw_response.headers["content-type"] == "application/json"
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "alpha says hello to gpt-4o-mini"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.completion_tokens_details is not None
    recorded = fake.chat_requests()[0]
    assert recorded.json["messages"] == USER_MESSAGES
    assert recorded.headers["authorization"] == f"Bearer {API_KEY}"


def test_sdk_non_streaming_scripted_tool_calls(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.queue_response(
        tool_calls=[
            ("lookup_tide", '{"port":"Porto"}'),
            ("lookup_weather", '{"city":"Porto","unit":"c"}'),
        ],
        prompt_tokens=96,
        completion_tokens=44,
        cached_tokens=64,
    )
    completion = client.chat.completions.create(model="gpt-4o", messages=USER_MESSAGES)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("lookup_tide", '{"port":"Porto"}'),
        ("lookup_weather", '{"city":"Porto","unit":"c"}'),
    ]
    assert len({call.id for call in calls}) == 2
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (96, 44)
    assert completion.usage.total_tokens == 140
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 64


def test_scripts_are_consumed_in_order(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.queue_response("first", finish_reason="length")
    fake.queue_response("second")
    answers = [
        client.chat.completions.create(model="gpt-4o", messages=USER_MESSAGES).choices[0]
        for _ in range(3)
    ]
    assert [(a.message.content, a.finish_reason) for a in answers] == [
        ("first", "length"),
        ("second", "stop"),
        ("alpha says hello to gpt-4o", "stop"),
    ]


@pytest.mark.parametrize("include_usage", [True, False])
def test_sdk_streaming_text(client: openai.OpenAI, include_usage: bool) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER_MESSAGES,
        stream=True,
        stream_options={"include_usage": include_usage},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha says hello to gpt-4o-mini"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 5
    assert {c.id for c in chunks} == {chunks[0].id}
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    if include_usage:
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        assert all(c.usage is None for c in chunks[:-1])
    else:
        assert chunks[-1] is finish[0]
        assert all(c.usage is None for c in chunks)


TRICKY_ARGUMENTS = '{"city":"Zürich","note":"a \\"quoted\\" word\\n","n":[1,2,3],"e":"🌊"}'


def test_sdk_stream_accumulates_tool_call_arguments(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    scripted = [("lookup_weather", TRICKY_ARGUMENTS), ("ping", ""), ("lookup_tide", '{"a":1}')]
    fake.queue_response("Checking.", tool_calls=scripted)
    with client.chat.completions.stream(
        model="gpt-4o",
        messages=USER_MESSAGES,
        stream_options={"include_usage": True},
    ) as stream:
        for _event in stream:
            pass
        completion = stream.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Checking."
    calls = message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == scripted
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_stream_tool_call_deltas_follow_the_wire_format(
    fake: FakeOpenAI, raw: RawConnection
) -> None:
    fake.queue_response(tool_calls=[("lookup_tide", '{"port":"Porto"}'), ("ping", "{}")])
    raw.send_json("/v1/chat/completions", {**CHAT_BODY, "stream": True})
    response = raw.read_response()
    assert response.chunks is not None
    deltas = [c["choices"][0]["delta"] for c in chunk_payloads(response.chunks)]
    assert deltas[0] == {"role": "assistant", "content": None}
    assert deltas[-1] == {}
    call_deltas = [d["tool_calls"][0] for d in deltas[1:-1]]
    openings = [d for d in call_deltas if "id" in d]
    assert [(o["index"], o["type"], o["function"]) for o in openings] == [
        (0, "function", {"name": "lookup_tide", "arguments": ""}),
        (1, "function", {"name": "ping", "arguments": ""}),
    ]
    fragments = [d for d in call_deltas if "id" not in d]
    assert all(
        set(f) == {"index", "function"} and set(f["function"]) == {"arguments"} for f in fragments
    )
    first_call = [f["function"]["arguments"] for f in fragments if f["index"] == 0]
    assert len(first_call) > 1
    assert "".join(first_call) == '{"port":"Porto"}'


# --------------------------------------------------------------------------------------------
# Wire details


@pytest.mark.parametrize("include_usage", [True, False])
def test_sse_framing(raw: RawConnection, include_usage: bool) -> None:
    body = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": include_usage}}
    raw.send_json("/v1/chat/completions", body)
    response = raw.read_response()
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.headers
    assert response.headers["x-request-id"]
    assert response.chunks is not None
    for chunk in response.chunks:  # one event per HTTP chunk, data lines only
        assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n")
        assert chunk.count(b"\n") == 2
    assert b"event:" not in response.body
    assert response.chunks[-1] == b"data: [DONE]\n\n"
    payloads = chunk_payloads(response.chunks)
    envelope_keys = {"id", "object", "created", "model", "system_fingerprint", "choices"}
    for payload in payloads:
        assert envelope_keys <= set(payload)
        assert payload["object"] == "chat.completion.chunk"
        assert payload["model"] == "gpt-4o-mini"
        assert payload["id"] == payloads[0]["id"]
    assert payloads[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
        "refusal": None,
    }
    if include_usage:
        *rest, usage_chunk = payloads
        assert usage_chunk["choices"] == []
        assert set(usage_chunk["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
        assert all(p["usage"] is None for p in rest)
    else:
        rest = payloads
        assert all("usage" not in p for p in rest)
    finish = rest[-1]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"


def test_chunked_request_body(fake: FakeOpenAI, raw: RawConnection) -> None:
    body = json.dumps(CHAT_BODY).encode()
    pieces = [body[:10], body[10:25], body[25:]]
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
    raw.send(
        "POST",
        "/v1/chat/completions",
        headers={"content-type": "application/json", "transfer-encoding": "chunked"},
    )
    raw.sock.sendall(framed + b"0\r\nx-trailer: yes\r\n\r\n")
    response = raw.read_response()
    assert response.status == 200
    assert json.loads(response.body)["choices"][0]["message"]["content"] == (
        "alpha says hello to gpt-4o-mini"
    )
    recorded = fake.chat_requests()[0]
    assert recorded.body == body
    assert recorded.headers["transfer-encoding"] == "chunked"


def test_keep_alive_serves_several_requests_on_one_connection(
    fake: FakeOpenAI, raw: RawConnection
) -> None:
    raw.send_json("/v1/chat/completions", CHAT_BODY)
    assert raw.read_response().status == 200
    raw.send("GET", "/v1/models")
    assert raw.read_response().status == 200
    raw.send_json("/v1/chat/completions", {**CHAT_BODY, "stream": True})
    assert raw.read_response().chunks is not None
    raw.send_json("/v1/chat/completions", CHAT_BODY)
    assert raw.read_response().status == 200
    assert fake.connections_accepted == 1
    assert fake.request_count == 4


def test_connection_close_is_honoured(fake: FakeOpenAI, raw: RawConnection) -> None:
    raw.send("GET", "/v1/models", headers={"connection": "close"})
    response = raw.read_response()
    assert response.headers["connection"] == "close"
    assert raw.peer_closed()


def test_requests_are_recorded(fake: FakeOpenAI, http: httpx.Client) -> None:
    assert_requests_recorded(fake, http, "/chat/completions", CHAT_BODY)


# --------------------------------------------------------------------------------------------
# Endpoints and validation


def test_models_endpoints(client: openai.OpenAI, http: httpx.Client) -> None:
    assert [model.id for model in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-9-turbo")
    assert caught.value.code == "model_not_found"
    missing = http.get("/nowhere")
    assert missing.status_code == 404
    assert_openai_error(missing.json(), type_="invalid_request_error", code=None)
    wrong_method = http.get("/chat/completions")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert_openai_error(wrong_method.json(), type_="invalid_request_error", code=None)
    assert http.post("/models", json={}).status_code == 405


ANSWERED_TOOL_CALL: list[Any] = [
    {"role": "user", "content": "Tide?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "t", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "14:05"},
]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b"not json", None, None),
        (b"[1, 2]", None, None),
        (json.dumps({"messages": USER_MESSAGES}).encode(), None, None),
        (json.dumps({"model": "gpt-4o"}).encode(), "messages", "missing_required_parameter"),
        (json.dumps({"model": "gpt-4o", "messages": []}).encode(), "messages", "empty_array"),
        (
            json.dumps({"model": "m", "messages": [{"role": "robot", "content": "x"}]}).encode(),
            "messages[0].role",
            "invalid_value",
        ),
        (
            json.dumps({"model": "m", "messages": ANSWERED_TOOL_CALL[:2]}).encode(),
            "messages.[1].role",
            None,
        ),
        (
            json.dumps({"model": "m", "messages": ANSWERED_TOOL_CALL[2:]}).encode(),
            "messages.[0].role",
            None,
        ),
        (
            json.dumps({**CHAT_BODY, "stream_options": {"include_usage": True}}).encode(),
            "stream_options",
            None,
        ),
        (json.dumps({**CHAT_BODY, "stream": "yes"}).encode(), "stream", "invalid_type"),
    ],
)
def test_invalid_chat_requests_get_400(
    http: httpx.Client, body: bytes, param: str | None, code: str | None
) -> None:
    response = http.post(
        "/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert_openai_error(response.json(), type_="invalid_request_error", code=code)
    assert response.json()["error"]["param"] == param


def test_answered_tool_calls_are_accepted(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o", messages=ANSWERED_TOOL_CALL)
    assert completion.choices[0].message.content == "alpha says hello to gpt-4o"


def test_sdk_raises_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[])
    assert caught.value.code == "empty_array"


def test_strict_models_rejects_unknown_models() -> None:
    with FakeOpenAI(strict_models=True) as fake:
        sdk = openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0)
        with pytest.raises(openai.NotFoundError) as caught:
            sdk.chat.completions.create(model="gpt-9-turbo", messages=USER_MESSAGES)
        assert caught.value.code == "model_not_found"


def test_expected_api_key() -> None:
    with FakeOpenAI(expected_api_key=API_KEY) as fake:
        good = openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0)
        bad = openai.OpenAI(base_url=fake.base_url, api_key="sk-fake-wrong-key", max_retries=0)
        assert good.chat.completions.create(model="gpt-4o", messages=USER_MESSAGES).choices
        with pytest.raises(openai.AuthenticationError) as caught:
            bad.chat.completions.create(model="gpt-4o", messages=USER_MESSAGES)
        assert caught.value.code == "invalid_api_key"
        assert "sk-fake-wrong-key" not in caught.value.message
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        missing = httpx.get(f"{fake.base_url}/models")
        assert missing.status_code == 401
        assert_openai_error(missing.json(), type_="invalid_request_error", code=None)


def test_path_prefix() -> None:
    with FakeOpenAI(name="zhipu", path_prefix="/api/paas/v4/") as fake:
        assert fake.base_url == f"http://127.0.0.1:{fake.port}/api/paas/v4"
        sdk = openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0)
        answer = sdk.chat.completions.create(model="glm-4", messages=USER_MESSAGES)
        assert answer.choices[0].message.content == "zhipu says hello to glm-4"
        assert httpx.post(f"http://127.0.0.1:{fake.port}/v1/chat/completions").status_code == 404


# --------------------------------------------------------------------------------------------
# Faults


@pytest.mark.parametrize(
    ("status", "type_", "code", "retry_after"),
    [
        (401, "invalid_request_error", "invalid_api_key", None),
        (429, "requests", "rate_limit_exceeded", "1"),
        (500, "server_error", None, None),
        (503, "server_error", "server_is_overloaded", "1"),
        (418, "invalid_request_error", None, None),
        (502, "server_error", None, None),
    ],
)
def test_status_fault(
    fake: FakeOpenAI,
    http: httpx.Client,
    status: int,
    type_: str,
    code: str | None,
    retry_after: str | None,
) -> None:
    fake.set_fault(status=status, count=2)
    for response in (http.post("/chat/completions", json=CHAT_BODY), http.get("/models")):
        assert response.status_code == status
        assert response.headers.get("retry-after") == retry_after
        assert response.headers["x-request-id"]
        assert_openai_error(response.json(), type_=type_, code=code)
    assert http.get("/models").status_code == 200
    assert fake.active_faults() == {}


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_status_fault_maps_to_sdk_errors(
    fake: FakeOpenAI, client: openai.OpenAI, status: int, error: type[openai.APIStatusError]
) -> None:
    fake.set_fault(status=status, count=1)
    with pytest.raises(error):
        client.chat.completions.create(model="gpt-4o", messages=USER_MESSAGES)


def test_sdk_retries_after_retry_after(fake: FakeOpenAI) -> None:
    fake.set_fault(status=429, retry_after=0.05, count=1)
    sdk = openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=1, timeout=5.0)
    completion = sdk.chat.completions.create(model="gpt-4o", messages=USER_MESSAGES)
    assert completion.choices[0].message.content == "alpha says hello to gpt-4o"
    assert fake.chat_request_count == 2


def test_fault_until_cleared_and_chat_only(fake: FakeOpenAI, http: httpx.Client) -> None:
    fake.set_fault(status=500, chat_only=True)
    for _ in range(3):
        assert http.post("/chat/completions", json=CHAT_BODY).status_code == 500
        assert http.get("/models").status_code == 200
    assert fake.active_faults()["status"]["value"] == 500
    fake.clear_faults()
    assert http.post("/chat/completions", json=CHAT_BODY).status_code == 200


def test_fault_argument_validation(fake: FakeOpenAI) -> None:
    bad_knobs: list[dict[str, Any]] = [
        {"status": 200},
        {"count": 0, "delay": 1},
        {"stall_after": -1},
        {"retry_after": 1},
    ]
    assert_fault_arguments_rejected(fake, bad_knobs)


def test_delay_holds_back_the_response_headers(fake: FakeOpenAI, raw: RawConnection) -> None:
    fake.set_fault(delay=0.4, count=1)
    started = time.monotonic()
    raw.send("GET", "/v1/models")
    raw.assert_silent(raw.read_head, 0.1)
    assert raw.read_response().status == 200
    assert time.monotonic() - started >= 0.4
    assert fake.active_faults() == {}


def test_reset_aborts_with_rst(fake: FakeOpenAI, raw: RawConnection, client: openai.OpenAI) -> None:
    fake.set_fault(reset=True, count=2)
    raw.send_json("/v1/chat/completions", CHAT_BODY)
    with pytest.raises(ConnectionResetError):
        raw.read_head()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o", messages=USER_MESSAGES)
    assert fake.chat_request_count == 2  # the requests were read before the reset
    assert client.chat.completions.create(model="gpt-4o", messages=USER_MESSAGES).choices


def test_refuse_then_restore_on_the_same_port(
    fake: FakeOpenAI, raw: RawConnection, client: openai.OpenAI
) -> None:
    port = fake.port
    raw.send("GET", "/v1/models")
    assert raw.read_response().status == 200
    fake.set_fault(refuse=True)
    assert fake.refused
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1.0)
    assert raw.peer_closed()  # the open keep-alive connection was dropped
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
    fake.restore()
    assert fake.port == port and not fake.refused
    assert [model.id for model in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]
    fake.set_fault(refuse=True)
    fake.clear_faults("refuse")
    assert client.models.list()


def _start_stream(raw: RawConnection) -> None:
    raw.send_json("/v1/chat/completions", {**CHAT_BODY, "stream": True})
    status, headers = raw.read_head()
    assert status == 200 and headers["transfer-encoding"] == "chunked"


def test_stall_after_then_clear(fake: FakeOpenAI, raw: RawConnection) -> None:
    fake.set_fault(stall_after=3, count=1)
    _start_stream(raw)
    first = [raw.read_chunk() or b"" for _ in range(3)]
    assert all(chunk.startswith(b"data: {") for chunk in first)
    raw.assert_silent(raw.read_chunk, 0.2)
    fake.clear_faults()
    rest = raw.read_chunks()
    assert rest[-1] == b"data: [DONE]\n\n"
    text = "".join(
        p["choices"][0]["delta"].get("content") or "" for p in chunk_payloads(first + rest)
    )
    assert text == "alpha says hello to gpt-4o-mini"


def test_stall_ends_when_the_client_goes_away(fake: FakeOpenAI) -> None:
    fake.set_fault(stall_after=0)
    sdk = openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        for _chunk in sdk.chat.completions.create(
            model="gpt-4o", messages=USER_MESSAGES, stream=True
        ):
            pass
    sdk.close()
    wait_until(lambda: fake.open_connections == 0)
    assert fake.active_faults()["stall_after"]["value"] == 0  # until cleared


def test_stall_after_ignores_non_streaming_requests(fake: FakeOpenAI, http: httpx.Client) -> None:
    fake.set_fault(stall_after=1, count=1)
    assert http.post("/chat/completions", json=CHAT_BODY).status_code == 200
    assert "stall_after" in fake.active_faults()  # not consumed by a non-streaming request


def test_midstream_error(fake: FakeOpenAI, raw: RawConnection, client: openai.OpenAI) -> None:
    fake.set_fault(midstream_error=3, count=2)
    raw.send_json("/v1/chat/completions", {**CHAT_BODY, "stream": True})
    response = raw.read_response()
    assert response.headers["connection"] == "close"
    assert response.chunks is not None and len(response.chunks) == 4
    error = json.loads(response.chunks[-1][len(b"data: ") :])
    assert_openai_error(error, type_="server_error", code=None)
    assert b"[DONE]" not in response.body
    assert raw.peer_closed()
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(
            model="gpt-4o", messages=USER_MESSAGES, stream=True
        ):
            received.append(chunk)
    assert len(received) == 3
    assert "server had an error" in caught.value.message


def test_chunk_delay_spaces_the_events(fake: FakeOpenAI, raw: RawConnection) -> None:
    fake.queue_response("abcdefgh")  # role, 2 content chunks, finish, [DONE]
    fake.set_fault(chunk_delay=0.05, count=1)
    _start_stream(raw)
    arrivals = raw.chunk_arrivals()
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] >= 4 * 0.05 * 0.9


# --------------------------------------------------------------------------------------------
# What the fake sent


def test_sent_json_answer_is_the_bytes_the_client_received(
    fake: FakeOpenAI, raw: RawConnection
) -> None:
    raw.send_json("/v1/chat/completions", CHAT_BODY)
    head = raw.read_until(b"\r\n\r\n")
    body = raw.read_exact(int(head.split(b"content-length: ")[1].split(b"\r\n")[0]))
    [sent] = fake.chat_sent_responses()
    assert sent.request is fake.chat_requests()[0]
    assert (sent.status, sent.complete) == (200, True)
    assert sent.head == head
    assert sent.chunks == [body] and sent.body == body
    assert json.loads(body)["choices"][0]["message"]["content"] == "alpha says hello to gpt-4o-mini"


def test_sent_stream_has_one_piece_per_http_chunk(fake: FakeOpenAI, raw: RawConnection) -> None:
    raw.send_json("/v1/chat/completions", {**CHAT_BODY, "stream": True})
    response = raw.read_response()
    [sent] = fake.sent_responses
    assert response.chunks is not None and len(response.chunks) > 3
    assert sent.chunks == response.chunks and sent.body == response.body
    assert sent.status == 200 and sent.complete


def test_sent_errors_stalls_and_resets(fake: FakeOpenAI, raw: RawConnection) -> None:
    fake.set_fault(status=503, count=1)
    raw.send_json("/v1/chat/completions", CHAT_BODY)
    error = raw.read_response()
    fake.set_fault(stall_after=2, count=1)
    _start_stream(raw)
    first = [raw.read_chunk(), raw.read_chunk()]
    raw.assert_silent(raw.read_chunk, 0.1)
    failed, stalled = fake.sent_responses
    assert (failed.status, failed.body, failed.complete) == (503, error.body, True)
    assert stalled.chunks == first and not stalled.complete  # the stall holds the rest back
    fake.clear_faults()
    rest = raw.read_chunks()
    wait_until(lambda: stalled.complete)
    assert stalled.chunks == first + rest
    fake.set_fault(reset=True, count=1)
    with RawConnection(fake.port) as other:
        other.send_json("/v1/chat/completions", CHAT_BODY)
        with pytest.raises(ConnectionResetError):
            other.read_head()
    reset = fake.sent_responses[-1]
    assert (reset.status, reset.chunks, reset.complete) == (None, [], False)
    fake.clear_requests()
    assert fake.sent_responses == [] and fake.requests == []


# --------------------------------------------------------------------------------------------
# Lifecycle, concurrency and the command line


def test_stop_frees_the_port_for_a_new_server() -> None:
    with FakeOpenAI(name="one") as first:
        port = first.port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1.0)
    with FakeOpenAI(port=port, name="two") as second:
        answer = httpx.post(f"{second.base_url}/chat/completions", json=CHAT_BODY).json()
        assert answer["choices"][0]["message"]["content"] == "two says hello to gpt-4o-mini"


def test_concurrent_streams(fake: FakeOpenAI) -> None:
    def stream_once(_: int) -> str:
        with httpx.Client(base_url=fake.base_url, timeout=5.0) as session:
            body = {**CHAT_BODY, "stream": True}
            with session.stream("POST", "/chat/completions", json=body) as response:
                lines = [line for line in response.iter_lines() if line.startswith("data: {")]
        return "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or "" for line in lines
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        texts = list(pool.map(stream_once, range(64)))
    assert texts == ["alpha says hello to gpt-4o-mini"] * 64


def test_command_line_with_control_api() -> None:
    control_port = free_port()
    args = ["--name", "cli", "--control-port", str(control_port)]
    with cli_process("openai_upstream", *args) as port:
        base_url = f"http://127.0.0.1:{port}/v1"
        control = f"http://127.0.0.1:{control_port}"
        answer = httpx.post(f"{base_url}/chat/completions", json=CHAT_BODY).json()
        assert answer["choices"][0]["message"]["content"] == "cli says hello to gpt-4o-mini"
        assert httpx.post(f"{control}/faults", json={"bogus": 1}).status_code == 400
        armed = httpx.post(f"{control}/faults", json={"status": 503, "count": 1})
        assert armed.json()["status"]["value"] == 503
        faulted = httpx.post(f"{base_url}/chat/completions", json=CHAT_BODY)
        assert (faulted.status_code, faulted.headers["retry-after"]) == (503, "1")
        counts = httpx.get(f"{control}/requests/count").json()
        assert (counts["count"], counts["chat"]) == (2, 2)
        httpx.post(f"{control}/faults", json={"refuse": True})
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base_url}/models")
        assert httpx.delete(f"{control}/faults").json() == {}
        assert httpx.get(f"{base_url}/models").status_code == 200


# --------------------------------------------------------------------------------------------
# answer_chars: long default answers for the benchmark


def test_default_answer_length() -> None:
    assert default_answer("alpha", "gpt-4o-mini") == "alpha says hello to gpt-4o-mini"
    assert default_answer("alpha", "gpt-4o-mini", 5) == "alpha"
    long = default_answer("alpha", "gpt-4o-mini", 1000)
    assert len(long) == 1000
    assert long.startswith("alpha says hello to gpt-4o-mini ")


def test_answer_chars_stretches_the_default_answer() -> None:
    with FakeOpenAI(name="long", answer_chars=256, chunk_chars=4) as fake:
        expected = default_answer("long", "gpt-4o-mini", 256)
        answer = httpx.post(f"{fake.base_url}/chat/completions", json=CHAT_BODY).json()
        assert answer["choices"][0]["message"]["content"] == expected
        with RawConnection(fake.port) as raw:
            raw.send_json("/v1/chat/completions", {**CHAT_BODY, "stream": True})
            response = raw.read_response()
        assert response.chunks is not None
        deltas = [payload["choices"][0]["delta"] for payload in chunk_payloads(response.chunks)]
        pieces = [delta["content"] for delta in deltas if delta.get("content")]
        assert len(pieces) == 64
        assert "".join(pieces) == expected
        fake.queue_response("scripted answers keep their own text")
        scripted = httpx.post(f"{fake.base_url}/chat/completions", json=CHAT_BODY).json()
        assert (
            scripted["choices"][0]["message"]["content"] == "scripted answers keep their own text"
        )


def test_answer_chars_is_validated() -> None:
    with pytest.raises(ValueError, match="answer_chars"):
        FakeOpenAI(answer_chars=0)


def test_command_line_answer_chars() -> None:
    with cli_process(
        "openai_upstream", "--name", "cli", "--answer-chars", "40", "--chunk-chars", "8"
    ) as port:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        answer = httpx.post(url, json=CHAT_BODY).json()
        assert answer["choices"][0]["message"]["content"] == default_answer(
            "cli", "gpt-4o-mini", 40
        )
    command = [sys.executable, "-m", "tests.fakes.openai_upstream", "--name", "cli", "--port", "0"]
    rejected = subprocess.run(
        [*command, "--answer-chars", "0"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert rejected.returncode == 2
    assert "--answer-chars" in rejected.stderr


def test_scripted_reasoning_content_like_compatible_servers() -> None:
    """reasoning_content deltas come first, then content (DeepSeek/vLLM style)."""
    with FakeOpenAI(name="thinker") as fake:
        fake.queue_response("answer", reasoning="step one, step two")
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
        with httpx.stream("POST", f"{fake.base_url}/chat/completions", json=body) as response:
            raw = b"".join(response.iter_bytes())
        deltas = [
            json.loads(line[6:])["choices"][0]["delta"]
            for line in raw.split(b"\n\n")
            if line.startswith(b"data: {")
        ]
        reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
        text = "".join(d.get("content") or "" for d in deltas)
        assert reasoning == "step one, step two" and text == "answer"
        first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
        assert all("reasoning_content" not in d for d in deltas[first_content:])
        fake.queue_response("plain", reasoning="why")
        answer = httpx.post(
            f"{fake.base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        ).json()
        assert answer["choices"][0]["message"]["reasoning_content"] == "why"
