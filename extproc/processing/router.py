"""The ROUTER role: one instance per client request, in the listener's filter chain.

Request side: classify the endpoint, authenticate, decode the client's
protocol, run the pipeline (which routes), and hand Envoy the cluster to use
with a body encoded as far as the cluster allows (see the encodings in
:mod:`extproc.routing.topology`). Response side: translate the winning
attempt's answer (or Envoy's local reply) back into the client's dialect,
chunk by chunk for streams.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode

import msgspec

from extproc.canonical import (
    CanonicalError,
    CanonicalRequest,
    Envelope,
)
from extproc.canonical.aggregate import aggregate_events, response_events
from extproc.canonical.tokens import estimate_tokens
from extproc.codecs import Codec, get_codec
from extproc.codecs.base import RequestMeta, ResponseContext
from extproc.errors import (
    InvalidRequest,
    PayloadTooLarge,
    ProxyError,
)
from extproc.internalapi import CLUSTER_HEADER, INTERNAL_PREFIX, ROUTE_HEADER
from extproc.pipeline import AnswerChain, Reject, RequestContext, RequestOutcome, Respond
from extproc.processing.actions import Action, Continue, Reply
from extproc.processing.frontends import dialect_for, match_endpoint
from extproc.processing.headers import (
    ATTEMPT_COUNT_HEADER,
    CLIENT_CREDENTIAL_HEADERS,
    RESPONSE_HEADERS_TO_STRIP,
    UPSTREAM_MARK,
    client_key,
)
from extproc.processing.local_replies import local_reply_error
from extproc.processing.translate import StreamTranslator
from extproc.routing.health import is_quota_error

if TYPE_CHECKING:
    from extproc.processing.app import App

log = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder()
_envelope_encoder = msgspec.json.Encoder()


class RouterProcessor:
    def __init__(self, app: App, carrier: Iterable[tuple[str, str | bytes]] | None = None) -> None:
        self.app = app
        self.telemetry = app.telemetry
        #: gRPC metadata of the ext_proc stream (Envoy's trace context).
        self._carrier = carrier
        self.ctx: RequestContext | None = None
        self.meta: RequestMeta | None = None
        self.kind = "generate"
        self._dialect = "openai-chat"
        self.codec: Codec | None = None
        self.request: CanonicalRequest | None = None
        # response side
        self._status = 0
        self._backend: Codec | None = None
        self._retry_after: str | None = None
        self._mode: str = "buffer"
        self._translator: StreamTranslator | None = None
        self._translate_seconds = 0.0
        self._translate_span: Any = None
        self._ended = False
        #: This request's answer filters (None: no stage reads this answer).
        self._chain: AnswerChain | None = None

    # -- what observers may read (the capture tap) ------------------------------

    @property
    def from_provider(self) -> bool:
        """The answer came from a provider (not from Envoy or the proxy itself)."""
        return self._backend is not None

    @property
    def answer_complete(self) -> bool:
        """A stage ended the client's streamed answer before the provider's stream ended."""
        return self._translator is not None and self._translator.ended is not None

    def provider_leg_is_ours(self) -> bool:
        """The body this role sends on is what the provider gets (not a per-attempt envelope)."""
        route = self.ctx.route if self.ctx is not None else None
        if route is None:
            return False
        return self.app.plans[route.cluster].encoding != "per-attempt"

    def route_notes(self) -> dict[str, Any]:
        """Where the request went: its cluster, and backend and schema when only one answers."""
        route = self.ctx.route if self.ctx is not None else None
        plan = self.app.plans[route.cluster] if route is not None else None
        if plan is None or len(plan.endpoints) != 1:
            return {"cluster": route.cluster if route else None}
        endpoint = plan.endpoints[0]
        schema = self.app.backends[endpoint.instance].codec.name
        return {"backend": endpoint.instance, "schema": schema, "cluster": plan.name}

    # -- request -------------------------------------------------------------

    def request_headers(
        self, headers: dict[str, str], end_of_stream: bool
    ) -> Action | Awaitable[Action]:
        method = headers.get(":method", "")
        raw_path = headers.get(":path", "/")
        path, _, query_string = raw_path.partition("?")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        self._dialect = dialect_for(path, headers, query)
        try:
            endpoint = match_endpoint(method, path, headers, query, self.app.protocols)
            self.codec = codec = get_codec(endpoint.protocol)
            self.kind = endpoint.kind
            key = client_key(headers) or query.get("key")
            public_query = {k: v for k, v in query.items() if k != "key"}
            clean_headers = {
                k: v
                for k, v in headers.items()
                if k not in CLIENT_CREDENTIAL_HEADERS and not k.startswith((":", INTERNAL_PREFIX))
            }
            self.meta = RequestMeta(
                method=method,
                path=path,
                query=public_query,
                headers=clean_headers,
                path_params=endpoint.params,
            )
            self.ctx = ctx = RequestContext(
                request_id=headers.get("x-request-id", ""),
                frontend="admin" if endpoint.kind == "admin" else endpoint.protocol,
                method=method,
                path=path,
                headers=clean_headers,
                client_key=key,
                route_header=headers.get(ROUTE_HEADER),
            )
            self.telemetry.begin(ctx, headers, self._carrier)
            if endpoint.kind == "admin":
                # Before the pipeline: admin keys are not client keys.
                return self._admin(endpoint.params, key, public_query)
            self.app.pipeline.request_headers(ctx, headers)
            if endpoint.kind == "list_models":
                return self._json_reply(200, codec.encode_model_list(self.app.models))
            if endpoint.kind == "get_model":
                model = self.app.model_info(unquote(endpoint.params.get("model", "")))
                return self._json_reply(200, codec.encode_model(model))
            if end_of_stream:
                raise InvalidRequest("the request has no body; send a JSON object")
        except ProxyError as exc:
            return self._error_reply(exc)
        remove = [
            h for h in headers if h in CLIENT_CREDENTIAL_HEADERS or h.startswith(INTERNAL_PREFIX)
        ]
        set_headers = {}
        if "key" in query:
            # A Gemini client's key in the URL must not reach logs or providers.
            clean = urlencode(public_query)
            set_headers[":path"] = path + (f"?{clean}" if clean else "")
        return Continue(set_headers=set_headers, remove_headers=remove)

    def request_body(self, body: bytes, end_of_stream: bool) -> Action | Awaitable[Action]:
        assert self.ctx is not None and self.codec is not None and self.meta is not None
        ctx, codec = self.ctx, self.codec
        try:
            limit = self.app.config.limits.max_request_bytes
            if len(body) > limit:
                raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
            telemetry = self.telemetry
            with telemetry.phase(ctx, "decode"):
                try:
                    data = _decoder.decode(body)
                except msgspec.DecodeError:
                    raise InvalidRequest(
                        "we could not parse the JSON body of your request; send valid JSON",
                        code="invalid_json",
                    ) from None
                if not isinstance(data, dict):
                    raise InvalidRequest(
                        "the request body must be a JSON object", code="invalid_json"
                    )
                if self.kind == "count_tokens":
                    counted = codec.decode_count_request(data, self.meta)
                    return self._json_reply(
                        200, codec.encode_count_response(estimate_tokens(counted))
                    )
                request = codec.decode_request(data, self.meta)
            ctx.requested_model = request.model
            self.request = request
            outcome = self.app.pipeline.request(ctx, request)
        except ProxyError as exc:
            return self._error_reply(exc)
        if inspect.isawaitable(outcome):
            return self._after_async_stages(outcome)
        return self._after_stages(outcome)

    async def _after_async_stages(self, pending: Awaitable[RequestOutcome]) -> Action:
        try:
            outcome = await pending
        except ProxyError as exc:
            return self._error_reply(exc)
        return self._after_stages(outcome)

    def _after_stages(self, outcome: RequestOutcome) -> Action:
        """The stages have spoken: answer, refuse, or send the request on."""
        ctx, request = self.ctx, self.request
        assert ctx is not None and request is not None
        if isinstance(outcome, Reject):
            return self._error_reply(outcome.error)
        if isinstance(outcome, Respond):
            return self._stage_answer(outcome)
        try:
            self._chain = self.app.pipeline.answer(ctx, request)
            with self.telemetry.phase(ctx, "encode"):
                set_headers, out = self._encode(ctx, request)
            self.telemetry.request(ctx, request)
        except ProxyError as exc:
            return self._error_reply(exc)
        return Continue(set_headers=set_headers, body=out, clear_route_cache=True)

    def _stage_answer(self, outcome: Respond) -> Reply:
        """A stage answered: encode its answer in the client's dialect; no backend is called."""
        codec, request, ctx = self.codec, self.request, self.ctx
        assert codec is not None and request is not None and ctx is not None
        response = outcome.response
        ctx.status = 200
        ctx.usage = response.usage
        ctx.finish_reason = response.finish_reason
        ctx.response_id = response.id or None
        ctx.response_model = response.model or None
        if request.stream:
            ctx.streamed = True
            encoder = codec.stream_encoder(self._response_context())
            body = encoder.encode(response_events(response)) + encoder.finish()
            headers = {"content-type": codec.stream_content_type, "cache-control": "no-cache"}
        else:
            body = codec.encode_response(response, self._response_context())
            headers = {"content-type": "application/json"}
        self._end()
        return Reply(
            status=200,
            body=body,
            headers=headers,
            details="llm_proxy_stage_answer",
            dynamic_metadata=self._metadata(),
        )

    def _encode(
        self, ctx: RequestContext, request: CanonicalRequest
    ) -> tuple[dict[str, str], bytes]:
        """The body for Envoy, and headers, as far as the chosen cluster allows."""
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
        else:
            envelope = Envelope(request=request, model=route.model, request_id=ctx.request_id)
            out = _envelope_encoder.encode(envelope)
            set_headers = {"content-type": "application/json", "content-length": str(len(out))}
        set_headers[CLUSTER_HEADER] = route.cluster
        return set_headers, out

    def _admin(
        self, params: Mapping[str, str], key: str | None, query: dict[str, str]
    ) -> Awaitable[Action] | Action:
        """The proxy's own endpoints (usage, diagnostics): see processing/admin.py."""
        answer = self.app.admin.handle(params, key, query)
        if isinstance(answer, tuple):
            return self._json_reply(answer[0], _envelope_encoder.encode(answer[1]))

        async def later() -> Action:
            try:
                status, body = await answer
            except ProxyError as exc:
                return self._error_reply(exc)
            return self._json_reply(status, _envelope_encoder.encode(body))

        return later()

    # -- response ------------------------------------------------------------

    def response_headers(
        self, headers: dict[str, str], end_of_stream: bool, host: dict[str, Any] | None
    ) -> Action:
        codec = self.codec or get_codec(self._dialect)
        self.codec = codec
        try:
            self._status = int(headers.get(":status", "0"))
        except ValueError:
            self._status = 502
        self._retry_after = headers.get("retry-after")
        host = host or {}
        schema = host.get("schema")
        # Envoy's router marks answers that came from an upstream; a local
        # reply (timeout, no healthy host, ...) lacks the mark even when a
        # host had been chosen.
        from_upstream = UPSTREAM_MARK in headers
        self._backend = get_codec(schema) if isinstance(schema, str) and from_upstream else None
        ctx = self.ctx
        if ctx is not None:
            ctx.status = codec.client_status(self._status)
            ctx.from_provider = self._backend is not None
            if ctx.route is not None:
                ctx.attempts = _attempts(headers.get(ATTEMPT_COUNT_HEADER))
                ctx.attempt_backends = self.app.attempt_log.pop(ctx.request_id)
            if self._backend is not None:
                ctx.backend = host.get("instance")
                if host.get("model"):
                    ctx.model = host["model"]
        remove = [
            h for h in headers if h in RESPONSE_HEADERS_TO_STRIP or h.startswith(INTERNAL_PREFIX)
        ]
        status_header = {}
        if (client_status := codec.client_status(self._status)) != self._status:
            status_header[":status"] = str(client_status)
        ctype = headers.get("content-type", "")
        streaming = self._status == 200 and ctype.startswith("text/event-stream")
        wants_stream = self.request is not None and self.request.stream
        if streaming and wants_stream and self._backend is not None and ctx is not None:
            request = self.request
            assert request is not None
            self._mode = "stream"
            ctx.streamed = True
            if ctx.span.recording:
                self._translate_span = ctx.span.child("translate").__enter__()
            self._translator = StreamTranslator(
                decoder=self._backend.stream_decoder(),
                encoder=codec.stream_encoder(self._response_context()),
                same_protocol=self._backend.name == codec.name,
                chain=self._chain,
                input_estimate=lambda: estimate_tokens(request),
                collect_text=ctx.span.records_content,
            )
            return Continue(
                set_headers={
                    "content-type": codec.stream_content_type,
                    "cache-control": "no-cache",
                },
                remove_headers=[*remove, "content-length", "content-encoding"],
                response_body_mode="full_duplex" if self._chain is not None else "streamed",
            )
        if (
            self._status == 200
            and not streaming
            and not wants_stream
            and self._backend is not None
            and self._backend.name == codec.name
            and self._chain is None
            and not self.app.needs_answer
        ):
            # Same protocol, a complete answer, and nothing wants to see it
            # (no stage, no usage accounting): the body passes through Envoy
            # unseen (one round trip fewer).
            self._end()
            return Continue(
                set_headers=status_header,
                remove_headers=remove,
                response_body_mode="none",
                dynamic_metadata=self._metadata(),
            )
        self._mode = "sse-to-json" if streaming else "buffer"
        if end_of_stream:
            # No body will follow: answer errors (and empty 200s) with a body now.
            body, extra = self._buffered(b"")
            return Continue(
                set_headers={**status_header, **extra, "content-length": str(len(body))},
                remove_headers=remove,
                body=body,
                replace=True,
                dynamic_metadata=self._metadata(),
            )
        return Continue(set_headers=status_header, remove_headers=remove)

    def response_body(self, body: bytes, end_of_stream: bool) -> Action:
        if self._mode == "stream":
            translator = self._translator
            assert translator is not None and self.ctx is not None
            duplex = self._chain is not None
            if translator.ended is not None:
                # The client's stream is already complete: nothing more goes out.
                self._end()
                return Continue(body=b"", stream_end=True if duplex else None)
            t0 = time.perf_counter()
            out = translator.feed(body)
            if end_of_stream:
                out += translator.finish()
            self._translate_seconds += time.perf_counter() - t0
            if out and self.ctx.first_output is None:
                self.ctx.first_output = time.monotonic()
            if translator.ended is not None:
                # A stage ended the answer: the client's stream ends with this
                # chunk, and Envoy, seeing the answer complete, resets the
                # upstream request (the provider is no longer read).
                self.ctx.finish_reason = translator.ended.reason
                self._end()
                return Continue(
                    body=out,
                    stream_end=True if duplex else None,
                    dynamic_metadata=self._metadata(),
                )
            if not end_of_stream:
                return Continue(body=out, stream_end=False if duplex else None)
            self._end()
            return Continue(
                body=out, stream_end=True if duplex else None, dynamic_metadata=self._metadata()
            )
        new, extra = self._buffered(body)
        metadata = self._metadata()
        if new is body:
            return Continue(dynamic_metadata=metadata)
        return Continue(
            set_headers={**extra, "content-length": str(len(new))},
            body=new,
            dynamic_metadata=metadata,
        )

    def _stream_done(self, ctx: RequestContext, translator: StreamTranslator) -> None:
        """What the stream reported (all of it, or as far as it got)."""
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

    def _metadata(self) -> dict[str, dict[str, Any]] | None:
        """Usage and route facts for Envoy's access log (dynamic metadata ``llm``)."""
        if not self.app.emit_metadata or self.ctx is None:
            return None
        return self.telemetry.dynamic_metadata(self.ctx)

    # -- helpers -------------------------------------------------------------

    def _buffered(self, body: bytes) -> tuple[bytes, dict[str, str]]:
        """A complete answer: translate it; return the body and headers to set."""
        try:
            return self._translate_answer(body)
        finally:
            self._end()

    def _translate_answer(self, body: bytes) -> tuple[bytes, dict[str, str]]:
        codec = self.codec
        assert codec is not None
        json_headers = {"content-type": "application/json"}
        ctx = self.ctx
        if self._status >= 400 or self._status < 200:
            error = self._error_from_upstream(body)
            if ctx is not None:
                ctx.error_message = error.message
                if self._backend is None:  # Envoy's own reply (no upstream answered)
                    ctx.error_code = error.code
            if error.retry_after and self._retry_after is None:
                # A hint only in the body (Gemini RetryInfo) becomes the header
                # every client dialect understands.
                json_headers["retry-after"] = error.retry_after
            return codec.encode_error(error), json_headers
        backend = self._backend
        if backend is None or self.request is None or ctx is None:
            error = CanonicalError(502, "the proxy received an answer it cannot attribute")
            if ctx is not None:
                ctx.error_code, ctx.error_message = "unattributed_answer", error.message
            return codec.encode_error(error), json_headers
        with self.telemetry.phase(ctx, "translate"):
            try:
                if self._mode == "sse-to-json":
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
            if self._chain is not None:
                final, failure = self._chain.whole(response)
                if failure is not None:
                    self.telemetry.response(ctx, response)  # the tokens were spent
                    ctx.status = failure.status
                    ctx.error_code, ctx.error_message = failure.code, failure.message
                    return codec.encode_error(failure), {
                        **json_headers,
                        ":status": str(codec.client_status(failure.status)),
                    }
            self.telemetry.response(ctx, final)  # what the client gets
            if self.request.stream:
                # The client asked for a stream but the provider answered at once.
                encoder = codec.stream_encoder(self._response_context())
                out = encoder.encode(response_events(final)) + encoder.finish()
                return out, {"content-type": codec.stream_content_type}
            if same and final is response:  # no stage changed it: the provider's bytes
                return body, {}
            return codec.encode_response(final, self._response_context()), json_headers

    def _response_context(self) -> ResponseContext:
        request, codec = self.request, self.codec
        assert request is not None and codec is not None
        estimate = estimate_tokens(request) if codec.reports_input_early else 0
        return ResponseContext(
            request_model=request.model,
            include_usage=request.include_usage,
            estimated_input_tokens=estimate,
        )

    def _error_from_upstream(self, body: bytes) -> CanonicalError:
        if self._backend is not None:
            error = self._backend.decode_error(self._status, body, self._retry_after)
            ctx = self.ctx
            if (
                ctx is not None
                and ctx.backend
                and is_quota_error(self._status, error.code, error.message)
            ):
                # Envoy's attempt log carries statuses, not bodies: only an answer
                # read here tells an exhausted quota from a rate limit.
                self.app.health.observe(
                    ctx.backend, self._status, code=error.code, message=error.message
                )
            return error
        return local_reply_error(self._status, body, self._retry_after)

    def internal_error(self, kind: str, exc: Exception) -> Action:
        """An unexpected failure (a bug) while handling ``kind``: tell the client.

        Before the answer started this is a 500 in the client's dialect; in the
        middle of a stream it is the dialect's error event, ending the stream.
        """
        error = CanonicalError(
            500,
            f"internal proxy error ({type(exc).__name__}); see the proxy log for request "
            f"{self.ctx.request_id if self.ctx else '?'}",
            type="server_error",
            code="internal_error",
        )
        if self.ctx is not None:
            self.ctx.error_code, self.ctx.error_message = "internal_error", error.message
        if kind == "response_body" and self._mode == "stream" and self._translator is not None:
            # Fail closed: the stream ends here with the dialect's error event
            # (with answer stages, the proxy ends the client's stream itself and
            # Envoy resets the upstream request: the provider is no longer read).
            body = self._translator.error(error)
            return Continue(body=body, stream_end=True if self._chain is not None else None)
        if self.ctx is not None:
            self.ctx.status = 500
        codec = self.codec or get_codec(self._dialect)
        self._end()
        return Reply(
            status=500,
            body=codec.encode_error(error),
            headers={"content-type": "application/json"},
            details="llm_proxy_internal_error",
            dynamic_metadata=self._metadata(),
        )

    def _error_reply(self, exc: ProxyError) -> Reply:
        codec = self.codec or get_codec(self._dialect)
        error = CanonicalError(
            status=exc.status,
            message=exc.message,
            type=exc.error_type,
            code=exc.code,
            param=exc.param,
        )
        if self.ctx is not None:
            self.ctx.status = exc.status
            self.ctx.error_code, self.ctx.error_message = exc.code, exc.message
        self._end()
        return Reply(
            status=exc.status,
            body=codec.encode_error(error),
            headers={"content-type": "application/json", **exc.headers},
            details=f"llm_proxy_{exc.code}",
            dynamic_metadata=self._metadata(),
        )

    def _json_reply(self, status: int, body: bytes) -> Reply:
        if self.ctx is not None:
            self.ctx.status = status
        self._end()
        return Reply(
            status=status,
            body=body,
            headers={"content-type": "application/json"},
            dynamic_metadata=self._metadata(),
        )

    def _end(self) -> None:
        if not self._ended and self.ctx is not None:
            self._ended = True
            try:
                if self._translator is not None:
                    self._stream_done(self.ctx, self._translator)
                self.app.pipeline.end(self.ctx)
            finally:
                self.telemetry.finish(self.ctx)

    def close(self) -> None:
        """The gRPC stream ended (normally or not)."""
        self._end()


def _attempts(value: str | None) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1
