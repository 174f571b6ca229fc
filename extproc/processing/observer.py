"""The observer roles: wire capture from ext_proc filters in observability mode.

Envoy runs two extra ext_proc filters when capture is on (see
:mod:`extproc.envoy_config.bootstrap`), both in *observability mode*: Envoy
sends them headers and every body chunk and does not wait for any answer, so
capture adds no round trip to a request.

* ``observe-client`` is first in the listener's filter chain: it sees the
  client's request before the ROUTER role changes it, and the answer after the
  ROUTER role translated it: the client leg, byte for byte.
* ``observe-provider`` is last before the codec in each cluster: it sees what
  each attempt sent to the provider and what came back: the provider leg.

This module turns those messages into capture records; it never parses or
changes a body, never raises into the servicer, and hands every record to a
non-blocking sink.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from extproc.internalapi import SESSION_ECHO_HEADER
from extproc.pipeline.context import key_id
from extproc.processing.headers import client_key, query_key

log = logging.getLogger(__name__)

Side = Literal["client", "provider"]
HeaderPairs = Sequence[tuple[str, bytes]]


class CaptureSink(Protocol):
    """Where observer events go (the capture writer behind a bounded queue)."""

    def event(
        self,
        *,
        request_id: str,
        leg: str,
        attempt: int,
        kind: str,
        mono_ns: int,
        wall_ns: int,
        headers: HeaderPairs | None = None,
        body: bytes | None = None,
        end_of_stream: bool = False,
        session_id: str | None = None,
        client_key_id: str | None = None,
        annotations: dict[str, Any] | None = None,
    ) -> None: ...


class NullCaptureSink:
    """Capture off (or an observer stream from a foreign bootstrap): drop events."""

    def event(self, **_: Any) -> None:
        return None


@dataclass
class AttemptCounter:
    """Numbers the provider-leg streams of each request (1, 2, ... per retry)."""

    limit: int = 10_000
    _seen: OrderedDict[str, int] = field(default_factory=OrderedDict)

    def next(self, request_id: str) -> int:
        attempt = self._seen.pop(request_id, 0) + 1
        self._seen[request_id] = attempt
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return attempt


#: Header names whose values identify a session, in order of preference.
SESSION_HEADERS = ("x-session-id", "x-llm-session-id")


class ObserverProcessor:
    """One observed stream: the client leg or one provider attempt of one request."""

    def __init__(
        self,
        sink: CaptureSink,
        side: Side,
        attempts: AttemptCounter,
        host: dict[str, Any] | None = None,
    ) -> None:
        self._sink = sink
        self._side = side
        self._attempts = attempts
        self._host = host or {}
        self._request_id = ""
        self._attempt = 0
        self._session: str | None = None
        self._key_id: str | None = None
        self._ended = False

    def handle(self, kind: str, pairs: HeaderPairs | None, body: bytes | None, eos: bool) -> None:
        """One ext_proc message (observability mode: nothing is answered)."""
        try:
            self._handle(kind, pairs, body, eos)
        except Exception:  # capture must never break the proxy
            log.exception("capture: dropping a %s message of %s", kind, self._request_id or "?")

    def close(self) -> None:
        if not self._ended and self._request_id:
            self._ended = True
            self._emit(f"{self._side}_response", "end")

    def _handle(self, kind: str, pairs: HeaderPairs | None, body: bytes | None, eos: bool) -> None:
        direction = "request" if kind.startswith("request") else "response"
        leg = f"{self._side}_{direction}"
        if kind == "request_headers" and pairs is not None:
            self._start(pairs)
        elif kind == "response_headers" and pairs is not None and self._side == "client":
            # With sessions on, the proxy's A-leg id (what usage records and traces
            # carry) files the exchange; the client's own id came with the request.
            for name, value in pairs:
                if name == SESSION_ECHO_HEADER:
                    self._session = value.decode("latin-1")
        if kind.endswith("_headers"):
            self._emit(leg, "headers", headers=pairs, eos=eos)
        elif kind.endswith("_body"):
            self._emit(leg, "body", body=body or b"", eos=eos)
        if direction == "response" and eos:
            self._ended = True
            self._emit(leg, "end")

    def _start(self, pairs: HeaderPairs) -> None:
        headers = {name: value.decode("latin-1") for name, value in pairs}
        self._request_id = headers.get("x-request-id", "")
        if self._side == "client":
            self._session = next((headers[h] for h in SESSION_HEADERS if h in headers), None)
            # As the ROUTER role reads it: a header, else a Gemini client's ``?key=``.
            key = client_key(headers) or query_key(headers.get(":path", ""))
            self._key_id = key_id(key) if key else None
        else:
            self._attempt = self._attempts.next(self._request_id)

    def _emit(
        self,
        leg: str,
        kind: str,
        headers: HeaderPairs | None = None,
        body: bytes | None = None,
        eos: bool = False,
    ) -> None:
        annotations = None
        if self._host and kind == "headers":
            host = self._host
            annotations = {"backend": host.get("instance"), "schema": host.get("schema")}
        self._sink.event(
            request_id=self._request_id,
            leg=leg,
            attempt=self._attempt,
            kind=kind,
            mono_ns=time.monotonic_ns(),
            wall_ns=time.time_ns(),
            headers=headers,
            body=body,
            end_of_stream=eos,
            session_id=self._session,
            client_key_id=self._key_id,
            annotations=annotations,
        )
