"""Both roles' processors, driven directly (no gRPC, no Envoy)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from extproc.canonical import CanonicalRequest, Envelope, StreamEvent, TextDelta
from extproc.config import build_config
from extproc.pipeline import AnswerFilter, Emit, Pipeline, RequestContext, Stage
from extproc.processing import App, Continue, Reply
from extproc.processing.factory import Processors
from extproc.processing.router import RouterProcessor

CONFIG = {
    "backends": {
        "openai": {
            "base_url": "http://127.0.0.1:9001/v1",
            "api_key": "sk-fake-provider-a",
            "models": ["gpt-4o"],
            "headers": {"OpenAI-Organization": "org-fake"},
        },
        "openai.1": {"base_url": "http://127.0.0.1:9002/api/v1", "api_key": "sk-fake-provider-b"},
    },
    "models": {"smart": {"failover": ["openai:gpt-4o", "openai.1:mini?temperature=0.2"]}},
    "default_backend": "openai:gpt-4o-mini",
}
HEADERS = {
    ":method": "POST",
    ":path": "/v1/chat/completions",
    "authorization": "Bearer sk-fake-client",
    "x-llm-cluster": "instance/openai.1",
    "content-type": "application/json",
    "x-request-id": "req-1",
}
HOST_A = {"instance": "openai", "schema": "openai-chat"}
#: Envoy's router marks answers that came from an upstream host.
FROM_UPSTREAM = {"x-envoy-upstream-service-time": "3"}


@pytest.fixture(scope="module")
def app() -> App:
    return App(build_config(CONFIG))


def body(**fields: Any) -> bytes:
    data = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **fields}
    return json.dumps(data).encode()


def routed(
    app: App, payload: bytes, headers: dict[str, str] = HEADERS
) -> tuple[RouterProcessor, Continue]:
    router = Processors(app).router()
    first = router.request_headers(dict(headers), False)
    assert isinstance(first, Continue)
    action = router.request_body(payload, True)
    assert isinstance(action, Continue), action
    return router, action


def error_of(action: Any) -> dict[str, Any]:
    assert isinstance(action, Reply)
    error: dict[str, Any] = json.loads(action.body)["error"]
    return error


def test_request_headers_strip_credentials_and_internal_headers(app: App) -> None:
    action = Processors(app).router().request_headers(dict(HEADERS), False)
    assert isinstance(action, Continue)
    assert set(action.remove_headers) == {"authorization", "x-llm-cluster"}


def test_unknown_path_wrong_method_and_models(app: App) -> None:
    reply = Processors(app).router().request_headers({":method": "GET", ":path": "/nope"}, True)
    assert isinstance(reply, Reply) and reply.status == 404
    assert error_of(reply)["code"] == "unknown_url"
    reply = (
        Processors(app)
        .router()
        .request_headers({":method": "PUT", ":path": "/v1/chat/completions"}, False)
    )
    assert isinstance(reply, Reply) and reply.status == 405 and reply.headers["allow"] == "POST"
    reply = (
        Processors(app)
        .router()
        .request_headers({":method": "GET", ":path": "/v1/models?x=1"}, True)
    )
    assert isinstance(reply, Reply) and reply.status == 200
    ids = [m["id"] for m in json.loads(reply.body)["data"]]
    assert ids == ["smart", "gpt-4o", "openai:gpt-4o", "gpt-4o-mini"]
    reply = (
        Processors(app)
        .router()
        .request_headers({":method": "POST", ":path": "/v1/chat/completions"}, True)
    )
    assert isinstance(reply, Reply) and reply.status == 400


def test_pool_request_becomes_envelope_with_cluster(app: App) -> None:
    _, action = routed(app, body(model="smart?max_tokens=9"))
    assert action.set_headers["x-llm-cluster"] == "pool/smart"
    assert action.clear_route_cache
    assert action.body is not None
    assert action.set_headers["content-length"] == str(len(action.body))
    assert "authorization" not in action.set_headers  # the UPSTREAM role sets it per attempt
    envelope = msgspec.json.decode(action.body, type=Envelope)
    assert envelope.model is None and envelope.request_id == "req-1"
    assert envelope.request.max_output_tokens == 9


def test_single_endpoint_cluster_is_encoded_by_the_router(app: App) -> None:
    _, action = routed(app, body(model="openai.1:gpt-4o?max_tokens=9"))
    headers = action.set_headers
    assert headers["x-llm-cluster"] == "instance/openai.1"
    assert headers[":path"] == "/api/v1/chat/completions"
    assert headers["authorization"] == "Bearer sk-fake-provider-b"
    assert headers["accept-encoding"] == "identity"
    assert action.body is not None and headers["content-length"] == str(len(action.body))
    sent = json.loads(action.body)
    assert sent["model"] == "gpt-4o" and sent["max_tokens"] == 9
    assert sent["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"{", 400, "invalid_json"),
        (b'"text"', 400, "invalid_json"),
        (body(model=""), 400, "invalid_model"),
        (body(model="ghost:x"), 404, "backend_not_found"),
    ],
)
def test_request_body_errors(app: App, payload: bytes, status: int, code: str) -> None:
    router = Processors(app).router()
    router.request_headers(dict(HEADERS), False)
    reply = router.request_body(payload, True)
    assert isinstance(reply, Reply) and reply.status == status
    assert error_of(reply)["code"] == code


def upstream_request(app: App, host: dict[str, Any], payload: bytes) -> tuple[Continue, Continue]:
    """Route ``payload`` (to a pool, so an envelope) then run the UPSTREAM role."""
    _, routed_action = routed(app, payload)
    assert routed_action.set_headers["x-llm-cluster"] == "pool/smart"
    assert routed_action.body is not None
    upstream = Processors(app).upstream(host)
    # What an earlier attempt at another account left in Envoy's shared header map.
    leftovers = {
        ":path": "/v1/chat/completions",
        "accept-encoding": "gzip",
        "x-llm-cluster": "x",
        "authorization": "Bearer sk-fake-provider-a",
        "openai-organization": "org-fake",
    }
    headers_action = upstream.request_headers(leftovers, False)
    assert isinstance(headers_action, Continue)
    action = upstream.request_body(routed_action.body, True)
    assert isinstance(action, Continue)
    return headers_action, action


def test_upstream_sets_path_key_and_body(app: App) -> None:
    first, action = upstream_request(app, {**HOST_A, "model": "gpt-4o"}, body(model="smart"))
    assert first.set_headers == {
        "accept-encoding": "identity",
        "openai-organization": "org-fake",
        "authorization": "Bearer sk-fake-provider-a",
    }
    assert set(first.remove_headers) == {"x-llm-cluster"}
    headers = action.set_headers
    assert headers[":path"] == "/v1/chat/completions"
    assert action.body is not None and headers["content-length"] == str(len(action.body))
    assert json.loads(action.body) == json.loads(body(model="gpt-4o"))


def test_upstream_pool_endpoint_model_params_and_no_leftovers(app: App) -> None:
    host = {
        "instance": "openai.1",
        "schema": "openai-chat",
        "model": "mini",
        "params": '{"temperature": 0.2}',
    }
    first, action = upstream_request(app, host, body(model="smart", temperature=1.5))
    assert first.set_headers["authorization"] == "Bearer sk-fake-provider-b"
    # The first account's organization header must not follow the retry.
    assert set(first.remove_headers) == {"x-llm-cluster", "openai-organization"}
    assert action.set_headers[":path"] == "/api/v1/chat/completions"
    assert action.body is not None
    sent = json.loads(action.body)
    assert sent["model"] == "mini" and sent["temperature"] == 0.2


def test_shared_cluster_is_encoded_once_by_the_router() -> None:
    config = {
        **CONFIG,
        "backends": {
            **CONFIG["backends"],
            "openai.2": {"base_url": "http://127.0.0.1:9003/v1", "api_key": "sk-fake-provider-c"},
        },
        "models": {"twin": {"failover": ["openai:gpt-4o", "openai.2:gpt-4o"]}},
    }
    app = App(build_config(config))
    assert app.plans["pool/twin"].encoding == "shared"
    _, action = routed(app, body(model="twin"))
    assert action.set_headers[":path"] == "/v1/chat/completions"
    assert "authorization" not in action.set_headers  # per host, by the UPSTREAM role
    assert action.body is not None and json.loads(action.body)["model"] == "gpt-4o"
    first = Processors(app).upstream(
        {"instance": "openai.2", "schema": "openai-chat", "model": "gpt-4o"}
    )
    step = first.request_headers({"authorization": "Bearer sk-fake-provider-a"}, False)
    assert isinstance(step, Continue)
    assert step.set_headers["authorization"] == "Bearer sk-fake-provider-c"


def test_upstream_unknown_instance_fails_the_attempt(app: App) -> None:
    reply = (
        Processors(app)
        .upstream({"instance": "gone", "schema": "openai-chat"})
        .request_headers({}, False)
    )
    assert isinstance(reply, Reply) and reply.status == 500
    assert "sk-fake" not in reply.body.decode()


SSE_OK = (
    b"".join(
        b"data: " + json.dumps(chunk).encode() + b"\n\n"
        for chunk in [
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            },
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
            },
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            },
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o",
                "choices": [],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            },
        ]
    )
    + b"data: [DONE]\n\n"
)


def streamed(app: App, include_usage: bool, chunks: list[bytes]) -> bytes:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    router, _ = routed(app, body(stream=True, **options))
    action = router.response_headers(
        {
            ":status": "200",
            **FROM_UPSTREAM,
            "content-type": "text/event-stream",
            "content-length": "9",
        },
        False,
        HOST_A,
    )
    assert isinstance(action, Continue) and action.response_body_mode in ("streamed", "full_duplex")
    assert "content-length" in action.remove_headers
    out = b""
    for i, chunk in enumerate(chunks):
        step = router.response_body(chunk, i == len(chunks) - 1)
        assert isinstance(step, Continue)
        out += step.body or b""
    return out


def test_stream_passes_through_byte_for_byte_with_usage(app: App) -> None:
    pieces = [SSE_OK[i : i + 7] for i in range(0, len(SSE_OK), 7)]
    assert streamed(app, True, pieces) == SSE_OK


def test_stream_hides_usage_the_client_did_not_ask_for(app: App) -> None:
    out = streamed(app, False, [SSE_OK])
    assert b'"usage"' not in out
    assert out.endswith(b"data: [DONE]\n\n")
    assert out == SSE_OK.replace(SSE_OK.split(b"\n\n")[3] + b"\n\n", b"")


def test_truncated_stream_ends_with_an_error_event(app: App) -> None:
    cut = SSE_OK.split(b"\n\n")[1] + b"\n\n"
    out = streamed(app, False, [cut, b""])
    assert out.endswith(b"\n\n")
    last = json.loads(out.strip().split(b"\n\n")[-1][len(b"data: ") :])
    assert last["error"]["code"] == "upstream_stream_truncated"


def test_same_protocol_answer_skips_the_processor_when_nothing_needs_it() -> None:
    # Nothing reads this answer: no metrics, no answer redaction, loop detection or
    # empty-answer check (all on by default).
    app = App(
        build_config(
            {
                **CONFIG,
                "metrics": {"enabled": False},
                "redaction": {"answers": False},
                "loop_detection": {"enabled": False},
                "empty_answers": {"enabled": False},
            }
        )
    )
    assert not app.needs_answer
    router, _ = routed(app, body())
    action = router.response_headers(
        {
            ":status": "200",
            **FROM_UPSTREAM,
            "content-type": "application/json",
            "openai-organization": "org-x",
        },
        False,
        HOST_A,
    )
    assert isinstance(action, Continue) and action.response_body_mode == "none"
    assert action.remove_headers == ["openai-organization"]


class _Watcher(Stage):
    """Reads every answer and changes nothing."""

    name = "watcher"

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter:
        return _Seen(ctx)


class _Seen(AnswerFilter):
    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        self.ctx.state.setdefault("seen", []).extend(events)
        return None


def test_buffered_answer_same_protocol_is_untouched() -> None:
    app = App(build_config(CONFIG))
    app.pipeline = Pipeline([*app.pipeline.stages, _Watcher()])
    router, _ = routed(app, body())
    action = router.response_headers(
        {":status": "200", **FROM_UPSTREAM, "content-type": "application/json"}, False, HOST_A
    )
    assert isinstance(action, Continue) and action.response_body_mode is None
    answer = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                    "logprobs": {"content": []},
                }
            ],
            "system_fingerprint": "fp_fake",
        }
    ).encode()
    action = router.response_body(answer, True)
    assert isinstance(action, Continue) and action.body is None and not action.set_headers
    assert router.ctx is not None
    assert TextDelta("ok") in router.ctx.state["seen"]


def test_provider_error_is_normalised(app: App) -> None:
    router, _ = routed(app, body())
    router.response_headers(
        {":status": "502", **FROM_UPSTREAM, "content-type": "text/html"}, False, HOST_A
    )
    action = router.response_body(b"<html>bad gateway</html>", True)
    assert isinstance(action, Continue) and action.body is not None
    error = json.loads(action.body)["error"]
    assert error["type"] == "server_error" and "bad gateway" in error["message"]
    assert action.set_headers["content-type"] == "application/json"
    assert action.set_headers["content-length"] == str(len(action.body))


def test_local_reply_becomes_openai_error(app: App) -> None:
    router, _ = routed(app, body())
    router.response_headers({":status": "503", "content-type": "text/plain"}, False, None)
    action = router.response_body(b"no healthy upstream", True)
    assert isinstance(action, Continue) and action.body is not None
    error = json.loads(action.body)["error"]
    assert error["code"] == "no_backend_available"
    assert "unhealthy" in error["message"]


def test_headers_only_error_gets_a_body(app: App) -> None:
    router, _ = routed(app, body())
    action = router.response_headers({":status": "504"}, True, None)
    assert isinstance(action, Continue) and action.replace and action.body is not None
    assert json.loads(action.body)["error"]["code"] == "upstream_timeout"


def test_json_answer_to_a_streaming_client_is_streamed(app: App) -> None:
    router, _ = routed(app, body(stream=True))
    router.response_headers(
        {":status": "200", **FROM_UPSTREAM, "content-type": "application/json"}, False, HOST_A
    )
    answer = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
        }
    ).encode()
    action = router.response_body(answer, True)
    assert isinstance(action, Continue) and action.body is not None
    assert action.set_headers["content-type"] == "text/event-stream"
    events = action.body.decode().strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "ok"


def test_sse_answer_to_a_buffered_client_is_aggregated(app: App) -> None:
    router, _ = routed(app, body())
    router.response_headers(
        {":status": "200", **FROM_UPSTREAM, "content-type": "text/event-stream"}, False, HOST_A
    )
    action = router.response_body(SSE_OK, True)
    assert isinstance(action, Continue) and action.body is not None
    answer = json.loads(action.body)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "Hi"
    assert answer["usage"]["total_tokens"] == 4


def test_client_key_id_is_stable_and_not_the_key(app: App) -> None:
    router, _ = routed(app, body())
    assert router.ctx is not None
    key_id = router.ctx.client_key_id
    assert key_id is not None and key_id.startswith("key-") and "sk-fake" not in key_id
    assert key_id == router.ctx.client_key_id
    assert "authorization" not in router.ctx.headers


def test_local_reply_after_a_host_was_chosen_is_still_envoys(app: App) -> None:
    """Envoy's idle timeout fires after routing: host metadata, but no upstream mark."""
    router, _ = routed(app, body())
    router.response_headers({":status": "504", "content-type": "text/plain"}, False, HOST_A)
    action = router.response_body(b"stream timeout", True)
    assert isinstance(action, Continue) and action.body is not None
    error = json.loads(action.body)["error"]
    assert error["code"] == "upstream_timeout" and "idle" in error["message"]


def test_retry_hint_only_in_a_gemini_body_becomes_a_retry_after_header() -> None:
    config = {
        "backends": {
            "gem": {"type": "gemini", "base_url": "http://127.0.0.1:9004/v1beta", "api_key": "k"}
        },
        "default_backend": "gem",
    }
    app = App(build_config(config))
    router, _ = routed(app, body(model="gem:gemini-fake"))
    host = {"instance": "gem", "schema": "gemini"}
    router.response_headers(
        {":status": "429", **FROM_UPSTREAM, "content-type": "application/json"}, False, host
    )
    gemini_error = {
        "error": {
            "code": 429,
            "message": "Resource exhausted",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}],
        }
    }
    action = router.response_body(json.dumps(gemini_error).encode(), True)
    assert isinstance(action, Continue) and action.body is not None
    assert action.set_headers["retry-after"] == "7"
    error = json.loads(action.body)["error"]  # OpenAI dialect for the OpenAI client
    assert error["type"] == "rate_limit_error" and error["message"] == "Resource exhausted"


def test_missing_provider_usage_is_estimated_for_the_client() -> None:
    """llama.cpp's server ignores include_usage: Anthropic clients still get usage."""
    config = {
        "backends": {"up": {"type": "openai-compatible", "base_url": "http://127.0.0.1:9005/v1"}},
        "default_backend": "up",
    }
    app = App(build_config(config))
    router = Processors(app).router()
    anthropic_headers = {
        ":method": "POST",
        ":path": "/anthropic/v1/messages",
        "x-api-key": "sk-fake-client",
        "anthropic-version": "2023-06-01",
    }
    assert isinstance(router.request_headers(anthropic_headers, False), Continue)
    payload = {
        "model": "up:m",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "count to three, please"}],
    }
    assert isinstance(router.request_body(json.dumps(payload).encode(), True), Continue)
    host = {"instance": "up", "schema": "openai-chat"}
    router.response_headers(
        {":status": "200", **FROM_UPSTREAM, "content-type": "text/event-stream"}, False, host
    )
    no_usage = SSE_OK.replace(SSE_OK.split(b"\n\n")[3] + b"\n\n", b"")  # drop the usage chunk
    action = router.response_body(no_usage, True)
    assert isinstance(action, Continue) and action.body is not None
    events = [
        json.loads(block.split(b"data: ", 1)[1])
        for block in action.body.split(b"\n\n")
        if b"data: " in block
    ]
    start = next(e for e in events if e["type"] == "message_start")
    delta = next(e for e in events if e["type"] == "message_delta")
    assert start["message"]["usage"]["input_tokens"] > 0
    assert delta["usage"]["output_tokens"] == (len(b"Hi") + 3) // 4


def test_answers_are_read_when_metrics_count_tokens(app: App) -> None:
    """Token metrics need the answer: the unseen pass-through is off, and the
    request context ends up with what the answer reported."""
    assert app.needs_answer
    router, _ = routed(app, body())
    action = router.response_headers(
        {":status": "200", **FROM_UPSTREAM, "content-type": "application/json"}, False, HOST_A
    )
    assert isinstance(action, Continue) and action.response_body_mode is None
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hey"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }
    raw = json.dumps(answer).encode()
    action = router.response_body(raw, True)
    assert isinstance(action, Continue) and action.body is None  # same protocol: unchanged
    ctx = router.ctx
    assert ctx is not None
    assert (ctx.status, ctx.backend, ctx.finish_reason) == (200, "openai", "stop")
    assert ctx.usage is not None and (ctx.usage.input_tokens, ctx.usage.output_tokens) == (7, 2)
    assert (ctx.response_id, ctx.response_model) == ("chatcmpl-1", "gpt-4o-2024-08-06")
    assert ctx.requested_model == "gpt-4o" and ctx.finished is not None


def test_proxy_errors_are_recorded_on_the_context(app: App) -> None:
    router = Processors(app).router()
    router.request_headers(HEADERS, False)
    action = router.request_body(b"{not json", True)
    assert isinstance(action, Reply) and action.status == 400
    ctx = router.ctx
    assert ctx is not None and (ctx.status, ctx.error_code) == (400, "invalid_json")
    assert ctx.finished is not None


def test_a_provider_key_echoed_in_an_error_never_reaches_the_client(app: App) -> None:
    router, _ = routed(app, body())
    router.response_headers(
        {":status": "401", **FROM_UPSTREAM, "content-type": "application/json"}, False, HOST_A
    )
    echoed = {"error": {"message": "bad key sk-fake-provider-a for org", "type": "auth"}}
    action = router.response_body(json.dumps(echoed).encode(), True)
    assert isinstance(action, Continue) and action.body is not None
    assert b"sk-fake-provider-a" not in action.body
    assert b"bad key [REDACTED:" in action.body
