"""OpenTelemetry spans for proxied requests (docs/observability.md).

:class:`Tracing` owns a :class:`~opentelemetry.sdk.trace.TracerProvider` of its
own (never the global one, so several apps and tests coexist in a process).
The processors call it per request:

* :meth:`Tracing.extract` reads W3C ``traceparent``/``tracestate`` from the gRPC
  invocation metadata of Envoy's ext_proc stream (or from request headers),
  so the proxy's span joins Envoy's trace;
* :meth:`Tracing.start_request` opens the request span (kind SERVER);
  :meth:`RequestSpan.child` opens INTERNAL children as context managers for
  decode, each pipeline stage, encode and translation;
* :meth:`RequestSpan.set_request`, :meth:`~RequestSpan.set_route` and
  :meth:`~RequestSpan.set_response` set GenAI semantic-convention attributes;
  :meth:`~RequestSpan.record_error` sets the error status; :meth:`~RequestSpan.end`.

Tracing off returns one shared no-op :class:`RequestSpan`: no SDK span, no
allocation beyond the call. So does a request whose parent trace is not
sampled (Envoy decided): its children would not be recorded either.

Prompts and completions are recorded only with ``record_content``, given by
the caller as already-redacted text, in one
``gen_ai.client.inference.operation.details`` span event per request, with the
``gen_ai.input.messages`` / ``gen_ai.system_instructions`` /
``gen_ai.output.messages`` attributes (JSON text) of the current GenAI
conventions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit, urlunsplit

import msgspec
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from extproc.canonical import Usage
    from extproc.config.model import TracingConfig

log = logging.getLogger(__name__)

__all__ = [
    "NO_SPAN",
    "ChildSpan",
    "RequestSpan",
    "Tracing",
    "provider_name",
]

# -- attribute names ----------------------------------------------------------
# The GenAI names are the OpenTelemetry GenAI semantic conventions' (the
# installed opentelemetry-semantic-conventions package still carries them, in
# ``_incubating``, marked as moved to the semantic-conventions-genai
# repository). They are spelled here so an upgrade that drops that module
# cannot break the proxy; tests/observe/test_tracing.py checks each one
# against the installed package where it still exists.

GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
#: Deprecated predecessor of ``gen_ai.provider.name``, still read by many backends.
GEN_AI_SYSTEM: Final = "gen_ai.system"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"
#: The span event carrying content (opt-in) in the current GenAI conventions.
EVENT_INFERENCE_DETAILS: Final = "gen_ai.client.inference.operation.details"

#: Stable general conventions.
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
ERROR_TYPE: Final = "error.type"

#: The proxy's own attributes.
PROXY_FRONTEND: Final = "llm_proxy.frontend"
PROXY_REQUEST_ID: Final = "llm_proxy.request.id"
PROXY_BACKEND_INSTANCE: Final = "llm_proxy.backend.instance"
PROXY_ROUTE_CLUSTER: Final = "llm_proxy.route.cluster"

#: Backend type (``backends.CATALOG``) -> ``gen_ai.provider.name`` value.
_PROVIDERS: Final[Mapping[str, str]] = {
    "openai": "openai",
    "openai-responses": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
}


def provider_name(backend_type: str) -> str:
    """The ``gen_ai.provider.name`` of a backend type (the type itself when not listed)."""
    return _PROVIDERS.get(backend_type, backend_type)


#: Longest text recorded per content part (a prompt, a completion); the rest is
#: cut with a marker, so an agent's 500 KB history does not become a 500 KB span.
MAX_CONTENT_CHARS = 16_384

_EMPTY_CONTEXT: Final = Context()
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_TRACE_KEYS: Final = frozenset({"traceparent", "tracestate"})
_ENCODER: Final = msgspec.json.Encoder()

Carrier = Mapping[str, str] | Iterable[tuple[str, str | bytes]]


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters not recorded]"


# -- the no-op spans (tracing off) ----------------------------------------------


class ChildSpan:
    """A child span as a context manager; this base class records nothing.

    An exception leaving the ``with`` block is recorded on the span, which gets
    an error status; the exception propagates.
    """

    __slots__ = ()

    def __enter__(self) -> ChildSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None


class RequestSpan:
    """The span of one request; this base class is the shared no-op span."""

    __slots__ = ()

    #: Spans of this request are recorded (and exported if an exporter is set).
    recording: bool = False
    #: Content recording is on: only then build redacted text for record_input/output.
    records_content: bool = False

    @property
    def trace_id(self) -> str | None:
        """The 32-hex-digit trace id (for logs), or None when not recording."""
        return None

    def child(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> ChildSpan:
        """An INTERNAL child span around a ``with`` block (decode, a stage, encode...)."""
        return _NOOP_CHILD

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def update_name(self, name: str) -> None:
        return None

    def add_event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        return None

    def set_request(
        self,
        model: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stream: bool | None = None,
        operation: str = "chat",
    ) -> None:
        """The client's request: ``gen_ai.operation.name``, ``gen_ai.request.*``."""
        return None

    def set_route(
        self,
        *,
        backend: str | None = None,
        provider: str | None = None,
        cluster: str | None = None,
        model: str | None = None,
    ) -> None:
        """Where it goes: backend instance, provider (``gen_ai.provider.name`` and
        ``gen_ai.system``), Envoy cluster; ``model`` replaces ``gen_ai.request.model``
        with the model actually asked of the provider."""
        return None

    def set_response(
        self,
        *,
        status_code: int | None = None,
        model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] | None = None,
        usage: Usage | None = None,
        time_to_first_chunk: float | None = None,
    ) -> None:
        """The answer: ``http.response.status_code``, ``gen_ai.response.*``, ``gen_ai.usage.*``."""
        return None

    def record_input(self, messages: Iterable[tuple[str, str]], system: str | None = None) -> None:
        """Prompt content as ``(role, redacted text)`` pairs; ignored unless ``records_content``."""
        return None

    def record_output(self, text: str, finish_reason: str | None = None) -> None:
        """Completion content (redacted text); ignored unless ``records_content``."""
        return None

    def record_error(self, code: str, message: str, *, status_code: int | None = None) -> None:
        """The request failed: error status with ``message``, ``error.type`` = ``code``."""
        return None

    def end(self) -> None:
        """End the span (idempotent); emits the content event if content was recorded."""
        return None


_NOOP_CHILD: Final = ChildSpan()
_NOOP_REQUEST: Final = RequestSpan()
#: The span of a request that is not traced.
NO_SPAN: Final = _NOOP_REQUEST


# -- the recording spans ------------------------------------------------------------


class _LiveChildSpan(ChildSpan):
    __slots__ = ("_attributes", "_context", "_name", "_span", "_tracer")

    def __init__(
        self,
        tracer: trace.Tracer,
        context: Context,
        name: str,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> None:
        self._tracer = tracer
        self._context = context
        self._name = name
        self._attributes = attributes
        self._span: trace.Span | None = None

    def __enter__(self) -> ChildSpan:
        self._span = self._tracer.start_span(
            self._name,
            context=self._context,
            kind=SpanKind.INTERNAL,
            attributes=self._attributes,
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if span is None:
            return
        if exc is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)


class _LiveRequestSpan(RequestSpan):
    __slots__ = (
        "_child_context",
        "_ended",
        "_input",
        "_limit",
        "_operation",
        "_output",
        "_provider",
        "_span",
        "_system",
        "_tracer",
        "records_content",
    )

    recording = True

    def __init__(
        self, span: trace.Span, tracer: trace.Tracer, record_content: bool, limit: int
    ) -> None:
        self._span = span
        self._tracer = tracer
        self.records_content = record_content
        self._limit = limit
        self._child_context: Context | None = None
        self._ended = False
        self._operation = "chat"
        self._provider: str | None = None
        self._input: str | None = None
        self._system: str | None = None
        self._output: str | None = None

    @property
    def trace_id(self) -> str | None:
        return trace.format_trace_id(self._span.get_span_context().trace_id)

    def child(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> ChildSpan:
        context = self._child_context
        if context is None:
            context = self._child_context = trace.set_span_in_context(self._span, _EMPTY_CONTEXT)
        return _LiveChildSpan(self._tracer, context, name, attributes)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def update_name(self, name: str) -> None:
        self._span.update_name(name)

    def add_event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        self._span.add_event(name, attributes)

    def set_request(
        self,
        model: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stream: bool | None = None,
        operation: str = "chat",
    ) -> None:
        span = self._span
        self._operation = operation
        span.set_attribute(GEN_AI_OPERATION_NAME, operation)
        span.set_attribute(GEN_AI_REQUEST_MODEL, model)
        if max_tokens is not None:
            span.set_attribute(GEN_AI_REQUEST_MAX_TOKENS, max_tokens)
        if temperature is not None:
            span.set_attribute(GEN_AI_REQUEST_TEMPERATURE, temperature)
        if top_p is not None:
            span.set_attribute(GEN_AI_REQUEST_TOP_P, top_p)
        if stream is not None:
            span.set_attribute(GEN_AI_REQUEST_STREAM, stream)

    def set_route(
        self,
        *,
        backend: str | None = None,
        provider: str | None = None,
        cluster: str | None = None,
        model: str | None = None,
    ) -> None:
        span = self._span
        if backend is not None:
            span.set_attribute(PROXY_BACKEND_INSTANCE, backend)
        if provider is not None:
            self._provider = provider
            span.set_attribute(GEN_AI_PROVIDER_NAME, provider)
            span.set_attribute(GEN_AI_SYSTEM, provider)
        if cluster is not None:
            span.set_attribute(PROXY_ROUTE_CLUSTER, cluster)
        if model is not None:
            span.set_attribute(GEN_AI_REQUEST_MODEL, model)

    def set_response(
        self,
        *,
        status_code: int | None = None,
        model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] | None = None,
        usage: Usage | None = None,
        time_to_first_chunk: float | None = None,
    ) -> None:
        span = self._span
        if status_code is not None:
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status_code)
        if model is not None:
            span.set_attribute(GEN_AI_RESPONSE_MODEL, model)
        if response_id is not None:
            span.set_attribute(GEN_AI_RESPONSE_ID, response_id)
        if finish_reasons is not None:
            span.set_attribute(GEN_AI_RESPONSE_FINISH_REASONS, tuple(finish_reasons))
        if time_to_first_chunk is not None:
            span.set_attribute(GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, time_to_first_chunk)
        if usage is not None:
            span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens)
            span.set_attribute(GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens)
            if usage.cached_input_tokens:
                span.set_attribute(GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, usage.cached_input_tokens)
            if usage.cache_write_tokens:
                span.set_attribute(
                    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, usage.cache_write_tokens
                )
            if usage.reasoning_tokens:
                span.set_attribute(GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, usage.reasoning_tokens)

    def record_input(self, messages: Iterable[tuple[str, str]], system: str | None = None) -> None:
        if not self.records_content:
            return
        limit = self._limit
        self._input = _ENCODER.encode(
            [
                {"role": role, "parts": [{"type": "text", "content": _cut(text, limit)}]}
                for role, text in messages
            ]
        ).decode()
        if system is not None:
            self._system = _ENCODER.encode(
                [{"type": "text", "content": _cut(system, limit)}]
            ).decode()

    def record_output(self, text: str, finish_reason: str | None = None) -> None:
        if not self.records_content:
            return
        message: dict[str, object] = {
            "role": "assistant",
            "parts": [{"type": "text", "content": _cut(text, self._limit)}],
        }
        if finish_reason is not None:
            message["finish_reason"] = finish_reason
        self._output = _ENCODER.encode([message]).decode()

    def record_error(self, code: str, message: str, *, status_code: int | None = None) -> None:
        span = self._span
        span.set_attribute(ERROR_TYPE, code)
        if status_code is not None:
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status_code)
        span.set_status(Status(StatusCode.ERROR, message))

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._input is not None or self._output is not None or self._system is not None:
            attributes: dict[str, AttributeValue] = {GEN_AI_OPERATION_NAME: self._operation}
            if self._provider is not None:
                attributes[GEN_AI_PROVIDER_NAME] = self._provider
            if self._system is not None:
                attributes[GEN_AI_SYSTEM_INSTRUCTIONS] = self._system
            if self._input is not None:
                attributes[GEN_AI_INPUT_MESSAGES] = self._input
            if self._output is not None:
                attributes[GEN_AI_OUTPUT_MESSAGES] = self._output
            self._span.add_event(EVENT_INFERENCE_DETAILS, attributes)
        self._span.end()


# -- the entry point ------------------------------------------------------------------


class Tracing:
    """Span factory of the extproc process; ``provider`` is None when tracing is off."""

    def __init__(
        self,
        provider: TracerProvider | None,
        *,
        record_content: bool = False,
        max_content_chars: int = MAX_CONTENT_CHARS,
    ) -> None:
        self.provider = provider
        self.record_content = record_content
        self.max_content_chars = max_content_chars
        self._tracer: trace.Tracer | None = (
            provider.get_tracer("llm_proxy") if provider is not None else None
        )

    @classmethod
    def from_config(cls, config: TracingConfig) -> Tracing:
        """Off, or a provider named ``service_name`` exporting to ``otlp_endpoint`` if set."""
        if not config.enabled:
            return cls.disabled()
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: config.service_name}),
        )
        if config.otlp_endpoint:
            # Imported here: the exporter pulls in requests and protobuf code.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_traces_url(config.otlp_endpoint))
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider, record_content=config.record_content)

    @classmethod
    def disabled(cls) -> Tracing:
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def add_exporter(self, exporter: SpanExporter) -> None:
        """Export every span synchronously as it ends (tests: ``InMemorySpanExporter``).

        Nothing happens when tracing is off.
        """
        if self.provider is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))

    def extract(self, carrier: Carrier | None) -> Context:
        """The remote parent in W3C ``traceparent``/``tracestate``, or an empty context.

        ``carrier`` is a mapping with lower-case keys (Envoy request headers) or
        the key/value pairs of gRPC invocation metadata
        (``context.invocation_metadata()``, which may be None).
        """
        if self._tracer is None or carrier is None:
            return _EMPTY_CONTEXT
        if not isinstance(carrier, Mapping):
            carrier = {
                key: value if isinstance(value, str) else value.decode("latin-1")
                for key, value in carrier
                if key in _TRACE_KEYS
            }
        if "traceparent" not in carrier:
            return _EMPTY_CONTEXT
        return _PROPAGATOR.extract(carrier, context=_EMPTY_CONTEXT)

    def start_request(
        self,
        name: str,
        parent: Context | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
        start_time: int | None = None,
    ) -> RequestSpan:
        """Open the request span (kind SERVER), a child of ``parent`` or a new trace;
        ``start_time``: when the request began (ns since the epoch), default now."""
        tracer = self._tracer
        if tracer is None:
            return _NOOP_REQUEST
        span = tracer.start_span(
            name,
            context=parent if parent is not None else _EMPTY_CONTEXT,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=start_time,
        )
        if not span.is_recording():  # the parent was not sampled: neither are we
            return _NOOP_REQUEST
        return _LiveRequestSpan(span, tracer, self.record_content, self.max_content_chars)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if self.provider is None:
            return True
        return self.provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush pending spans and stop the exporters (idempotent enough: SDK-guarded)."""
        provider, self.provider, self._tracer = self.provider, None, None
        if provider is not None:
            provider.shutdown()


def otlp_traces_url(endpoint: str) -> str:
    """``http://host:4318`` -> ``http://host:4318/v1/traces``; a URL with a path is kept."""
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return urlunsplit(parts._replace(path="/v1/traces"))
    return endpoint
