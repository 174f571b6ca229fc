"""The codec interface: one codec per wire protocol, four faces each.

* decode request  (client wire -> canonical), for frontends
* encode request  (canonical -> provider wire), for backend schemas
* decode response / stream / error (provider wire -> canonical)
* encode response / stream / error (canonical -> client wire)

plus the small client-facing extras a frontend needs (model lists, token
counts, status codes in the dialect).

Codecs are pure: JSON values or bytes in, canonical model out, and back. They
import nothing of gRPC, Envoy or the server, so they can be tested and
benchmarked alone.

Cross-protocol rules every codec follows (docs/translation.md):

* Unknown fields of the source protocol travel in ``extra`` and are emitted
  only by the same protocol's encoder; ``passthrough`` is always emitted.
* Replay tokens (``ReasoningPart.signature``/``redacted``, and anything in
  ``extra``) never cross protocols.
* What cannot be mapped is dropped by a documented rule or rejected with
  :class:`extproc.errors.InvalidRequest` (a 400 in the client's dialect).
* Decoders never fail on unknown enum values or unknown event types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from extproc.canonical import (
    CanonicalError,
    CanonicalRequest,
    CanonicalResponse,
    StreamEvent,
)

#: Changes an encoded request body in place before it is serialized (provider quirks).
Adjust: TypeAlias = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RequestMeta:
    """What a frontend knows about a request besides its JSON body."""

    method: str = "POST"
    path: str = "/"
    #: Decoded query parameters (credentials such as Gemini's ``key`` removed).
    query: Mapping[str, str] = field(default_factory=dict)
    #: Lower-case request headers, credentials removed.
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Values taken from the path, e.g. Gemini's ``model`` and ``action``
    #: (``generateContent`` or ``streamGenerateContent``).
    path_params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ResponseContext:
    """What an encoder of answers needs to know about the request."""

    #: The model the client asked for (after routing), for answers that lack one.
    request_model: str
    #: OpenAI Chat ``stream_options.include_usage``.
    include_usage: bool = False
    #: The proxy's estimate of the request's input tokens, for dialects that
    #: report input usage before the provider does (Anthropic ``message_start``).
    estimated_input_tokens: int = 0


@dataclass(frozen=True)
class EncodedRequest:
    """A request ready for a provider."""

    #: Path relative to the backend's base URL, query string included.
    path: str
    body: bytes
    #: Protocol headers the request needs (e.g. Anthropic's ``anthropic-beta``
    #: forwarded from an Anthropic client). Never credentials: the proxy
    #: adds those per host.
    headers: Mapping[str, str] = field(default_factory=dict)


#: ``CanonicalRequest.hints`` key: the request only makes sense to a backend
#: of this protocol (e.g. a Responses ``previous_response_id``); any other
#: target answers 400.
REQUIRES_PROTOCOL = "requires_protocol"


@dataclass(frozen=True)
class ModelInfo:
    """A model the proxy serves, for the frontends' model lists."""

    id: str
    owned_by: str
    display_name: str | None = None


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

        Only asked when source and target speak the same protocol; when it
        says yes the encoder must still account for the events (``observe``).
        """
        ...

    def observe(self, events: list[StreamEvent], raw: bytes | None = None) -> None:
        """Account for ``events`` that went out as ``raw`` (their source bytes)."""
        ...

    def finish(self) -> bytes:
        """End of the provider stream: close the client stream properly.

        A stream that ended before a finish reason gets the dialect's error
        event instead of a silent end.
        """
        ...

    def error(self, error: CanonicalError) -> bytes:
        """An in-band error event that ends the client stream."""
        ...


class Codec(Protocol):
    """Everything the proxy knows about one wire protocol."""

    name: str
    #: Media type of this protocol's streaming answers.
    stream_content_type: str
    #: The dialect's streams report input usage before the provider has
    #: (Anthropic ``message_start``): encoders get an estimate in the context.
    reports_input_early: bool

    # -- frontend: client requests ------------------------------------------

    def decode_request(self, body: Mapping[str, Any], meta: RequestMeta) -> CanonicalRequest: ...

    def decode_count_request(self, body: Mapping[str, Any], meta: RequestMeta) -> CanonicalRequest:
        """A token-count request (``count_tokens``, ``countTokens``...) as a request."""
        ...

    # -- backend: provider requests -----------------------------------------

    def encode_request(
        self,
        request: CanonicalRequest,
        model: str,
        *,
        max_tokens_field: str | None = None,
        adjust: Adjust | None = None,
    ) -> EncodedRequest:
        """``adjust`` changes the body dict before it is serialized (a provider's quirks)."""
        ...

    def decode_response(self, body: bytes) -> CanonicalResponse: ...

    def decode_error(self, status: int, body: bytes, retry_after: str | None) -> CanonicalError: ...

    def stream_decoder(self) -> StreamDecoder: ...

    # -- frontend: answers to clients ---------------------------------------

    def encode_response(self, response: CanonicalResponse, ctx: ResponseContext) -> bytes: ...

    def stream_encoder(self, ctx: ResponseContext) -> StreamEncoder: ...

    def encode_error(self, error: CanonicalError) -> bytes: ...

    def client_status(self, status: int) -> int:
        """The HTTP status this dialect's clients expect for ``status``.

        (Anthropic clients treat 529 as overload; the others expect 503.)
        """
        ...

    def encode_count_response(self, input_tokens: int) -> bytes: ...

    def encode_model_list(self, models: list[ModelInfo]) -> bytes: ...

    def encode_model(self, model: ModelInfo) -> bytes: ...
