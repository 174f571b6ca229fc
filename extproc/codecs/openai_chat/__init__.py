"""The OpenAI Chat Completions codec (frontend and backend schema ``openai-chat``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from extproc.canonical import CanonicalError, CanonicalRequest, CanonicalResponse
from extproc.codecs.base import Adjust, EncodedRequest, ModelInfo, RequestMeta, ResponseContext
from extproc.codecs.openai_chat import request as _request
from extproc.codecs.openai_chat import response as _response
from extproc.codecs.openai_chat.response import DecodeError
from extproc.codecs.openai_chat.stream import ChatStreamDecoder, ChatStreamEncoder
from extproc.errors import NotFound

_encoder = msgspec.json.Encoder()

__all__ = ["ChatStreamDecoder", "ChatStreamEncoder", "DecodeError", "OpenAIChatCodec"]


def openai_model(model: ModelInfo) -> dict[str, Any]:
    """A model in OpenAI's ``/v1/models`` shape (shared by both OpenAI codecs)."""
    return {"id": model.id, "object": "model", "created": 0, "owned_by": model.owned_by}


class OpenAIChatCodec:
    """``POST {base}/chat/completions``: requests, answers, streams, errors."""

    name = _request.PROTOCOL
    stream_content_type = "text/event-stream"
    reports_input_early = False

    def decode_request(self, body: Mapping[str, Any], meta: RequestMeta) -> CanonicalRequest:
        return _request.decode_request(body)

    def decode_count_request(self, body: Mapping[str, Any], meta: RequestMeta) -> CanonicalRequest:
        raise NotFound("Chat Completions has no token-counting endpoint", code="unknown_url")

    def encode_request(
        self,
        request: CanonicalRequest,
        model: str,
        *,
        max_tokens_field: str | None = None,
        adjust: Adjust | None = None,
    ) -> EncodedRequest:
        body = _request.encode_request(request, model, max_tokens_field=max_tokens_field)
        if adjust is not None:
            adjust(body)
        return EncodedRequest(_request.PATH, _encoder.encode(body))

    def decode_response(self, body: bytes) -> CanonicalResponse:
        return _response.decode_response(body)

    def encode_response(self, response: CanonicalResponse, ctx: ResponseContext) -> bytes:
        return _response.encode_response(response, ctx.request_model)

    def decode_error(self, status: int, body: bytes, retry_after: str | None) -> CanonicalError:
        return _response.decode_error(status, body, retry_after)

    def encode_error(self, error: CanonicalError) -> bytes:
        return _response.encode_error(error)

    def client_status(self, status: int) -> int:
        return 503 if status == 529 else status

    def stream_decoder(self) -> ChatStreamDecoder:
        return ChatStreamDecoder()

    def stream_encoder(self, ctx: ResponseContext) -> ChatStreamEncoder:
        return ChatStreamEncoder(ctx.include_usage, ctx.request_model)

    def encode_count_response(self, input_tokens: int) -> bytes:
        return _encoder.encode({"object": "response.input_tokens", "input_tokens": input_tokens})

    def encode_model_list(self, models: list[ModelInfo]) -> bytes:
        return _encoder.encode({"object": "list", "data": [openai_model(m) for m in models]})

    def encode_model(self, model: ModelInfo) -> bytes:
        return _encoder.encode(openai_model(model))
