"""Wire capture from the roles' own messages (the default capture mode).

The ROUTER role already receives the client's request exactly as it arrived
(headers, then the whole body), every byte of the winning provider answer
(headers, then the body, chunk by chunk for streams), and it decides every
byte the client gets back; the UPSTREAM role produces what each attempt of a
per-attempt cluster sends. Recording those messages costs a few microseconds
per message in this process, where separate observer filters would cost
Envoy and the interpreter an ext_proc stream each per request (measured in
bench/: most of a millisecond). :class:`TappedRouter` and
:class:`TappedUpstream` wrap the two processors (composition: they forward
each message and record what went in and what came out, reading only the
processor's public facts) and emit the same records as the observer roles
(:mod:`extproc.processing.observer`), so files, reader and CLI are the same.

What this mode sees, and what it does not (docs/capture.md):

* bodies are byte-exact on both legs (client request, client answer, provider
  request as encoded, provider answer as received);
* headers are the header maps the roles see and set: Envoy's later additions
  on the way out (``x-envoy-*``, ``x-forwarded-*`` to providers, ``date`` and
  ``server`` to clients, the rewritten ``:authority``) are not in them;
* attempts that failed and were retried left no answer in the ROUTER role:
  their requests are recorded (per-attempt clusters), their answers are not.
  ``capture.observers: true`` records everything from Envoy's side instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

from extproc.internalapi import INTERNAL_PREFIX
from extproc.observe.capture import RECORD_FIELDS
from extproc.pipeline.context import key_id
from extproc.processing.actions import Action, Continue, Reply
from extproc.processing.headers import (
    ATTEMPT_COUNT_HEADER,
    client_key,
    query_key,
)
from extproc.processing.observer import SESSION_HEADERS, AttemptCounter, CaptureSink
from extproc.processing.router import RouterProcessor
from extproc.processing.upstream import UpstreamProcessor

__all__ = ["ExchangeTap", "TappedRouter", "TappedUpstream", "apply_mutation"]

Headers = Mapping[str, str]


def apply_mutation(
    headers: Headers, set_headers: Mapping[str, str], remove: Iterable[str]
) -> dict[str, str]:
    """``headers`` after an ext_proc header mutation."""
    out = dict(headers)
    for name in remove:
        out.pop(name, None)
    out.update(set_headers)
    return out


#: Records are handed to the writer together: with each chunk of the answer
#: sent to the client (and its end), or when this many are waiting.
FLUSH_RECORDS = 32


class ExchangeTap:
    """Emits the capture records of one request to the sink, in bursts.

    A few hand-overs per exchange (one per answer chunk) instead of one per
    record: each hand-over can wake the writer thread, which takes the
    interpreter from the request path (bench/).
    """

    __slots__ = ("_key_id", "_pending", "_request_id", "_session", "_sink")

    def __init__(self, sink: CaptureSink, headers: Headers) -> None:
        self._sink = sink
        self._pending: list[tuple[Any, ...]] = []
        self._request_id = headers.get("x-request-id", "")
        self._session = next((headers[h] for h in SESSION_HEADERS if h in headers), None)
        key = client_key(headers) or query_key(headers.get(":path", ""))
        self._key_id = key_id(key) if key else None

    def headers(
        self,
        leg: str,
        headers: Headers,
        *,
        attempt: int = 0,
        eos: bool = False,
        annotations: dict[str, Any] | None = None,
    ) -> None:
        # Values stay text here; the writer thread masks and encodes them.
        self._emit(leg, "headers", attempt, list(headers.items()), None, eos, annotations)

    def session(self, session_id: str | None) -> None:
        """The exchange's session id (the A-leg, once the sessions stage ran) for later records."""
        if session_id:
            self._session = session_id

    def body(self, leg: str, data: bytes, eos: bool, *, attempt: int = 0) -> None:
        self._emit(leg, "body", attempt, None, data, eos, None)

    def end(self, leg: str, *, attempt: int = 0) -> None:
        self._emit(leg, "end", attempt, None, None, False, None)

    def flush(self) -> None:
        """Hand every waiting record to the sink (in order), after the current message.

        Called while a gRPC answer to Envoy is being prepared; the hand-over
        (pickling, in the default mode) waits until that answer has gone out, so
        it overlaps Envoy's work instead of adding to the request's latency.
        Callbacks run in the order they were scheduled: records stay in order.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the event loop (tests, tools): now
            self._hand_over(pending)
        else:
            loop.call_soon(self._hand_over, pending)

    def _hand_over(self, pending: list[tuple[Any, ...]]) -> None:
        batch = getattr(self._sink, "submit_batch", None)
        if batch is not None:
            batch(pending)  # one hand-over for all of them
            return
        event = self._sink.event
        for record in pending:
            event(**dict(zip(RECORD_FIELDS, record, strict=True)))

    def _emit(
        self,
        leg: str,
        kind: str,
        attempt: int,
        headers: list[tuple[str, str]] | None,
        body: bytes | None,
        eos: bool,
        notes: dict[str, Any] | None,
    ) -> None:
        pending = self._pending
        pending.append(
            (
                self._request_id,
                leg,
                attempt,
                kind,
                time.monotonic_ns(),
                time.time_ns(),
                headers,
                body,
                eos,
                self._session,
                self._key_id,
                notes,
            )
        )
        if leg == "client_response" and (kind == "end" or (kind == "body" and not eos)):
            # The end, and each chunk of a stream sent on: a stalled stream is
            # on disk as far as it got.
            self.flush()
        elif len(pending) >= FLUSH_RECORDS:
            self.flush()


class TappedRouter:
    """The ROUTER role, recording both legs as it goes (it wraps the processor)."""

    def __init__(self, inner: RouterProcessor, sink: CaptureSink) -> None:
        self.inner = inner
        self._sink = sink
        self._tap: ExchangeTap | None = None
        self._forwarded: dict[str, str] = {}
        self._provider_request: tuple[dict[str, str], bytes] | None = None
        self._attempt = 1
        self._from_provider = False
        self._client_done = False
        self._provider_done = False

    # -- request ---------------------------------------------------------------

    def request_headers(
        self, headers: dict[str, str], end_of_stream: bool
    ) -> Action | Awaitable[Action]:
        self._tap = tap = ExchangeTap(self._sink, headers)
        tap.headers("client_request", headers, eos=end_of_stream)
        action = self.inner.request_headers(headers, end_of_stream)
        if isinstance(action, Continue):
            self._forwarded = apply_mutation(headers, action.set_headers, action.remove_headers)
            return action
        if isinstance(action, Reply):
            self._reply(action)
            return action
        return self._later(action)

    async def _later(self, pending: Awaitable[Action]) -> Action:
        action = await pending
        if isinstance(action, Reply):
            self._reply(action)
        return action

    def request_body(self, body: bytes, end_of_stream: bool) -> Action | Awaitable[Action]:
        tap = self._tap
        assert tap is not None
        tap.body("client_request", body, True)
        action = self.inner.request_body(body, end_of_stream)
        if isinstance(action, Continue | Reply):
            return self._sent_on(action, body)
        return self._sent_on_later(action, body)

    async def _sent_on_later(self, pending: Awaitable[Action], body: bytes) -> Action:
        return self._sent_on(await pending, body)

    def _sent_on(self, action: Action, body: bytes) -> Action:
        tap = self._tap
        assert tap is not None
        ctx = self.inner.ctx
        if ctx is not None:
            tap.session(ctx.session_id)
        if isinstance(action, Reply):
            self._reply(action)
        elif isinstance(action, Continue) and self.inner.provider_leg_is_ours():
            headers = apply_mutation(self._forwarded, action.set_headers, action.remove_headers)
            headers = {k: v for k, v in headers.items() if not k.startswith(INTERNAL_PREFIX)}
            self._provider_request = (headers, action.body if action.body is not None else body)
            notes = self.inner.route_notes()
            tap.headers("provider_request", headers, attempt=1, annotations=notes)
            tap.body("provider_request", self._provider_request[1], True, attempt=1)
        return action

    # -- response --------------------------------------------------------------

    def response_headers(
        self, headers: dict[str, str], end_of_stream: bool, host: dict[str, Any] | None
    ) -> Action:
        tap = self._tap
        action = self.inner.response_headers(headers, end_of_stream, host)
        if tap is None:
            return action
        self._from_provider = self.inner.from_provider
        if self._from_provider:
            self._attempt = _attempt(headers.get(ATTEMPT_COUNT_HEADER))
            if self._attempt > 1 and self._provider_request is not None:
                # Envoy replayed the same request: it is this attempt's too.
                request_headers, body = self._provider_request
                tap.headers("provider_request", request_headers, attempt=self._attempt)
                tap.body("provider_request", body, True, attempt=self._attempt)
            notes = {"backend": (host or {}).get("instance"), "schema": (host or {}).get("schema")}
            tap.headers(
                "provider_response",
                headers,
                attempt=self._attempt,
                eos=end_of_stream,
                annotations=notes,
            )
            if end_of_stream:
                self._end_provider()
        if isinstance(action, Reply):
            self._reply(action)
            return action
        client = apply_mutation(headers, action.set_headers, action.remove_headers)
        tap.headers("client_response", client, eos=end_of_stream and action.body is None)
        if action.body is not None:
            tap.body("client_response", action.body, True)
        if end_of_stream or action.body is not None or action.response_body_mode == "none":
            # Nothing more will pass through this role ("none": the body goes
            # unseen; capture keeps answers visible, so only for empty ones).
            self._end_client()
        return action

    def response_body(self, body: bytes, end_of_stream: bool) -> Action:
        tap = self._tap
        if tap is not None and self._from_provider and not self._provider_done:
            tap.body("provider_response", body, end_of_stream, attempt=self._attempt)
            if end_of_stream:
                self._end_provider()
        action = self.inner.response_body(body, end_of_stream)
        if tap is not None and isinstance(action, Continue) and not self._client_done:
            out = action.body if action.body is not None else body
            tap.body("client_response", out, end_of_stream)
            if end_of_stream or self.inner.answer_complete:
                # Complete for the client (a stage may end it early, and then
                # the rest of the provider's answer is not read).
                self._end_client()
                self._end_provider()
        elif isinstance(action, Reply):
            self._reply(action)
        return action

    def internal_error(self, kind: str, exc: Exception) -> Action:
        action = self.inner.internal_error(kind, exc)
        if isinstance(action, Reply):
            self._reply(action)
        elif self._tap is not None and isinstance(action, Continue) and action.body:
            self._tap.body("client_response", action.body, True)
            self._end_client()
        return action

    def close(self) -> None:
        self.inner.close()
        if self._tap is not None:
            if self._from_provider:
                self._end_provider()
            self._end_client()
            self._tap.flush()

    # -- helpers -----------------------------------------------------------------

    def _reply(self, reply: Reply) -> None:
        """The proxy answered the client itself."""
        tap = self._tap
        if tap is None or self._client_done:
            return
        headers = {":status": str(reply.status), **reply.headers}
        tap.headers("client_response", headers, annotations={"proxy_reply": reply.details})
        tap.body("client_response", reply.body, True)
        self._end_client()

    def _end_client(self) -> None:
        if not self._client_done and self._tap is not None:
            self._client_done = True
            self._tap.end("client_response")

    def _end_provider(self) -> None:
        if not self._provider_done and self._tap is not None:
            self._provider_done = True
            self._tap.end("provider_response", attempt=self._attempt)


def _attempt(value: str | None) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1


class TappedUpstream:
    """The UPSTREAM role of a per-attempt cluster, recording what each attempt sends."""

    def __init__(
        self, inner: UpstreamProcessor, sink: CaptureSink, attempts: AttemptCounter
    ) -> None:
        self.inner = inner
        self._sink = sink
        self._attempts = attempts
        self._tap: ExchangeTap | None = None
        self._headers: dict[str, str] = {}
        self._attempt = 0

    def request_headers(self, headers: dict[str, str], end_of_stream: bool) -> Action:
        action = self.inner.request_headers(headers, end_of_stream)
        if isinstance(action, Continue) and not end_of_stream:
            self._tap = ExchangeTap(self._sink, headers)
            self._attempt = self._attempts.next(headers.get("x-request-id", ""))
            self._headers = apply_mutation(headers, action.set_headers, action.remove_headers)
        return action

    def request_body(self, body: bytes, end_of_stream: bool) -> Action:
        action = self.inner.request_body(body, end_of_stream)
        tap = self._tap
        if tap is not None and isinstance(action, Continue):
            headers = apply_mutation(self._headers, action.set_headers, action.remove_headers)
            host = self.inner.host
            notes = {"backend": host.get("instance"), "schema": host.get("schema")}
            tap.headers("provider_request", headers, attempt=self._attempt, annotations=notes)
            tap.body(
                "provider_request",
                action.body if action.body is not None else body,
                True,
                attempt=self._attempt,
            )
            tap.flush()
        return action

    def internal_error(self, kind: str, exc: Exception) -> Action:
        return self.inner.internal_error(kind, exc)

    def close(self) -> None:
        self.inner.close()
