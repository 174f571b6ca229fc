"""One request's flow, free of ext_proc: the exchange.

decode → request stages → route → encode for the chosen cluster; and for the
answer: the provider's (or Envoy's) answer → answer stages → the client's
dialect, whole or stream by stream. The ROUTER role
(:mod:`extproc.processing.router`) owns one exchange per request and only
adapts ext_proc messages to it: header maps, body modes, mutations, replies.
Telemetry observes the exchange at its steps (``begin``, ``request``,
``response``, ``finish``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from extproc.canonical import CanonicalError, CanonicalRequest, CanonicalResponse, Envelope
from extproc.canonical.aggregate import aggregate_events, response_events
from extproc.canonical.tokens import estimate_tokens
from extproc.codecs import Codec, get_codec
from extproc.codecs.base import RequestMeta, ResponseContext
from extproc.errors import InvalidRequest, PayloadTooLarge
from extproc.internalapi import CLUSTER_HEADER, HOSTS_ALIKE_HEADER
from extproc.pipeline import AnswerChain, RequestContext, RequestOutcome
from extproc.processing.headers import ATTEMPT_COUNT_HEADER, UPSTREAM_MARK
from extproc.processing.local_replies import local_reply_error
from extproc.processing.translate import StreamTranslator
from extproc.routing.health import is_quota_error

if TYPE_CHECKING:
    from extproc.processing.app import App

__all__ = ["Exchange"]

log = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder()
_envelope_encoder = msgspec.json.Encoder()
_JSON = {"content-type": "application/json"}


class Exchange:
    def __init__(
        self, app: App, ctx: RequestContext, codec: Codec, meta: RequestMeta, kind: str
    ) -> None:
        self.app = app
        self.telemetry = app.telemetry
        self.ctx = ctx
        #: The client's protocol.
        self.codec = codec
        self.meta = meta
        self.kind = kind
        self.request: CanonicalRequest | None = None
        #: This request's answer filters (None: no stage reads this answer).
        self.chain: AnswerChain | None = None
        # the answer
        self.status = 0
        #: The codec of the provider that answered (None: Envoy's own reply).
        self.backend: Codec | None = None
        self.retry_after: str | None = None
        self.translator: StreamTranslator | None = None
        self._translate_seconds = 0.0
        self._translate_span: Any = None
        self._ended = False

    # -- request -----------------------------------------------------------------

    def decode(self, body: bytes) -> CanonicalRequest | bytes:
        """The client's request in the canonical model (or, for a token count, the answer)."""
        limit = self.app.config.limits.max_request_bytes
        if len(body) > limit:
            raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
        codec = self.codec
        with self.telemetry.phase(self.ctx, "decode"):
            try:
                data = _decoder.decode(body)
            except msgspec.DecodeError:
                raise InvalidRequest(
                    "we could not parse the JSON body of your request; send valid JSON",
                    code="invalid_json",
                ) from None
            if not isinstance(data, dict):
                raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
            if self.kind == "count_tokens":
                counted = codec.decode_count_request(data, self.meta)
                return codec.encode_count_response(estimate_tokens(counted))
            request = codec.decode_request(data, self.meta)
        self.ctx.requested_model = request.model
        self.request = request
        return request

    def run_stages(self, request: CanonicalRequest) -> RequestOutcome | Awaitable[RequestOutcome]:
        return self.app.pipeline.request(self.ctx, request)

    def forward(self) -> tuple[dict[str, str], bytes]:
        """Headers and body for Envoy: the request encoded as far as its cluster allows."""
        ctx, request = self.ctx, self.request
        assert request is not None
        self.chain = self.app.pipeline.answer(ctx, request)
        with self.telemetry.phase(ctx, "encode"):
            set_headers, out = self._encode(ctx, request)
        self.telemetry.request(ctx, request)
        return set_headers, out

    def _encode(
        self, ctx: RequestContext, request: CanonicalRequest
    ) -> tuple[dict[str, str], bytes]:
        route = ctx.route
        assert route is not None
        plan = self.app.plans[route.cluster]
        endpoint = plan.endpoints[0]
        model = endpoint.model or route.model or request.model
        ctx.model = model
        if len(plan.endpoints) == 1:
            # Every attempt (retries included) goes to this instance.
            ctx.state["single_backend"] = endpoint.instance
        if plan.encoding == "router":
            # One possible host: encode for it here; the cluster has no
            # UPSTREAM role (see routing/topology.py).
            set_headers, out = self.app.backends[endpoint.instance].prepare(
                request, model, endpoint.params
            )
        elif plan.encoding == "shared":
            # Every host gets the same path and body: encode them once; the
            # UPSTREAM role adds the chosen host's credential.
            set_headers, out = self.app.backends[endpoint.instance].encode(
                request, model, endpoint.params
            )
            alike = self.app.alike_hosts.get(route.cluster)
            if alike is not None:
                # Every host gets these headers too: set them here, and Envoy skips
                # the UPSTREAM role for the first attempt. The mark is dropped before
                # the provider, on the header map Envoy shares between attempts: a
                # retry runs the role, which sets the same headers.
                set_headers.update(alike)
                set_headers[HOSTS_ALIKE_HEADER] = "1"
                # No UPSTREAM role logs the first attempt's instance: it is unknown.
                self.app.attempt_log.add(ctx.request_id, "")
        else:
            envelope = Envelope(request=request, model=route.model, request_id=ctx.request_id)
            out = _envelope_encoder.encode(envelope)
            set_headers = {"content-type": "application/json", "content-length": str(len(out))}
        set_headers[CLUSTER_HEADER] = route.cluster
        return set_headers, out

    def stage_answer(self, response: CanonicalResponse) -> tuple[bytes, dict[str, str]]:
        """A stage answered: the answer in the client's dialect, JSON or stream."""
        ctx, request, codec = self.ctx, self.request, self.codec
        assert request is not None
        ctx.status = 200
        ctx.usage = response.usage
        ctx.finish_reason = response.finish_reason
        ctx.response_id = response.id or None
        ctx.response_model = response.model or None
        if request.stream:
            ctx.streamed = True
            encoder = codec.stream_encoder(self.response_context())
            body = encoder.encode(response_events(response)) + encoder.finish()
            return body, {"content-type": codec.stream_content_type, "cache-control": "no-cache"}
        return codec.encode_response(response, self.response_context()), dict(_JSON)

    # -- answer ------------------------------------------------------------------

    def answer_from(self, status: int, headers: Mapping[str, str], host: dict[str, Any]) -> None:
        """The answer's status and headers: who answered, and what the context records."""
        self.status = status
        self.retry_after = headers.get("retry-after")
        schema = host.get("schema")
        # Envoy's router marks answers that came from an upstream; a local
        # reply (timeout, no healthy host, ...) lacks the mark even when a
        # host had been chosen.
        from_upstream = UPSTREAM_MARK in headers
        self.backend = get_codec(schema) if isinstance(schema, str) and from_upstream else None
        ctx = self.ctx
        ctx.status = self.codec.client_status(status)
        ctx.from_provider = self.backend is not None
        if ctx.route is not None:
            ctx.attempts = _attempts(headers.get(ATTEMPT_COUNT_HEADER))
            ctx.attempt_backends = self.app.attempt_log.pop(ctx.request_id)
        if self.backend is not None:
            ctx.backend = host.get("instance")
            if host.get("model"):
                ctx.model = host["model"]

    def open_stream(self) -> StreamTranslator:
        """The provider streams and the client wants a stream: translate it event by event."""
        request, backend, ctx = self.request, self.backend, self.ctx
        assert request is not None and backend is not None
        ctx.streamed = True
        if ctx.span.recording:
            self._translate_span = ctx.span.child("translate").__enter__()
        self.translator = StreamTranslator(
            decoder=backend.stream_decoder(),
            encoder=self.codec.stream_encoder(self.response_context()),
            same_protocol=backend.name == self.codec.name,
            chain=self.chain,
            input_estimate=lambda: estimate_tokens(request),
            collect_text=ctx.span.records_content,
        )
        return self.translator

    def stream_chunk(self, body: bytes, end_of_stream: bool) -> bytes:
        """One body chunk of a streamed answer, translated (possibly empty)."""
        translator = self.translator
        assert translator is not None
        t0 = time.perf_counter()
        out = translator.feed(body)
        if end_of_stream:
            out += translator.finish()
        self._translate_seconds += time.perf_counter() - t0
        if out and self.ctx.first_output is None:
            self.ctx.first_output = time.monotonic()
        if translator.ended is not None:
            self.ctx.finish_reason = translator.ended.reason
        return out

    def whole(self, body: bytes, *, from_sse: bool) -> tuple[bytes, dict[str, str]]:
        """A complete answer (or error) in the client's dialect, and the headers to set.

        Returns ``body`` itself when it may go out as the provider sent it.
        """
        codec, ctx = self.codec, self.ctx
        json_headers = dict(_JSON)
        if self.status >= 400 or self.status < 200:
            error = self._error_from_upstream(body)
            ctx.error_message = error.message
            if self.backend is None:  # Envoy's own reply (no upstream answered)
                ctx.error_code = error.code
            if error.retry_after and self.retry_after is None:
                # A hint only in the body (Gemini RetryInfo) becomes the header
                # every client dialect understands.
                json_headers["retry-after"] = error.retry_after
            return codec.encode_error(error), json_headers
        backend, request = self.backend, self.request
        if backend is None or request is None:
            error = CanonicalError(502, "the proxy received an answer it cannot attribute")
            ctx.error_code, ctx.error_message = "unattributed_answer", error.message
            return codec.encode_error(error), json_headers
        with self.telemetry.phase(ctx, "translate"):
            try:
                if from_sse:
                    decoder = backend.stream_decoder()
                    events = [e for _, evs in decoder.feed(body) + decoder.finish() for e in evs]
                    response = aggregate_events(events)
                    same = False
                else:
                    response = backend.decode_response(body)
                    same = backend.name == codec.name
            except ValueError as exc:
                log.warning("request %s: undecodable provider answer: %s", ctx.request_id, exc)
                error = CanonicalError(502, f"the provider sent an invalid answer: {exc}")
                ctx.status = 502
                ctx.error_code, ctx.error_message = "invalid_provider_answer", error.message
                return codec.encode_error(error), json_headers
            final = response
            if self.chain is not None:
                final, failure = self.chain.whole(response)
                if failure is not None:
                    self.telemetry.response(ctx, response)  # the tokens were spent
                    ctx.status = failure.status
                    ctx.error_code, ctx.error_message = failure.code, failure.message
                    return codec.encode_error(failure), {
                        **json_headers,
                        ":status": str(codec.client_status(failure.status)),
                    }
            self.telemetry.response(ctx, final)  # what the client gets
            if request.stream:
                # The client asked for a stream but the provider answered at once.
                encoder = codec.stream_encoder(self.response_context())
                out = encoder.encode(response_events(final)) + encoder.finish()
                return out, {"content-type": codec.stream_content_type}
            if same and final is response:  # no stage changed it: the provider's bytes
                return body, {}
            return codec.encode_response(final, self.response_context()), json_headers

    def response_context(self) -> ResponseContext:
        request, codec = self.request, self.codec
        assert request is not None
        estimate = estimate_tokens(request) if codec.reports_input_early else 0
        return ResponseContext(
            request_model=request.model,
            include_usage=request.include_usage,
            estimated_input_tokens=estimate,
        )

    def _error_from_upstream(self, body: bytes) -> CanonicalError:
        if self.backend is not None:
            error = self.backend.decode_error(self.status, body, self.retry_after)
            # A provider may echo a credential (its key, a client's pasted secret): the
            # client and the logs get the message with known keys and key shapes replaced.
            error.message = self.telemetry.redact(error.message)
            ctx = self.ctx
            if ctx.backend and is_quota_error(self.status, error.code, error.message):
                # Envoy's attempt log carries statuses, not bodies: only an answer
                # read here tells an exhausted quota from a rate limit.
                self.app.health.observe(
                    ctx.backend, self.status, code=error.code, message=error.message
                )
            return error
        return local_reply_error(self.status, body, self.retry_after)

    # -- the end -------------------------------------------------------------------

    def end(self) -> None:
        """The exchange is over (answered, failed, or the stream closed): tell the observers."""
        if self._ended:
            return
        self._ended = True
        try:
            if self.translator is not None:
                self._stream_done(self.translator)
            self.app.pipeline.end(self.ctx)
        finally:
            self.telemetry.finish(self.ctx)

    def _stream_done(self, translator: StreamTranslator) -> None:
        """What the stream reported (all of it, or as far as it got)."""
        ctx = self.ctx
        ctx.usage = translator.usage
        ctx.finish_reason = translator.finish_reason
        ctx.response_id = translator.response_id or None
        ctx.response_model = translator.response_model or None
        failure = translator.failure
        if failure is not None and ctx.error_code is None:
            # The client had its 200; the answer still failed (error event, cut stream).
            ctx.error_code = failure.code or "upstream_stream_error"
            ctx.error_message = failure.message
        if translator.text is not None:
            self.telemetry.output_text(ctx, "".join(translator.text))
        self.telemetry.metrics.observe_stage("translate", self._translate_seconds)
        if self._translate_span is not None:
            self._translate_span.set_attribute("llm_proxy.stream.events", translator.events)
            self._translate_span.set_attribute(
                "llm_proxy.stream.cpu_ms", round(self._translate_seconds * 1000, 3)
            )
            self._translate_span.__exit__(None, None, None)
            self._translate_span = None


def _attempts(value: str | None) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1
