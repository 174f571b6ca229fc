"""The Telemetry glue: phases, the request span's life, metrics, dynamic metadata."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from extproc.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    Message,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from extproc.config import build_config
from extproc.config.model import PriceConfig, TracingConfig
from extproc.observe.metrics import Metrics
from extproc.observe.redact import Redactor
from extproc.observe.telemetry import Telemetry, request_text
from extproc.observe.tracing import NO_SPAN, Tracing
from extproc.observe.usage import PriceTable
from extproc.pipeline.context import RequestContext
from extproc.routing import RouteDecision

TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_A = "00f067aa0ba902b7"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"
SPAN_B = "b7ad6b7169203331"
KNOWN_SECRET = "fake-known-secret-value"


def context(**fields: Any) -> RequestContext:
    return RequestContext(
        request_id="req-1",
        frontend="openai-chat",
        method="POST",
        path="/v1/chat/completions",
        headers={},
        **fields,
    )


def traced_tracing(record_content: bool = False) -> tuple[Tracing, InMemorySpanExporter]:
    tracing = Tracing.from_config(TracingConfig(enabled=True, record_content=record_content))
    exporter = InMemorySpanExporter()
    tracing.add_exporter(exporter)
    return tracing, exporter


@pytest.fixture
def traced() -> Iterator[tuple[Telemetry, InMemorySpanExporter]]:
    tracing, exporter = traced_tracing()
    telemetry = Telemetry(
        metrics=Metrics(runtime_collectors=False),
        tracing=tracing,
        providers={"openai.1": "openai"},
    )
    yield telemetry, exporter
    telemetry.close()


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = exporter.get_finished_spans()
    out = {s.name: s for s in spans}
    assert len(out) == len(spans)
    return out


def ids(span: ReadableSpan) -> tuple[str, str | None]:
    assert span.context is not None
    parent = f"{span.parent.span_id:016x}" if span.parent is not None else None
    return f"{span.context.trace_id:032x}", parent


# -- phases --------------------------------------------------------------------------------


def test_phase_is_timed_into_the_stage_histogram_and_a_child_span(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    ctx = context()
    telemetry.begin(ctx, {}, None)
    assert ctx.span.recording
    with telemetry.phase(ctx, "decode"):
        time.sleep(0.02)
    with telemetry.phase(ctx, "stage.routing"):
        pass
    metrics = telemetry.metrics
    assert sample(metrics, "llm_proxy_stage_seconds_count", stage="decode") == 1
    seconds = sample(metrics, "llm_proxy_stage_seconds_sum", stage="decode")
    assert seconds is not None and 0.02 <= seconds < 1
    assert sample(metrics, "llm_proxy_stage_seconds_count", stage="stage.routing") == 1
    assert sample(metrics, "llm_proxy_stage_seconds_count", stage="encode") is None

    spans = by_name(exporter)
    assert sorted(spans) == ["decode", "stage.routing"]  # the request span is still open
    decode = spans["decode"]
    assert decode.kind is SpanKind.INTERNAL
    assert decode.start_time is not None and decode.end_time is not None
    assert decode.end_time - decode.start_time >= 20_000_000
    telemetry.finish(ctx)
    root = by_name(exporter)["llm openai-chat"]
    assert root.context is not None
    assert decode.parent is not None and decode.parent.span_id == root.context.span_id


def test_a_failing_phase_is_still_timed_and_marks_its_span(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    ctx = context()
    telemetry.begin(ctx, {}, None)
    with pytest.raises(ValueError, match="bad route"), telemetry.phase(ctx, "stage.routing"):
        raise ValueError("bad route")
    assert sample(telemetry.metrics, "llm_proxy_stage_seconds_count", stage="stage.routing") == 1
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: bad route"


def test_phase_with_metrics_only_makes_no_span() -> None:
    telemetry = Telemetry(metrics=Metrics(runtime_collectors=False))
    ctx = context()
    telemetry.begin(ctx, {"x-session-id": "s-1"}, [("traceparent", f"00-{TRACE_A}-{SPAN_A}-01")])
    assert ctx.span is NO_SPAN
    with telemetry.phase(ctx, "encode"):
        pass
    assert sample(telemetry.metrics, "llm_proxy_stage_seconds_count", stage="encode") == 1


class _SpanCounter:
    """Counts SDK spans created anywhere in the process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = sdk_trace.Span.__init__

        def counting(span: Any, *args: Any, **kwargs: Any) -> None:
            self.count += 1
            original(span, *args, **kwargs)

        monkeypatch.setattr(sdk_trace.Span, "__init__", counting)


def run_request(telemetry: Telemetry, headers: dict[str, str] | None = None) -> RequestContext:
    """A whole exchange through the glue, as the ROUTER role drives it."""
    ctx = context()
    telemetry.begin(ctx, headers or {}, [("traceparent", f"00-{TRACE_A}-{SPAN_A}-01")])
    with telemetry.phase(ctx, "decode"):
        pass
    request = CanonicalRequest(
        protocol="openai-chat",
        model="gpt-4o",
        messages=[Message(role="user", content=[TextPart(f"hi {KNOWN_SECRET}")])],
    )
    ctx.requested_model = "gpt-4o"
    ctx.route = RouteDecision("instance/openai", "gpt-4o")
    ctx.model = "gpt-4o"
    telemetry.request(ctx, request)
    ctx.backend, ctx.status = "openai.1", 200
    telemetry.response(
        ctx,
        CanonicalResponse(
            id="r-1",
            model="gpt-4o",
            content=[TextPart("hello")],
            finish_reason="stop",
            usage=Usage(input_tokens=3, output_tokens=1),
        ),
    )
    telemetry.finish(ctx)
    return ctx


def test_everything_off_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _SpanCounter(monkeypatch)
    # the probe works: the same exchange with tracing on creates SDK spans
    tracing, exporter = traced_tracing()
    run_request(Telemetry(tracing=tracing))
    assert counter.count == 2 and len(exporter.get_finished_spans()) == 2
    tracing.shutdown()

    counter.count = 0
    telemetry = Telemetry()
    assert not telemetry.needs_answer
    assert not telemetry.metrics.enabled and not telemetry.tracing.enabled
    ctx = context()
    # one shared do-nothing context manager: no allocation per phase
    assert telemetry.phase(ctx, "decode") is telemetry.phase(ctx, "encode")
    ctx = run_request(telemetry, {"x-llm-session-id": "s-2"})
    assert ctx.span is NO_SPAN
    assert ctx.session_id == "s-2"  # still read: usage records and access logs use it
    assert ctx.usage == Usage(input_tokens=3, output_tokens=1)
    assert ctx.finished is not None
    assert counter.count == 0
    assert list(telemetry.metrics.registry.collect()) == []
    telemetry.close()


# -- the request span -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("carrier", "headers", "expected"),
    [
        # Envoy's context (gRPC metadata) wins over the client's header
        (
            [("x-llm-role", "router"), ("traceparent", f"00-{TRACE_A}-{SPAN_A}-01")],
            {"traceparent": f"00-{TRACE_B}-{SPAN_B}-01"},
            (TRACE_A, SPAN_A),
        ),
        # Envoy not tracing: the client's header
        (
            [("x-llm-role", "router")],
            {"traceparent": f"00-{TRACE_B}-{SPAN_B}-01"},
            (TRACE_B, SPAN_B),
        ),
        (None, {"traceparent": f"00-{TRACE_B}-{SPAN_B}-01"}, (TRACE_B, SPAN_B)),
        # nothing: a new trace
        ([("x-llm-role", "router")], {}, (None, None)),
        # a malformed context in the metadata: the header
        (
            [("traceparent", "00-nonsense")],
            {"traceparent": f"00-{TRACE_B}-{SPAN_B}-01"},
            (TRACE_B, SPAN_B),
        ),
    ],
    ids=["envoy-wins", "header", "no-metadata", "none", "malformed-metadata"],
)
def test_begin_picks_the_parent(
    traced: tuple[Telemetry, InMemorySpanExporter],
    carrier: Any,
    headers: dict[str, str],
    expected: tuple[str | None, str | None],
) -> None:
    telemetry, exporter = traced
    ctx = context()
    telemetry.begin(ctx, headers, carrier)
    telemetry.finish(ctx)
    (root,) = exporter.get_finished_spans()
    trace_id, parent = ids(root)
    if expected[0] is None:
        assert parent is None and trace_id not in (TRACE_A, TRACE_B)
    else:
        assert (trace_id, parent) == expected


def test_envoys_decision_not_to_sample_is_final(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    ctx = context()
    telemetry.begin(
        ctx,
        {"traceparent": f"00-{TRACE_B}-{SPAN_B}-01"},  # the client would like a trace
        [("traceparent", f"00-{TRACE_A}-{SPAN_A}-00")],  # Envoy did not sample it
    )
    assert ctx.span is NO_SPAN
    with telemetry.phase(ctx, "decode"):
        pass
    telemetry.finish(ctx)
    assert exporter.get_finished_spans() == ()
    assert sample(telemetry.metrics, "llm_proxy_stage_seconds_count", stage="decode") == 1


def test_a_whole_exchange_on_the_span_and_in_metrics(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    ctx = context()
    telemetry.begin(ctx, {"x-request-id": "ignored-here"}, None)
    request = CanonicalRequest(
        protocol="openai-chat",
        model="smart",
        messages=[Message(role="user", content=[TextPart("hi")])],
        max_output_tokens=256,
        temperature=0.1,
        top_p=0.5,
        stream=True,
    )
    ctx.requested_model = "smart"
    ctx.route = RouteDecision("pool/smart", None)
    ctx.model = "gpt-4o-mini"
    telemetry.request(ctx, request)
    ctx.backend, ctx.status, ctx.streamed = "openai.1", 200, True
    ctx.first_output = ctx.started + 0.25
    ctx.usage = Usage(input_tokens=40, output_tokens=10, cached_input_tokens=30)
    ctx.finish_reason, ctx.response_id, ctx.response_model = "length", "chatcmpl-9", "gpt-4o-m-1"
    telemetry.finish(ctx)
    telemetry.finish(ctx)  # idempotent: counted and exported once

    (root,) = exporter.get_finished_spans()
    assert root.name == "chat smart"
    assert root.status.status_code is StatusCode.UNSET
    assert dict(root.attributes or {}) == {
        "llm_proxy.frontend": "openai-chat",
        "llm_proxy.request.id": "req-1",
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "gen_ai.operation.name": "chat",
        # the client's model, then the one asked of the provider
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.max_tokens": 256,
        "gen_ai.request.temperature": 0.1,
        "gen_ai.request.top_p": 0.5,
        "gen_ai.request.stream": True,
        "llm_proxy.route.cluster": "pool/smart",
        "llm_proxy.backend.instance": "openai.1",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "http.response.status_code": 200,
        "gen_ai.response.model": "gpt-4o-m-1",
        "gen_ai.response.id": "chatcmpl-9",
        "gen_ai.response.finish_reasons": ("length",),
        "gen_ai.response.time_to_first_chunk": pytest.approx(0.25),
        "gen_ai.usage.input_tokens": 40,
        "gen_ai.usage.output_tokens": 10,
        "gen_ai.usage.cache_read.input_tokens": 30,
    }
    metrics = telemetry.metrics
    labels = {"frontend": "openai-chat", "backend": "openai.1", "model": "gpt-4o-mini"}
    assert sample(metrics, "llm_proxy_requests_total", **labels, status="200") == 1
    assert (
        sample(metrics, "llm_proxy_request_seconds_count", frontend="openai-chat", streamed="true")
        == 1
    )
    ttft = sample(metrics, "llm_proxy_ttft_seconds_sum", frontend="openai-chat", backend="openai.1")
    assert ttft == pytest.approx(0.25)
    tokens = {"backend": "openai.1", "model": "gpt-4o-mini"}
    assert sample(metrics, "llm_proxy_tokens_total", **tokens, kind="input") == 40
    assert sample(metrics, "llm_proxy_tokens_total", **tokens, kind="cached") == 30


def test_after_failover_the_span_names_the_attempt_that_answered(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    ctx = context(requested_model="smart", route=RouteDecision("pool/smart", None))
    telemetry.begin(ctx, {}, None)
    ctx.model = "gpt-4o"  # the pool's first target
    telemetry.request(ctx, CanonicalRequest(protocol="openai-chat", model="smart"))
    # the first target failed; the answer came from the next one (host metadata)
    ctx.backend, ctx.model, ctx.status = "openai.1", "gpt-4o-mini", 200
    telemetry.finish(ctx)
    (root,) = exporter.get_finished_spans()
    attributes = dict(root.attributes or {})
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert attributes["llm_proxy.backend.instance"] == "openai.1"
    assert attributes["gen_ai.provider.name"] == "openai"


@pytest.mark.parametrize(
    ("status", "code", "error_type", "counted"),
    [
        (429, None, "429", False),  # a provider's error, relayed
        (503, "no_backend_available", "no_backend_available", True),  # the proxy's own
        (200, "internal_error", "internal_error", True),  # failed mid-stream
    ],
)
def test_errors_on_the_span_and_in_metrics(
    traced: tuple[Telemetry, InMemorySpanExporter],
    status: int,
    code: str | None,
    error_type: str,
    counted: bool,
) -> None:
    telemetry, exporter = traced
    ctx = context(status=status, error_code=code, error_message="it went wrong")
    telemetry.begin(ctx, {}, None)
    telemetry.finish(ctx)
    (root,) = exporter.get_finished_spans()
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "it went wrong"
    assert (root.attributes or {})["error.type"] == error_type
    assert (root.attributes or {})["http.response.status_code"] == status
    errors = sample(
        telemetry.metrics, "llm_proxy_errors_total", frontend="openai-chat", code=error_type
    )
    assert errors == (1 if counted else None)


def test_content_is_redacted_before_it_reaches_the_span() -> None:
    tracing, exporter = traced_tracing(record_content=True)
    telemetry = Telemetry(tracing=tracing, redactor=Redactor([KNOWN_SECRET]))
    ctx = context()
    telemetry.begin(ctx, {}, None)
    assert ctx.span.records_content
    request = CanonicalRequest(
        protocol="openai-chat",
        model="gpt-4o",
        messages=[
            Message(role="system", content=[TextPart(f"Key: {KNOWN_SECRET}")]),
            Message(role="developer", content=[TextPart("Be brief.")]),
            Message(role="user", content=[TextPart("Read sk-fake-0123456789abcdef0000")]),
            Message(
                role="assistant",
                content=[ToolCallPart(id="c1", name="read", arguments='{"p": "x"}')],
            ),
            Message(
                role="tool",
                content=[ToolResultPart(tool_call_id="c1", content=[TextPart(KNOWN_SECRET)])],
            ),
        ],
    )
    telemetry.request(ctx, request)
    telemetry.response(
        ctx,
        CanonicalResponse(
            id="r",
            model="gpt-4o",
            content=[TextPart(f"Your key {KNOWN_SECRET} is fine.")],
            finish_reason="stop",
        ),
    )
    telemetry.finish(ctx)
    tracing.shutdown()

    (root,) = exporter.get_finished_spans()
    (event,) = root.events
    attributes = dict(event.attributes or {})
    assert json.loads(str(attributes["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "Key: [REDACTED:secret]\nBe brief."}
    ]
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "Read [REDACTED:openai-key]"}]},
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": '[tool call read] {"p": "x"}'}],
        },
        {"role": "tool", "parts": [{"type": "text", "content": "[REDACTED:secret]"}]},
    ]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Your key [REDACTED:secret] is fine."}],
            "finish_reason": "stop",
        }
    ]


def test_streamed_output_text_is_redacted() -> None:
    tracing, exporter = traced_tracing(record_content=True)
    telemetry = Telemetry(tracing=tracing, redactor=Redactor([KNOWN_SECRET]))
    ctx = context()
    telemetry.begin(ctx, {}, None)
    ctx.finish_reason = "length"
    telemetry.output_text(ctx, f"partial {KNOWN_SECRET}")
    telemetry.finish(ctx)
    tracing.shutdown()
    (root,) = exporter.get_finished_spans()
    (event,) = root.events
    assert json.loads(str((event.attributes or {})["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "partial [REDACTED:secret]"}],
            "finish_reason": "length",
        }
    ]


def test_request_text_splits_system_from_messages() -> None:
    request = CanonicalRequest(
        protocol="anthropic",
        model="m",
        messages=[
            Message(role="user", content=[TextPart("a"), TextPart("b")]),
            Message(role="assistant", content=[]),
        ],
    )
    assert request_text(request) == (None, [("user", "a\nb"), ("assistant", "")])


# -- dynamic metadata -----------------------------------------------------------------------


def test_dynamic_metadata_minimal() -> None:
    telemetry = Telemetry()
    ctx = context(requested_model="smart")
    assert telemetry.dynamic_metadata(ctx) == {
        "llm": {"frontend": "openai-chat", "model": "smart", "backend": ""}
    }


def test_dynamic_metadata_full_with_cost() -> None:
    prices = PriceTable({"gpt-4o": PriceConfig(input=2.5, output=10.0, cached_input=1.25)})
    telemetry = Telemetry(prices=prices)
    ctx = context(
        requested_model="smart",
        model="gpt-4o",
        backend="openai.1",
        usage=Usage(
            input_tokens=1000, output_tokens=200, cached_input_tokens=400, reasoning_tokens=50
        ),
        finish_reason="tool_calls",
        session_id="s-9",
    )
    ctx.first_output = ctx.started + 0.1234567
    fields = telemetry.dynamic_metadata(ctx)["llm"]
    # (600 * 2.5 + 400 * 1.25 + 200 * 10) / 1e6
    assert fields.pop("cost_usd") == pytest.approx(0.004)
    assert fields == {
        "frontend": "openai-chat",
        "model": "gpt-4o",
        "backend": "openai.1",
        "input_tokens": 1000,
        "output_tokens": 200,
        "cached_input_tokens": 400,
        "reasoning_tokens": 50,
        "finish_reason": "tool_calls",
        "session": "s-9",
        "ttft_ms": 123.457,
    }


def test_dynamic_metadata_without_a_price_has_no_cost() -> None:
    telemetry = Telemetry(prices=PriceTable({"claude*": PriceConfig(input=3, output=15)}))
    ctx = context(model="gpt-4o", usage=Usage(input_tokens=1, output_tokens=1))
    fields = telemetry.dynamic_metadata(ctx)["llm"]
    assert "cost_usd" not in fields
    assert fields["input_tokens"] == 1


# -- from the config ------------------------------------------------------------------------


def test_from_config_knows_every_configured_secret() -> None:
    config = build_config(
        {
            "backends": {
                "openai.1": {"type": "openai", "api_key": "fake-provider-key-one"},
                "claude": {"type": "anthropic", "api_key": "fake-provider-key-two"},
            },
            "api_keys": ["fake-proxy-client-key"],
            "admin_keys": ["fake-proxy-admin-key"],
            "tracing": {"enabled": True},
        }
    )
    telemetry = Telemetry.from_config(config, with_usage=False)
    try:
        assert telemetry.tracing.enabled and telemetry.usage is None and not telemetry.prices
        assert telemetry.providers == {"openai.1": "openai", "claude": "anthropic"}
        text = (
            "fake-provider-key-one fake-provider-key-two fake-proxy-client-key "
            "fake-proxy-admin-key fake-not-configured"
        )
        assert telemetry.redact(text) == (
            "[REDACTED:secret] [REDACTED:secret] [REDACTED:secret] [REDACTED:secret] "
            "fake-not-configured"
        )
    finally:
        telemetry.close()


def test_the_request_span_starts_when_the_request_did() -> None:
    # CI found this: the span began when telemetry first saw the request, a little
    # after the context's clock started, so a stream whose first chunk was also its
    # last reported a time to first chunk longer than its own span.
    tracing, exporter = traced_tracing()
    telemetry = Telemetry(tracing=tracing)
    ctx = context(started=time.monotonic() - 0.05)  # the request began 50 ms ago
    telemetry.begin(ctx, {}, [("traceparent", f"00-{TRACE_A}-{SPAN_A}-01")])
    ctx.first_output = time.monotonic()  # the first chunk was also the last
    ctx.streamed = True
    telemetry.finish(ctx)
    (span,) = exporter.get_finished_spans()
    assert span.start_time is not None and span.end_time is not None
    duration = (span.end_time - span.start_time) / 1e9
    assert duration >= 0.05
    ttft = ctx.ttft
    assert ttft is not None and ttft <= duration
    assert dict(span.attributes or {})["gen_ai.response.time_to_first_chunk"] <= duration
    tracing.shutdown()
