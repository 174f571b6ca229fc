"""Tracing: spans checked with the SDK's in-memory exporter."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from extproc.canonical import Usage
from extproc.config.model import TracingConfig
from extproc.observe import tracing as tracing_module
from extproc.observe.tracing import (
    EVENT_INFERENCE_DETAILS,
    RequestSpan,
    Tracing,
    otlp_traces_url,
    provider_name,
)
from tests.observe.otlp import OtlpHttpCollector

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def make(record_content: bool = False) -> tuple[Tracing, InMemorySpanExporter]:
    tracing = Tracing.from_config(
        TracingConfig(enabled=True, service_name="proxy-test", record_content=record_content)
    )
    exporter = InMemorySpanExporter()
    tracing.add_exporter(exporter)
    return tracing, exporter


@pytest.fixture
def traced() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    tracing, exporter = make()
    yield tracing, exporter
    tracing.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    out = {span.name: span for span in spans}
    assert len(out) == len(spans), "span names are not unique"
    return out


def test_request_span_with_children(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced
    span = tracing.start_request("llm_proxy.request", None, {"llm_proxy.frontend": "openai-chat"})
    assert span.recording and span.trace_id is not None and len(span.trace_id) == 32
    with span.child("decode"):
        pass
    with span.child("stage.routing", {"llm_proxy.stage": "routing"}) as stage:
        stage.set_attribute("llm_proxy.route.cluster", "instance/openai")
    with span.child("encode"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["decode", "stage.routing", "encode"]
    span.end()
    span.end()  # idempotent: exported once

    spans = by_name(exporter.get_finished_spans())
    assert list(spans) == ["decode", "stage.routing", "encode", "llm_proxy.request"]
    root = spans["llm_proxy.request"]
    assert root.kind is SpanKind.SERVER
    assert root.parent is None
    assert root.resource.attributes["service.name"] == "proxy-test"
    assert root.context is not None
    assert f"{root.context.trace_id:032x}" == span.trace_id
    for name in ("decode", "stage.routing", "encode"):
        child = spans[name]
        assert child.kind is SpanKind.INTERNAL
        assert child.parent is not None and child.context is not None
        assert child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
        assert child.status.status_code is StatusCode.UNSET
    assert dict(spans["stage.routing"].attributes or {}) == {
        "llm_proxy.stage": "routing",
        "llm_proxy.route.cluster": "instance/openai",
    }
    assert root.status.status_code is StatusCode.UNSET
    assert root.events == ()


def test_genai_attributes_exactly(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced
    span = tracing.start_request(
        "chat", attributes={"llm_proxy.frontend": "anthropic", "llm_proxy.request.id": "r-1"}
    )
    span.set_request("smart", max_tokens=512, temperature=0.2, top_p=0.9, stream=True)
    span.set_route(
        backend="openai.1",
        provider=provider_name("openai"),
        cluster="pool/smart",
        model="gpt-4o-mini",
    )
    span.update_name("chat gpt-4o-mini")
    span.set_response(
        status_code=200,
        model="gpt-4o-mini-2024-07-18",
        response_id="chatcmpl-123",
        finish_reasons=["stop"],
        usage=Usage(
            input_tokens=120,
            output_tokens=30,
            cached_input_tokens=100,
            cache_write_tokens=5,
            reasoning_tokens=12,
        ),
        time_to_first_chunk=0.25,
    )
    span.end()

    (root,) = exporter.get_finished_spans()
    assert root.name == "chat gpt-4o-mini"
    assert dict(root.attributes or {}) == {
        "llm_proxy.frontend": "anthropic",
        "llm_proxy.request.id": "r-1",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.max_tokens": 512,
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.stream": True,
        "llm_proxy.backend.instance": "openai.1",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "llm_proxy.route.cluster": "pool/smart",
        "http.response.status_code": 200,
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-123",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.response.time_to_first_chunk": 0.25,
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 100,
        "gen_ai.usage.cache_creation.input_tokens": 5,
        "gen_ai.usage.reasoning.output_tokens": 12,
    }


def test_minimal_attributes_omit_unknown_values(
    traced: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = traced
    span = tracing.start_request("chat")
    span.set_request("gpt-4o")
    span.set_response(usage=Usage(input_tokens=3, output_tokens=4))
    span.end()
    (root,) = exporter.get_finished_spans()
    assert dict(root.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 4,
    }


def test_errors_set_status(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced
    span = tracing.start_request("chat")
    with pytest.raises(ValueError, match="bad body"), span.child("decode"):
        raise ValueError("bad body")
    span.record_error("no_healthy_upstream", "no healthy upstream", status_code=503)
    span.end()

    spans = by_name(exporter.get_finished_spans())
    decode = spans["decode"]
    assert decode.status.status_code is StatusCode.ERROR
    assert decode.status.description == "ValueError: bad body"
    (event,) = decode.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "ValueError"

    root = spans["chat"]
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "no healthy upstream"
    assert dict(root.attributes or {}) == {
        "error.type": "no_healthy_upstream",
        "http.response.status_code": 503,
    }


@pytest.mark.parametrize(
    "carrier",
    [
        {"traceparent": TRACEPARENT, "tracestate": "envoy=1", "content-type": "application/grpc"},
        # gRPC invocation metadata: key/value pairs (grpc.aio's _Metadatum tuples)
        (("user-agent", "envoy"), ("traceparent", TRACEPARENT), ("tracestate", "envoy=1")),
        [("traceparent", TRACEPARENT.encode()), ("tracestate", b"envoy=1")],
    ],
    ids=["headers", "grpc-metadata", "bytes-values"],
)
def test_trace_joins_envoys(traced: tuple[Tracing, InMemorySpanExporter], carrier: Any) -> None:
    tracing, exporter = traced
    parent = tracing.extract(carrier)
    span = tracing.start_request("chat", parent)
    assert span.trace_id == TRACE_ID
    with span.child("decode"):
        pass
    span.end()
    spans = by_name(exporter.get_finished_spans())
    root = spans["chat"]
    assert root.context is not None and root.parent is not None
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert f"{root.parent.span_id:016x}" == PARENT_ID
    assert root.parent.is_remote
    assert root.context.trace_state.get("envoy") == "1"
    decode = spans["decode"]
    assert decode.parent is not None and decode.parent.span_id == root.context.span_id
    assert decode.context is not None and f"{decode.context.trace_id:032x}" == TRACE_ID


@pytest.mark.parametrize(
    "carrier",
    [{}, {"traceparent": "garbage"}, {"traceparent": f"00-{'0' * 32}-{PARENT_ID}-01"}, ()],
    ids=["none", "malformed", "invalid-id", "empty-metadata"],
)
def test_without_a_valid_parent_a_new_trace_starts(
    traced: tuple[Tracing, InMemorySpanExporter], carrier: Any
) -> None:
    tracing, exporter = traced
    span = tracing.start_request("chat", tracing.extract(carrier))
    span.end()
    (root,) = exporter.get_finished_spans()
    assert root.parent is None
    assert span.trace_id is not None and span.trace_id != TRACE_ID


def test_unsampled_parent_records_nothing(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced
    span = tracing.start_request("chat", tracing.extract({"traceparent": TRACEPARENT[:-2] + "00"}))
    assert not span.recording
    with span.child("decode"):
        pass
    span.end()
    assert exporter.get_finished_spans() == ()


def test_no_content_unless_record_content(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced
    span = tracing.start_request("chat")
    assert not span.records_content
    span.record_input([("user", "my secret prompt")], system="be brief")
    span.record_output("the secret answer", "stop")
    span.end()
    (root,) = exporter.get_finished_spans()
    assert root.events == ()
    assert not any("secret" in str(v) for v in (root.attributes or {}).values())


def test_content_recorded_as_genai_event_when_opted_in() -> None:
    tracing, exporter = make(record_content=True)
    try:
        span = tracing.start_request("chat")
        assert span.records_content
        span.set_route(backend="anthropic", provider=provider_name("anthropic"))
        span.record_input(
            [("user", "Weather in [REDACTED]?"), ("assistant", "Rainy."), ("user", "Thanks")],
            system="You are terse.",
        )
        span.record_output("You're welcome.", finish_reason="stop")
        span.end()
    finally:
        tracing.shutdown()

    (root,) = exporter.get_finished_spans()
    (event,) = root.events
    assert event.name == EVENT_INFERENCE_DETAILS == "gen_ai.client.inference.operation.details"
    attributes = dict(event.attributes or {})
    assert set(attributes) == {
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.system_instructions",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
    }
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert json.loads(str(attributes["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "You are terse."}
    ]
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather in [REDACTED]?"}]},
        {"role": "assistant", "parts": [{"type": "text", "content": "Rainy."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Thanks"}]},
    ]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "You're welcome."}],
            "finish_reason": "stop",
        }
    ]
    # content is on the event only, never in the span's attributes
    assert not {"gen_ai.input.messages", "gen_ai.output.messages"} & set(root.attributes or {})


class _SpanCounter:
    """Counts SDK span objects created (the recording ``Span`` class's __init__)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = sdk_trace.Span.__init__

        def counting(span: Any, *args: Any, **kwargs: Any) -> None:
            self.count += 1
            original(span, *args, **kwargs)

        monkeypatch.setattr(sdk_trace.Span, "__init__", counting)


def exercise(tracing: Tracing) -> RequestSpan:
    span = tracing.start_request("chat", tracing.extract({"traceparent": TRACEPARENT}))
    with span.child("decode") as child:
        child.set_attribute("k", "v")
    span.set_attribute("k", "v")
    span.add_event("first_token")
    span.update_name("chat x")
    span.set_request("gpt-4o", max_tokens=1, temperature=0.0, top_p=1.0, stream=False)
    span.set_route(backend="openai", provider="openai", cluster="instance/openai", model="m")
    span.set_response(status_code=200, usage=Usage(input_tokens=1), finish_reasons=["stop"])
    span.record_input([("user", "hi")], system="s")
    span.record_output("hello", "stop")
    span.record_error("x", "y", status_code=500)
    span.end()
    return span


def test_disabled_tracing_allocates_no_sdk_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _SpanCounter(monkeypatch)

    # the probe works: enabled tracing creates SDK spans through the same path
    enabled, exporter = make()
    exercise(enabled)
    enabled.shutdown()
    assert counter.count == 2 and len(exporter.get_finished_spans()) == 2

    counter.count = 0
    disabled = Tracing.from_config(TracingConfig())
    assert not disabled.enabled and disabled.provider is None
    probe = InMemorySpanExporter()
    disabled.add_exporter(probe)  # a no-op when off
    assert not disabled.extract({"traceparent": TRACEPARENT})  # empty context
    first = exercise(disabled)
    second = exercise(disabled)
    assert first is second  # one shared no-op span
    assert first.child("a") is second.child("b")
    assert not first.recording and first.trace_id is None and not first.records_content
    assert counter.count == 0
    assert probe.get_finished_spans() == ()
    assert disabled.force_flush()
    disabled.shutdown()


def test_tracing_does_not_touch_the_global_provider() -> None:
    from opentelemetry import trace

    before = trace.get_tracer_provider()
    tracing, _ = make()
    tracing.start_request("chat").end()
    tracing.shutdown()
    assert trace.get_tracer_provider() is before


def test_after_shutdown_spans_are_no_ops(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced
    tracing.shutdown()
    assert not tracing.enabled
    tracing.start_request("chat").end()
    assert exporter.get_finished_spans() == ()


def test_otlp_export_on_shutdown_flush() -> None:
    """A real OTLP/HTTP POST to a local collector, flushed by shutdown()."""
    with OtlpHttpCollector() as collector:
        tracing = Tracing.from_config(
            TracingConfig(enabled=True, service_name="proxy-otlp", otlp_endpoint=collector.endpoint)
        )
        span = tracing.start_request("chat", attributes={"llm_proxy.frontend": "gemini"})
        with span.child("decode"):
            pass
        span.end()
        assert collector.spans() == []  # batched: nothing sent yet
        tracing.shutdown()  # the batch processor exports what it holds
        spans = collector.spans()

    assert collector.paths == ["/v1/traces"]
    assert {s.service_name for s in spans} == {"proxy-otlp"}
    by = {s.name: s for s in spans}
    assert sorted(by) == ["chat", "decode"]
    assert by["chat"].attributes == {"llm_proxy.frontend": "gemini"}
    assert by["chat"].kind == 2  # SPAN_KIND_SERVER
    assert by["decode"].parent_id == by["chat"].span_id
    assert by["decode"].trace_id == by["chat"].trace_id == span.trace_id


def test_otlp_traces_url() -> None:
    assert otlp_traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert otlp_traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert otlp_traces_url("https://otel.example/custom/path") == "https://otel.example/custom/path"


def test_provider_names() -> None:
    assert provider_name("openai") == "openai"
    assert provider_name("openai-responses") == "openai"
    assert provider_name("anthropic") == "anthropic"
    assert provider_name("gemini") == "gcp.gemini"
    assert provider_name("openai-compatible") == "openai-compatible"


def test_attribute_names_match_the_installed_semantic_conventions() -> None:
    """Our spelled-out names equal the installed package's constants, where it has them."""
    checked = 0
    for module_name, names in {
        "opentelemetry.semconv._incubating.attributes.gen_ai_attributes": [
            n for n in dir(tracing_module) if n.startswith("GEN_AI_")
        ],
        "opentelemetry.semconv.attributes.http_attributes": ["HTTP_RESPONSE_STATUS_CODE"],
        "opentelemetry.semconv.attributes.error_attributes": ["ERROR_TYPE"],
    }.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in names:
            if hasattr(module, name):
                assert getattr(tracing_module, name) == getattr(module, name), name
                checked += 1
    # with opentelemetry-semantic-conventions 0.66b2 every one of them is there
    assert checked >= 20


def test_long_content_is_cut() -> None:
    tracing = Tracing.from_config(TracingConfig(enabled=True, record_content=True))
    tracing.max_content_chars = 10
    exporter = InMemorySpanExporter()
    tracing.add_exporter(exporter)
    span = tracing.start_request("chat")
    span.record_input([("user", "0123456789abcdef")])
    span.record_output("short")
    span.end()
    tracing.shutdown()
    (root,) = exporter.get_finished_spans()
    (event,) = root.events
    attributes = dict(event.attributes or {})
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [
        {
            "role": "user",
            "parts": [{"type": "text", "content": "0123456789...[6 more characters not recorded]"}],
        }
    ]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "short"}]}
    ]


def test_extract_accepts_missing_metadata(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, _ = traced
    assert not tracing.extract(None)
