"""The UPSTREAM role: one instance per attempt, in a failover cluster's filters.

Envoy has already chosen the host. This role reads the host's metadata
(which backend instance, and in pools which model), encodes the canonical
envelope for that backend's wire schema, and sets the path and the provider
credential. Nothing is shared with the ROUTER role except the envelope
that travels through Envoy, so every retry re-encodes from scratch.

How much this role does depends on the cluster's encoding (see
:mod:`extproc.routing.topology`): single-endpoint clusters have no UPSTREAM
role (the ROUTER role encoded for the one host); in ``shared`` clusters it
sets the chosen host's credential from the request headers alone; in
``per-attempt`` clusters it also encodes the envelope for the host.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from extproc.canonical import CanonicalError, Envelope
from extproc.internalapi import INTERNAL_PREFIX
from extproc.processing.actions import Action, Continue, Reply
from extproc.processing.headers import CLIENT_CREDENTIAL_HEADERS

if TYPE_CHECKING:
    from extproc.processing.app import App, BackendRuntime

log = logging.getLogger(__name__)

_envelope_decoder = msgspec.json.Decoder(Envelope)


class UpstreamProcessor:
    def __init__(self, app: App, host: dict[str, Any]) -> None:
        self.app = app
        self.host = host
        instance = host.get("instance")
        self.backend: BackendRuntime | None = (
            app.backends.get(instance) if isinstance(instance, str) else None
        )

    def request_headers(self, headers: dict[str, str], end_of_stream: bool) -> Action:
        backend = self.backend
        if backend is None:
            return self._fail(f"no backend instance {self.host.get('instance')!r} in this config")
        # Envoy gives every attempt of a request the same header map: remove
        # what the client sent and what an earlier attempt set for another
        # host, then set this host's credential.
        self.app.attempt_log.add(headers.get("x-request-id", ""), backend.instance)
        own = backend.host_headers()
        stale = self.app.backend_header_names
        remove = [
            h
            for h in headers
            if h not in own
            and (h in CLIENT_CREDENTIAL_HEADERS or h in stale or h.startswith(INTERNAL_PREFIX))
        ]
        return Continue(set_headers=own, remove_headers=remove)

    def request_body(self, body: bytes, end_of_stream: bool) -> Action:
        """Per-attempt encoding (clusters whose hosts need different bodies)."""
        backend = self.backend
        if backend is None:
            return self._fail("no backend for this endpoint")
        try:
            envelope = _envelope_decoder.decode(body)
        except msgspec.DecodeError as exc:
            return self._fail(f"the canonical request did not decode: {exc}")
        request = envelope.request
        model = self.host.get("model") or envelope.model or request.model
        params = self.host.get("params")
        try:
            set_headers, out = backend.encode(
                request, str(model), msgspec.json.decode(params) if params else None
            )
        except Exception as exc:  # a bug or bad pool params: fail this attempt clearly
            log.exception(
                "request %s: encoding for %s failed", envelope.request_id, backend.instance
            )
            return self._fail(f"the request could not be encoded for {backend.instance}: {exc}")
        return Continue(set_headers=set_headers, body=out)

    def close(self) -> None:
        """The gRPC stream ended: nothing to release."""

    def internal_error(self, kind: str, exc: Exception) -> Reply:
        """An unexpected failure while handling ``kind``: fail this attempt."""
        return self._fail(f"internal error ({type(exc).__name__})")

    def _fail(self, message: str) -> Reply:
        """Answer this attempt with a 500 in the backend's own error dialect."""
        log.error("upstream role: %s (host %s)", message, self.host)
        error = CanonicalError(500, f"proxy configuration error: {message}", code="proxy_config")
        if self.backend is not None:
            body = self.backend.codec.encode_error(error)
        else:
            body = msgspec.json.encode({"error": {"message": error.message, "type": "api_error"}})
        return Reply(status=500, body=body, headers={"content-type": "application/json"})
