"""The ROUTER role: one instance per client request, in the listener's filter chain.

It adapts ext_proc messages to the request's :class:`~extproc.processing.exchange.Exchange`
(decode → stages → route → encode; answer → stages → the client's dialect):
it classifies the endpoint, builds the request context, answers the proxy's
own endpoints and model lists, and turns the exchange's results into header
mutations, body replacements, body modes (STREAMED, FULL_DUPLEX_STREAMED when
answer stages may end a stream, NONE for an unseen pass-through) and replies.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode

import msgspec

from extproc.canonical import CanonicalError, CanonicalRequest
from extproc.codecs import Codec, get_codec
from extproc.codecs.base import RequestMeta
from extproc.errors import InvalidRequest, ProxyError
from extproc.internalapi import (
    INTERNAL_PREFIX,
    ROUTE_HEADER,
    SESSION_ECHO_HEADER,
    TOKENS_SAVED_HEADER,
)
from extproc.pipeline import Reject, RequestContext, RequestOutcome, Respond
from extproc.processing.actions import Action, Continue, Reply
from extproc.processing.exchange import Exchange
from extproc.processing.frontends import dialect_for, match_endpoint
from extproc.processing.headers import (
    CLIENT_CREDENTIAL_HEADERS,
    RESPONSE_HEADERS_TO_STRIP,
    client_key,
)
from extproc.processing.readiness import readiness

if TYPE_CHECKING:
    from extproc.processing.app import App

__all__ = ["RouterProcessor"]

log = logging.getLogger(__name__)

_json_encoder = msgspec.json.Encoder()


class RouterProcessor:
    def __init__(self, app: App, carrier: Iterable[tuple[str, str | bytes]] | None = None) -> None:
        self.app = app
        self.telemetry = app.telemetry
        #: gRPC metadata of the ext_proc stream (Envoy's trace context).
        self._carrier = carrier
        self._dialect = "openai-chat"
        #: This request's exchange, once its endpoint and context are known.
        self.exchange: Exchange | None = None
        #: How the answer's body is handled: buffer, sse-to-json, stream.
        self._mode = "buffer"
        self._ended = False

    # -- what observers may read (the capture tap, tests) ------------------------

    @property
    def ctx(self) -> RequestContext | None:
        return self.exchange.ctx if self.exchange is not None else None

    @property
    def request(self) -> CanonicalRequest | None:
        return self.exchange.request if self.exchange is not None else None

    @property
    def from_provider(self) -> bool:
        """The answer came from a provider (not from Envoy or the proxy itself)."""
        return self.exchange is not None and self.exchange.backend is not None

    @property
    def answer_complete(self) -> bool:
        """A stage ended the client's streamed answer before the provider's stream ended."""
        translator = self.exchange.translator if self.exchange is not None else None
        return translator is not None and translator.ended is not None

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

    @property
    def _codec(self) -> Codec:
        """The client's dialect (known from the path even before an exchange exists)."""
        return self.exchange.codec if self.exchange is not None else get_codec(self._dialect)

    # -- request -------------------------------------------------------------

    def request_headers(
        self, headers: dict[str, str], end_of_stream: bool
    ) -> Action | Awaitable[Action]:
        method = headers.get(":method", "")
        raw_path = headers.get(":path", "/")
        path, _, query_string = raw_path.partition("?")
        query = dict(parse_qsl(query_string, keep_blank_values=True)) if query_string else {}
        self._dialect = dialect_for(path, headers, query)
        try:
            endpoint = match_endpoint(method, path, headers, query, self.app.protocols)
            codec = get_codec(endpoint.protocol)
            key = client_key(headers) or query.get("key")
            public_query = {k: v for k, v in query.items() if k != "key"} if query else query
            clean_headers = {
                k: v
                for k, v in headers.items()
                if k not in CLIENT_CREDENTIAL_HEADERS and not k.startswith((":", INTERNAL_PREFIX))
            }
            meta = RequestMeta(
                method=method,
                path=path,
                query=public_query,
                headers=clean_headers,
                path_params=endpoint.params,
            )
            ctx = RequestContext(
                request_id=headers.get("x-request-id", ""),
                frontend="admin" if endpoint.kind in ("admin", "ready") else endpoint.protocol,
                method=method,
                path=path,
                headers=clean_headers,
                client_key=key,
                route_header=headers.get(ROUTE_HEADER),
            )
            self.exchange = Exchange(self.app, ctx, codec, meta, endpoint.kind)
            self.telemetry.begin(ctx, headers, self._carrier)
            if endpoint.kind == "admin":
                # Before the pipeline: admin keys are not client keys.
                return self._admin(endpoint.params, key, public_query)
            if endpoint.kind == "ready":
                status, report = readiness(self.app)
                return self._json_reply(status, _json_encoder.encode(report))
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
        # Credentials, internal headers, and (with sessions) the client's session
        # ids: providers see B-leg ids only.
        dropped = self.app.client_only_headers
        remove = [
            h
            for h in headers
            if h in CLIENT_CREDENTIAL_HEADERS or h.startswith(INTERNAL_PREFIX) or h in dropped
        ]
        set_headers = {}
        if "key" in query:
            # A Gemini client's key in the URL must not reach logs or providers.
            clean = urlencode(public_query)
            set_headers[":path"] = path + (f"?{clean}" if clean else "")
        return Continue(set_headers=set_headers, remove_headers=remove)

    def request_body(self, body: bytes, end_of_stream: bool) -> Action | Awaitable[Action]:
        exchange = self.exchange
        assert exchange is not None
        try:
            request = exchange.decode(body)
            if isinstance(request, bytes):  # a token count: answered at once
                return self._json_reply(200, request)
            outcome = exchange.run_stages(request)
        except ProxyError as exc:
            return self._error_reply(exc)
        if outcome is not None and inspect.isawaitable(outcome):
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
        exchange = self.exchange
        assert exchange is not None
        if isinstance(outcome, Reject):
            return self._error_reply(outcome.error)
        if isinstance(outcome, Respond):
            answer, headers = exchange.stage_answer(outcome.response)
            self._end()
            return Reply(
                status=200,
                body=answer,
                headers=self._echo(headers),
                details="llm_proxy_stage_answer",
                dynamic_metadata=self._metadata(),
            )
        try:
            set_headers, out = exchange.forward()
        except ProxyError as exc:
            return self._error_reply(exc)
        return Continue(set_headers=set_headers, body=out, clear_route_cache=True)

    def _admin(
        self, params: Mapping[str, str], key: str | None, query: dict[str, str]
    ) -> Awaitable[Action] | Action:
        """The proxy's own endpoints (usage, diagnostics): see processing/admin.py."""
        answer = self.app.admin.handle(params, key, query)
        if isinstance(answer, tuple):
            return self._json_reply(answer[0], _json_encoder.encode(answer[1]))

        async def later() -> Action:
            try:
                status, body = await answer
            except ProxyError as exc:
                return self._error_reply(exc)
            return self._json_reply(status, _json_encoder.encode(body))

        return later()

    # -- response ------------------------------------------------------------

    def response_headers(
        self, headers: dict[str, str], end_of_stream: bool, host: dict[str, Any] | None
    ) -> Action:
        exchange = self.exchange
        if exchange is None:  # no request reached the exchange: nothing to translate
            return Continue()
        codec = exchange.codec
        try:
            status = int(headers.get(":status", "0"))
        except ValueError:
            status = 502
        exchange.answer_from(status, headers, host or {})
        remove = [
            h for h in headers if h in RESPONSE_HEADERS_TO_STRIP or h.startswith(INTERNAL_PREFIX)
        ]
        status_header = self._echo({})
        if (client_status := codec.client_status(status)) != status:
            status_header[":status"] = str(client_status)
        ctype = headers.get("content-type", "")
        streaming = status == 200 and ctype.startswith("text/event-stream")
        wants_stream = exchange.request is not None and exchange.request.stream
        if streaming and wants_stream and exchange.backend is not None:
            self._mode = "stream"
            exchange.open_stream()
            return Continue(
                set_headers={
                    **status_header,
                    "content-type": codec.stream_content_type,
                    "cache-control": "no-cache",
                },
                remove_headers=[*remove, "content-length", "content-encoding"],
                # With answer stages the proxy may end the stream itself.
                response_body_mode="full_duplex" if exchange.chain is not None else "streamed",
            )
        if (
            status == 200
            and not streaming
            and not wants_stream
            and exchange.backend is not None
            and exchange.backend.name == codec.name
            and exchange.chain is None
            and not self.app.needs_answer
            and not (self.app.sessions is not None and codec.name == "openai-responses")
        ):
            # Same protocol, a complete answer, and nothing wants to see it
            # (no stage, no usage accounting; with sessions, a Responses answer's
            # id is read: it links the session for previous_response_id): the body
            # passes through Envoy unseen (one round trip fewer).
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
            body, extra = self._whole(b"")
            return Continue(
                set_headers={**status_header, **extra, "content-length": str(len(body))},
                remove_headers=remove,
                body=body,
                replace=True,
                dynamic_metadata=self._metadata(),
            )
        return Continue(set_headers=status_header, remove_headers=remove)

    def response_body(self, body: bytes, end_of_stream: bool) -> Action:
        exchange = self.exchange
        assert exchange is not None
        if self._mode == "stream":
            translator = exchange.translator
            assert translator is not None
            duplex = exchange.chain is not None
            if translator.ended is not None:
                # The client's stream is already complete: nothing more goes out.
                self._end()
                return Continue(body=b"", stream_end=True if duplex else None)
            out = exchange.stream_chunk(body, end_of_stream)
            if translator.ended is not None or end_of_stream:
                # The end of the client's stream: the provider's, or one a stage
                # made (then Envoy, seeing the answer complete, resets the upstream
                # request: the provider is no longer read).
                self._end()
                return Continue(
                    body=out,
                    stream_end=True if duplex else None,
                    dynamic_metadata=self._metadata(),
                )
            return Continue(body=out, stream_end=False if duplex else None)
        new, extra = self._whole(body)
        metadata = self._metadata()
        if new is body:
            return Continue(dynamic_metadata=metadata)
        return Continue(
            set_headers={**extra, "content-length": str(len(new))},
            body=new,
            dynamic_metadata=metadata,
        )

    def _whole(self, body: bytes) -> tuple[bytes, dict[str, str]]:
        """A complete answer: translated by the exchange; the body and headers to set."""
        exchange = self.exchange
        assert exchange is not None
        try:
            return exchange.whole(body, from_sse=self._mode == "sse-to-json")
        finally:
            self._end()

    def _metadata(self) -> dict[str, dict[str, Any]] | None:
        """Usage and route facts for Envoy's access log (dynamic metadata ``llm``)."""
        if not self.app.emit_metadata or self.ctx is None:
            return None
        return self.telemetry.dynamic_metadata(self.ctx)

    def _echo(self, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` with the session's A-leg id for the client, when there is one."""
        ctx = self.ctx
        if ctx is not None:
            # Known from the headers already when the body never got that far.
            if ctx.a_leg:
                headers[SESSION_ECHO_HEADER] = ctx.a_leg
            if ctx.tokens_saved:
                headers[TOKENS_SAVED_HEADER] = str(ctx.tokens_saved)
        return headers

    # -- errors and replies ------------------------------------------------------

    def internal_error(self, kind: str, exc: Exception) -> Action:
        """An unexpected failure (a bug) while handling ``kind``: tell the client.

        Before the answer started this is a 500 in the client's dialect; in the
        middle of a stream it is the dialect's error event, ending the stream.
        """
        ctx = self.ctx
        error = CanonicalError(
            500,
            f"internal proxy error ({type(exc).__name__}); see the proxy log for request "
            f"{ctx.request_id if ctx else '?'}",
            type="server_error",
            code="internal_error",
        )
        if ctx is not None:
            ctx.error_code, ctx.error_message = "internal_error", error.message
        exchange = self.exchange
        if (
            kind == "response_body"
            and self._mode == "stream"
            and exchange is not None
            and exchange.translator is not None
        ):
            # Fail closed: the stream ends here with the dialect's error event
            # (with answer stages, the proxy ends the client's stream itself and
            # Envoy resets the upstream request: the provider is no longer read).
            body = exchange.translator.error(error)
            return Continue(body=body, stream_end=True if exchange.chain is not None else None)
        if ctx is not None:
            ctx.status = 500
        codec = self._codec
        self._end()
        return Reply(
            status=500,
            body=codec.encode_error(error),
            headers=self._echo({"content-type": "application/json"}),
            details="llm_proxy_internal_error",
            dynamic_metadata=self._metadata(),
        )

    def _error_reply(self, exc: ProxyError) -> Reply:
        error = CanonicalError(
            status=exc.status,
            message=exc.message,
            type=exc.error_type,
            code=exc.code,
            param=exc.param,
        )
        ctx = self.ctx
        if ctx is not None:
            ctx.status = exc.status
            ctx.error_code, ctx.error_message = exc.code, exc.message
        codec = self._codec
        self._end()
        return Reply(
            status=exc.status,
            body=codec.encode_error(error),
            headers=self._echo({"content-type": "application/json", **exc.headers}),
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
        if not self._ended and self.exchange is not None:
            self._ended = True
            self.exchange.end()

    def close(self) -> None:
        """The gRPC stream ended (normally or not)."""
        self._end()
