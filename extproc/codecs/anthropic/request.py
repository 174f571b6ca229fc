"""Anthropic Messages requests (``POST /v1/messages``, ``count_tokens``) -> canonical requests.

Mapping rules:

* ``system`` (string or text blocks) -> a leading ``system`` message (``plain`` for a string;
  each block's ``cache_control`` kept in the part's ``extra``). A ``system``-role entry inside
  ``messages`` (the SDK's mid-conversation system message) stays a ``system`` message in place.
* ``user``/``assistant`` content (string -> one ``plain`` text part) becomes typed parts:
  ``text``, ``image`` (base64 or url source), ``tool_use`` (``input`` re-encoded as JSON text),
  ``thinking`` (text + ``signature``) and ``redacted_thinking`` (``data``) as reasoning parts of
  provider ``anthropic``; every other block (``document``, server-tool blocks, file sources,
  future types) is kept verbatim as an ``OpaquePart``. Unknown block fields go to ``extra``.
* Each ``tool_result`` block becomes its own canonical ``tool`` message (one
  ``ToolResultPart``): the message's ``plain`` says the content was a string, its ``extra``
  holds the block's other fields (``cache_control``, an explicit ``is_error: false``, the raw
  content list when it holds blocks other than text/image, ``content: None`` when it was
  absent). Other blocks of the same user message become ``user`` messages around them, so the
  original order is preserved: ``[result A, result B, text]`` -> tool A, tool B, user [text].
* ``tools``: client tools (no ``type``, or ``type: custom``) -> ``Tool``; typed server tools
  -> ``Tool.opaque``. ``tool_choice`` ``auto``/``any``/``tool``/``none`` ->
  ``auto``/``required``/``tool``/``none``; ``disable_parallel_tool_use`` ->
  ``parallel_tool_calls = not value``; other shapes travel in ``extra``.
* ``max_tokens`` (required, integer >= 1; not for ``count_tokens``), ``temperature``,
  ``top_p``, ``top_k``, ``stop_sequences``, ``metadata.user_id`` -> ``user`` (other metadata in
  ``extra``), ``stream``.
* ``thinking``: ``enabled`` -> ``Reasoning(enabled=True, budget_tokens)``; ``disabled`` ->
  ``enabled=False``; ``adaptive`` -> ``enabled=True`` plus hint ``thinking_type=adaptive``;
  ``display`` -> ``include_thoughts`` (``summarized`` True, ``omitted`` False); other types
  travel in ``extra``. ``output_config.effort`` -> ``Reasoning.effort``;
  ``output_config.format`` (``json_schema``) -> ``ResponseFormat``.
* Headers ``anthropic-beta`` and ``anthropic-version`` -> hints, re-sent only to an Anthropic
  backend. Unknown top-level fields -> ``extra``.

Errors are ``InvalidRequest`` (400) with Anthropic-style dotted ``param`` paths
(``messages.0.content.1.type``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

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
    ToolChoice,
    ToolResultPart,
)
from extproc.codecs.anthropic.common import (
    FORWARDED_HEADERS,
    HINT_THINKING_TYPE,
    PROTOCOL,
    rest,
    tool_arguments,
)
from extproc.codecs.base import RequestMeta
from extproc.errors import InvalidRequest

_KNOWN = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "metadata",
        "thinking",
        "output_config",
        "stream",
    }
)
ChoiceMode = Literal["auto", "none", "required", "tool"]
_ROLES = frozenset({"user", "assistant", "system"})
_MESSAGE_KEYS = frozenset({"role", "content"})
_TEXT_KEYS = frozenset({"type", "text"})
_IMAGE_KEYS = frozenset({"type", "source"})
_TOOL_USE_KEYS = frozenset({"type", "id", "name", "input"})
_THINKING_KEYS = frozenset({"type", "thinking", "signature"})
_REDACTED_KEYS = frozenset({"type", "data"})
_RESULT_KEYS = frozenset({"type", "tool_use_id", "content", "is_error"})
_TOOL_KEYS = frozenset({"name", "description", "input_schema", "strict"})
_TOOL_KEYS_LOOSE = _TOOL_KEYS - {"strict"}  # a non-boolean strict stays in extra
_CHOICE_KEYS = frozenset({"type", "name", "disable_parallel_tool_use"})
_THINKING_CONFIG_KEYS = frozenset({"type", "budget_tokens", "display"})
_CHOICE_MODES: dict[str, ChoiceMode] = {
    "auto": "auto",
    "any": "required",
    "tool": "tool",
    "none": "none",
}
_DISPLAY = {"summarized": True, "omitted": False}


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def decode_request(
    body: Mapping[str, Any], meta: RequestMeta, *, count: bool = False
) -> CanonicalRequest:
    """The canonical form of a Messages body (``count``: a ``count_tokens`` body)."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad("Field required" if model is None else "Input should be a model id", "model")
    req = CanonicalRequest(protocol=PROTOCOL, model=model.strip())
    max_tokens = _opt_int(body, "max_tokens")
    if max_tokens is None and not count:
        raise _bad("Field required", "max_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise _bad("Input should be greater than or equal to 1", "max_tokens")
    req.max_output_tokens = max_tokens
    system = _decode_system(body.get("system"))
    req.messages = ([system] if system is not None else []) + _decode_messages(body.get("messages"))
    if (tools := body.get("tools")) is not None:
        req.tools = _decode_tools(tools)
    if (choice := body.get("tool_choice")) is not None:
        _decode_tool_choice(choice, req)
    req.temperature = _opt_number(body, "temperature")
    req.top_p = _opt_number(body, "top_p")
    req.top_k = _opt_int(body, "top_k")
    if (stop := body.get("stop_sequences")) is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("Input should be a valid list of strings", "stop_sequences")
        req.stop = list(stop)
    if (metadata := body.get("metadata")) is not None:
        _decode_metadata(metadata, req)
    if (thinking := body.get("thinking")) is not None:
        _decode_thinking(thinking, req)
    if (output_config := body.get("output_config")) is not None:
        _decode_output_config(output_config, req)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("Input should be a valid boolean", "stream")
    req.stream = stream is True
    for key, value in body.items():
        if key not in _KNOWN:
            req.extra[key] = value
    for header in FORWARDED_HEADERS:
        if (value := meta.headers.get(header)) is not None:
            req.hints[header] = value
    return req


# -- scalars -------------------------------------------------------------------------------


def _opt_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad("Input should be a valid integer", key)
    return value


def _opt_number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad("Input should be a valid number", key)
    return float(value)


# -- system and messages -------------------------------------------------------------------


def _decode_system(value: Any) -> Message | None:
    if value is None:
        return None
    if isinstance(value, str):
        return Message(role="system", content=[TextPart(value)], plain=True)
    if not isinstance(value, list):
        raise _bad("Input should be a valid string or a list of text blocks", "system")
    parts: list[Part] = []
    for i, block in enumerate(value):
        where = f"system.{i}"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _bad("Input should be a text block", where)
        if not isinstance(block.get("text"), str):
            raise _bad("Input should be a valid string", f"{where}.text")
        parts.append(TextPart(block["text"], extra=rest(block, _TEXT_KEYS)))
    return Message(role="system", content=parts)


def _decode_messages(value: Any) -> list[Message]:
    if value is None:
        raise _bad("Field required", "messages")
    if not isinstance(value, list):
        raise _bad("Input should be a valid list", "messages")
    if not value:
        raise _bad("at least one message is required", "messages")
    out: list[Message] = []
    for i, message in enumerate(value):
        out.extend(_decode_message(message, f"messages.{i}"))
    return out


def _decode_message(raw: Any, where: str) -> list[Message]:
    if not isinstance(raw, dict):
        raise _bad("Input should be a valid dictionary", where)
    role = raw.get("role")
    if role not in _ROLES:
        raise _bad("Input should be 'user' or 'assistant'", f"{where}.role")
    extra = rest(raw, _MESSAGE_KEYS)
    content = raw.get("content")
    if content is None:
        raise _bad("Field required", f"{where}.content")
    if isinstance(content, str):
        return [Message(role=role, content=[TextPart(content)], plain=True, extra=extra)]
    if not isinstance(content, list):
        raise _bad("Input should be a valid string or a list of content blocks", f"{where}.content")
    if role != "user":
        parts = [_decode_block(b, f"{where}.content.{j}") for j, b in enumerate(content)]
        return [Message(role=role, content=parts, extra=extra)]
    # A user message: every tool_result becomes its own tool message, in order.
    out: list[Message] = []
    pending: list[Part] = []
    for j, block in enumerate(content):
        path = f"{where}.content.{j}"
        if isinstance(block, dict) and block.get("type") == "tool_result":
            if pending:
                out.append(Message(role="user", content=pending))
                pending = []
            out.append(_decode_tool_result(block, path))
        else:
            pending.append(_decode_block(block, path))
    if pending or not out:
        out.append(Message(role="user", content=pending))
    for message in out:
        if message.role == "user":
            message.extra = extra  # the wire message's own extra fields (rare)
            break
    return out


def _decode_block(block: Any, where: str) -> Part:
    if not isinstance(block, dict):
        raise _bad("Input should be a valid dictionary", where)
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _bad("Field required", f"{where}.type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _bad("Input should be a valid string", f"{where}.text")
        return TextPart(block["text"], extra=rest(block, _TEXT_KEYS))
    if kind == "image":
        return _decode_image(block, where) or OpaquePart(protocol=PROTOCOL, data=block)
    if kind == "tool_use":
        for key in ("id", "name"):
            if not isinstance(block.get(key), str):
                raise _bad("Field required", f"{where}.{key}")
        return ToolCallPart(
            id=block["id"],
            name=block["name"],
            arguments=tool_arguments(block.get("input", {})),
            extra=rest(block, _TOOL_USE_KEYS),
        )
    if kind == "thinking":
        signature = block.get("signature")
        if not isinstance(block.get("thinking"), str):
            raise _bad("Input should be a valid string", f"{where}.thinking")
        if signature is not None and not isinstance(signature, str):
            raise _bad("Input should be a valid string", f"{where}.signature")
        return ReasoningPart(
            text=block["thinking"],
            signature=signature,
            provider=PROTOCOL,
            extra=rest(block, _THINKING_KEYS),
        )
    if kind == "redacted_thinking":
        if not isinstance(block.get("data"), str):
            raise _bad("Input should be a valid string", f"{where}.data")
        return ReasoningPart(
            redacted=block["data"], provider=PROTOCOL, extra=rest(block, _REDACTED_KEYS)
        )
    return OpaquePart(protocol=PROTOCOL, data=block)


def _decode_image(block: dict[str, Any], where: str) -> ImagePart | None:
    """An image with a base64 or url source; None for other sources (kept opaque)."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad("Field required", f"{where}.source")
    extra = rest(block, _IMAGE_KEYS)
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str):
        if source.keys() <= {"type", "media_type", "data"}:
            media_type = source.get("media_type")
            return ImagePart(
                data=source["data"],
                media_type=media_type if isinstance(media_type, str) else None,
                extra=extra,
            )
    elif kind == "url" and isinstance(source.get("url"), str) and source.keys() <= {"type", "url"}:
        return ImagePart(url=source["url"], extra=extra)
    return None


def _decode_tool_result(block: dict[str, Any], where: str) -> Message:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str):
        raise _bad("Field required", f"{where}.tool_use_id")
    extra = rest(block, _RESULT_KEYS) or {}
    if "is_error" in block and block["is_error"] is not True:
        extra["is_error"] = block["is_error"]
    content = block.get("content")
    parts: list[TextPart | ImagePart] = []
    plain = False
    if content is None:
        extra["content"] = None  # absent (or null): re-sent without content
    elif isinstance(content, str):
        parts.append(TextPart(content))
        plain = True
    elif isinstance(content, list):
        for k, item in enumerate(content):
            part = _decode_block(item, f"{where}.content.{k}")
            if isinstance(part, TextPart | ImagePart):
                parts.append(part)
            else:
                extra["content"] = content  # blocks the canonical model cannot hold
    else:
        raise _bad("Input should be a valid string or a list of content blocks", f"{where}.content")
    result = ToolResultPart(
        tool_call_id=call_id, content=parts, is_error=block.get("is_error") is True
    )
    return Message(role="tool", content=[result], plain=plain, extra=extra or None)


# -- tools ---------------------------------------------------------------------------------


def _decode_tools(value: Any) -> list[Tool]:
    if not isinstance(value, list):
        raise _bad("Input should be a valid list", "tools")
    out: list[Tool] = []
    for i, tool in enumerate(value):
        where = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _bad("Input should be a valid dictionary", where)
        kind = tool.get("type")
        if kind is not None and kind != "custom":
            out.append(Tool(name=str(tool.get("name") or ""), opaque=tool))
            continue
        if not isinstance(tool.get("name"), str):
            raise _bad("Field required", f"{where}.name")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            problem = "Field required" if schema is None else "Input should be an object"
            raise _bad(problem, f"{where}.input_schema")
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise _bad("Input should be a valid string", f"{where}.description")
        strict = tool.get("strict")
        known = (
            _TOOL_KEYS if strict is None or isinstance(strict, bool) else _TOOL_KEYS - {"strict"}
        )
        out.append(
            Tool(
                name=tool["name"],
                description=description,
                parameters=schema,
                strict=strict if isinstance(strict, bool) else None,
                extra=rest(tool, known),
            )
        )
    return out


def _decode_tool_choice(choice: Any, req: CanonicalRequest) -> None:
    if not isinstance(choice, dict):
        raise _bad("Input should be a valid dictionary", "tool_choice")
    mode = _CHOICE_MODES.get(str(choice.get("type")))
    name = choice.get("name")
    disable = choice.get("disable_parallel_tool_use")
    if (
        mode is None
        or (mode == "tool") != isinstance(name, str)
        or not (disable is None or isinstance(disable, bool))
        or not choice.keys() <= _CHOICE_KEYS
    ):
        req.extra["tool_choice"] = choice  # a shape the canonical model cannot hold
        return
    req.tool_choice = ToolChoice(mode=mode, name=name if mode == "tool" else None)
    if disable is not None:
        req.parallel_tool_calls = not disable


# -- metadata, thinking, output_config -----------------------------------------------------


def _decode_metadata(metadata: Any, req: CanonicalRequest) -> None:
    if not isinstance(metadata, dict):
        raise _bad("Input should be a valid dictionary", "metadata")
    user = metadata.get("user_id")
    if isinstance(user, str):
        req.user = user
    other = {k: v for k, v in metadata.items() if k != "user_id" or not isinstance(v, str)}
    if other or not metadata:
        req.extra["metadata"] = other


def _reasoning(req: CanonicalRequest) -> Reasoning:
    if req.reasoning is None:
        req.reasoning = Reasoning()
    return req.reasoning


def _decode_thinking(thinking: Any, req: CanonicalRequest) -> None:
    if not isinstance(thinking, dict):
        raise _bad("Input should be a valid dictionary", "thinking")
    kind = thinking.get("type")
    display = thinking.get("display")
    if kind not in ("enabled", "disabled", "adaptive") or not (
        display is None or display in _DISPLAY
    ):
        req.extra["thinking"] = thinking  # a newer form: same protocol only
        return
    reasoning = _reasoning(req)
    reasoning.enabled = kind != "disabled"
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, float) and budget.is_integer():
            budget = int(budget)
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise _bad("Field required", "thinking.enabled.budget_tokens")
        reasoning.budget_tokens = budget
    elif kind == "adaptive":
        req.hints[HINT_THINKING_TYPE] = "adaptive"
    if display is not None:
        reasoning.include_thoughts = _DISPLAY[display]
    if other := rest(thinking, _THINKING_CONFIG_KEYS):
        req.extra["thinking"] = other


def _decode_output_config(config: Any, req: CanonicalRequest) -> None:
    if not isinstance(config, dict):
        raise _bad("Input should be a valid dictionary", "output_config")
    other = dict(config)
    effort = config.get("effort")
    if isinstance(effort, str):
        _reasoning(req).effort = effort
        del other["effort"]
    fmt = config.get("format")
    if (
        isinstance(fmt, dict)
        and fmt.get("type") == "json_schema"
        and isinstance(fmt.get("schema"), dict)
        and fmt.keys() <= {"type", "schema"}
    ):
        req.response_format = ResponseFormat(type="json_schema", schema=fmt["schema"])
        del other["format"]
    if other or not config:
        req.extra["output_config"] = other
