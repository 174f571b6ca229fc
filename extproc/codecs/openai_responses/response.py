"""OpenAI Responses answers <-> canonical answers.

Mapping rules:

* **Decode** (a provider's Response object): ``reasoning`` items become
  ``ReasoningPart`` (provider ``openai-responses``, replay fields in
  ``extra``); ``output_text`` parts of message items become text parts
  (non-empty ``annotations``/``logprobs`` kept in ``extra``); a ``refusal``
  part becomes a text part marked ``{"type": "refusal"}`` (so other dialects
  show it); ``function_call`` items become tool calls (id = ``call_id``, the
  ``fc_`` id in ``extra``); other items (hosted tool calls...) stay opaque.
  The finish reason comes from ``status`` (see ``common``), ``tool_calls``
  when the output holds function calls.
* **Encode** (the answer to a Responses client): a full Response object.
  Reasoning parts become ``reasoning`` items showing their text as one
  summary part (their own id, summary and ``encrypted_content`` only for a
  part of this protocol; others get a proxy id); consecutive text parts one
  ``message`` item with an ``output_text`` part each; tool calls
  ``function_call`` items (``call_id`` = canonical id); opaque items of this
  protocol go out as they are. Item ids are the proxy's
  (``msg_proxy_<token>_<n>``...) except replayable reasoning ids. ``status``
  and ``incomplete_details`` follow the finish reason; usage is copied
  (``cache_write_tokens`` always present, as the current SDK requires).
* **Errors** have the Chat Completions shape (``{"error": {message, type,
  param, code}}``); the Chat codec's reader and writer are reused.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from extproc.canonical import (
    CanonicalResponse,
    OpaquePart,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    Usage,
)
from extproc.codecs.openai_chat.response import DecodeError
from extproc.codecs.openai_responses.common import (
    PROTOCOL,
    as_dict,
    as_int,
    finish_from_status,
    item_token,
    proxy_item_id,
    reasoning_item,
    reasoning_part,
    response_id,
    status_from_finish,
    usage_in,
    usage_out,
)

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


# -- decode --------------------------------------------------------------------------


def decode_response(body: bytes) -> CanonicalResponse:
    try:
        data = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"invalid JSON from provider: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("output"), list):
        raise DecodeError("provider answer has no 'output' array")
    content: list[Part] = []
    for item in data["output"]:
        if not isinstance(item, dict):
            raise DecodeError("provider answer has a malformed output item")
        content.extend(output_item_parts(item))
    has_calls = any(isinstance(p, ToolCallPart) for p in content)
    response = CanonicalResponse(
        protocol=PROTOCOL,
        id=str(data.get("id") or ""),
        model=str(data.get("model") or ""),
        created=_timestamp(data.get("created_at")),
        content=content,
        finish_reason=finish_from_status(
            data.get("status"), data.get("incomplete_details"), has_calls
        ),
        usage=usage_in(data.get("usage")),
    )
    if data.get("error") is not None:
        response.extra["error"] = data["error"]
    return response


def _timestamp(value: Any) -> int:
    if isinstance(value, float):
        return int(value)
    return as_int(value)


def output_item_parts(item: dict[str, Any]) -> list[Part]:
    """The canonical parts of one output item."""
    kind = item.get("type")
    if kind == "reasoning":
        return [reasoning_part(item)]
    if kind == "function_call":
        if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
            raise DecodeError("provider answer has a function call without call_id or name")
        arguments = item.get("arguments")
        fc_id = item.get("id")
        return [
            ToolCallPart(
                id=item["call_id"],
                name=item["name"],
                arguments=arguments if isinstance(arguments, str) else "",
                extra={"id": fc_id} if isinstance(fc_id, str) else None,
            )
        ]
    if kind == "message":
        parts: list[Part] = []
        content = item.get("content")
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                raise DecodeError("provider answer has a malformed content part")
            parts.append(_content_part(part))
        return parts
    return [OpaquePart(protocol=PROTOCOL, data={"item": item})]


def _content_part(part: dict[str, Any]) -> Part:
    kind = part.get("type")
    if kind == "output_text" and isinstance(part.get("text"), str):
        extra = {k: v for k, v in part.items() if k not in ("type", "text") and v not in ([], None)}
        return TextPart(part["text"], extra=extra or None)
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return TextPart(part["refusal"], extra={"type": "refusal"})
    return OpaquePart(protocol=PROTOCOL, data=part)


# -- encode --------------------------------------------------------------------------


def response_object(
    resp_id: str,
    created: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    *,
    incomplete_details: dict[str, str] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Response object with the fields every client reads (WIRE_FORMATS §2.3/§2.4)."""
    return {
        "id": resp_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": error,
        "incomplete_details": incomplete_details,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage_out(usage) if usage is not None else None,
    }


def text_part(part: TextPart) -> dict[str, Any]:
    """One ``output_text`` (or ``refusal``) content part of a message item."""
    extra = part.extra or {}
    if extra.get("type") == "refusal":
        return {"type": "refusal", "refusal": part.text}
    out: dict[str, Any] = {"type": "output_text", "text": part.text, "annotations": []}
    out.update({k: v for k, v in extra.items() if k in ("annotations", "logprobs")})
    return out


def message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(content: list[Part], token: str, status: str) -> list[dict[str, Any]]:
    """The ``output`` array for canonical answer parts (see the module docstring)."""
    items: list[dict[str, Any]] = []
    texts: list[dict[str, Any]] = []

    def flush() -> None:
        if texts:
            item_id = proxy_item_id("msg", token, len(items))
            items.append(message_item(item_id, list(texts), status))
            texts.clear()

    for part in content:
        if isinstance(part, TextPart):
            texts.append(text_part(part))
            continue
        if isinstance(part, ReasoningPart):
            own = part.provider == PROTOCOL and isinstance((part.extra or {}).get("id"), str)
            if not own and not part.text:
                continue  # nothing to show and nothing to replay
            flush()
            own_id = (part.extra or {}).get("id") if own else None
            items.append(reasoning_item(part, own_id or proxy_item_id("rs", token, len(items))))
        elif isinstance(part, ToolCallPart):
            flush()
            item_id = proxy_item_id("fc", token, len(items))
            items.append(
                function_call_item(item_id, part.id, part.name, part.arguments or "{}", status)
            )
        elif (
            isinstance(part, OpaquePart)
            and part.protocol == PROTOCOL
            and isinstance(part.data, dict)
            and set(part.data) == {"item"}
        ):
            flush()
            items.append(part.data["item"])
    flush()
    return items


def encode_response(response: CanonicalResponse, request_model: str) -> bytes:
    resp_id = response_id(response.id)
    status, details = status_from_finish(response.finish_reason)
    error = None
    if status == "failed":
        own = as_dict(response.extra.get("error"))  # a Responses provider's own error object
        known = isinstance(own.get("code"), str) and isinstance(own.get("message"), str)
        error = (
            own
            if known
            else {
                "code": "server_error",
                "message": "the provider reported that the response failed",
            }
        )
    body = response_object(
        resp_id,
        response.created or int(time.time()),
        response.model or request_model,
        status,
        output_items(
            response.content,
            item_token(resp_id),
            "incomplete" if response.finish_reason == "length" else "completed",
        ),
        response.usage,
        incomplete_details=details,
        error=error,
    )
    return _encoder.encode(body)
