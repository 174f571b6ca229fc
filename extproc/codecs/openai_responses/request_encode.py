"""Canonical requests -> OpenAI Responses request bodies (the backend face).

Mapping rules:

* **System prompts.** From this protocol, the message marked as
  ``instructions`` is sent as ``instructions`` and every other system or
  developer message stays an input item where it was. From any other
  protocol, the leading run of text-only system/developer messages is joined
  with a blank line into ``instructions``; later ones become message items of
  their own role (Responses accepts ``system`` and ``developer`` items).
* **Messages.** User/system/developer messages are message items (string
  content when the source sent a string); text is ``input_text``, images
  ``input_image`` (``image_url`` a string: the URL or a ``data:`` URL;
  ``detail`` defaults to ``auto`` for other protocols). An assistant message
  becomes, in part order, message items (``output_text``), ``function_call``
  items (``call_id`` = the canonical call id; the ``fc_`` item ``id`` only for
  the same protocol) and ``reasoning`` items. Tool results (``tool`` messages,
  or results inside a user message, emitted first) are
  ``function_call_output`` items, string output when the source sent a string.
* **Replay tokens.** Reasoning parts are replayed only when they came from
  this protocol (``provider == "openai-responses"`` and an item id); reasoning
  from any other provider is dropped. Opaque parts and items, hosted/custom
  tools and ``extra`` fields go only to a target of the same protocol.
* **Tools.** Flat function tools. Responses treats a missing ``strict`` as
  strict, unlike every other protocol, so tools of another protocol without
  ``strict`` are sent with ``strict: false`` (and an empty object schema when
  they have no parameters). ``tool_choice`` is dropped with the tools when no
  tool is left.
* **Settings.** ``max_output_tokens`` (raised to the API's minimum of 16 for
  other protocols, whose clients send e.g. ``max_tokens: 1`` probes),
  ``temperature``, ``top_p``, ``parallel_tool_calls``, ``user`` map as they
  are; ``reasoning.effort`` from the canonical effort (a budget maps to
  low <= 2048 < medium <= 8192 < high), ``reasoning.summary`` from the
  canonical summary, or ``auto`` when another protocol asked for visible
  reasoning; ``text.format`` from the response format. ``stop``, ``seed``,
  ``top_k`` and the penalties have no Responses field and are dropped.
  ``store`` is ``false`` unless the client (of this protocol) said otherwise.
  Usage always arrives in the terminal event: there is no ``include_usage``.
"""

from __future__ import annotations

from typing import Any

from extproc.canonical import (
    CanonicalRequest,
    ImagePart,
    Message,
    OpaquePart,
    Part,
    Reasoning,
    ReasoningPart,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
)
from extproc.codecs.openai_responses.common import (
    INSTRUCTIONS_MARK,
    INSTRUCTIONS_VALUE,
    PROTOCOL,
    reasoning_item,
)

#: The smallest ``max_output_tokens`` the Responses API accepts.
MIN_OUTPUT_TOKENS = 16
# ``extra`` keys the encoder merges itself rather than copying.
_MERGED = frozenset({"reasoning", "text", "tool_choice", "store"})
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def encode_request(req: CanonicalRequest, model: str) -> dict[str, Any]:
    same = req.protocol == PROTOCOL
    body: dict[str, Any] = {"model": model}
    instructions, items = _encode_messages(req, same)
    if instructions is not None:
        body["instructions"] = instructions
    if (
        same
        and req.hints.get("input") == "string"
        and len(items) == 1
        and set(items[0]) == {"role", "content"}
        and items[0]["role"] == "user"
        and isinstance(items[0]["content"], str)
    ):
        body["input"] = items[0]["content"]
    elif not (same and req.hints.get("input") == "none" and not items):
        body["input"] = items
    if req.tools is not None:
        tools = [t for t in (_encode_tool(t, same) for t in req.tools) if t is not None]
        if tools or same:
            body["tools"] = tools
    if same and "tool_choice" in req.extra:
        body["tool_choice"] = req.extra["tool_choice"]
    elif req.tool_choice is not None and (same or body.get("tools")):
        choice = req.tool_choice
        body["tool_choice"] = (
            {"type": "function", "name": choice.name} if choice.mode == "tool" else choice.mode
        )
    _put(body, "parallel_tool_calls", req.parallel_tool_calls)
    _put(body, "temperature", req.temperature)
    _put(body, "top_p", req.top_p)
    if req.max_output_tokens is not None:
        limit = req.max_output_tokens
        body["max_output_tokens"] = limit if same else max(limit, MIN_OUTPUT_TOKENS)
    _put(body, "user", req.user)
    reasoning = _encode_reasoning(req.reasoning, _extra_dict(req, "reasoning", same), same)
    if reasoning is not None:
        body["reasoning"] = reasoning
    text = _encode_text(req.response_format, _extra_dict(req, "text", same))
    if text is not None:
        body["text"] = text
    body["store"] = req.extra.get("store", False) if same else False
    if same:
        for key, value in req.extra.items():
            if key not in _MERGED:
                body.setdefault(key, value)
    if req.stream:
        body["stream"] = True
    body.update(req.passthrough)
    return body


def _extra_dict(req: CanonicalRequest, key: str, same: bool) -> dict[str, Any] | None:
    value = req.extra.get(key) if same else None
    return value if isinstance(value, dict) else None


def _put(body: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        body[key] = value


# -- messages ----------------------------------------------------------------------


def _is_instructions(message: Message) -> bool:
    return message.extra is not None and message.extra.get(INSTRUCTIONS_MARK) == INSTRUCTIONS_VALUE


def _text_only(message: Message) -> bool:
    return all(isinstance(p, TextPart) for p in message.content)


def _encode_messages(req: CanonicalRequest, same: bool) -> tuple[str | None, list[dict[str, Any]]]:
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    leading = True
    for message in req.messages:
        if same and _is_instructions(message):
            instructions.append(_joined_text(message.content))
            continue
        if not same and leading and message.role in ("system", "developer") and _text_only(message):
            instructions.append(_joined_text(message.content))
            continue
        leading = False
        items.extend(_encode_message(message, same))
    return ("\n\n".join(instructions) if instructions else None), items


def _joined_text(parts: list[Part]) -> str:
    return "".join(p.text for p in parts if isinstance(p, TextPart))


def _encode_message(message: Message, same: bool) -> list[dict[str, Any]]:
    if message.role == "assistant":
        return _encode_assistant(message, same)
    items: list[dict[str, Any]] = []
    content: list[Part] = []
    for part in message.content:
        if isinstance(part, ToolResultPart):
            items.append(_encode_result(part, message, same))
        elif isinstance(part, OpaquePart) and _is_item(part):
            if same and part.protocol == PROTOCOL:
                items.append(part.data["item"])
        elif isinstance(part, TextPart | ImagePart | OpaquePart):
            content.append(part)
    if message.role == "tool" or (items and not content):
        return items
    encoded = _encode_content(content, message.plain, same)
    if content and encoded == []:
        return items  # every part was of another protocol: nothing left to say
    item: dict[str, Any] = {"role": message.role, "content": encoded}
    if same and message.extra:
        for key, value in message.extra.items():
            item.setdefault(key, value)
    return [*items, item]


def _encode_assistant(message: Message, same: bool) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    run: list[Part] = []
    first_run = True

    def flush() -> None:
        nonlocal first_run
        if not run:
            return
        content = _encode_content(run, message.plain, same, assistant=True)
        run.clear()
        if content == []:
            return  # only parts of another protocol
        item: dict[str, Any] = {"role": "assistant", "content": content}
        if same and message.extra and first_run:
            for key, value in message.extra.items():
                item.setdefault(key, value)
        first_run = False
        items.append(item)

    for part in message.content:
        if isinstance(part, TextPart) or (isinstance(part, OpaquePart) and not _is_item(part)):
            run.append(part)
            continue
        if isinstance(part, ImagePart):
            continue  # Responses takes no images in assistant turns
        flush()
        if isinstance(part, ToolCallPart):
            items.append(_encode_call(part, same))
        elif isinstance(part, ReasoningPart):
            extra = part.extra or {}
            if part.provider == PROTOCOL and isinstance(extra.get("id"), str):
                items.append(reasoning_item(part, extra["id"]))
        elif isinstance(part, ToolResultPart):
            items.append(_encode_result(part, message, same))
        elif isinstance(part, OpaquePart) and same and part.protocol == PROTOCOL:
            items.append(part.data["item"])
    flush()
    return items


def _is_item(part: OpaquePart) -> bool:
    """Opaque whole items are ``{"item": {...}}``; anything else is a content part."""
    return isinstance(part.data, dict) and set(part.data) == {"item"}


def _encode_content(
    parts: list[Part], plain: bool, same: bool, *, assistant: bool = False
) -> str | list[dict[str, Any]]:
    if plain and parts and all(isinstance(p, TextPart) for p in parts):
        return _joined_text(parts)
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            text: dict[str, Any] = {
                "type": "output_text" if assistant else "input_text",
                "text": part.text,
            }
            if same and part.extra:
                text.update(part.extra)
            out.append(text)
        elif isinstance(part, ImagePart):
            out.append(_encode_image(part, same))
        elif isinstance(part, OpaquePart) and same and part.protocol == PROTOCOL:
            out.append(part.data)
    return out


def _encode_image(part: ImagePart, same: bool) -> dict[str, Any]:
    url = part.url or f"data:{part.media_type or 'image/png'};base64,{part.data or ''}"
    image: dict[str, Any] = {"type": "input_image", "image_url": url}
    if part.detail is not None or not same:
        image["detail"] = part.detail or "auto"
    if same and part.extra:
        image.update(part.extra)
    return image


def _encode_call(part: ToolCallPart, same: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "function_call",
        "call_id": part.id,
        "name": part.name,
        "arguments": part.arguments,
    }
    if same and part.extra:
        item.update(part.extra)
    return item


def _encode_result(part: ToolResultPart, message: Message, same: bool) -> dict[str, Any]:
    extra = (message.extra or {}) if same and message.role == "tool" else {}
    output: Any
    if "output" in extra:
        output = extra["output"]
    elif (message.plain or message.role != "tool") and all(
        isinstance(p, TextPart) for p in part.content
    ):
        output = "".join(p.text for p in part.content if isinstance(p, TextPart))
    else:
        output = _encode_content(list(part.content), False, same)
    item: dict[str, Any] = {"type": "function_call_output", "call_id": part.tool_call_id}
    item["output"] = output
    for key, value in extra.items():
        if key != "output":
            item.setdefault(key, value)
    return item


# -- tools, reasoning, text -----------------------------------------------------------


def _encode_tool(tool: Tool, same: bool) -> dict[str, Any] | None:
    if tool.opaque is not None:
        return tool.opaque if same else None
    out: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    if tool.parameters is not None or not same:
        out["parameters"] = tool.parameters if tool.parameters is not None else _EMPTY_SCHEMA
    if tool.strict is not None or not same:
        out["strict"] = bool(tool.strict)
    if same and tool.extra:
        out.update(tool.extra)
    return out


def _effort(reasoning: Reasoning) -> str | None:
    """The effort level; a token budget maps to one (a documented heuristic)."""
    if reasoning.effort is not None:
        return reasoning.effort
    if reasoning.enabled is False or reasoning.budget_tokens is None:
        return None
    budget = reasoning.budget_tokens
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


def _encode_reasoning(
    reasoning: Reasoning | None, leftover: dict[str, Any] | None, same: bool
) -> dict[str, Any] | None:
    if reasoning is None:
        return None
    out: dict[str, Any] = {}
    if (effort := _effort(reasoning)) is not None:
        out["effort"] = effort
    summary = reasoning.summary
    if summary is None and reasoning.include_thoughts and reasoning.enabled is not False:
        summary = "auto"
    if summary is not None and not (leftover and leftover.get("generate_summary") == summary):
        out["summary"] = summary
    if leftover:
        out.update(leftover)
    return out if out or same else None


def _encode_text(
    fmt: ResponseFormat | None, leftover: dict[str, Any] | None
) -> dict[str, Any] | None:
    out: dict[str, Any] = dict(leftover or {})
    if fmt is not None:
        out["format"] = _encode_format(fmt)
    return out if out or leftover is not None else None


def _encode_format(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    out: dict[str, Any] = {"type": "json_schema", "name": fmt.name or "response"}
    if fmt.description is not None:
        out["description"] = fmt.description
    out["schema"] = fmt.schema if fmt.schema is not None else {"type": "object"}
    if fmt.strict is not None:
        out["strict"] = fmt.strict
    return out
