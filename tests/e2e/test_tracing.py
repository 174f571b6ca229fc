"""Tracing through real Envoy: the proxy's spans, joined with Envoy's own.

The ext_proc gRPC server runs in this process (an :class:`App` on an asyncio
loop in a background thread) so its spans can be read from an
``InMemorySpanExporter``; Envoy runs the bootstrap ``build_bootstrap`` makes
for the same config; the official ``openai`` and ``anthropic`` SDKs are the
clients and fake providers answer. Envoy's spans go to an OTLP/gRPC collector
run by the test. One test runs the whole ``python -m extproc`` with an
OTLP/HTTP collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import grpc
import httpx
import openai
import pytest
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from extproc.config import Config, build_config
from extproc.envoy_config import build_bootstrap, render
from extproc.observe.telemetry import Telemetry
from extproc.processing import App
from extproc.server import start_grpc_server
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import (
    CLIENT_KEY,
    PROVIDER_KEY,
    EnvoyProcess,
    fast_health,
    proxy_config,
    start_envoy,
    start_proxy,
    wait_for,
)
from tests.observe.otlp import CollectedSpan, OtlpGrpcCollector, OtlpHttpCollector

pytestmark = pytest.mark.e2e

#: The span Envoy opens for each ext_proc stream (Envoy's gRPC client names it).
EXT_PROC_SPAN = "async envoy.service.ext_proc.v3.ExternalProcessor.Process egress"
CHILDREN = (
    "stage.sessions.headers",
    "decode",
    "stage.sessions",
    "stage.dedup",
    "stage.interactive",
    "stage.redaction",
    "stage.tool_loops",
    "stage.routing",
    "encode",
    "translate",
)
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
PROMPT_SECRET = "sk-fakeprompt0123456789abcdefFAKE"  # an OpenAI key shape (20+ alnum)


# -- the stack: in-process extproc + real Envoy ------------------------------------------


class InProcessExtProc:
    """``start_grpc_server(app)`` on an asyncio loop of its own thread."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="extproc", daemon=True)
        self._server: grpc.aio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        config = self.app.config
        future = asyncio.run_coroutine_threadsafe(
            start_grpc_server(self.app, config.grpc_host, config.grpc_port), self._loop
        )
        self._server = future.result(10)

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@dataclass
class Stack:
    config: Config
    bootstrap: dict[str, Any]
    telemetry: Telemetry
    exporter: InMemorySpanExporter
    envoy: EnvoyProcess

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.config.port}/v1"

    def openai(self, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.openai_url,
            api_key=CLIENT_KEY,
            max_retries=0,
            default_headers=headers or None,
        )

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=f"http://127.0.0.1:{self.config.anthropic_port}",
            api_key=CLIENT_KEY,
            max_retries=0,
        )

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def admin(self, path: str) -> str:
        return httpx.get(f"http://127.0.0.1:{self.config.admin_port}{path}", timeout=5).text

    def request_spans(self, count: int = 1) -> list[ReadableSpan]:
        """The request spans exported since the last clear, once there are ``count``.

        A stream's span ends when Envoy reports the end of the body, which can
        come just after the client read the last event.
        """

        def found() -> list[ReadableSpan]:
            return [s for s in self.spans() if s.kind is SpanKind.SERVER]

        wait_for(lambda: len(found()) >= count, 5, what=f"{count} request span(s)")
        return found()

    def one_request(self) -> tuple[ReadableSpan, dict[str, ReadableSpan]]:
        """The one request span exported since the last clear, and its children by name."""
        (root,) = self.request_spans()
        assert root.context is not None
        children = {
            s.name: s
            for s in self.spans()
            if s.parent is not None and s.parent.span_id == root.context.span_id
        }
        return root, children


def fast_envoy_flush(bootstrap: dict[str, Any]) -> dict[str, Any]:
    """Envoy's OpenTelemetry tracer sends its spans every 5 s, or once 5 are pending;
    these runtime keys make it send every 100 ms (tests only)."""
    bootstrap["layered_runtime"] = {
        "layers": [
            {
                "name": "test",
                "static_layer": {
                    "tracing.opentelemetry.flush_interval_ms": 100,
                    "tracing.opentelemetry.min_flush_spans": 1,
                },
            }
        ]
    }
    return bootstrap


@contextlib.contextmanager
def running_stack(tmp: Path, raw: dict[str, Any], name: str = "envoy") -> Iterator[Stack]:
    config = build_config(raw)
    telemetry = Telemetry.from_config(config, with_usage=False)
    exporter = InMemorySpanExporter()
    telemetry.tracing.add_exporter(exporter)
    extproc = InProcessExtProc(App(config, telemetry))
    try:
        extproc.start()
        bootstrap = fast_envoy_flush(build_bootstrap(config))
        envoy = start_envoy(tmp, render(bootstrap), config.admin_port, name=name)
        try:
            yield Stack(config, bootstrap, telemetry, exporter, envoy)
        finally:
            envoy.stop()
    finally:
        extproc.stop()
        telemetry.close()


def backend(fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "openai": {
            "type": "openai",
            "base_url": fake.base_url,
            "api_key": f"{PROVIDER_KEY}-alpha",
            "models": ["gpt-4o-mini"],
            **fast_health(),
        }
    }


def stack_config(fake: FakeOpenAI, tracing: dict[str, Any] | None) -> dict[str, Any]:
    raw = proxy_config(backend(fake), default_backend="openai:gpt-4o-mini")
    # One shared account: a 429 test must not cool it down for the next test.
    raw["routing"] = {"health": {"max_retry_after": 0, "rate_limit_cooldown": 0}}
    if tracing is not None:
        raw["tracing"] = tracing
    return raw


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, fake_a: FakeOpenAI) -> Iterator[Stack]:
    """Tracing on (no content), Envoy not tracing."""
    raw = stack_config(fake_a, {"enabled": True, "service_name": "proxy-e2e"})
    with running_stack(tmp_path_factory.mktemp("traced"), raw) as stack:
        yield stack


@pytest.fixture(scope="module")
def envoy_collector() -> Iterator[OtlpGrpcCollector]:
    with OtlpGrpcCollector() as collector:
        yield collector


@pytest.fixture(scope="module")
def joined(
    tmp_path_factory: pytest.TempPathFactory,
    fake_a: FakeOpenAI,
    fake_b: FakeOpenAI,
    envoy_collector: OtlpGrpcCollector,
) -> Iterator[Stack]:
    """Envoy traces every request into ``envoy_collector``; content is recorded.

    ``gpt-4o-mini`` goes to ``fake_a``; ``smart`` is a pool: ``gpt-4o-mini`` on ``fake_a``,
    then ``gpt-4o`` on ``fake_b``.
    """
    raw = stack_config(
        fake_a,
        {
            "enabled": True,
            "service_name": "proxy-e2e",
            "envoy_collector": envoy_collector.address,
            "record_content": True,
        },
    )
    raw["backends"]["openai.1"] = {
        "type": "openai",
        "base_url": fake_b.base_url,
        "api_key": f"{PROVIDER_KEY}-beta",
        **fast_health(),
    }
    raw["models"] = {"smart": {"failover": ["openai:gpt-4o-mini", "openai.1:gpt-4o"]}}
    with running_stack(tmp_path_factory.mktemp("joined"), raw) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _clear_spans(request: pytest.FixtureRequest) -> Iterator[None]:
    for name in ("traced", "joined"):
        if name in request.fixturenames:
            request.getfixturevalue(name).exporter.clear()
    yield


def chat(stack: Stack, content: str = "hello", **kwargs: Any) -> Any:
    return stack.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}], **kwargs
    )


def hex_ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    """(trace id, span id, parent span id) as hex."""
    assert span.context is not None
    parent = f"{span.parent.span_id:016x}" if span.parent is not None else None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}", parent


def all_text(spans: tuple[ReadableSpan, ...]) -> str:
    """Every attribute and event attribute value of ``spans``, as one text."""
    parts: list[str] = []
    for span in spans:
        parts += [f"{k}={v!s}" for k, v in (span.attributes or {}).items()]
        for event in span.events:
            parts += [f"{k}={v!s}" for k, v in (event.attributes or {}).items()]
    return "\n".join(parts)


# -- the request span and its children -------------------------------------------------


def test_request_span_has_genai_attributes_and_children(traced: Stack, fake_a: FakeOpenAI) -> None:
    fake_a.queue_response("Low tide at noon.", prompt_tokens=21, completion_tokens=5)
    raw = traced.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "When is low tide?"}],
        max_tokens=64,
        temperature=0.5,
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "Low tide at noon."

    root, children = traced.one_request()
    assert root.name == "chat gpt-4o-mini"
    assert root.parent is None  # no trace context anywhere: a new trace
    assert root.resource.attributes["service.name"] == "proxy-e2e"
    assert root.status.status_code is StatusCode.UNSET
    assert root.events == ()  # record_content is off
    assert dict(root.attributes or {}) == {
        "llm_proxy.frontend": "openai-chat",
        # the id Envoy gave the request, also returned to the client
        "llm_proxy.request.id": raw.headers["x-request-id"],
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.stream": False,
        "llm_proxy.route.cluster": "instance/openai",
        "llm_proxy.backend.instance": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "http.response.status_code": 200,
        "gen_ai.response.model": answer.model,
        "gen_ai.response.id": answer.id,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 21,
        "gen_ai.usage.output_tokens": 5,
    }
    assert sorted(children) == sorted(CHILDREN)
    trace_id = hex_ids(root)[0]
    for child in children.values():
        assert child.kind is SpanKind.INTERNAL
        assert hex_ids(child)[0] == trace_id
        assert root.start_time is not None and child.start_time is not None
        assert root.end_time is not None and child.end_time is not None
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time
    # in order: decode, routing, encode on the request side; translate on the answer
    order = sorted(children.values(), key=lambda s: s.start_time or 0)
    assert [s.name for s in order] == list(CHILDREN)
    assert len(traced.spans()) == 1 + len(CHILDREN)


def test_streamed_answer_has_time_to_first_chunk_and_a_translate_span(
    traced: Stack, fake_a: FakeOpenAI
) -> None:
    text = "Hello from the tide tables"  # 26 characters: 7 content chunks of 4
    fake_a.queue_response(text, prompt_tokens=9, completion_tokens=6)
    stream = chat(traced, "tides?", stream=True, stream_options={"include_usage": True})
    received = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert received == text

    root, children = traced.one_request()
    attributes = dict(root.attributes or {})
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.usage.input_tokens"] == 9
    assert attributes["gen_ai.usage.output_tokens"] == 6
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["http.response.status_code"] == 200
    ttft = attributes["gen_ai.response.time_to_first_chunk"]
    assert isinstance(ttft, float)
    assert root.start_time is not None and root.end_time is not None
    assert 0 < ttft < (root.end_time - root.start_time) / 1e9

    translate = children["translate"]
    # role chunk, 7 content chunks, finish chunk, usage chunk, [DONE]
    assert translate.attributes is not None
    assert translate.attributes["llm_proxy.stream.events"] == 11
    cpu_ms = translate.attributes["llm_proxy.stream.cpu_ms"]
    assert isinstance(cpu_ms, float) and 0 <= cpu_ms < 1000
    assert translate.start_time is not None and translate.end_time is not None
    # from the response headers to the end of the stream: after encode, up to the end
    assert children["encode"].end_time is not None
    assert children["encode"].end_time <= translate.start_time
    assert translate.end_time <= root.end_time


def test_provider_error_sets_error_status(traced: Stack, fake_a: FakeOpenAI) -> None:
    fake_a.set_fault(status=429, count=1, chat_only=True)
    with pytest.raises(openai.RateLimitError) as caught:
        chat(traced)
    assert caught.value.status_code == 429

    root, children = traced.one_request()
    assert root.status.status_code is StatusCode.ERROR
    message = caught.value.body["message"] if isinstance(caught.value.body, dict) else None
    assert message and root.status.description == message
    attributes = dict(root.attributes or {})
    assert attributes["error.type"] == "429"
    assert attributes["http.response.status_code"] == 429
    assert attributes["llm_proxy.backend.instance"] == "openai"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert "gen_ai.usage.input_tokens" not in attributes
    assert {"decode", "stage.routing", "encode"} <= set(children)


def test_client_traceparent_is_the_parent_without_envoy_tracing(traced: Stack) -> None:
    client = traced.openai(traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", tracestate="k=v")
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    root, children = traced.one_request()
    trace_id, _, parent_id = hex_ids(root)
    assert (trace_id, parent_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert root.parent is not None and root.parent.is_remote
    assert root.context is not None and root.context.trace_state.get("k") == "v"
    assert all(hex_ids(c)[0] == CLIENT_TRACE for c in children.values())


def test_client_traceparent_not_sampled_records_nothing(traced: Stack) -> None:
    client = traced.openai(traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00")
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content
    chat(traced)  # a sampled request after it is recorded, alone
    (root,) = traced.request_spans()
    assert hex_ids(root)[0] != CLIENT_TRACE
    assert len(traced.spans()) == 1 + len(CHILDREN)


def test_translated_request_from_the_anthropic_sdk(traced: Stack, fake_a: FakeOpenAI) -> None:
    fake_a.queue_response("Aye.", prompt_tokens=30, completion_tokens=2)
    message = traced.anthropic().messages.create(
        model="gpt-4o-mini",
        max_tokens=100,
        system="Answer like a sailor.",
        messages=[{"role": "user", "content": "Ready?"}],
    )
    assert message.stop_reason == "end_turn"

    root, children = traced.one_request()
    attributes = dict(root.attributes or {})
    assert root.name == "chat gpt-4o-mini"
    assert attributes["llm_proxy.frontend"] == "anthropic"
    assert attributes["url.path"] == "/v1/messages"
    assert attributes["gen_ai.provider.name"] == "openai"  # the backend's, not the client's
    assert attributes["gen_ai.request.max_tokens"] == 100
    # the canonical finish reason, whatever each side calls it
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    # the tokens the client was told
    assert attributes["gen_ai.usage.input_tokens"] == message.usage.input_tokens == 30
    assert attributes["gen_ai.usage.output_tokens"] == message.usage.output_tokens == 2
    assert sorted(children) == sorted(CHILDREN)


def test_without_record_content_no_content_anywhere(traced: Stack, fake_a: FakeOpenAI) -> None:
    fake_a.queue_response("The answer is purple-walrus.")
    chat(traced, "Tell me about orange-octopus")
    for _ in chat(traced, "And green-gecko?", stream=True):
        pass
    assert len(traced.request_spans(2)) == 2
    spans = traced.spans()
    text = all_text(spans)
    for word in ("orange-octopus", "green-gecko", "purple-walrus", "gen_ai.input", "gen_ai.output"):
        assert word not in text
    assert all(s.events == () for s in spans)


# -- joined with Envoy's trace ------------------------------------------------------------


def envoy_spans(collector: OtlpGrpcCollector, trace_id: str, count: int) -> list[CollectedSpan]:
    """The spans Envoy exported for ``trace_id``, once ``count`` have arrived."""
    collector.wait(lambda _: len(collector.spans(trace_id)) >= count)
    return collector.spans(trace_id)


def test_proxy_span_is_a_child_of_envoys_ext_proc_span(
    joined: Stack, envoy_collector: OtlpGrpcCollector
) -> None:
    chat(joined)
    root, children = joined.one_request()
    trace_id, _, parent_id = hex_ids(root)
    assert root.parent is not None and root.parent.is_remote

    # ingress (the client request), the ext_proc stream, the upstream attempt
    spans = envoy_spans(envoy_collector, trace_id, 3)
    by_name = {s.name: s for s in spans}
    assert len(by_name) == len(spans) == 3
    ingress = by_name["ingress"]
    ext_proc = by_name[EXT_PROC_SPAN]
    (upstream,) = (s for s in spans if s.name.startswith("router "))
    assert upstream.name == "router instance/openai egress"
    assert {s.service_name for s in spans} == {"proxy-e2e-envoy"}
    assert ingress.parent_id == ""  # the trace starts in Envoy
    assert ext_proc.parent_id == upstream.parent_id == ingress.span_id
    # the proxy's request span hangs under Envoy's span of its ext_proc stream
    assert parent_id == ext_proc.span_id
    assert all(hex_ids(c)[0] == trace_id for c in children.values())
    assert sorted(children) == sorted(CHILDREN)


def test_failover_attempts_are_in_the_same_trace(
    joined: Stack, envoy_collector: OtlpGrpcCollector, fake_a: FakeOpenAI
) -> None:
    fake_a.set_fault(status=503, count=1, chat_only=True)
    answer = joined.openai().chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "beta says hello to gpt-4o"
    root, _ = joined.one_request()
    attributes = dict(root.attributes or {})
    assert attributes["llm_proxy.route.cluster"] == "pool/smart"
    # the attempt that answered: its backend, and the model asked of it
    assert attributes["llm_proxy.backend.instance"] == "openai.1"
    assert attributes["gen_ai.request.model"] == "gpt-4o"
    assert attributes["gen_ai.response.model"] == "gpt-4o"
    assert attributes["http.response.status_code"] == 200
    trace_id, _, parent_id = hex_ids(root)

    # ingress; per attempt an upstream span and the UPSTREAM role's ext_proc stream;
    # the ROUTER role's ext_proc stream
    spans = envoy_spans(envoy_collector, trace_id, 6)
    assert len(spans) == 6
    (ingress,) = (s for s in spans if s.name == "ingress")
    attempts = [s for s in spans if s.name == "router pool/smart egress"]
    streams = [s for s in spans if s.name == EXT_PROC_SPAN]
    assert len(attempts) == 2 and len(streams) == 3
    assert sorted(s.attributes["http.status_code"] for s in attempts) == ["200", "503"]
    (retry,) = (s for s in attempts if s.attributes["http.status_code"] == "200")
    assert retry.attributes["retry.count"] == "1"
    assert all(s.parent_id == ingress.span_id for s in attempts + streams)
    assert parent_id in {s.span_id for s in streams}


def test_envoy_joins_the_clients_trace(joined: Stack, envoy_collector: OtlpGrpcCollector) -> None:
    client = joined.openai(traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    root, _ = joined.one_request()
    trace_id, _, parent_id = hex_ids(root)
    assert trace_id == CLIENT_TRACE
    spans = {s.name: s for s in envoy_spans(envoy_collector, CLIENT_TRACE, 3)}
    assert spans["ingress"].parent_id == CLIENT_SPAN
    # the proxy's parent is Envoy's ext_proc span, not the client's span
    assert parent_id == spans[EXT_PROC_SPAN].span_id != CLIENT_SPAN


def test_envoy_and_proxy_honour_an_unsampled_client_trace(
    joined: Stack, envoy_collector: OtlpGrpcCollector
) -> None:
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4736"
    client = joined.openai(traceparent=f"00-{trace_id}-{CLIENT_SPAN}-00")
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    chat(joined)  # a sampled request after it: once its spans arrived, so would the other's
    (root,) = joined.request_spans()
    envoy_spans(envoy_collector, hex_ids(root)[0], 3)
    time.sleep(0.3)  # several of Envoy's 100 ms flushes
    assert envoy_collector.spans(trace_id) == []
    assert len(joined.spans()) == 1 + len(CHILDREN)


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_recorded_content_is_redacted(joined: Stack, fake_a: FakeOpenAI, stream: bool) -> None:
    provider_key = f"{PROVIDER_KEY}-alpha"  # configured: the redactor knows it
    fake_a.queue_response(f"Never paste {PROMPT_SECRET} here.")
    messages: Any = [
        {"role": "system", "content": f"Backend key: {provider_key}."},
        {"role": "user", "content": f"My key is {PROMPT_SECRET}, is it valid?"},
    ]
    client = joined.openai()
    if stream:
        chunks = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        text = answer.choices[0].message.content or ""
    # The redaction stage (on by default) already replaced the secrets, in the request
    # the provider and the span see, and in the answer the client and the span see.
    placeholder = r"\[REDACTED:openai-key:[0-9a-f]{8}\]"
    assert re.fullmatch(f"Never paste {placeholder} here.", text)

    root, _ = joined.one_request()
    (event,) = root.events
    assert event.name == "gen_ai.client.inference.operation.details"
    attributes = dict(event.attributes or {})
    [system] = json.loads(str(attributes["gen_ai.system_instructions"]))
    assert re.fullmatch(r"Backend key: \[REDACTED:provider-key:[0-9a-f]{8}\]\.", system["content"])
    [user] = json.loads(str(attributes["gen_ai.input.messages"]))
    assert re.fullmatch(f"My key is {placeholder}, is it valid\\?", user["parts"][0]["content"])
    [output] = json.loads(str(attributes["gen_ai.output.messages"]))
    assert output["parts"][0]["content"] == text and output["finish_reason"] == "stop"
    text_everywhere = all_text(joined.spans())
    assert PROMPT_SECRET not in text_everywhere and provider_key not in text_everywhere
    # content only on the event
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output")) for k in root.attributes or {})


def test_envoy_sampling_decides_for_the_proxy(
    tmp_path: Path, fake_a: FakeOpenAI, envoy_collector: OtlpGrpcCollector
) -> None:
    """``sample_percent: 0``: Envoy traces nothing, and so neither does the proxy, even for
    a client that asks for a sampled trace."""
    tracing = {
        "enabled": True,
        "service_name": "proxy-e2e-unsampled",
        "envoy_collector": envoy_collector.address,
        "sample_percent": 0,
    }
    with running_stack(tmp_path, stack_config(fake_a, tracing)) as stack:
        assert chat(stack).choices[0].message.content
        sampled = stack.openai(traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
        sampled.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        time.sleep(0.3)  # several of Envoy's 100 ms flushes
        assert stack.spans() == ()
        assert "tracing.opentelemetry.spans_sent: 0" in stack.admin("/stats")
        assert not [s for s in envoy_collector.spans() if "unsampled" in s.service_name]


# -- tracing off ----------------------------------------------------------------------------


def test_no_tracing_no_spans_and_no_sdk_work(
    tmp_path: Path, fake_a: FakeOpenAI, traced: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = 0
    original = sdk_trace.Span.__init__

    def counting(span: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal created
        created += 1
        original(span, *args, **kwargs)

    monkeypatch.setattr(sdk_trace.Span, "__init__", counting)
    chat(traced)  # the probe counts the SDK spans of a traced request
    assert created == 1 + len(CHILDREN)

    created = 0
    with running_stack(tmp_path, stack_config(fake_a, None)) as stack:
        assert not stack.telemetry.tracing.enabled
        # Envoy does not trace either: no tracing in its HTTP connection managers, no collector
        assert "tracing" not in json.dumps(stack.bootstrap["static_resources"]["listeners"])
        clusters = [c["name"] for c in stack.bootstrap["static_resources"]["clusters"]]
        assert "otel_collector" not in clusters
        answer = chat(stack, "hello", stream=False)
        assert answer.choices[0].message.content == "alpha says hello to gpt-4o-mini"
        stream = chat(stack, "hello", stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert stack.spans() == ()
    assert created == 0


# -- the whole program ------------------------------------------------------------------------


def test_python_m_extproc_exports_spans_over_otlp_http(tmp_path: Path, fake_a: FakeOpenAI) -> None:
    with OtlpHttpCollector() as collector:
        raw = stack_config(
            fake_a,
            {"enabled": True, "otlp_endpoint": collector.endpoint, "service_name": "proxy-otlp"},
        )
        proxy = start_proxy(tmp_path, raw)
        try:
            client = openai.OpenAI(
                base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0
            )
            raw_answer = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
            )
            request_id = raw_answer.headers["x-request-id"]
        finally:
            assert proxy.stop() == 0
        # spans are batched: stopping the proxy flushed them
        spans = collector.spans()
    log = proxy.log()
    assert f"exporting to {collector.endpoint}" in log
    assert collector.paths and set(collector.paths) == {"/v1/traces"}
    assert {s.service_name for s in spans} == {"proxy-otlp"}
    (root,) = (s for s in spans if s.kind == 2)  # SPAN_KIND_SERVER
    assert root.name == "chat gpt-4o-mini"
    assert root.attributes["llm_proxy.request.id"] == request_id
    assert root.attributes["gen_ai.provider.name"] == "openai"
    assert root.attributes["http.response.status_code"] == 200
    assert sorted(s.name for s in spans if s.parent_id == root.span_id) == sorted(CHILDREN)
