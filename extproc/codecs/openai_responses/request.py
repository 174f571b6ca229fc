"""OpenAI Responses request bodies -> canonical requests (the frontend face).

Mapping rules:

* ``instructions`` becomes a leading ``system`` message marked in its
  ``extra`` (so the same protocol sends it back as ``instructions``);
  ``system`` / ``developer`` message items stay messages where they are.
* ``input`` as a string is one plain user message (hint ``input=string``).
  Items, in order: message items are messages (string content is ``plain``);
  ``input_text`` / ``output_text`` are text parts, ``input_image`` with an
  ``image_url`` an image part, other content parts (files, refusals...) opaque
  parts. Assistant-side items - assistant messages, ``function_call``,
  ``reasoning`` and unknown calls - that follow each other form one assistant
  message (a second assistant message item starts a new one), in item order:
  ``function_call`` is a tool call whose canonical id is the ``call_id`` (the
  ``fc_`` item id stays in ``extra``), ``reasoning`` a ``ReasoningPart`` of
  provider ``openai-responses`` (id and ``encrypted_content`` in ``extra``).
  Each ``function_call_output`` is a ``tool`` message with one tool result
  (string output is ``plain``; output parts a text/image list, the original
  list kept in ``extra`` when it holds more). Other ``*_output`` items are
  ``tool`` messages holding the item as an opaque part; any other unknown item
  is an opaque part of the assistant turn (opaque items are
  ``{"item": <item>}``, opaque content parts the part itself).
* ``tools``: flat function tools map to canonical tools; hosted and custom
  tools are kept whole in ``Tool.opaque``. ``tool_choice`` strings and
  ``{"type":"function","name"}`` map; other choice objects go to ``extra``.
* ``reasoning.effort`` / ``summary`` (or its deprecated alias
  ``generate_summary``) map to canonical reasoning; a summary asks for
  visible reasoning (``include_thoughts``). ``text.format`` maps to the
  canonical response format (flat ``json_schema``); ``text.verbosity`` and
  unknown formats stay in ``extra``.
* Everything else (``store``, ``include``, ``metadata``, ``truncation``,
  ``previous_response_id``...) travels in ``extra`` for the same protocol.
  Server-side state (``previous_response_id``, ``conversation``, and
  ``item_reference`` items) cannot be translated: the request is marked
  ``requires_protocol=openai-responses``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from extproc.canonical import (
    CanonicalRequest,
    ImagePart,
    Message,
    OpaquePart,
    Part,
    Reasoning,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from extproc.codecs.base import REQUIRES_PROTOCOL
from extproc.codecs.fields import optional, optional_number
from extproc.codecs.openai_responses.common import (
    INSTRUCTIONS_MARK,
    INSTRUCTIONS_VALUE,
    PROTOCOL,
    is_proxy_id,
    reasoning_part,
    rest,
)
from extproc.errors import InvalidRequest

# Top-level fields with a canonical home; everything else goes to ``extra``.
_KNOWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "reasoning",
        "text",
        "stream",
        "user",
    }
)
_STATE_FIELDS = ("previous_response_id", "conversation")
_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
_MESSAGE_KEYS = frozenset({"role", "content"})
_CALL_KEYS = frozenset({"type", "call_id", "name", "arguments"})
_OUTPUT_KEYS = frozenset({"type", "call_id", "output"})
_TOOL_KEYS = frozenset({"type", "name", "description", "parameters", "strict"})
_IMAGE_KEYS = frozenset({"type", "image_url", "detail"})
_SCHEMA_KEYS = frozenset({"type", "name", "schema", "strict", "description"})
_TEXT_TYPES = frozenset({"input_text", "output_text"})

_encoder = msgspec.json.Encoder()


def decode_request(body: Mapping[str, Any]) -> CanonicalRequest:
    req = CanonicalRequest(protocol=PROTOCOL, model=_model(body))
    if any(body.get(field) is not None for field in _STATE_FIELDS):
        req.hints[REQUIRES_PROTOCOL] = PROTOCOL
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequest("'instructions' must be a string", param="instructions")
        req.messages.append(
            Message(
                role="system",
                content=[TextPart(instructions)],
                plain=True,
                extra={INSTRUCTIONS_MARK: INSTRUCTIONS_VALUE},
            )
        )
    _decode_input(body, req)
    if (tools := body.get("tools")) is not None:
        req.tools = _decode_tools(tools)
    if (choice := body.get("tool_choice")) is not None:
        decoded = _decode_tool_choice(choice)
        if decoded is None:
            req.extra["tool_choice"] = choice
        else:
            req.tool_choice = decoded
    req.parallel_tool_calls = optional(body, "parallel_tool_calls", bool)
    req.max_output_tokens = optional(body, "max_output_tokens", int)
    req.temperature = optional_number(body, "temperature")
    req.top_p = optional_number(body, "top_p")
    req.user = optional(body, "user", str)
    req.stream = bool(optional(body, "stream", bool))
    if (reasoning := body.get("reasoning")) is not None:
        req.reasoning = _decode_reasoning(reasoning, req.extra)
    if (text := body.get("text")) is not None:
        req.response_format = _decode_text(text, req.extra)
    for key, value in body.items():
        if key not in _KNOWN:
            req.extra[key] = value
    return req


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidRequest(
            "you must provide a model parameter", param="model", code="missing_model"
        )
    if not isinstance(model, str):
        raise InvalidRequest("'model' must be a string", param="model", code="invalid_type")
    if not model.strip():
        raise InvalidRequest("'model' must not be empty", param="model", code="invalid_model")
    return model.strip()


# -- input ---------------------------------------------------------------------------


def _decode_input(body: Mapping[str, Any], req: CanonicalRequest) -> None:
    items = body.get("input")
    if items is None:
        if any(body.get(k) is not None for k in (*_STATE_FIELDS, "prompt")):
            req.hints["input"] = "none"  # the server holds (or templates) the conversation
            return
        raise InvalidRequest(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    if isinstance(items, str):
        req.messages.append(Message(role="user", content=[TextPart(items)], plain=True))
        req.hints["input"] = "string"
        return
    if not isinstance(items, list):
        raise InvalidRequest("'input' must be a string or an array of items", param="input")
    _InputReader(req).read(items)


class _InputReader:
    """Folds the ``input`` items into canonical messages (see the module docstring)."""

    def __init__(self, req: CanonicalRequest) -> None:
        self.req = req
        self.turn: Message | None = None  # the open assistant turn
        self.turn_has_message = False
        self.call_names: dict[str, str] = {}

    def read(self, items: list[Any]) -> None:
        for index, item in enumerate(items):
            where = f"input[{index}]"
            if not isinstance(item, dict):
                raise InvalidRequest(f"{where} must be an object", param=where)
            kind = item.get("type")
            if kind is None:
                if "role" in item:
                    kind = "message"
                elif isinstance(item.get("id"), str):
                    kind = "item_reference"
                else:
                    raise InvalidRequest(f"{where} has no 'type'", param=f"{where}.type")
            if not isinstance(kind, str):
                raise InvalidRequest(f"{where}.type must be a string", param=f"{where}.type")
            if kind == "message":
                self._message(item, where)
            elif kind == "function_call":
                self._assistant().content.append(self._call(item, where))
            elif kind == "reasoning":
                self._assistant().content.append(reasoning_part(item))
            elif kind == "function_call_output":
                self.turn = None
                self.req.messages.append(self._output(item, where))
            elif kind.endswith("_output"):
                self.turn = None
                opaque = OpaquePart(protocol=PROTOCOL, data={"item": item})
                self.req.messages.append(Message(role="tool", content=[opaque]))
            else:
                if kind == "item_reference":
                    self.req.hints[REQUIRES_PROTOCOL] = PROTOCOL  # a stored item
                self._assistant().content.append(OpaquePart(protocol=PROTOCOL, data={"item": item}))

    def _assistant(self) -> Message:
        if self.turn is None:
            self.turn = Message(role="assistant")
            self.turn_has_message = False
            self.req.messages.append(self.turn)
        return self.turn

    def _message(self, item: dict[str, Any], where: str) -> None:
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise InvalidRequest(
                f"{where}.role must be one of user, assistant, system, developer (got {role!r})",
                param=f"{where}.role",
            )
        content = item.get("content")
        parts = _decode_content(content, where, assistant=role == "assistant")
        extra = _drop_proxy_id(rest(item, _MESSAGE_KEYS))
        plain = isinstance(content, str)
        if role != "assistant":
            self.turn = None
            self.req.messages.append(Message(role=role, content=parts, plain=plain, extra=extra))
            return
        if self.turn is None or self.turn_has_message:
            self.turn = None
        turn = self._assistant()
        turn.content.extend(parts)
        turn.plain = plain
        turn.extra = extra
        self.turn_has_message = True

    def _call(self, item: dict[str, Any], where: str) -> ToolCallPart:
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest(f"{where}.call_id must be a string", param=f"{where}.call_id")
        if not isinstance(name, str):
            raise InvalidRequest(f"{where}.name must be a string", param=f"{where}.name")
        arguments = item.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = _encoder.encode(arguments).decode()
        self.call_names[call_id] = name
        extra = _drop_proxy_id(rest(item, _CALL_KEYS))
        return ToolCallPart(id=call_id, name=name, arguments=arguments, extra=extra)

    def _output(self, item: dict[str, Any], where: str) -> Message:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest(f"{where}.call_id must be a string", param=f"{where}.call_id")
        output = item.get("output")
        extra = _drop_proxy_id(rest(item, _OUTPUT_KEYS)) or {}
        if isinstance(output, str):
            content: list[TextPart | ImagePart] = [TextPart(output)]
        elif isinstance(output, list):
            parts = _decode_content(output, f"{where}.output", assistant=False)
            content = [p for p in parts if isinstance(p, TextPart | ImagePart)]
            if len(content) != len(parts) or any(p.extra for p in content):
                extra["output"] = output  # parts the canonical result cannot hold
        else:
            raise InvalidRequest(
                f"{where}.output must be a string or an array of content parts",
                param=f"{where}.output",
            )
        result = ToolResultPart(
            tool_call_id=call_id, content=content, name=self.call_names.get(call_id)
        )
        return Message(
            role="tool", content=[result], plain=isinstance(output, str), extra=extra or None
        )


def _drop_proxy_id(extra: dict[str, Any] | None) -> dict[str, Any] | None:
    """Item ids the proxy made up are not the provider's: never send them upstream."""
    if extra is not None and is_proxy_id(extra.get("id")):
        del extra["id"]
    return extra or None


def _decode_content(content: Any, where: str, *, assistant: bool) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, list):
        raise InvalidRequest(
            f"{where}.content must be a string or an array of content parts",
            param=f"{where}.content",
        )
    default_text = "output_text" if assistant else "input_text"
    parts: list[Part] = []
    for i, part in enumerate(content):
        at = f"{where}.content[{i}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"{at} must be an object", param=at)
        kind = part.get("type")
        if kind in _TEXT_TYPES:
            if not isinstance(part.get("text"), str):
                raise InvalidRequest(f"{at}.text must be a string", param=f"{at}.text")
            known = {"text", "type"} if kind == default_text else {"text"}
            parts.append(TextPart(part["text"], extra=rest(part, frozenset(known))))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            detail = part.get("detail")
            parts.append(
                ImagePart(
                    url=part["image_url"],
                    detail=detail if isinstance(detail, str) else None,
                    extra=rest(part, _IMAGE_KEYS),
                )
            )
        else:
            parts.append(OpaquePart(protocol=PROTOCOL, data=part))
    return parts


# -- tools -------------------------------------------------------------------------


def _decode_tools(tools: Any) -> list[Tool]:
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    out: list[Tool] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        if tool.get("type") != "function":
            name = tool.get("name")
            out.append(Tool(name=name if isinstance(name, str) else "", opaque=tool))
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"{where}.name is required", param=f"{where}.name")
        description, parameters, strict = (
            tool.get(k) for k in ("description", "parameters", "strict")
        )
        out.append(
            Tool(
                name=name,
                description=description if isinstance(description, str) else None,
                parameters=parameters if isinstance(parameters, dict) else None,
                strict=strict if isinstance(strict, bool) else None,
                extra=rest(tool, _TOOL_KEYS),
            )
        )
    return out


def _decode_tool_choice(choice: Any) -> ToolChoice | None:
    if choice in ("auto", "none", "required"):
        return ToolChoice(mode=choice)
    if isinstance(choice, dict):
        named = choice.get("type") == "function" and isinstance(choice.get("name"), str)
        if named and set(choice) == {"type", "name"}:
            return ToolChoice(mode="tool", name=choice["name"])
        return None  # allowed_tools, hosted, custom and mcp choices travel as extra
    raise InvalidRequest(
        "'tool_choice' must be 'none', 'auto', 'required' or a tool choice object",
        param="tool_choice",
    )


# -- reasoning and text ------------------------------------------------------------


def _decode_reasoning(value: Any, extra: dict[str, Any]) -> Reasoning:
    if not isinstance(value, dict):
        raise InvalidRequest("'reasoning' must be an object", param="reasoning")
    for key in ("effort", "summary", "generate_summary"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise InvalidRequest(f"'reasoning.{key}' must be a string", param=f"reasoning.{key}")
    summary = value.get("summary") if value.get("summary") is not None else None
    if summary is None:
        summary = value.get("generate_summary")
    reasoning = Reasoning(effort=value.get("effort"), summary=summary)
    if summary is not None and summary != "none":
        reasoning.include_thoughts = True
    if leftover := rest(value, frozenset({"effort", "summary"})):
        extra["reasoning"] = leftover
    return reasoning


def _decode_text(value: Any, extra: dict[str, Any]) -> ResponseFormat | None:
    if not isinstance(value, dict):
        raise InvalidRequest("'text' must be an object", param="text")
    decoded = _decode_format(value.get("format"))
    leftover = {k: v for k, v in value.items() if k != "format" or decoded is None}
    if leftover or decoded is None:
        extra["text"] = leftover  # verbosity, an unknown format, or an empty object
    return decoded


def _decode_format(fmt: Any) -> ResponseFormat | None:
    """The canonical format, or None for shapes it cannot hold (kept in ``extra``)."""
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind in ("text", "json_object") and len(fmt) == 1:
        return ResponseFormat(type=kind)
    if kind != "json_schema" or not fmt.keys() <= _SCHEMA_KEYS:
        return None
    name, schema, strict, description = (
        fmt.get(k) for k in ("name", "schema", "strict", "description")
    )
    if (
        not isinstance(name, str)
        or (schema is not None and not isinstance(schema, dict))
        or (strict is not None and not isinstance(strict, bool))
        or (description is not None and not isinstance(description, str))
    ):
        return None
    return ResponseFormat(
        type="json_schema", name=name, schema=schema, strict=strict, description=description
    )
