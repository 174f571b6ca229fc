"""Anthropic Messages answers, errors and model lists <-> canonical.

Answers from an Anthropic provider: ``text`` -> text parts (``citations`` in ``extra``),
``thinking``/``redacted_thinking`` -> reasoning parts of provider ``anthropic`` (signature
kept), ``tool_use`` -> tool calls (``input`` as JSON text), every other block (server tools,
their results) -> ``OpaquePart``. ``stop_reason``/usage per :mod:`.common`; the native
``stop_reason`` and other Anthropic-only fields (``stop_details``, ``container``) travel in
``extra["anthropic"]`` for an Anthropic client (the ``stop_reason`` only when the canonical
finish does not imply it, e.g. ``pause_turn``).

Answers to Anthropic clients: a ``message`` with content blocks in canonical order (reasoning
per :func:`~extproc.codecs.anthropic.blocks.answer_reasoning`, empty text left out, tool calls
with an object ``input`` and sanitised ids, opaque Anthropic blocks verbatim), a non-null
``stop_reason`` (``tool_use`` when calls are present and no reason is known, else
``end_turn``), and ``usage`` (the proxy's input estimate when the provider gave none).
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from extproc.canonical import (
    CanonicalError,
    CanonicalResponse,
    OpaquePart,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    Usage,
)
from extproc.codecs.anthropic.blocks import answer_reasoning, tool_use_block
from extproc.codecs.anthropic.common import (
    EXTRA_KEY,
    PROTOCOL,
    decoder,
    encoder,
    error_body,
    error_type_for,
    finish_in,
    stop_reason_out,
    tool_arguments,
    usage_in,
    usage_out,
)
from extproc.codecs.base import ModelInfo

_NATIVE_FIELDS = ("stop_reason", "stop_details", "container")
_SNIPPET = 200
MODEL_CREATED_AT = "1970-01-01T00:00:00Z"


class DecodeError(ValueError):
    """The provider's answer is not a valid Anthropic message."""


def new_message_id() -> str:
    return f"msg_proxy{uuid.uuid4().hex[:20]}"


# -- provider answers ----------------------------------------------------------------------


def decode_block(block: dict[str, Any]) -> Part:
    """The canonical part of one content block of an answer."""
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        citations = block.get("citations")
        return TextPart(block["text"], extra={"citations": citations} if citations else None)
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        signature = block.get("signature")
        return ReasoningPart(
            text=block["thinking"],
            signature=signature if isinstance(signature, str) and signature else None,
            provider=PROTOCOL,
        )
    if kind == "redacted_thinking" and isinstance(block.get("data"), str):
        return ReasoningPart(redacted=block["data"], provider=PROTOCOL)
    if kind == "tool_use":
        return ToolCallPart(
            id=str(block.get("id") or ""),
            name=str(block.get("name") or ""),
            arguments=tool_arguments(block.get("input", {})),
        )
    return OpaquePart(protocol=PROTOCOL, data=block)


def decode_response(body: bytes) -> CanonicalResponse:
    try:
        data = decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"invalid JSON from provider: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError("provider answer is not a JSON object")
    if data.get("type") == "error":
        raise DecodeError(f"provider answered 200 with an error: {body[:_SNIPPET]!r}")
    content = data.get("content")
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise DecodeError("provider answer has no 'content' array of blocks")
    native = {k: data[k] for k in _NATIVE_FIELDS if data.get(k) is not None}
    stop_reason = data.get("stop_reason")
    stop_sequence = data.get("stop_sequence")
    stop_sequence = stop_sequence if isinstance(stop_sequence, str) else None
    finish = finish_in(stop_reason)
    if stop_reason_out(finish, stop_sequence) == stop_reason:
        native.pop("stop_reason", None)  # derivable: keep only what the canonical form loses
    return CanonicalResponse(
        protocol=PROTOCOL,
        id=str(data.get("id") or ""),
        model=str(data.get("model") or ""),
        content=[decode_block(block) for block in content],
        finish_reason=finish,
        stop_sequence=stop_sequence,
        usage=usage_in(data.get("usage")),
        extra={EXTRA_KEY: native} if native else {},
    )


# -- answers to clients --------------------------------------------------------------------


def answer_block(part: Part) -> dict[str, Any] | None:
    """The content block an Anthropic client gets for ``part`` (None: not shown)."""
    if isinstance(part, TextPart):
        if not part.text:
            return None
        block: dict[str, Any] = {"type": "text", "text": part.text}
        if part.extra and part.extra.get("citations"):
            block["citations"] = part.extra["citations"]
        return block
    if isinstance(part, ReasoningPart):
        return answer_reasoning(part)
    if isinstance(part, ToolCallPart):
        return tool_use_block(part, same=False)
    if isinstance(part, OpaquePart) and part.protocol == PROTOCOL and isinstance(part.data, dict):
        return part.data
    return None


def encode_response(response: CanonicalResponse, request_model: str, estimate: int) -> bytes:
    content = [b for b in map(answer_block, response.content) if b is not None]
    native = response.extra.get(EXTRA_KEY)
    native = native if isinstance(native, dict) else {}
    reason = response.finish_reason
    calls = any(block.get("type") == "tool_use" for block in content)
    if reason in (None, "stop") and calls and not response.stop_sequence:
        reason = "tool_calls"  # clients run tools on ``tool_use`` only
    usage = response.usage if response.usage is not None else Usage(input_tokens=estimate)
    body: dict[str, Any] = {
        "id": response.id or new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": response.model or request_model,
        "content": content,
        "stop_reason": stop_reason_out(reason, response.stop_sequence, native.get("stop_reason")),
        "stop_sequence": response.stop_sequence,
        "usage": usage_out(usage),
    }
    for key in ("stop_details", "container"):
        if key in native:
            body[key] = native[key]
    return encoder.encode(body)


# -- errors --------------------------------------------------------------------------------


def decode_error(status: int, body: bytes, retry_after: str | None) -> CanonicalError:
    """Read an error answer; tolerate anything (HTML from a load balancer, empty bodies)."""
    message = ""
    kind = error_type_for(status)
    code: str | None = None
    try:
        data = decoder.decode(body) if body else None
    except msgspec.DecodeError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or "")
        kind = str(err.get("type") or kind)
        details = err.get("details")
        if isinstance(details, dict) and isinstance(details.get("error_code"), str):
            code = details["error_code"]
    elif isinstance(err, str):
        message = err
    elif isinstance(data, dict) and isinstance(data.get("message"), str):
        message = data["message"]
    if not message:
        snippet = body[:_SNIPPET].decode("utf-8", "replace").strip()
        message = f"upstream answered HTTP {status}" + (f": {snippet}" if snippet else "")
    return CanonicalError(
        status=status, message=message, type=kind, code=code, retry_after=retry_after
    )


def encode_error(error: CanonicalError) -> bytes:
    return encoder.encode(error_body(error))


# -- token counts and models ---------------------------------------------------------------


def encode_count(input_tokens: int) -> bytes:
    return encoder.encode({"input_tokens": input_tokens})


def model_object(model: ModelInfo) -> dict[str, Any]:
    """A model in Anthropic's ``/v1/models`` shape (release date unknown: the epoch)."""
    return {
        "type": "model",
        "id": model.id,
        "display_name": model.display_name or model.id,
        "created_at": MODEL_CREATED_AT,
        "lifecycle": "active",
    }


def encode_model_list(models: list[ModelInfo]) -> bytes:
    data = [model_object(m) for m in models]
    return encoder.encode(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def encode_model(model: ModelInfo) -> bytes:
    return encoder.encode(model_object(model))
