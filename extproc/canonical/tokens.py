"""Token estimates where no provider count is at hand.

Used to answer ``count_tokens``-style endpoints for backends that have none,
and for the input count an Anthropic client expects in ``message_start``
before the provider has said. About four characters per token for text
(UTF-8 bytes / 4 is close for English and code), a fixed cost per image and
per message. An estimate, documented as such; never used for billing.
"""

from __future__ import annotations

import msgspec

from extproc.canonical.model import (
    CanonicalRequest,
    ImagePart,
    OpaquePart,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)

_PER_MESSAGE = 4
_PER_IMAGE = 765  # an OpenAI "high detail" 512px tile grid; a middle-of-the-road figure
_encoder = msgspec.json.Encoder()


def _text_tokens(text: str) -> int:
    return (len(text.encode("utf-8")) + 3) // 4


def estimate_tokens(request: CanonicalRequest) -> int:
    """Estimated input tokens of ``request`` (messages, tools, system)."""
    total = 0
    for message in request.messages:
        total += _PER_MESSAGE
        for part in message.content:
            if isinstance(part, TextPart):
                total += _text_tokens(part.text)
            elif isinstance(part, ImagePart):
                total += _PER_IMAGE
            elif isinstance(part, ToolCallPart):
                total += _text_tokens(part.name) + _text_tokens(part.arguments)
            elif isinstance(part, ToolResultPart):
                for item in part.content:
                    total += _text_tokens(item.text) if isinstance(item, TextPart) else _PER_IMAGE
            elif isinstance(part, ReasoningPart):
                total += _text_tokens(part.text)
            elif isinstance(part, OpaquePart):
                total += _text_tokens(_encoder.encode(part.data).decode())
    for tool in request.tools or []:
        total += _text_tokens(tool.name) + _text_tokens(tool.description or "")
        if tool.parameters:
            total += _text_tokens(_encoder.encode(tool.parameters).decode())
    return max(total, 1)
