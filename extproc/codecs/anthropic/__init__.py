"""The Anthropic Messages codec (frontend and backend schema ``anthropic``).

Modules: :mod:`.request` (client requests -> canonical), :mod:`.encode` with
:mod:`.messages`, :mod:`.blocks` and :mod:`.reasoning` (canonical -> provider requests),
:mod:`.response` (answers, errors, model lists), :mod:`.stream` (provider streams ->
events), :mod:`.stream_encoder` (events -> client streams), :mod:`.common` (shared mappings).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extproc.canonical import CanonicalError, CanonicalRequest, CanonicalResponse
from extproc.codecs.anthropic import encode as _encode
from extproc.codecs.anthropic import request as _request
from extproc.codecs.anthropic import response as _response
from extproc.codecs.anthropic.common import PATH, PROTOCOL, encoder
from extproc.codecs.anthropic.response import DecodeError
from extproc.codecs.anthropic.stream import AnthropicStreamDecoder
from extproc.codecs.anthropic.stream_encoder import AnthropicStreamEncoder
from extproc.codecs.base import Adjust, EncodedRequest, ModelInfo, RequestMeta, ResponseContext

__all__ = ["AnthropicCodec", "AnthropicStreamDecoder", "AnthropicStreamEncoder", "DecodeError"]


class AnthropicCodec:
    """``POST {base}/messages`` (+ ``count_tokens``): requests, answers, streams, errors."""

    name = PROTOCOL
    stream_content_type = "text/event-stream"
    reports_input_early = True

    def decode_request(self, body: Mapping[str, Any], meta: RequestMeta) -> CanonicalRequest:
        return _request.decode_request(body, meta)

    def decode_count_request(self, body: Mapping[str, Any], meta: RequestMeta) -> CanonicalRequest:
        return _request.decode_request(body, meta, count=True)

    def encode_request(
        self,
        request: CanonicalRequest,
        model: str,
        *,
        max_tokens_field: str | None = None,
        adjust: Adjust | None = None,
    ) -> EncodedRequest:
        """``max_tokens_field`` does not apply: Anthropic always takes ``max_tokens``."""
        body, headers = _encode.encode_request(request, model)
        if adjust is not None:
            adjust(body)
        return EncodedRequest(PATH, encoder.encode(body), headers)

    def decode_response(self, body: bytes) -> CanonicalResponse:
        return _response.decode_response(body)

    def decode_error(self, status: int, body: bytes, retry_after: str | None) -> CanonicalError:
        return _response.decode_error(status, body, retry_after)

    def stream_decoder(self) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder()

    def encode_response(self, response: CanonicalResponse, ctx: ResponseContext) -> bytes:
        return _response.encode_response(response, ctx.request_model, ctx.estimated_input_tokens)

    def stream_encoder(self, ctx: ResponseContext) -> AnthropicStreamEncoder:
        return AnthropicStreamEncoder(ctx)

    def encode_error(self, error: CanonicalError) -> bytes:
        return _response.encode_error(error)

    def client_status(self, status: int) -> int:
        """Anthropic clients treat 529 as overload: a 503 becomes 529."""
        return 529 if status == 503 else status

    def encode_count_response(self, input_tokens: int) -> bytes:
        return _response.encode_count(input_tokens)

    def encode_model_list(self, models: list[ModelInfo]) -> bytes:
        return _response.encode_model_list(models)

    def encode_model(self, model: ModelInfo) -> bytes:
        return _response.encode_model(model)
