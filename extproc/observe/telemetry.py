"""Per-request telemetry: the one place metrics, spans and usage records are fed.

The ROUTER role calls :meth:`Telemetry.begin` when a client request arrives,
:meth:`Telemetry.request` once it is decoded and routed, and
:meth:`Telemetry.finish` when the exchange is over; the pipeline and the
processor wrap their steps in :meth:`Telemetry.phase` (a metrics timer and a
child span). Everything reads the :class:`RequestContext`, which the ROUTER
role fills as the exchange goes on; nothing here blocks (metrics are in-memory
additions, spans are exported by a background thread, usage records go to a
bounded queue).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from extproc.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from extproc.internalapi import METADATA_NAMESPACE
from extproc.observe.metrics import Metrics
from extproc.observe.redact import Redactor
from extproc.observe.tracing import ChildSpan, RequestSpan, Tracing, provider_name

if TYPE_CHECKING:
    from extproc.config import Config
    from extproc.observe.usage import PriceTable, UsageRecorder
    from extproc.observe.usage_store import UsageRecord
    from extproc.pipeline.context import RequestContext

log = logging.getLogger(__name__)

__all__ = ["Telemetry", "request_text"]

#: Session ids come from these request headers, in order of preference.
SESSION_HEADERS: Final = ("x-session-id", "x-llm-session-id")
_NULL_PHASE: Final = contextlib.nullcontext()


class _Phase:
    """Times one step into the stage histogram and wraps it in a child span."""

    __slots__ = ("_child", "_metrics", "_name", "_span", "_t0")

    def __init__(self, metrics: Metrics, span: RequestSpan, name: str) -> None:
        self._metrics = metrics
        self._span = span
        self._name = name
        self._child: ChildSpan | None = None
        self._t0 = 0.0

    def __enter__(self) -> _Phase:
        if self._span.recording:
            self._child = self._span.child(self._name).__enter__()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._metrics.observe_stage(self._name, time.perf_counter() - self._t0)
        if self._child is not None:
            self._child.__exit__(exc_type, exc, tb)


class Telemetry:
    """Metrics, tracing and usage accounting of the extproc process."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        usage: UsageRecorder | None = None,
        prices: PriceTable | None = None,
        redactor: Redactor | None = None,
        providers: Mapping[str, str] | None = None,
        schemas: Mapping[str, str] | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else Metrics.disabled()
        self.tracing = tracing if tracing is not None else Tracing.disabled()
        self.usage = usage
        self.prices = prices
        self.redact = redactor if redactor is not None else Redactor()
        #: Backend instance -> GenAI provider name (``gen_ai.provider.name``).
        self.providers = dict(providers or {})
        #: Backend instance -> wire schema (usage records name it).
        self.schemas = dict(schemas or {})
        self._timed = self.metrics.enabled or self.tracing.enabled

    @classmethod
    def from_config(cls, config: Config, *, with_usage: bool = True) -> Telemetry:
        """Everything the config turns on. ``with_usage`` opens the usage database
        and starts its writer thread (the server does; unit tests need not)."""
        secrets = [b.api_key.get_secret_value() for b in config.backends.values() if b.api_key]
        secrets += [k.get_secret_value() for k in (*config.api_keys, *config.admin_keys)]
        usage = prices = None
        if config.usage.enabled:
            from extproc.observe.usage import PriceTable, UsageRecorder

            prices = PriceTable(config.usage.prices)
            if with_usage:
                usage = UsageRecorder.from_config(config.usage)
        return cls(
            metrics=Metrics.from_config(config.metrics),
            tracing=Tracing.from_config(config.tracing),
            usage=usage,
            prices=prices,
            redactor=Redactor(secrets),
            providers={i: provider_name(config.backend_type(i)) for i in config.backends},
            schemas={i: config.backend_schema(i) for i in config.backends},
        )

    @property
    def needs_answer(self) -> bool:
        """Something here reads every answer (tokens, finish reasons)."""
        return self.metrics.enabled or self.tracing.enabled or self.usage is not None

    # -- the request's life ---------------------------------------------------

    def begin(
        self,
        ctx: RequestContext,
        headers: Mapping[str, str],
        carrier: Iterable[tuple[str, str | bytes]] | None = None,
    ) -> None:
        """A client request arrived: session id, the request span."""
        ctx.session_id = next((headers[h] for h in SESSION_HEADERS if h in headers), None)
        tracing = self.tracing
        if not tracing.enabled:
            return
        parent = tracing.extract(carrier)
        if parent is None or not _has_span(parent):
            parent = tracing.extract(headers)
        ctx.span = tracing.start_request(
            f"llm {ctx.frontend}",
            parent=parent,
            attributes={
                "llm_proxy.frontend": ctx.frontend,
                "llm_proxy.request.id": ctx.request_id,
                "http.request.method": ctx.method,
                "url.path": ctx.path,
            },
            # From the request's own start, as its durations are (time to first
            # chunk can then never exceed the span).
            start_time=time.time_ns() - int((time.monotonic() - ctx.started) * 1e9),
        )

    def phase(self, ctx: RequestContext, name: str) -> AbstractContextManager[Any]:
        """A timed, traced step of the request (``decode``, ``stage.routing``, ...)."""
        if not self._timed:
            return _NULL_PHASE
        return _Phase(self.metrics, ctx.span, name)

    def request(self, ctx: RequestContext, request: CanonicalRequest) -> None:
        """The request is decoded and routed."""
        span = ctx.span
        if not span.recording:
            return
        span.update_name(f"chat {ctx.requested_model or request.model}")
        span.set_request(
            ctx.requested_model or request.model,
            max_tokens=request.max_output_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stream=request.stream,
        )
        if ctx.route is not None:
            span.set_route(cluster=ctx.route.cluster, model=ctx.model)
        if span.records_content:
            redact = self.redact
            system, messages = request_text(request)
            span.record_input(
                [(role, redact(text)) for role, text in messages],
                system=redact(system) if system is not None else None,
            )

    def response(self, ctx: RequestContext, response: CanonicalResponse) -> None:
        """A complete answer (not streamed): what it reports."""
        ctx.usage = response.usage
        ctx.finish_reason = response.finish_reason
        ctx.response_id = response.id or None
        ctx.response_model = response.model or None
        if ctx.span.records_content:
            ctx.span.record_output(
                self.redact(response_text(response)), finish_reason=response.finish_reason
            )

    def output_text(self, ctx: RequestContext, text: str) -> None:
        """A streamed answer's text, when content is recorded."""
        if ctx.span.records_content:
            ctx.span.record_output(self.redact(text), finish_reason=ctx.finish_reason)

    def finish(self, ctx: RequestContext) -> None:
        """The exchange is over: count it, end the span, record its usage."""
        if ctx.finished is not None:
            return
        ctx.finished = time.monotonic()
        try:
            self._finish(ctx)
        except Exception:  # telemetry must never break a request
            log.exception("telemetry: cannot record request %s", ctx.request_id)

    def _finish(self, ctx: RequestContext) -> None:
        metrics = self.metrics
        backend = ctx.backend or ""
        model = ctx.model or ctx.requested_model or ""
        if metrics.enabled:
            metrics.observe_request(
                ctx.frontend, backend, model, ctx.status, ctx.duration, ctx.streamed
            )
            if ctx.error_code is not None:
                metrics.count_error(ctx.frontend, ctx.error_code)
            ttft = ctx.ttft
            if ttft is not None:
                metrics.observe_ttft(ctx.frontend, backend, ttft)
            if ctx.usage is not None and backend:
                metrics.add_tokens(backend, model, ctx.usage)
            self._count_attempts(ctx)
        span = ctx.span
        if span.recording:
            if ctx.backend is not None:
                # The attempt that answered: after failover, another backend and
                # possibly another model than the one first planned.
                span.set_route(
                    backend=ctx.backend, provider=self.providers.get(ctx.backend), model=ctx.model
                )
            span.set_response(
                status_code=ctx.status or None,
                model=ctx.response_model or ctx.model,
                response_id=ctx.response_id,
                finish_reasons=[ctx.finish_reason] if ctx.finish_reason else None,
                usage=ctx.usage,
                time_to_first_chunk=ctx.ttft,
            )
            if ctx.status >= 400 or ctx.error_code is not None:
                # The proxy's own error code; else (a provider's error, relayed) the
                # status as text, as the HTTP semantic conventions have it.
                span.record_error(
                    ctx.error_code or str(ctx.status),
                    ctx.error_message or f"HTTP {ctx.status}",
                    status_code=ctx.status or None,
                )
            span.end()
        if self.usage is not None:
            self._record_usage(ctx)

    def _count_attempts(self, ctx: RequestContext) -> None:
        """Every attempt Envoy made: the retried ones, and how the last one ended."""
        if not ctx.attempts:
            return
        known = ctx.attempt_backends
        plan_backend = ctx.state.get("single_backend")
        for index in range(ctx.attempts):
            backend = known[index] if index < len(known) else plan_backend or ""
            if index < ctx.attempts - 1:
                outcome = "retried"
            elif not ctx.from_provider:
                outcome = "failed"  # Envoy answered: no attempt got through
            else:
                backend = ctx.backend or backend
                outcome = "ok" if ctx.status < 400 else "error"
            self.metrics.count_attempt(backend, outcome)

    def _record_usage(self, ctx: RequestContext) -> None:
        if ctx.route is None and ctx.requested_model is None:
            return  # not a generation (model lists, usage queries, rejected headers)
        assert self.usage is not None
        self.usage.submit(usage_record(ctx, self.schemas.get(ctx.backend or "")))

    def dynamic_metadata(self, ctx: RequestContext) -> dict[str, dict[str, Any]]:
        """Usage for Envoy's access log, in the ``llm`` dynamic-metadata namespace."""
        fields: dict[str, Any] = {
            "frontend": ctx.frontend,
            "model": ctx.model or ctx.requested_model or "",
            "backend": ctx.backend or "",
        }
        usage = ctx.usage
        if usage is not None:
            fields.update(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                reasoning_tokens=usage.reasoning_tokens,
            )
            if self.prices:
                cost = self.prices.cost(usage_record(ctx, None))
                if cost is not None:
                    fields["cost_usd"] = cost
        if ctx.finish_reason:
            fields["finish_reason"] = ctx.finish_reason
        if ctx.session_id:
            fields["session"] = ctx.session_id
        if ctx.tokens_saved:
            fields["tokens_saved"] = ctx.tokens_saved
        ttft = ctx.ttft
        if ttft is not None:
            fields["ttft_ms"] = round(ttft * 1000, 3)
        return {METADATA_NAMESPACE: fields}

    def close(self) -> None:
        """Flush and stop: the usage writer, the span exporter, the metrics server."""
        if self.usage is not None:
            self.usage.close()
        self.tracing.shutdown()
        self.metrics.shutdown()


def usage_record(ctx: RequestContext, schema: str | None) -> UsageRecord:
    """The usage record of a finished request (cost is the recorder's to fill)."""
    from extproc.observe.usage_store import UsageRecord

    usage = ctx.usage
    ttft = ctx.ttft
    return UsageRecord(
        request_id=ctx.request_id,
        time=ctx.started_wall,
        client_key_id=ctx.client_key_id,
        session_id=ctx.session_id,
        frontend=ctx.frontend,
        backend_instance=ctx.backend,
        backend_schema=schema,
        requested_model=ctx.requested_model,
        model=ctx.model,
        status=ctx.status,
        streamed=ctx.streamed,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cached_input_tokens=usage.cached_input_tokens if usage else 0,
        reasoning_tokens=usage.reasoning_tokens if usage else 0,
        ttft_ms=round(ttft * 1000, 3) if ttft is not None else None,
        duration_ms=round(ctx.duration * 1000, 3),
        error_code=ctx.error_code,
    )


def _has_span(context: Any) -> bool:
    from opentelemetry import trace

    return trace.get_current_span(context).get_span_context().is_valid


def request_text(request: CanonicalRequest) -> tuple[str | None, list[tuple[str, str]]]:
    """The request's system prompt and its messages as ``(role, text)``."""
    system: list[str] = []
    messages: list[tuple[str, str]] = []
    for message in request.messages:
        text = "\n".join(_part_texts(message.content))
        if message.role in ("system", "developer"):
            system.append(text)
        else:
            messages.append((message.role, text))
    return ("\n".join(system) if system else None), messages


def response_text(response: CanonicalResponse) -> str:
    return "\n".join(_part_texts(response.content))


def _part_texts(parts: Iterable[Any]) -> Iterator[str]:
    for part in parts:
        if isinstance(part, TextPart | ReasoningPart):
            if part.text:
                yield part.text
        elif isinstance(part, ToolCallPart):
            yield f"[tool call {part.name}] {part.arguments}"
        elif isinstance(part, ToolResultPart):
            for inner in part.content:
                if isinstance(inner, TextPart):
                    yield inner.text
