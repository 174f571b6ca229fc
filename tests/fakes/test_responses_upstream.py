"""Tests for the fake OpenAI Responses upstream, against the running server.

The official ``openai`` SDK (``client.responses``) checks that the fake passes for the real
API; raw sockets and httpx check the wire details (event framing, sequence numbers, faults);
the proxy's own Responses codec reads the fake's streams back.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from extproc.canonical.aggregate import aggregate_events
from extproc.codecs.openai_responses import OpenAIResponsesCodec
from tests.fakes._testing import (
    RawConnection,
    assert_openai_error,
    cli_process,
    free_port,
    wait_until,
)
from tests.fakes.responses_upstream import FakeResponses

API_KEY = "sk-fake-provider-key"
BODY: dict[str, Any] = {"model": "gpt-5", "input": "Say hello."}
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)


# --------------------------------------------------------------------------------------------
# Helpers and fixtures


def sse_payloads(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` per SSE event of a Responses stream."""
    out = []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        out.append((event_line[len("event: ") :], json.loads(data_line[len("data: ") :])))
    return out


@pytest.fixture
def fake() -> Iterator[FakeResponses]:
    with FakeResponses(name="beta") as server:
        yield server


@pytest.fixture
def client(fake: FakeResponses) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0, timeout=5.0)


@pytest.fixture
def http(fake: FakeResponses) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, timeout=5.0) as session:
        yield session


@pytest.fixture
def raw(fake: FakeResponses) -> Iterator[RawConnection]:
    with RawConnection(fake.port) as connection:
        yield connection


# --------------------------------------------------------------------------------------------
# The SDK accepts the fake


def test_sdk_non_streaming_default_answer(fake: FakeResponses, client: openai.OpenAI) -> None:
    raw_response = client.responses.with_raw_response.create(
        model="gpt-5", input="Say hello.", instructions="Be kind."
    )
    response = raw_response.parse()
    assert raw_response.headers["x-request-id"].startswith("req_")
    assert raw_response.headers["content-type"] == "application/json"
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.output_text == "beta says hello to gpt-5"
    assert response.instructions == "Be kind."
    (message,) = response.output
    assert message.type == "message" and message.id.startswith("msg_")
    usage = response.usage
    assert usage is not None
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    recorded = fake.chat_requests()[0]
    assert recorded.path == "/v1/responses"
    assert recorded.json["input"] == "Say hello."
    assert recorded.headers["authorization"] == f"Bearer {API_KEY}"


def test_sdk_non_streaming_tool_calls_and_reasoning(
    fake: FakeResponses, client: openai.OpenAI
) -> None:
    fake.queue_response(
        "Checking.",
        tool_calls=[("lookup_tide", '{"port":"Porto"}'), ("lookup_weather", "{}")],
        reasoning="Tide first, then wind.",
        reasoning_tokens=9,
    )
    response = client.responses.create(
        model="gpt-5",
        input="Can I sail?",
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        store=False,
    )
    assert [item.type for item in response.output] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning"
    assert [s.text for s in reasoning.summary] == ["Tide first, then wind."]
    assert reasoning.encrypted_content
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.name, c.arguments) for c in calls] == [
        ("lookup_tide", '{"port":"Porto"}'),
        ("lookup_weather", "{}"),
    ]
    assert all(c.call_id.startswith("call_") and c.id and c.id.startswith("fc_") for c in calls)
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 9


def test_reasoning_summary_only_when_asked(client: openai.OpenAI, fake: FakeResponses) -> None:
    fake.queue_response("ok", reasoning="hidden")
    response = client.responses.create(model="gpt-5", input="hi")
    reasoning = response.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.summary == [] and reasoning.encrypted_content is None


def test_sdk_streaming_with_function_calls_and_reasoning_summaries(
    fake: FakeResponses, client: openai.OpenAI
) -> None:
    fake.queue_response(
        "Let me look.",
        tool_calls=[("lookup_tide", '{"port":"Porto"}')],
        reasoning="Need the tide table.",
    )
    with client.responses.stream(
        model="gpt-5", input="Tide?", reasoning={"summary": "auto"}
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed"
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert summary == "Need the tide table."
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    assert arguments == '{"port":"Porto"}'
    assert final.output_text == "Let me look."
    assert [(i.type, getattr(i, "name", None)) for i in final.output] == [
        ("reasoning", None),
        ("message", None),
        ("function_call", "lookup_tide"),
    ]


def test_stream_framing_and_usage_only_in_the_terminal_event(
    fake: FakeResponses, raw: RawConnection
) -> None:
    fake.queue_response("abcdefgh", tool_calls=[("f", '{"a":1}')])
    raw.send_json("/v1/responses", {**BODY, "stream": True})
    response = raw.read_response()
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.chunks is not None
    events = sse_payloads(response.body)
    assert len(response.chunks) == len(events)  # one event per HTTP chunk
    for name, data in events:
        assert name == data["type"]
        if name != "response.completed":  # the documented usage lacks the SDK's newest field
            STREAM_EVENT.validate_python(data)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    lifecycle = [data for name, data in events if "response" in data]
    assert [d["response"]["usage"] is None for d in lifecycle] == [True, True, False]
    assert b"[DONE]" not in response.body
    deltas = [d["delta"] for n, d in events if n == "response.output_text.delta"]
    assert deltas == ["abcd", "efgh"]


def test_incomplete_answers(client: openai.OpenAI, fake: FakeResponses) -> None:
    fake.queue_response("cut sh", finish_reason="length")
    response = client.responses.create(model="gpt-5", input="long story", max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].type == "message" and response.output[0].status == "incomplete"
    fake.queue_response("no", finish_reason="content_filter")
    events = list(client.responses.create(model="gpt-5", input="x", stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details is not None
    assert events[-1].response.incomplete_details.reason == "content_filter"


def test_replayed_output_round_trip(client: openai.OpenAI, fake: FakeResponses) -> None:
    """The SDK's own output items, sent back with the tool result, are accepted (store false)."""
    fake.queue_response(tool_calls=[("f", "{}")], reasoning="think")
    first = client.responses.create(
        model="gpt-5", input="go", store=False, include=["reasoning.encrypted_content"]
    )
    call = first.output[-1]
    assert call.type == "function_call"
    items: list[Any] = [{"role": "user", "content": "go"}]
    items += [item.model_dump(exclude_none=True) for item in first.output]
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": "done"})
    second = client.responses.create(model="gpt-5", input=items, store=False)
    assert second.output_text == "beta says hello to gpt-5"


def test_the_proxy_codec_reads_the_fake_stream(fake: FakeResponses, http: httpx.Client) -> None:
    fake.queue_response("Hi there.", tool_calls=[("f", '{"x":[1,2]}')], reasoning="Hmm.")
    body = {**BODY, "stream": True, "reasoning": {"summary": "concise"}}
    data = http.post("/responses", json=body).content
    codec = OpenAIResponsesCodec()
    decoder = codec.stream_decoder()
    events = [e for _, group in decoder.feed(data) + decoder.finish() for e in group]
    answer = aggregate_events(events)
    assert answer.finish_reason == "tool_calls"
    assert [type(p).__name__ for p in answer.content] == [
        "ReasoningPart",
        "TextPart",
        "ToolCallPart",
    ]
    assert [getattr(p, "text", getattr(p, "arguments", None)) for p in answer.content] == [
        "Hmm.",
        "Hi there.",
        '{"x":[1,2]}',
    ]


def test_input_tokens_and_models(client: openai.OpenAI, http: httpx.Client) -> None:
    counted = client.responses.input_tokens.count(model="gpt-5", input="x" * 40)
    assert counted.object == "response.input_tokens" and counted.input_tokens == 10
    assert http.post("/responses/input_tokens", json={"input": "abcd"}).json() == {
        "object": "response.input_tokens",
        "input_tokens": 1,
    }
    assert [model.id for model in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]
    assert http.get("/models/gpt-4o").json()["id"] == "gpt-4o"


# --------------------------------------------------------------------------------------------
# Validation like the real API

CALL = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
OUTPUT = {"type": "function_call_output", "call_id": "call_1", "output": "42"}


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        ({"input": "x"}, 400, "model", "Missing required parameter: 'model'"),
        ({"model": "gpt-5"}, 400, "input", "Missing required parameter: 'input'"),
        ({**BODY, "input": 5}, 400, "input", "Invalid type for 'input'"),
        ({**BODY, "input": [{"role": "robot", "content": "x"}]}, 400, "input[0].role", "robot"),
        ({**BODY, "input": [{"role": "user"}]}, 400, "input[0].content", "Missing"),
        ({**BODY, "input": [{**CALL, "call_id": None}, OUTPUT]}, 400, "input[0].call_id", ""),
        ({**BODY, "input": [OUTPUT]}, 400, "input", "No tool call found"),
        ({**BODY, "input": [CALL]}, 400, "input", "No tool output found for function call call_1"),
        (
            {**BODY, "store": False, "input": [{"type": "reasoning", "id": "rs_1", "summary": []}]},
            404,
            "input",
            "Items are not persisted when `store` is set to false",
        ),
        (
            {
                **BODY,
                "input": [
                    {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "sig"}
                ],
            },
            400,
            "input",
            "could not be verified",
        ),
        ({**BODY, "tools": [{"type": "function"}]}, 400, "tools[0].name", "Missing"),
        ({**BODY, "max_output_tokens": 5}, 400, "max_output_tokens", "minimum value"),
        ({**BODY, "stream": "yes"}, 400, "stream", "expected a boolean"),
        ({**BODY, "stream_options": {}}, 400, "stream_options", "only allowed"),
        ({**BODY, "include": "reasoning"}, 400, "include", "Invalid type"),
    ],
)
def test_invalid_requests(
    http: httpx.Client, body: dict[str, Any], status: int, param: str, fragment: str
) -> None:
    response = http.post("/responses", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]


def test_stateful_requests_need_no_input_or_calls(http: httpx.Client) -> None:
    stateful = {"model": "gpt-5", "previous_response_id": "resp_1"}
    assert http.post("/responses", json=stateful).status_code == 200
    assert http.post("/responses", json={**stateful, "input": [OUTPUT]}).status_code == 200
    assert http.post("/responses", content=b"{not json").status_code == 400


def test_sdk_raises_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="No tool call found"):
        client.responses.create(model="gpt-5", input=[OUTPUT])  # type: ignore[list-item]


def test_expected_api_key_and_strict_models() -> None:
    with FakeResponses(expected_api_key=API_KEY, strict_models=True) as fake:
        wrong = openai.OpenAI(base_url=fake.base_url, api_key="sk-wrong-key-0000", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.responses.create(model="gpt-4o", input="x")
        right = openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0)
        assert right.responses.create(model="gpt-4o", input="x").output_text
        with pytest.raises(openai.NotFoundError):
            right.responses.create(model="gpt-9", input="x")


# --------------------------------------------------------------------------------------------
# Faults: the knobs of the Chat fake, on /v1/responses


@pytest.mark.parametrize(
    ("status", "type_", "code", "retry_after"),
    [
        (401, "invalid_request_error", "invalid_api_key", None),
        (429, "requests", "rate_limit_exceeded", "1"),
        (500, "server_error", None, None),
        (503, "server_error", "server_is_overloaded", "1"),
    ],
)
def test_status_fault(
    fake: FakeResponses,
    http: httpx.Client,
    status: int,
    type_: str,
    code: str | None,
    retry_after: str | None,
) -> None:
    fake.set_fault(status=status, count=2)
    for response in (http.post("/responses", json=BODY), http.get("/models")):
        assert response.status_code == status
        assert response.headers.get("retry-after") == retry_after
        assert_openai_error(response.json(), type_=type_, code=code)
    assert http.post("/responses", json=BODY).status_code == 200
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
    fake: FakeResponses, client: openai.OpenAI, status: int, error: type[openai.APIStatusError]
) -> None:
    fake.set_fault(status=status, count=1)
    with pytest.raises(error):
        client.responses.create(model="gpt-5", input="x")


def test_sdk_retries_after_retry_after(fake: FakeResponses) -> None:
    fake.set_fault(status=429, retry_after=0.05, count=1)
    sdk = openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=1, timeout=5.0)
    assert sdk.responses.create(model="gpt-5", input="x").output_text == "beta says hello to gpt-5"
    assert fake.chat_request_count == 2


def test_chat_only_faults_apply_to_responses_only(fake: FakeResponses, http: httpx.Client) -> None:
    fake.set_fault(status=500, chat_only=True)
    for _ in range(2):
        assert http.post("/responses", json=BODY).status_code == 500
        assert http.get("/models").status_code == 200
        assert http.post("/responses/input_tokens", json=BODY).status_code == 200
    fake.clear_faults()
    assert http.post("/responses", json=BODY).status_code == 200


def test_delay(fake: FakeResponses, http: httpx.Client) -> None:
    fake.set_fault(delay=0.2, count=1)
    started = time.monotonic()
    assert http.post("/responses", json=BODY).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_reset(fake: FakeResponses, client: openai.OpenAI) -> None:
    fake.set_fault(reset=True, count=1)
    with pytest.raises(openai.APIConnectionError):
        client.responses.create(model="gpt-5", input="x")
    assert fake.chat_request_count == 1
    assert client.responses.create(model="gpt-5", input="x").output_text


def test_refuse_then_restore(fake: FakeResponses, client: openai.OpenAI) -> None:
    port = fake.port
    fake.set_fault(refuse=True)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1.0)
    with pytest.raises(openai.APIConnectionError):
        client.responses.create(model="gpt-5", input="x")
    fake.restore()
    assert fake.port == port
    assert client.responses.create(model="gpt-5", input="x").output_text


def test_stall_after_then_clear(fake: FakeResponses, raw: RawConnection) -> None:
    fake.set_fault(stall_after=3, count=1)
    raw.send_json("/v1/responses", {**BODY, "stream": True})
    assert raw.read_head()[0] == 200
    first = [raw.read_chunk() or b"" for _ in range(3)]
    raw.assert_silent(raw.read_chunk, 0.2)
    fake.clear_faults()
    rest = raw.read_chunks()
    events = sse_payloads(b"".join(first + rest))
    assert events[-1][0] == "response.completed"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))


def test_stall_ends_when_the_client_goes_away(fake: FakeResponses) -> None:
    fake.set_fault(stall_after=0)
    sdk = openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        for _event in sdk.responses.create(model="gpt-5", input="x", stream=True):
            pass
    sdk.close()
    wait_until(lambda: fake.open_connections == 0)


def test_midstream_error(fake: FakeResponses, raw: RawConnection, client: openai.OpenAI) -> None:
    fake.set_fault(midstream_error=3, count=2)
    raw.send_json("/v1/responses", {**BODY, "stream": True})
    response = raw.read_response()
    assert response.headers["connection"] == "close"
    events = sse_payloads(response.body)
    assert [name for name, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "error",
        "response.failed",
    ]
    assert [d["sequence_number"] for _, d in events] == [0, 1, 2, 3, 4]
    error = events[3][1]
    assert error["error"]["code"] == "server_error"  # the observed nested form
    assert error["message"] == error["error"]["message"]  # and the documented flat one
    failed = events[4][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["id"] == events[0][1]["response"]["id"]
    assert raw.peer_closed()
    received = []
    with pytest.raises(openai.APIError) as caught:
        for event in client.responses.create(model="gpt-5", input="x", stream=True):
            received.append(event)
    assert len(received) == 3
    assert "server had an error" in caught.value.message


def test_chunk_delay(fake: FakeResponses, raw: RawConnection) -> None:
    fake.queue_response("abcd")  # created, in_progress, 6 message events, completed
    fake.set_fault(chunk_delay=0.03, count=1)
    raw.send_json("/v1/responses", {**BODY, "stream": True})
    raw.read_head()
    arrivals = raw.chunk_arrivals()
    assert len(arrivals) == 9
    assert arrivals[-1] - arrivals[0] >= 8 * 0.03 * 0.9


def test_stream_knobs_ignore_non_streaming_requests(
    fake: FakeResponses, http: httpx.Client
) -> None:
    fake.set_fault(midstream_error=1, count=1)
    assert http.post("/responses", json=BODY).status_code == 200
    assert "midstream_error" in fake.active_faults()


# --------------------------------------------------------------------------------------------
# The command line


def test_command_line_with_control_api() -> None:
    control_port = free_port()
    args = ["--name", "cli", "--control-port", str(control_port)]
    with cli_process("responses_upstream", *args) as port:
        base_url = f"http://127.0.0.1:{port}/v1"
        control = f"http://127.0.0.1:{control_port}"
        answer = httpx.post(f"{base_url}/responses", json=BODY).json()
        assert answer["output"][0]["content"][0]["text"] == "cli says hello to gpt-5"
        armed = httpx.post(f"{control}/faults", json={"status": 503, "count": 1})
        assert armed.json()["status"]["value"] == 503
        assert httpx.post(f"{base_url}/responses", json=BODY).status_code == 503
        counts = httpx.get(f"{control}/requests/count").json()
        assert (counts["count"], counts["chat"]) == (2, 2)
        assert httpx.delete(f"{control}/faults").json() == {}
