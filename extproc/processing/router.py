"""The ROUTER role: one instance per client request, in the listener's filter chain.

Request side: classify the endpoint, authenticate, decode the client's
protocol, run the pipeline (which routes), and hand Envoy the cluster to use
with a body encoded as far as the cluster allows (see the encodings in
:mod:`extproc.routing.topology`). Response side: translate the winning
attempt's answer (or Envoy's local reply) back into the client's dialect,
chunk by chunk for streams.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode

import msgspec

from extproc.canonical import CanonicalError, CanonicalRequest, Envelope
from extproc.canonical.aggregate import aggregate_events, response_events
from extproc.canonical.tokens import estimate_tokens
from extproc.codecs import Codec, get_codec
from extproc.codecs.base import RequestMeta, ResponseContext
from extproc.errors import InvalidRequest, PayloadTooLarge, ProxyError
from extproc.pipeline import RequestContext
from extproc.processing.actions import Action, Continue, Reply
from extproc.processing.frontends import dialect_for, match_endpoint
from extproc.processing.headers import (
    CLIENT_CREDENTIAL_HEADERS,
    CLUSTER_HEADER,
    INTERNAL_PREFIX,
    RESPONSE_HEADERS_TO_STRIP,
    UPSTREAM_MARK,
    client_key,
)
from extproc.processing.translate import StreamTranslator

if TYPE_CHECKING:
    from extproc.processing.app import App

log = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder()
_envelope_encoder = msgspec.json.Encoder()


class RouterProcessor:
    def __init__(self, app: App) -> None:
        self.app = app
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
        self._ended = False

    # -- request -------------------------------------------------------------

    def request_headers(self, headers: dict[str, str], end_of_stream: bool) -> Action:
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
                frontend=endpoint.protocol,
                method=method,
                path=path,
                headers=clean_headers,
                client_key=key,
            )
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

    def request_body(self, body: bytes, end_of_stream: bool) -> Action:
        assert self.ctx is not None and self.codec is not None and self.meta is not None
        ctx, codec = self.ctx, self.codec
        try:
            limit = self.app.config.limits.max_request_bytes
            if len(body) > limit:
                raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
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
                return self._json_reply(200, codec.encode_count_response(estimate_tokens(counted)))
            request = codec.decode_request(data, self.meta)
            self.app.pipeline.request(ctx, request)
            self.request = request
            set_headers, out = self._encode(ctx, request)
        except ProxyError as exc:
            return self._error_reply(exc)
        return Continue(set_headers=set_headers, body=out, clear_route_cache=True)

    def _encode(
        self, ctx: RequestContext, request: CanonicalRequest
    ) -> tuple[dict[str, str], bytes]:
        """The body for Envoy, and headers, as far as the chosen cluster allows."""
        route = ctx.route
        assert route is not None
        plan = self.app.plans[route.cluster]
        endpoint = plan.endpoints[0]
        model = endpoint.model or route.model or request.model
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
        schema = (host or {}).get("schema")
        # Envoy's router marks answers that came from an upstream; a local
        # reply (timeout, no healthy host, ...) lacks the mark even when a
        # host had been chosen.
        from_upstream = UPSTREAM_MARK in headers
        self._backend = get_codec(schema) if isinstance(schema, str) and from_upstream else None
        remove = [
            h for h in headers if h in RESPONSE_HEADERS_TO_STRIP or h.startswith(INTERNAL_PREFIX)
        ]
        status_header = {}
        if (client_status := codec.client_status(self._status)) != self._status:
            status_header[":status"] = str(client_status)
        ctype = headers.get("content-type", "")
        streaming = self._status == 200 and ctype.startswith("text/event-stream")
        wants_stream = self.request is not None and self.request.stream
        if streaming and wants_stream and self._backend is not None and self.ctx is not None:
            request = self.request
            assert request is not None
            self._mode = "stream"
            self._translator = StreamTranslator(
                decoder=self._backend.stream_decoder(),
                encoder=codec.stream_encoder(self._response_context()),
                same_protocol=self._backend.name == codec.name,
                pipeline=self.app.pipeline,
                ctx=self.ctx,
                input_estimate=lambda: estimate_tokens(request),
            )
            return Continue(
                set_headers={
                    "content-type": codec.stream_content_type,
                    "cache-control": "no-cache",
                },
                remove_headers=[*remove, "content-length", "content-encoding"],
                response_body_mode="streamed",
            )
        if (
            self._status == 200
            and not streaming
            and not wants_stream
            and self._backend is not None
            and self._backend.name == codec.name
            and not self.app.pipeline.inspects_response
        ):
            # Same protocol, a complete answer, and no stage wants to see it:
            # the body passes through Envoy unseen (one round trip fewer).
            self._end()
            return Continue(
                set_headers=status_header, remove_headers=remove, response_body_mode="none"
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
            )
        return Continue(set_headers=status_header, remove_headers=remove)

    def response_body(self, body: bytes, end_of_stream: bool) -> Action:
        if self._mode == "stream":
            assert self._translator is not None
            out = self._translator.feed(body)
            if end_of_stream:
                out += self._translator.finish()
                self._end()
            return Continue(body=out)
        new, extra = self._buffered(body)
        if new is body:
            return Continue()
        return Continue(set_headers={**extra, "content-length": str(len(new))}, body=new)

    # -- helpers -------------------------------------------------------------

    def _buffered(self, body: bytes) -> tuple[bytes, dict[str, str]]:
        """A complete answer: translate it; return the body and headers to set."""
        self._end()
        codec = self.codec
        assert codec is not None
        json_headers = {"content-type": "application/json"}
        if self._status >= 400 or self._status < 200:
            error = self._error_from_upstream(body)
            if error.retry_after and self._retry_after is None:
                # A hint only in the body (Gemini RetryInfo) becomes the header
                # every client dialect understands.
                json_headers["retry-after"] = error.retry_after
            return codec.encode_error(error), json_headers
        backend = self._backend
        if backend is None or self.request is None or self.ctx is None:
            error = CanonicalError(502, "the proxy received an answer it cannot attribute")
            return codec.encode_error(error), json_headers
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
            log.warning("request %s: undecodable provider answer: %s", self.ctx.request_id, exc)
            error = CanonicalError(502, f"the provider sent an invalid answer: {exc}")
            return codec.encode_error(error), json_headers
        final = self.app.pipeline.response(self.ctx, response)
        if self.request.stream:
            # The client asked for a stream but the provider answered at once.
            encoder = codec.stream_encoder(self._response_context())
            out = encoder.encode(response_events(final)) + encoder.finish()
            return out, {"content-type": codec.stream_content_type}
        if same and final is response:
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
            return self._backend.decode_error(self._status, body, self._retry_after)
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
        if kind == "response_body" and self._mode == "stream" and self._translator is not None:
            return Continue(body=self._translator.error(error))
        codec = self.codec or get_codec(self._dialect)
        self._end()
        return Reply(
            status=500,
            body=codec.encode_error(error),
            headers={"content-type": "application/json"},
            details="llm_proxy_internal_error",
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
        self._end()
        return Reply(
            status=exc.status,
            body=codec.encode_error(error),
            headers={"content-type": "application/json", **exc.headers},
            details=f"llm_proxy_{exc.code}",
        )

    def _json_reply(self, status: int, body: bytes) -> Reply:
        self._end()
        return Reply(status=status, body=body, headers={"content-type": "application/json"})

    def _end(self) -> None:
        if not self._ended and self.ctx is not None:
            self._ended = True
            self.app.pipeline.end(self.ctx)

    def close(self) -> None:
        """The gRPC stream ended (normally or not)."""
        self._end()


_LOCAL_REPLIES = {
    "no healthy upstream": (
        "no backend is available for this model: every target is failing or unhealthy"
    ),
    "upstream request timeout": "the backend did not answer in time",
    "stream timeout": "the backend stopped sending (idle timeout)",
}


def local_reply_error(status: int, body: bytes, retry_after: str | None) -> CanonicalError:
    """An Envoy local reply (no upstream host answered) as a canonical error."""
    text = body.decode("utf-8", "replace").strip()
    message = _LOCAL_REPLIES.get(text)
    if message is None:
        if text.startswith("upstream connect error"):
            message = f"the backend could not be reached ({text})"
        elif status == 413:
            message = "the request body is larger than the proxy accepts"
        else:
            message = text or f"the proxy answered HTTP {status}"
    kinds = {
        400: ("invalid_request_error", "invalid_request"),
        404: ("invalid_request_error", "not_found"),
        413: ("invalid_request_error", "request_too_large"),
        429: ("rate_limit_error", "rate_limit_exceeded"),
        503: ("service_unavailable", "no_backend_available"),
        504: ("timeout_error", "upstream_timeout"),
    }
    kind, code = kinds.get(status, ("api_error", "proxy_error"))
    return CanonicalError(
        status=status, message=message, type=kind, code=code, retry_after=retry_after
    )
