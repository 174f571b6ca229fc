"""Tests for the fake Gemini API upstream, against the running server.

The official ``google-genai`` SDK checks that the fake is accepted as the real thing (answers,
streams with function calls and thoughts, errors as the SDK's exception classes); raw sockets
and httpx check the wire details (CRLF SSE framing, the JSON-array stream, auth, faults). The
codec's own requests are checked to pass the fake's validation, which mirrors the real API's.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import httpx2
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from extproc.canonical import TextPart
from extproc.canonical.aggregate import aggregate_events
from extproc.codecs.base import RequestMeta
from extproc.codecs.gemini import GeminiCodec
from extproc.codecs.openai_chat import OpenAIChatCodec
from tests.fakes._testing import (
    RawConnection,
    assert_fault_arguments_rejected,
    cli_process,
    free_port,
    wait_until,
)
from tests.fakes.gemini_upstream import FakeGemini, default_answer

API_KEY = "gemini-fake-provider-key"
MODEL = "gemini-2.5-flash"
USER = {"role": "user", "parts": [{"text": "Say hello."}]}
BODY: dict[str, Any] = {"contents": [USER]}
GENERATE = f"/models/{MODEL}:generateContent"
STREAM = f"/models/{MODEL}:streamGenerateContent"
#: The SDK sends with httpx2 (or httpx when given a client): either one's transport errors.
TRANSPORT_ERRORS = (httpx.TransportError, httpx2.TransportError)
TIMEOUTS = (httpx.TimeoutException, httpx2.TimeoutException)


# --------------------------------------------------------------------------------------------
# Helpers and fixtures


def sdk(fake: FakeGemini, key: str = API_KEY, **options: Any) -> genai.Client:
    return genai.Client(
        api_key=key,
        http_options=gtypes.HttpOptions(
            base_url=fake.root_url, api_version="v1beta", timeout=5_000, **options
        ),
    )


def sse_payloads(body: bytes) -> list[dict[str, Any]]:
    """The events of a Gemini SSE body, checking the framing (§4.4: CRLF, data: only)."""
    assert body.endswith(b"\r\n\r\n")
    events = body[:-4].split(b"\r\n\r\n")
    assert all(e.startswith(b"data: ") and b"\n" not in e for e in events)
    return [json.loads(e[len(b"data: ") :]) for e in events]


def assert_google_error(body: Any, code: int, status: str) -> None:
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["status"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(name="alpha", expected_api_key=API_KEY) as server:
        yield server


@pytest.fixture
def client(fake: FakeGemini) -> genai.Client:
    return sdk(fake)


@pytest.fixture
def http(fake: FakeGemini) -> Iterator[httpx.Client]:
    headers = {"x-goog-api-key": API_KEY}
    with httpx.Client(base_url=fake.base_url, headers=headers, timeout=5.0) as session:
        yield session


@pytest.fixture
def raw(fake: FakeGemini) -> Iterator[RawConnection]:
    with RawConnection(fake.port) as connection:
        yield connection


def raw_post(raw: RawConnection, path: str, payload: Any) -> None:
    body = json.dumps(payload).encode()
    raw.send("POST", f"/v1beta{path}", body, {"x-goog-api-key": API_KEY})


# --------------------------------------------------------------------------------------------
# The SDK accepts the fake


def test_sdk_generate_default_answer(fake: FakeGemini, client: genai.Client) -> None:
    answer = client.models.generate_content(model=MODEL, contents="Say hello.")
    assert answer.text == f"alpha says hello to {MODEL}"
    assert answer.model_version == MODEL and answer.response_id
    assert answer.candidates is not None
    assert answer.candidates[0].finish_reason == gtypes.FinishReason.STOP
    usage = answer.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    (request,) = fake.chat_requests()
    assert request.path == f"/v1beta{GENERATE}"
    assert request.headers["x-goog-api-key"] == API_KEY
    assert request.json == {"contents": [{"parts": [{"text": "Say hello."}], "role": "user"}]}


def test_sdk_stream_text(fake: FakeGemini, client: genai.Client) -> None:
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="Say hello."))
    text = f"alpha says hello to {MODEL}"
    assert "".join(c.text or "" for c in chunks) == text
    assert len(chunks) == -(-len(text) // 4) + 1  # chunk_chars=4 pieces, then the last event
    assert all(c.candidates and c.candidates[0].finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.candidates is not None
    assert last.candidates[0].finish_reason == gtypes.FinishReason.STOP
    assert last.usage_metadata is not None and last.usage_metadata.candidates_token_count
    assert chunks[0].usage_metadata is not None
    assert chunks[0].usage_metadata.candidates_token_count is None  # prompt counts only
    assert fake.chat_requests()[-1].query == "alt=sse"


def test_sdk_function_calls_with_signature(fake: FakeGemini, client: genai.Client) -> None:
    fake.queue_response(tool_calls=[("lookup_tide", '{"port": "Porto"}'), ("get_time", "")])
    answer = client.models.generate_content(model=MODEL, contents="Tide?")
    assert [(c.name, c.args, c.id) for c in answer.function_calls or []] == [
        ("lookup_tide", {"port": "Porto"}, None),
        ("get_time", {}, None),
    ]
    assert answer.candidates is not None and answer.candidates[0].content is not None
    parts = answer.candidates[0].content.parts or []
    assert parts[0].thought_signature and parts[1].thought_signature is None
    assert answer.candidates[0].finish_reason == gtypes.FinishReason.STOP


def test_sdk_stream_function_calls_arrive_whole(fake: FakeGemini, client: genai.Client) -> None:
    fake.queue_response("Checking.", tool_calls=[("a", '{"x": 1}'), ("b", '{"y": [2]}')])
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="go"))
    calls = [(c.name, c.args) for chunk in chunks for c in chunk.function_calls or []]
    assert calls == [("a", {"x": 1}), ("b", {"y": [2]})]
    assert [len(chunk.function_calls or []) for chunk in chunks[-2:]] == [1, 1]
    assert chunks[-1].candidates is not None
    assert chunks[-1].candidates[0].finish_reason == gtypes.FinishReason.STOP
    assert chunks[-2].candidates is not None and chunks[-2].candidates[0].finish_reason is None


@pytest.mark.parametrize("include", [True, False])
def test_sdk_thoughts_only_when_asked(
    fake: FakeGemini, client: genai.Client, include: bool
) -> None:
    fake.queue_response("Sail at noon.", thinking="The flood tide peaks at noon.")
    config = gtypes.GenerateContentConfig(
        thinking_config=gtypes.ThinkingConfig(include_thoughts=include)
    )
    chunks = list(
        client.models.generate_content_stream(model=MODEL, contents="Sail?", config=config)
    )
    parts = [
        part
        for chunk in chunks
        for candidate in chunk.candidates or []
        for part in (candidate.content.parts or [] if candidate.content else [])
    ]
    thoughts = "".join(p.text or "" for p in parts if p.thought)
    assert thoughts == ("The flood tide peaks at noon." if include else "")
    assert "".join(p.text or "" for p in parts if not p.thought) == "Sail at noon."
    assert parts[-1].thought_signature  # the late signature on the last (empty) text part
    usage = chunks[-1].usage_metadata
    assert usage is not None and usage.thoughts_token_count == 8
    assert usage.total_token_count == (
        (usage.prompt_token_count or 0) + (usage.candidates_token_count or 0) + 8
    )


def test_scripted_usage_and_finish_reason(fake: FakeGemini, client: genai.Client) -> None:
    fake.queue_response(
        "cut",
        finish_reason="MAX_TOKENS",
        prompt_tokens=100,
        completion_tokens=7,
        cached_tokens=60,
        reasoning_tokens=5,
    )
    answer = client.models.generate_content(model=MODEL, contents="long")
    assert answer.candidates is not None
    assert answer.candidates[0].finish_reason == gtypes.FinishReason.MAX_TOKENS
    usage = answer.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count) == (100, 7)
    assert (usage.cached_content_token_count, usage.thoughts_token_count) == (60, 5)
    assert usage.total_token_count == 112


def test_scripts_are_consumed_in_order(fake: FakeGemini, client: genai.Client) -> None:
    fake.queue_response("one")
    fake.queue_response("two")
    assert client.models.generate_content(model=MODEL, contents="x").text == "one"
    assert client.models.generate_content(model=MODEL, contents="x").text == "two"
    assert client.models.generate_content(model=MODEL, contents="x").text == default_answer(
        "alpha", MODEL
    )
    fake.queue_response("dropped")
    fake.clear_responses()
    assert client.models.generate_content(model=MODEL, contents="x").text != "dropped"


def test_openai_knob_names_are_mapped(fake: FakeGemini, client: genai.Client) -> None:
    fake.queue_response("cut", finish_reason="length", reasoning="short thought")
    answer = client.models.generate_content(model=MODEL, contents="x")
    assert answer.candidates is not None
    assert answer.candidates[0].finish_reason == gtypes.FinishReason.MAX_TOKENS
    assert answer.usage_metadata is not None and answer.usage_metadata.thoughts_token_count == 4


def test_queue_response_validation(fake: FakeGemini) -> None:
    with pytest.raises(ValueError):
        fake.queue_response("x", finish_reason="sometimes")
    with pytest.raises(ValueError):
        fake.queue_response("x", thinking="a", reasoning="b")
    with pytest.raises(ValueError):
        fake.queue_response()
    with pytest.raises(ValueError):
        fake.queue_response(tool_calls=[("f", "[1, 2]")])
    with pytest.raises(ValueError):
        fake.queue_response(tool_calls=[("f", "{not json")])


def test_sdk_count_tokens_models_and_pages(fake: FakeGemini, client: genai.Client) -> None:
    counted = client.models.count_tokens(model=MODEL, contents="How many tokens?")
    assert counted.total_tokens and counted.total_tokens > 0
    models = list(client.models.list())
    assert [m.name for m in models] == ["models/gemini-2.5-flash", "models/gemini-2.5-pro"]
    assert client.models.get(model="gemini-2.5-pro").display_name == "Gemini 2.5 Pro"
    pages = list(client.models.list(config={"page_size": 1}))
    assert len(pages) == 2  # the pager followed nextPageToken
    with pytest.raises(genai_errors.ClientError) as caught:
        client.models.get(model="gemini-9")
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"


def test_count_tokens_forms(http: httpx.Client) -> None:
    inner = {"generateContentRequest": {"model": f"models/{MODEL}", "contents": [USER]}}
    first = http.post(f"/models/{MODEL}:countTokens", json={"contents": [USER]}).json()
    assert http.post(f"/models/{MODEL}:countTokens", json=inner).json() == first
    both = http.post(f"/models/{MODEL}:countTokens", json={**inner, "contents": [USER]})
    assert both.status_code == 400
    assert_google_error(both.json(), 400, "INVALID_ARGUMENT")


# --------------------------------------------------------------------------------------------
# Wire details


def test_sse_framing(fake: FakeGemini, raw: RawConnection) -> None:
    raw_post(raw, STREAM + "?alt=sse", BODY)
    response = raw.read_response()
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.chunks is not None
    payloads = sse_payloads(response.body)
    assert len(response.chunks) == len(payloads)  # one event per HTTP chunk
    assert b"[DONE]" not in response.body and b"event:" not in response.body
    assert {p["responseId"] for p in payloads} == {payloads[0]["responseId"]}
    assert payloads[-1]["candidates"][0]["finishReason"] == "STOP"
    assert payloads[-1]["candidates"][0]["content"]["parts"] == [{"text": ""}]


def test_stream_without_alt_sse_is_one_json_array(raw: RawConnection) -> None:
    raw_post(raw, STREAM, BODY)
    response = raw.read_response()
    assert response.headers["content-type"].startswith("application/json")
    assert response.chunks is not None and len(response.chunks) > 2
    items = json.loads(response.body)
    assert isinstance(items, list) and items[-1]["candidates"][0]["finishReason"] == "STOP"
    text = "".join(i["candidates"][0]["content"]["parts"][0]["text"] for i in items)
    assert text == f"alpha says hello to {MODEL}"


def test_snake_case_requests_are_accepted(http: httpx.Client) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "system_instruction": {"parts": [{"text": "brief"}]},
        "generation_config": {"thinking_config": {"include_thoughts": True}},
    }
    assert http.post(GENERATE, json=body).status_code == 200


def test_keep_alive_serves_several_requests(fake: FakeGemini, http: httpx.Client) -> None:
    for _ in range(3):
        assert http.post(GENERATE, json=BODY).status_code == 200
    assert http.get("/models").status_code == 200
    assert fake.connections_accepted == 1


def test_requests_are_recorded(fake: FakeGemini, http: httpx.Client) -> None:
    http.post(GENERATE, json=BODY)
    http.post(f"/models/{MODEL}:countTokens", json=BODY)
    http.get("/models")
    assert [r.method for r in fake.requests] == ["POST", "POST", "GET"]
    assert len(fake.chat_requests()) == 1
    assert (fake.request_count, fake.chat_request_count) == (3, 1)
    fake.clear_requests()
    assert fake.requests == [] and fake.request_count == 3


def test_unknown_paths_and_methods(http: httpx.Client) -> None:
    assert http.post(f"/models/{MODEL}:embedContent", json=BODY).status_code == 404
    assert http.get("/files").status_code == 404
    wrong = http.get(GENERATE)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert_google_error(wrong.json(), 405, "UNKNOWN")


def test_urls() -> None:
    fake = FakeGemini(port=0)
    with fake:
        assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1beta"
        assert fake.root_url == f"http://127.0.0.1:{fake.port}"


# --------------------------------------------------------------------------------------------
# Authentication and validation


def test_api_key_in_header_or_query(fake: FakeGemini) -> None:
    with httpx.Client(base_url=fake.base_url, timeout=5.0) as http:
        assert http.post(GENERATE, params={"key": API_KEY}, json=BODY).status_code == 200
        missing = http.post(GENERATE, json=BODY)
        assert missing.status_code == 403
        assert_google_error(missing.json(), 403, "PERMISSION_DENIED")
        wrong = http.post(GENERATE, params={"key": "nope"}, json=BODY)
        assert wrong.status_code == 400
        assert_google_error(wrong.json(), 400, "INVALID_ARGUMENT")
        assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    wrong_key = sdk(fake, key="wrong-key")  # (keep the client: it closes its HTTP client on GC)
    with pytest.raises(genai_errors.ClientError) as caught:
        wrong_key.models.generate_content(model=MODEL, contents="x")
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")


def _turns(*contents: dict[str, Any]) -> dict[str, Any]:
    return {"contents": [USER, *contents]}


CALL = {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}
TWO_CALLS = {"role": "model", "parts": [CALL["parts"][0], {"functionCall": {"name": "g"}}]}
ANSWER = {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"output": 1}}}]}

INVALID: list[tuple[str, Any, str]] = [
    ("not an object", [1], "Invalid JSON payload"),
    ("contents missing", {}, "contents is not specified"),
    ("contents empty", {"contents": []}, "contents is not specified"),
    ("role assistant", {"contents": [{**USER, "role": "assistant"}]}, "valid role: user, model"),
    ("role function", {"contents": [{**USER, "role": "function"}]}, "valid role: user, model"),
    ("parts empty", {"contents": [{"role": "user", "parts": []}]}, "must not be empty"),
    ("part without data", {"contents": [{"parts": [{"thought": True}]}]}, "oneof field 'data'"),
    (
        "part with two data fields",
        {"contents": [{"parts": [{"text": "a", "inlineData": {"data": "", "mimeType": "x"}}]}]},
        "already set",
    ),
    (
        "response a string",
        _turns(CALL, {"parts": [{"functionResponse": {"name": "f", "response": "1"}}]}),
        "protobuf.Struct",
    ),
    (
        "args a list",
        _turns({"role": "model", "parts": [{"functionCall": {"name": "f", "args": [1]}}]}),
        "protobuf.Struct",
    ),
    ("response without call turn", _turns(ANSWER), "immediately after a function call turn"),
    ("fewer responses than calls", _turns(TWO_CALLS, ANSWER), "number of function response"),
    (
        "bad function name",
        {**BODY, "tools": [{"functionDeclarations": [{"name": "1st tool"}]}]},
        "Invalid function name",
    ),
    ("generationConfig a list", {**BODY, "generationConfig": []}, "generation_config"),
]


@pytest.mark.parametrize(
    ("body", "message"), [pytest.param(b, m, id=name) for name, b, m in INVALID]
)
def test_invalid_requests_get_google_400s(http: httpx.Client, body: Any, message: str) -> None:
    response = http.post(GENERATE, json=body)
    assert response.status_code == 400
    assert_google_error(response.json(), 400, "INVALID_ARGUMENT")
    assert message in response.json()["error"]["message"]


def test_valid_tool_turns_are_accepted(http: httpx.Client) -> None:
    two_answers = {"role": "user", "parts": [*ANSWER["parts"], *ANSWER["parts"]]}
    assert http.post(GENERATE, json=_turns(CALL, ANSWER)).status_code == 200
    assert http.post(GENERATE, json=_turns(TWO_CALLS, two_answers)).status_code == 200


def test_gemini_3_needs_the_thought_signature_back(fake: FakeGemini, client: genai.Client) -> None:
    model = "gemini-3-pro-preview"
    fake.queue_response(tool_calls=[("lookup_tide", '{"port": "Porto"}')])
    first = client.models.generate_content(model=model, contents="Tide?")
    assert first.candidates is not None and first.candidates[0].content is not None
    call_turn = first.candidates[0].content
    answer = gtypes.Content(
        role="user",
        parts=[
            gtypes.Part.from_function_response(name="lookup_tide", response={"output": "14:05"})
        ],
    )
    history = [gtypes.Content(role="user", parts=[gtypes.Part(text="Tide?")]), call_turn, answer]
    assert client.models.generate_content(model=model, contents=history).text
    assert call_turn.parts is not None
    call_turn.parts[0].thought_signature = None
    with pytest.raises(genai_errors.ClientError) as caught:
        client.models.generate_content(model=model, contents=history)
    assert "thought_signature" in (caught.value.message or "")
    # Older turns (before the last user text) are not checked.
    later = [*history, gtypes.Content(role="model", parts=[gtypes.Part(text="14:05")])]
    later.append(gtypes.Content(role="user", parts=[gtypes.Part(text="Thanks")]))
    assert client.models.generate_content(model=model, contents=later).text


def test_strict_models() -> None:
    with FakeGemini(strict_models=True) as fake:
        client = sdk(fake)
        with pytest.raises(genai_errors.ClientError) as caught:
            client.models.generate_content(model="gemini-9", contents="x")
        assert caught.value.code == 404 and "ListModels" in (caught.value.message or "")
        assert client.models.generate_content(model=MODEL, contents="x").text


# --------------------------------------------------------------------------------------------
# Fault knobs


@pytest.mark.parametrize(
    ("status", "rpc", "retry_delay"),
    [
        (400, "INVALID_ARGUMENT", None),
        (401, "UNAUTHENTICATED", None),
        (403, "PERMISSION_DENIED", None),
        (429, "RESOURCE_EXHAUSTED", "1s"),
        (500, "INTERNAL", None),
        (503, "UNAVAILABLE", "1s"),
        (504, "DEADLINE_EXCEEDED", None),
        (418, "UNKNOWN", None),
        (502, "INTERNAL", None),
    ],
)
def test_status_fault(
    fake: FakeGemini, http: httpx.Client, status: int, rpc: str, retry_delay: str | None
) -> None:
    fake.set_fault(status=status, count=2)
    for response in (http.post(GENERATE, json=BODY), http.get("/models")):
        assert response.status_code == status
        assert "retry-after" not in response.headers  # Google says it in the body
        body = response.json()
        assert_google_error(body, status, rpc)
        delays = [d.get("retryDelay") for d in body["error"].get("details", [])]
        assert delays == ([retry_delay] if retry_delay else [])
    assert http.get("/models").status_code == 200
    assert fake.active_faults() == {}


def test_retry_after_goes_into_retry_info(fake: FakeGemini, http: httpx.Client) -> None:
    fake.set_fault(status=429, retry_after=2.5, count=1)
    details = http.post(GENERATE, json=BODY).json()["error"]["details"]
    assert details == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, genai_errors.ClientError),
        (429, genai_errors.ClientError),
        (500, genai_errors.ServerError),
        (503, genai_errors.ServerError),
    ],
)
def test_status_fault_maps_to_sdk_errors(
    fake: FakeGemini, client: genai.Client, status: int, error: type[genai_errors.APIError]
) -> None:
    fake.set_fault(status=status, count=2)
    with pytest.raises(error) as caught:
        client.models.generate_content(model=MODEL, contents="x")
    assert caught.value.code == status
    with pytest.raises(error):
        list(client.models.generate_content_stream(model=MODEL, contents="x"))


def test_sdk_retries_a_429(fake: FakeGemini) -> None:
    fake.set_fault(status=429, retry_after=0.05, count=1)
    retry = gtypes.HttpRetryOptions(attempts=2, initial_delay=0.01, max_delay=0.05, jitter=0)
    retrying = sdk(fake, retry_options=retry)
    answer = retrying.models.generate_content(model=MODEL, contents="x")
    assert answer.text == f"alpha says hello to {MODEL}"
    assert fake.chat_request_count == 2


def test_fault_until_cleared_and_chat_only(fake: FakeGemini, http: httpx.Client) -> None:
    fake.set_fault(status=500, chat_only=True)
    for _ in range(3):
        assert http.post(GENERATE, json=BODY).status_code == 500
        assert http.post(f"{STREAM}?alt=sse", json=BODY).status_code == 500
        assert http.post(f"/models/{MODEL}:countTokens", json=BODY).status_code == 200
        assert http.get("/models").status_code == 200
    assert fake.active_faults()["status"]["value"] == 500
    fake.clear_faults()
    assert http.post(GENERATE, json=BODY).status_code == 200


def test_fault_argument_validation(fake: FakeGemini) -> None:
    bad_knobs: list[dict[str, Any]] = [
        {"status": 200},
        {"status": 600},
        {"count": 0, "delay": 1},
        {"stall_after": -1},
        {"retry_after": 1},
        {"delay": -1},
    ]
    assert_fault_arguments_rejected(fake, bad_knobs)


def test_delay_holds_back_the_response_headers(fake: FakeGemini, raw: RawConnection) -> None:
    fake.set_fault(delay=0.3, count=1)
    started = time.monotonic()
    raw.send("GET", "/v1beta/models", headers={"x-goog-api-key": API_KEY})
    raw.assert_silent(raw.read_head, 0.1)
    assert raw.read_response().status == 200
    assert time.monotonic() - started >= 0.3
    assert fake.active_faults() == {}


def test_reset_aborts_with_rst(fake: FakeGemini, raw: RawConnection, client: genai.Client) -> None:
    fake.set_fault(reset=True, count=2)
    raw_post(raw, GENERATE, BODY)
    with pytest.raises(ConnectionResetError):
        raw.read_head()
    with pytest.raises(TRANSPORT_ERRORS):
        client.models.generate_content(model=MODEL, contents="x")
    assert fake.chat_request_count == 2  # the requests were read before the reset
    assert client.models.generate_content(model=MODEL, contents="x").text


def test_refuse_then_restore_on_the_same_port(
    fake: FakeGemini, raw: RawConnection, client: genai.Client
) -> None:
    port = fake.port
    raw.send("GET", "/v1beta/models", headers={"x-goog-api-key": API_KEY})
    assert raw.read_response().status == 200
    fake.set_fault(refuse=True)
    assert fake.refused and fake.active_faults()["refuse"]["value"] is True
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1.0)
    assert raw.peer_closed()
    with pytest.raises(TRANSPORT_ERRORS):
        client.models.generate_content(model=MODEL, contents="x")
    fake.restore()
    assert fake.port == port and not fake.refused
    assert client.models.generate_content(model=MODEL, contents="x").text
    fake.set_fault(refuse=True)
    fake.clear_faults("refuse")
    assert client.models.generate_content(model=MODEL, contents="x").text


def _start_stream(raw: RawConnection) -> None:
    raw_post(raw, STREAM + "?alt=sse", BODY)
    status, headers = raw.read_head()
    assert status == 200 and headers["transfer-encoding"] == "chunked"


def test_stall_after_then_clear(fake: FakeGemini, raw: RawConnection) -> None:
    fake.set_fault(stall_after=2, count=1)
    _start_stream(raw)
    first = [raw.read_chunk() or b"" for _ in range(2)]
    raw.assert_silent(raw.read_chunk, 0.2)
    fake.clear_faults()
    rest = raw.read_chunks()
    payloads = sse_payloads(b"".join(first + rest))
    text = "".join(p["candidates"][0]["content"]["parts"][0]["text"] for p in payloads)
    assert text == f"alpha says hello to {MODEL}"


def test_stall_ends_when_the_client_goes_away(fake: FakeGemini) -> None:
    fake.set_fault(stall_after=0)
    client = sdk(fake)
    with pytest.raises(TIMEOUTS):
        list(
            client.models.generate_content_stream(
                model=MODEL, contents="x", config={"http_options": {"timeout": 300}}
            )
        )
    client.close()
    wait_until(lambda: fake.open_connections == 0)
    assert fake.active_faults()["stall_after"]["value"] == 0  # until cleared


def test_stream_knobs_ignore_non_streaming_requests(fake: FakeGemini, http: httpx.Client) -> None:
    fake.set_fault(stall_after=1, midstream_error=1, count=1)
    assert http.post(GENERATE, json=BODY).status_code == 200
    assert {"stall_after", "midstream_error"} <= set(fake.active_faults())


def test_midstream_error(fake: FakeGemini, raw: RawConnection, client: genai.Client) -> None:
    fake.set_fault(midstream_error=2, count=2)
    raw_post(raw, STREAM + "?alt=sse", BODY)
    response = raw.read_response()
    assert response.headers["connection"] == "close"
    assert response.chunks is not None and len(response.chunks) == 3
    payloads = sse_payloads(response.body)
    assert_google_error(payloads[-1], 500, "INTERNAL")
    assert raw.peer_closed()
    received: list[str] = []
    with pytest.raises(genai_errors.ServerError) as caught:
        for chunk in client.models.generate_content_stream(model=MODEL, contents="x"):
            received.append(chunk.text or "")
    assert caught.value.code == 500 and caught.value.status == "INTERNAL"
    assert "".join(received) == "alpha sa"  # two events, then the error


def test_midstream_error_in_the_json_array_form(fake: FakeGemini, raw: RawConnection) -> None:
    fake.set_fault(midstream_error=1, count=1)
    raw_post(raw, STREAM, BODY)
    items = json.loads(raw.read_response().body)
    assert len(items) == 2
    assert_google_error(items[-1], 500, "INTERNAL")


def test_chunk_delay_spaces_the_events(fake: FakeGemini, raw: RawConnection) -> None:
    fake.set_fault(chunk_delay=0.05, count=1)
    started = time.monotonic()
    _start_stream(raw)
    count = len(raw.read_chunks())
    assert time.monotonic() - started >= 0.05 * (count - 1)


def test_concurrent_streams(fake: FakeGemini) -> None:
    client = sdk(fake)

    def run(index: int) -> str:
        chunks = client.models.generate_content_stream(model=f"m-{index}", contents="x")
        return "".join(c.text or "" for c in chunks)

    with ThreadPoolExecutor(max_workers=8) as pool:
        texts = list(pool.map(run, range(8)))
    assert texts == [f"alpha says hello to m-{i}" for i in range(8)]


def test_stop_frees_the_port_for_a_new_server() -> None:
    first = FakeGemini().start()
    port = first.port
    first.stop()
    with FakeGemini(port=port) as second:
        assert second.port == port


def test_command_line_with_control_api() -> None:
    control_port = free_port()
    args = ["--name", "cli", "--control-port", str(control_port), "--api-key", API_KEY]
    with cli_process("gemini_upstream", *args, timeout=10) as port:
        base = f"http://127.0.0.1:{port}/v1beta"
        headers = {"x-goog-api-key": API_KEY}
        answer = httpx.post(f"{base}{GENERATE}", json=BODY, headers=headers).json()
        assert answer["candidates"][0]["content"]["parts"][0]["text"] == (
            f"cli says hello to {MODEL}"
        )
        control = f"http://127.0.0.1:{control_port}"
        armed = httpx.post(f"{control}/faults", json={"status": 503, "count": 1}).json()
        assert armed["status"]["value"] == 503
        assert httpx.post(f"{base}{GENERATE}", json=BODY, headers=headers).status_code == 503
        assert httpx.get(f"{control}/requests/count").json() == {
            "count": 2,
            "chat": 2,
            "recorded": 2,
        }
        assert httpx.post(f"{control}/faults", json={"bogus": 1}).status_code == 400
        assert httpx.delete(f"{control}/faults").json() == {}
        assert httpx.delete(f"{control}/requests").json() == {"count": 0}
        assert httpx.get(f"{control}/faults").json() == {}


def test_answer_chars_stretches_the_default_answer() -> None:
    with FakeGemini(name="b", answer_chars=40, chunk_chars=8) as fake:
        client = sdk(fake)
        chunks = list(client.models.generate_content_stream(model=MODEL, contents="x"))
        text = "".join(c.text or "" for c in chunks)
        assert len(text) == 40 and text.startswith("b says hello to")
        assert len(chunks) == 40 // 8 + 1


# --------------------------------------------------------------------------------------------
# The codec's requests pass the fake's (the real API's) validation


def _chat_round_trip(fake: FakeGemini, stream: bool) -> None:
    """An OpenAI Chat client's tool loop, translated by the codec, answered by the fake."""
    codec = GeminiCodec()
    chat = {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "You are a harbour assistant."},
            {"role": "user", "content": "Tide and weather in Porto?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup_tide", "arguments": '{"port":"Porto"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "lookup_weather", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"high":"14:05"}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "lookup_tide", "parameters": {"type": "object"}},
            }
        ],
        "stream": stream,
    }
    request = OpenAIChatCodec().decode_request(chat, RequestMeta())
    encoded = codec.encode_request(request, MODEL)
    fake.queue_response("High tide at 14:05, sunny.", thinking="tide, then weather")
    response = httpx.post(
        fake.base_url + encoded.path,
        content=encoded.body,
        headers={"x-goog-api-key": API_KEY, "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    if stream:
        decoder = codec.stream_decoder()
        events = [
            e for _, group in decoder.feed(response.content) + decoder.finish() for e in group
        ]
        answer = aggregate_events(events)
    else:
        answer = codec.decode_response(response.content)
    assert answer.finish_reason == "stop"
    texts = [p.text for p in answer.content if isinstance(p, TextPart)]
    assert texts == ["High tide at 14:05, sunny."]  # (a stream also holds the late signature)
    assert answer.usage is not None and answer.usage.reasoning_tokens == 5
    sent = fake.chat_requests()[-1].json
    assert sent["systemInstruction"] == {"parts": [{"text": "You are a harbour assistant."}]}
    assert len(sent["contents"][-1]["parts"]) == 2  # both results in one user content


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_codec_requests_pass_validation(fake: FakeGemini, stream: bool) -> None:
    _chat_round_trip(fake, stream)


def test_codec_replays_gemini_3_signatures(fake: FakeGemini, client: genai.Client) -> None:
    """A Gemini client's history (with the signature the fake issued) through the codec."""
    model = "gemini-3-pro-preview"
    codec = GeminiCodec()
    fake.queue_response(tool_calls=[("lookup_tide", '{"port": "Porto"}')])
    first = client.models.generate_content(model=model, contents="Tide?")
    assert first.candidates is not None and first.candidates[0].content is not None
    call_turn = first.candidates[0].content.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    signature = call_turn["parts"][0]["thoughtSignature"]
    assert base64.b64decode(signature)
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "Tide?"}]},
            call_turn,
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "lookup_tide", "response": {"output": "14:05"}}}
                ],
            },
        ]
    }
    meta = RequestMeta(path_params={"model": model, "action": "generateContent"})
    encoded = codec.encode_request(codec.decode_request(body, meta), model)
    response = httpx.post(
        fake.base_url + encoded.path, content=encoded.body, headers={"x-goog-api-key": API_KEY}
    )
    assert response.status_code == 200, response.text
    assert json.loads(encoded.body)["contents"][1]["parts"][0]["thoughtSignature"] == signature
