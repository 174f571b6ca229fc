"""Canonical parts -> Anthropic content blocks (shared by requests and answers).

* ``TextPart`` -> ``text`` (its ``extra``, e.g. ``cache_control``, only for the same protocol).
* ``ImagePart`` -> ``image``: a ``data:<mime>;base64,<data>`` URL or base64 data -> a
  ``base64`` source, an ``http(s)`` URL -> a ``url`` source. A ``data:`` URL that is not base64
  is a 400.
* ``ToolCallPart`` -> ``tool_use`` with a sanitised id and ``input`` per
  :func:`~extproc.codecs.anthropic.common.tool_input`.
* Reasoning: see :func:`request_reasoning` (replay) and :func:`answer_reasoning` (display).
"""

from __future__ import annotations

from typing import Any

from extproc.canonical import ImagePart, ReasoningPart, TextPart, ToolCallPart
from extproc.codecs.anthropic.common import PROTOCOL, tool_id, tool_input
from extproc.errors import InvalidRequest

_BASE64_SUFFIX = ";base64"


def text_block(part: TextPart, same: bool) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": part.text}
    if same and part.extra:
        block.update(part.extra)
    return block


def image_block(part: ImagePart, same: bool) -> dict[str, Any]:
    source: dict[str, Any]
    if part.url is not None and part.url.startswith("data:"):
        header, sep, data = part.url[len("data:") :].partition(",")
        if not sep or not header.endswith(_BASE64_SUFFIX):
            raise InvalidRequest(
                "image data URLs must be base64-encoded (data:<mime>;base64,<data>)",
                param="messages",
            )
        media_type = header[: -len(_BASE64_SUFFIX)] or part.media_type or "image/png"
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif part.url is not None:
        source = {"type": "url", "url": part.url}
    else:
        source = {"type": "base64"}
        if part.media_type is not None:
            source["media_type"] = part.media_type
        source["data"] = part.data or ""
    block: dict[str, Any] = {"type": "image", "source": source}
    if same and part.extra:
        block.update(part.extra)
    return block


def tool_use_block(part: ToolCallPart, same: bool) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "tool_use",
        "id": tool_id(part.id),
        "name": part.name,
        "input": tool_input(part.arguments, same=same),
    }
    if same and part.extra:
        block.update(part.extra)
    return block


def request_reasoning(part: ReasoningPart, same: bool) -> dict[str, Any] | None:
    """A reasoning part in a request: replayed only with its Anthropic replay token.

    ``redacted_thinking`` and signed ``thinking`` blocks from provider ``anthropic`` go back
    unchanged; reasoning from another provider, or without a signature, is dropped (the API
    rejects a thinking block it cannot verify).
    """
    if part.provider != PROTOCOL:
        return None
    block: dict[str, Any]
    if part.redacted is not None:
        block = {"type": "redacted_thinking", "data": part.redacted}
    elif part.signature:
        block = {"type": "thinking", "thinking": part.text, "signature": part.signature}
    else:
        return None
    if same and part.extra:
        block.update(part.extra)
    return block


def answer_reasoning(part: ReasoningPart) -> dict[str, Any] | None:
    """A reasoning part in an answer to an Anthropic client: always shown as ``thinking``.

    The ``signature`` (and a ``redacted_thinking`` block) only when the reasoning came from
    an Anthropic provider; otherwise the signature is ``""``, so it is never replayed.
    """
    anthropic = part.provider == PROTOCOL
    if part.redacted is not None:
        return {"type": "redacted_thinking", "data": part.redacted} if anthropic else None
    if not part.text and not (anthropic and part.signature):
        return None
    signature = part.signature if anthropic and part.signature else ""
    return {"type": "thinking", "thinking": part.text, "signature": signature}
