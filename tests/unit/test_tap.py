"""Capture from the roles' own messages (extproc/processing/tap.py), without gRPC.

The records go to the real CaptureWriter and are read back with the real
reader, so these tests check what a user would see in a capture file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from extproc.config import build_config
from extproc.observe.capture import CaptureWriter, Exchange, exchanges
from extproc.processing import App, Continue, Reply
from extproc.processing.factory import Processors
from extproc.processing.tap import TappedRouter, TappedUpstream, apply_mutation

CLIENT_KEY = "sk-fake-client-key-0001"
PROVIDER_KEY = "sk-fake-provider-key-0001"
BACKENDS = {
    "openai": {
        "base_url": "http://127.0.0.1:9001/v1",
        "api_key": PROVIDER_KEY,
        "models": ["gpt-4o"],
    },
    "anthropic": {"base_url": "http://127.0.0.1:9002/v1", "api_key": "sk-fake-anthropic-0002"},
}
POOL = {"smart": {"failover": ["openai:gpt-4o", "anthropic:claude-x"]}}
HOST_OPENAI = {"instance": "openai", "schema": "openai-chat"}
FROM_UPSTREAM = {"x-envoy-upstream-service-time": "3"}


def headers(request_id: str, **extra: str) -> dict[str, str]:
    return {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "127.0.0.1:8000",
        "authorization": f"Bearer {CLIENT_KEY}",
        "content-type": "application/json",
        "x-request-id": request_id,
        "x-session-id": "sess-7",
        "x-llm-cluster": "instance/forged",
        **extra,
    }


ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hey"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
}


def sse(*events: dict[str, Any]) -> list[bytes]:
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    config = build_config(
        {
            "backends": BACKENDS,
            "models": POOL,
            "capture": {"enabled": True, "directory": str(tmp_path / "cap")},
        }
    )
    app = App(config)
    writer = CaptureWriter(config.capture)
    yield Processors(app, writer), writer, tmp_path / "cap"
    writer.close()


def read(writer: CaptureWriter, directory: Path, request_id: str) -> Exchange:
    assert writer.flush(10)
    (found,) = exchanges(directory, request_id=request_id)
    return found


def test_the_router_is_the_capturing_one_only_when_capture_is_on(tmp_path: Path) -> None:
    plain = Processors(App(build_config({"backends": BACKENDS})))
    assert type(plain.router()).__name__ == "RouterProcessor"
    observers = Processors(
        App(
            build_config(
                {"backends": BACKENDS, "capture": {"enabled": True, "observers": True}},
            )
        )
    )
    assert type(observers.router()).__name__ == "RouterProcessor"
    roles = Processors(App(build_config({"backends": BACKENDS, "capture": {"enabled": True}})))
    assert isinstance(roles.router(), TappedRouter)
    assert isinstance(roles.upstream(HOST_OPENAI), TappedUpstream)
    # Capture needs every answer: no unseen pass-through.
    no_metrics = {"backends": BACKENDS, "metrics": {"enabled": False}}
    assert not App(build_config(no_metrics)).needs_answer
    assert App(build_config({**no_metrics, "capture": {"enabled": True}})).needs_answer


def test_non_streaming_exchange_both_legs_byte_exact(setup: Any) -> None:
    app, writer, directory = setup
    client_body = b'{"model": "gpt-4o",  "messages": [{"role": "user", "content": "hi"}]}'
    router = app.router()
    assert isinstance(router.request_headers(headers("req-a"), False), Continue)
    action = router.request_body(client_body, True)
    assert isinstance(action, Continue) and action.body is not None
    sent_upstream = action.body
    answer = json.dumps(ANSWER).encode()
    upstream_headers = {":status": "200", "content-type": "application/json", **FROM_UPSTREAM}
    router.response_headers(dict(upstream_headers), False, HOST_OPENAI)
    done = router.response_body(answer, True)
    assert isinstance(done, Continue)
    router.close()

    exchange = read(writer, directory, "req-a")
    assert exchange.client_request.body == client_body
    assert exchange.body("provider_request", 1) == sent_upstream
    assert exchange.body("provider_response", 1) == answer
    assert exchange.client_response.body == (done.body if done.body is not None else answer)
    assert exchange.status == 200 and exchange.complete
    client_auth = exchange.client_request.header("authorization")
    assert client_auth is not None and client_auth.startswith("Bearer ***key-")
    provider = exchange.leg("provider_request", 1)
    # What the provider got: the provider's credential (masked), never the client's,
    # and no internal routing header.
    provider_auth = provider.header("authorization")
    assert provider_auth is not None and provider_auth.startswith("Bearer ***key-")
    assert provider_auth != client_auth
    assert provider.header("x-llm-cluster") is None
    assert provider.header(":path") == "/v1/chat/completions"
    raw = b"".join(path.read_bytes() for path in directory.iterdir())
    assert CLIENT_KEY.encode() not in raw and PROVIDER_KEY.encode() not in raw
    # Captures file the exchange under the proxy's A-leg session id; the client's own
    # session id never reaches the provider leg.
    assert exchange.session_id is not None and re.fullmatch(
        r"sess-[0-9a-f]{24}", exchange.session_id
    )
    assert exchange.session_id == router.inner.ctx.session_id
    assert provider.header("x-session-id") is None


def test_streamed_exchange_keeps_every_chunk_in_order(setup: Any) -> None:
    app, writer, directory = setup
    router = app.router()
    router.request_headers(headers("req-s"), False)
    payload = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    router.request_body(json.dumps(payload).encode(), True)
    router.response_headers(
        {":status": "200", "content-type": "text/event-stream", **FROM_UPSTREAM},
        False,
        HOST_OPENAI,
    )
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    chunks = sse(
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "he"}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "llo"}, "finish_reason": "stop"}]},
    )
    sent = []
    for i, chunk in enumerate(chunks):
        step = router.response_body(chunk, i == len(chunks) - 1)
        assert isinstance(step, Continue)
        sent.append(step.body if step.body is not None else chunk)
    router.close()

    exchange = read(writer, directory, "req-s")
    assert exchange.leg("provider_response", 1).chunks == chunks
    assert exchange.client_response.chunks == sent
    assert exchange.streamed and exchange.complete


def test_a_proxy_reply_is_the_client_answer(setup: Any) -> None:
    app, writer, directory = setup
    router = app.router()
    router.request_headers(headers("req-e"), False)
    reply = router.request_body(b"{broken", True)
    assert isinstance(reply, Reply) and reply.status == 400
    router.close()
    exchange = read(writer, directory, "req-e")
    assert exchange.client_request.body == b"{broken"
    assert exchange.client_response.body == reply.body
    assert exchange.status == 400
    assert exchange.attempts == {}  # nothing went to a provider


def test_a_retried_request_is_filed_under_the_attempt_that_answered(setup: Any) -> None:
    app, writer, directory = setup
    router = app.router()
    router.request_headers(headers("req-r"), False)
    action = router.request_body(
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}', True
    )
    assert isinstance(action, Continue) and action.body is not None
    router.response_headers(
        {
            ":status": "200",
            "content-type": "application/json",
            "x-envoy-attempt-count": "2",
            **FROM_UPSTREAM,
        },
        False,
        HOST_OPENAI,
    )
    router.response_body(json.dumps(ANSWER).encode(), True)
    router.close()
    exchange = read(writer, directory, "req-r")
    assert sorted(exchange.attempts) == [1, 2]
    # Envoy replayed the same request: both attempts show it; only the second answered.
    assert exchange.body("provider_request", 1) == exchange.body("provider_request", 2)
    assert exchange.body("provider_request", 2) == action.body
    assert not exchange.attempts[1].response.seen
    assert exchange.body("provider_response", 2) == json.dumps(ANSWER).encode()


def test_per_attempt_clusters_record_what_each_attempt_sent(setup: Any) -> None:
    app, writer, directory = setup
    router = app.router()
    router.request_headers(headers("req-p"), False)
    envelope = router.request_body(
        b'{"model": "smart", "messages": [{"role": "user", "content": "hi"}]}', True
    )
    assert isinstance(envelope, Continue) and envelope.body is not None
    upstream_headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        "x-request-id": "req-p",
        "content-type": "application/json",
    }
    bodies = []
    for host in (
        HOST_OPENAI,
        {"instance": "anthropic", "schema": "anthropic", "model": "claude-x"},
    ):
        upstream = app.upstream(host)
        upstream.request_headers(dict(upstream_headers), False)
        encoded = upstream.request_body(envelope.body, True)
        assert isinstance(encoded, Continue) and encoded.body is not None
        bodies.append(encoded.body)
    router.close()
    exchange = read(writer, directory, "req-p")
    assert exchange.body("provider_request", 1) == bodies[0]
    assert exchange.body("provider_request", 2) == bodies[1]
    assert b'"claude-x"' in bodies[1]  # the second attempt was encoded for Anthropic
    # The envelope between the roles is not a provider request.
    assert envelope.body not in (bodies[0], bodies[1])


def test_apply_mutation() -> None:
    assert apply_mutation({"a": "1", "b": "2"}, {"b": "3", "c": "4"}, ["a"]) == {"b": "3", "c": "4"}
