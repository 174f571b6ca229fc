"""One codec per wire protocol, registered by protocol name."""

from __future__ import annotations

from extproc.codecs.anthropic import AnthropicCodec
from extproc.codecs.base import Codec, StreamDecoder, StreamEncoder
from extproc.codecs.gemini import GeminiCodec
from extproc.codecs.openai_chat import OpenAIChatCodec
from extproc.codecs.openai_responses import OpenAIResponsesCodec

CODECS: dict[str, Codec] = {
    codec.name: codec
    for codec in (OpenAIChatCodec(), OpenAIResponsesCodec(), AnthropicCodec(), GeminiCodec())
}


def get_codec(protocol: str) -> Codec:
    """The codec for ``protocol`` (a frontend or backend schema name)."""
    return CODECS[protocol]


__all__ = ["CODECS", "Codec", "StreamDecoder", "StreamEncoder", "get_codec"]
