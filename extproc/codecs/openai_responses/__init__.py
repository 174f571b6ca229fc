"""The OpenAI Responses codec (frontend and backend schema ``openai-responses``).

Frontend: ``POST /v1/responses`` (the official SDK's ``client.responses``,
Codex CLI) and ``POST /v1/responses/input_tokens``. Backend schema:
``POST {base}/responses`` (``https://api.openai.com/v1``). The mapping rules
are stated in each module's docstring: ``request`` (client requests),
``request_encode`` (provider requests), ``response`` (answers), ``stream``
(provider streams), ``stream_encode`` (client streams), ``common`` (usage,
status, reasoning items, ids).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from extproc.canonical import CanonicalError, CanonicalRequest, CanonicalResponse
from extproc.codecs.base import Adjust, EncodedRequest, ModelInfo, RequestMeta, ResponseContext
from extproc.codecs.openai_chat import openai_model
from extproc.codecs.openai_chat.response import decode_error, encode_error
from extproc.codecs.openai_responses import request as _request
from extproc.codecs.openai_responses import request_encode as _request_encode
from extproc.codecs.openai_responses import response as _response
from extproc.codecs.openai_responses.common import PATH, PROTOCOL
from extproc.codecs.openai_responses.stream import ResponsesStreamDecoder
from extproc.codecs.openai_responses.stream_encode import ResponsesStreamEncoder

_encoder = msgspec.json.Encoder()

__all__ = ["OpenAIResponsesCodec", "ResponsesStreamDecoder", "ResponsesStreamEncoder"]


class OpenAIResponsesCodec:
    """``POST {base}/responses``: requests, answers, streams, errors."""

    name = PROTOCOL
    stream_content_type = "text/event-stream"
    reports_input_early = False

    def decode_request(self, body: Mapping[str, Any], meta: RequestMeta) -> CanonicalRequest:
        return _request.decode_request(body)

    def decode_count_request(self, body: Mapping[str, Any], meta: RequestMeta) -> CanonicalRequest:
        """``/v1/responses/input_tokens`` takes the body of a create request."""
        return _request.decode_request(body)

    def encode_request(
        self,
        request: CanonicalRequest,
        model: str,
        *,
        max_tokens_field: str | None = None,
        adjust: Adjust | None = None,
    ) -> EncodedRequest:
        """``max_tokens_field`` does not apply: Responses has only ``max_output_tokens``."""
        body = _request_encode.encode_request(request, model)
        if adjust is not None:
            adjust(body)
        return EncodedRequest(PATH, _encoder.encode(body))

    def decode_response(self, body: bytes) -> CanonicalResponse:
        return _response.decode_response(body)

    def encode_response(self, response: CanonicalResponse, ctx: ResponseContext) -> bytes:
        return _response.encode_response(response, ctx.request_model)

    def decode_error(self, status: int, body: bytes, retry_after: str | None) -> CanonicalError:
        return decode_error(status, body, retry_after)

    def encode_error(self, error: CanonicalError) -> bytes:
        return encode_error(error)

    def client_status(self, status: int) -> int:
        return 503 if status == 529 else status

    def stream_decoder(self) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder()

    def stream_encoder(self, ctx: ResponseContext) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(ctx.request_model)

    def encode_count_response(self, input_tokens: int) -> bytes:
        return _encoder.encode({"object": "response.input_tokens", "input_tokens": input_tokens})

    def encode_model_list(self, models: list[ModelInfo]) -> bytes:
        return _encoder.encode({"object": "list", "data": [openai_model(m) for m in models]})

    def encode_model(self, model: ModelInfo) -> bytes:
        return _encoder.encode(openai_model(model))
