"""The codec interface: one codec per wire protocol, four faces each.

* decode request  (client wire -> canonical), for frontends
* encode request  (canonical -> provider wire), for backend schemas
* decode response / stream / error (provider wire -> canonical)
* encode response / stream / error (canonical -> client wire)

Codecs are pure: JSON values or bytes in, canonical model out, and back. They
import nothing of gRPC, Envoy or the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from extproc.canonical import (
    CanonicalError,
    CanonicalRequest,
    CanonicalResponse,
    StreamEvent,
)


class StreamDecoder(Protocol):
    """Provider stream bytes -> canonical events, one instance per stream."""

    def feed(self, chunk: bytes) -> list[tuple[bytes, list[StreamEvent]]]:
        """Return, per complete wire event, its raw bytes and canonical events."""
        ...

    def finish(self) -> list[tuple[bytes, list[StreamEvent]]]: ...


class StreamEncoder(Protocol):
    """Canonical events -> client stream bytes, one instance per stream."""

    def encode(self, events: list[StreamEvent]) -> bytes: ...

    def can_pass_through(self, events: list[StreamEvent]) -> bool:
        """True when the raw source bytes of ``events`` may go out unchanged.

        Only meaningful when source and target speak the same protocol; the
        encoder must still account for the events (call :meth:`observe`).
        """
        ...

    def observe(self, events: list[StreamEvent]) -> None: ...

    def finish(self) -> bytes:
        """End of the provider stream: close the client stream properly."""
        ...

    def error(self, error: CanonicalError) -> bytes:
        """An in-band error event that ends the client stream."""
        ...


class Codec(Protocol):
    """Everything the proxy knows about one wire protocol."""

    name: str
    #: Media type of this protocol's streaming answers.
    stream_content_type: str

    def decode_request(self, body: Mapping[str, Any]) -> CanonicalRequest: ...

    def encode_request(
        self, request: CanonicalRequest, model: str, *, max_tokens_field: str | None = None
    ) -> tuple[str, bytes]:
        """Return the request path (relative to the base URL) and the body."""
        ...

    def decode_response(self, body: bytes) -> CanonicalResponse: ...

    def encode_response(self, response: CanonicalResponse, request_model: str) -> bytes: ...

    def decode_error(self, status: int, body: bytes, retry_after: str | None) -> CanonicalError: ...

    def encode_error(self, error: CanonicalError) -> bytes: ...

    def stream_decoder(self) -> StreamDecoder: ...

    def stream_encoder(self, include_usage: bool, request_model: str) -> StreamEncoder: ...
