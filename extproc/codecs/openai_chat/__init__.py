"""The OpenAI Chat Completions codec (frontend and backend schema ``openai-chat``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from extproc.canonical import CanonicalError, CanonicalRequest, CanonicalResponse
from extproc.codecs.openai_chat import request as _request
from extproc.codecs.openai_chat import response as _response
from extproc.codecs.openai_chat.response import DecodeError
from extproc.codecs.openai_chat.stream import ChatStreamDecoder, ChatStreamEncoder

_encoder = msgspec.json.Encoder()

__all__ = ["ChatStreamDecoder", "ChatStreamEncoder", "DecodeError", "OpenAIChatCodec"]


class OpenAIChatCodec:
    """``POST {base}/chat/completions``: requests, answers, streams, errors."""

    name = _request.PROTOCOL
    stream_content_type = "text/event-stream"

    def decode_request(self, body: Mapping[str, Any]) -> CanonicalRequest:
        return _request.decode_request(body)

    def encode_request(
        self, request: CanonicalRequest, model: str, *, max_tokens_field: str | None = None
    ) -> tuple[str, bytes]:
        body = _request.encode_request(request, model, max_tokens_field=max_tokens_field)
        return _request.PATH, _encoder.encode(body)

    def decode_response(self, body: bytes) -> CanonicalResponse:
        return _response.decode_response(body)

    def encode_response(self, response: CanonicalResponse, request_model: str) -> bytes:
        return _response.encode_response(response, request_model)

    def decode_error(self, status: int, body: bytes, retry_after: str | None) -> CanonicalError:
        return _response.decode_error(status, body, retry_after)

    def encode_error(self, error: CanonicalError) -> bytes:
        return _response.encode_error(error)

    def stream_decoder(self) -> ChatStreamDecoder:
        return ChatStreamDecoder()

    def stream_encoder(self, include_usage: bool, request_model: str) -> ChatStreamEncoder:
        return ChatStreamEncoder(include_usage, request_model)
