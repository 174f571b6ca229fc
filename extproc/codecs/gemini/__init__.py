"""The Gemini ``generateContent`` codec (frontend and backend schema ``gemini``).

Module map: :mod:`.wire` (field spellings, finish reasons, usage, tool
arguments), :mod:`.parts` (parts), :mod:`.schema` (OpenAPI subset -> JSON
Schema), :mod:`.generation` (sampling, output format, thinking),
:mod:`.tools` (tools and tool choice), :mod:`.request` (client requests),
:mod:`.encode` (provider requests), :mod:`.response` (answers),
:mod:`.errors` (Google error shape), :mod:`.stream` (SSE streams).

Model lists use Gemini's shape: ``{"models": [{"name": "models/<id>",
"baseModelId": "<id>", "displayName": ..., "supportedGenerationMethods": [...]}]}``;
token counts ``{"totalTokens": N}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extproc.canonical import CanonicalError, CanonicalRequest, CanonicalResponse
from extproc.codecs.base import Adjust, EncodedRequest, ModelInfo, RequestMeta, ResponseContext
from extproc.codecs.gemini import encode as _encode
from extproc.codecs.gemini import errors as _errors
from extproc.codecs.gemini import request as _request
from extproc.codecs.gemini import response as _response
from extproc.codecs.gemini.response import DecodeError
from extproc.codecs.gemini.stream import GeminiStreamDecoder, GeminiStreamEncoder
from extproc.codecs.gemini.wire import PROTOCOL, encoder

__all__ = ["DecodeError", "GeminiCodec", "GeminiStreamDecoder", "GeminiStreamEncoder"]

_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]


def gemini_model(model: ModelInfo) -> dict[str, Any]:
    """A model in Gemini's ``models.get`` shape."""
    base = model.id[len("models/") :] if model.id.startswith("models/") else model.id
    return {
        "name": f"models/{base}",
        "baseModelId": base,
        "displayName": model.display_name or base,
        "description": f"{base} (served by {model.owned_by})",
        "supportedGenerationMethods": list(_METHODS),
    }


class GeminiCodec:
    """``POST {base}/models/{model}:generateContent`` and ``:streamGenerateContent``."""

    name = PROTOCOL
    stream_content_type = "text/event-stream"
    reports_input_early = False

    def decode_request(self, body: Mapping[str, Any], meta: RequestMeta) -> CanonicalRequest:
        return _request.decode_request(body, meta)

    def decode_count_request(self, body: Mapping[str, Any], meta: RequestMeta) -> CanonicalRequest:
        return _request.decode_count_request(body, meta)

    def encode_request(
        self,
        request: CanonicalRequest,
        model: str,
        *,
        max_tokens_field: str | None = None,
        adjust: Adjust | None = None,
    ) -> EncodedRequest:
        return _encode.encode_request(request, model, adjust)

    def decode_response(self, body: bytes) -> CanonicalResponse:
        return _response.decode_response(body)

    def decode_error(self, status: int, body: bytes, retry_after: str | None) -> CanonicalError:
        return _errors.decode_error(status, body, retry_after)

    def stream_decoder(self) -> GeminiStreamDecoder:
        return GeminiStreamDecoder()

    def encode_response(self, response: CanonicalResponse, ctx: ResponseContext) -> bytes:
        return _response.encode_response(response, ctx.request_model)

    def stream_encoder(self, ctx: ResponseContext) -> GeminiStreamEncoder:
        return GeminiStreamEncoder(ctx.request_model)

    def encode_error(self, error: CanonicalError) -> bytes:
        return _errors.encode_error(error)

    def client_status(self, status: int) -> int:
        return _errors.client_status(status)

    def encode_count_response(self, input_tokens: int) -> bytes:
        return encoder.encode({"totalTokens": input_tokens})

    def encode_model_list(self, models: list[ModelInfo]) -> bytes:
        return encoder.encode({"models": [gemini_model(m) for m in models]})

    def encode_model(self, model: ModelInfo) -> bytes:
        return encoder.encode(gemini_model(model))
