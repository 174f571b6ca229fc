"""OpenAI Chat Completions requests <-> canonical requests."""

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
    ReasoningPart,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from extproc.codecs.fields import optional, optional_number
from extproc.errors import InvalidRequest

PROTOCOL = "openai-chat"
PATH = "/chat/completions"

# Top-level fields with a canonical home; everything else goes to ``extra``.
_KNOWN = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "reasoning_effort",
        "stream",
        "stream_options",
        "user",
        "response_format",
    }
)
_MESSAGE_KNOWN = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
_TEXT_KEYS = frozenset({"type", "text"})
_IMAGE_KEYS = frozenset({"type", "image_url"})
_CALL_KEYS = frozenset({"id", "type", "function"})
_TOOL_KEYS = frozenset({"type", "function"})
_FUNCTION_KEYS = frozenset({"name", "description", "parameters", "strict"})
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})

_encoder = msgspec.json.Encoder()


# -- decode ------------------------------------------------------------------


def decode_request(body: Mapping[str, Any]) -> CanonicalRequest:
    model = body.get("model")
    if model is None:
        raise InvalidRequest(
            "you must provide a model parameter", param="model", code="missing_model"
        )
    if not isinstance(model, str):
        raise InvalidRequest("'model' must be a string", param="model", code="invalid_type")
    if not model.strip():
        raise InvalidRequest("'model' must not be empty", param="model", code="invalid_model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "'messages' must be a non-empty array", param="messages", code="invalid_messages"
        )
    req = CanonicalRequest(
        protocol=PROTOCOL,
        model=model.strip(),
        messages=[_decode_message(m, i) for i, m in enumerate(messages)],
    )
    if (tools := body.get("tools")) is not None:
        req.tools = _decode_tools(tools)
    if (choice := body.get("tool_choice")) is not None:
        decoded = _decode_tool_choice(choice)
        if decoded is None:
            req.extra["tool_choice"] = choice
        else:
            req.tool_choice = decoded
    req.parallel_tool_calls = optional(body, "parallel_tool_calls", bool)
    req.temperature = optional_number(body, "temperature")
    req.top_p = optional_number(body, "top_p")
    req.presence_penalty = optional_number(body, "presence_penalty")
    req.frequency_penalty = optional_number(body, "frequency_penalty")
    req.seed = optional(body, "seed", int)
    req.user = optional(body, "user", str)
    for field in ("max_completion_tokens", "max_tokens"):
        if (value := optional(body, field, int)) is not None:
            req.max_output_tokens = value
            req.hints["max_tokens_field"] = field
            break
    stop = body.get("stop")
    if isinstance(stop, str):
        req.stop = [stop]
        req.hints["stop_form"] = "string"
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        req.stop = list(stop)
    elif stop is not None:
        raise InvalidRequest("'stop' must be a string or an array of strings", param="stop")
    if (effort := optional(body, "reasoning_effort", str)) is not None:
        req.reasoning = Reasoning(effort=effort)
    if (response_format := body.get("response_format")) is not None:
        decoded_format = _decode_response_format(response_format)
        if decoded_format is None:
            req.extra["response_format"] = response_format
        else:
            req.response_format = decoded_format
    req.stream = bool(optional(body, "stream", bool))
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object", param="stream_options")
        req.include_usage = options.get("include_usage") is True
        rest = {k: v for k, v in options.items() if k != "include_usage"}
        if rest:
            req.extra["stream_options"] = rest
    for key, value in body.items():
        if key not in _KNOWN:
            req.extra[key] = value
    return req


def _decode_message(raw: Any, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    role = raw.get("role")
    if role not in _ROLES:
        raise InvalidRequest(
            f"{where}.role must be one of system, developer, user, assistant, tool (got {role!r})",
            param=f"{where}.role",
        )
    content = raw.get("content")
    extra = {k: v for k, v in raw.items() if k not in _MESSAGE_KNOWN} or None
    name = raw.get("name") if isinstance(raw.get("name"), str) else None
    if role == "tool":
        call_id = raw.get("tool_call_id")
        if not isinstance(call_id, str):
            raise InvalidRequest(
                f"{where}.tool_call_id is required for tool messages", param=f"{where}.tool_call_id"
            )
        parts = _decode_content(content, where, allow_images=False)
        result = ToolResultPart(
            tool_call_id=call_id,
            content=[p for p in parts if isinstance(p, TextPart | ImagePart)],
        )
        return Message(
            role="tool", content=[result], name=name, plain=isinstance(content, str), extra=extra
        )
    parts = _decode_content(content, where, allow_images=role == "user")
    if role == "assistant":
        tool_calls = raw.get("tool_calls")
        if tool_calls is not None:
            if not isinstance(tool_calls, list):
                raise InvalidRequest(f"{where}.tool_calls must be an array", param=where)
            parts.extend(
                _decode_tool_call(c, f"{where}.tool_calls[{i}]") for i, c in enumerate(tool_calls)
            )
    elif content is None:
        raise InvalidRequest(f"{where}.content is required for {role} messages", param=where)
    return Message(role=role, content=parts, name=name, plain=isinstance(content, str), extra=extra)


def _decode_content(content: Any, where: str, *, allow_images: bool) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(text=content)]
    if not isinstance(content, list):
        raise InvalidRequest(
            f"{where}.content must be a string or an array of content parts", param=where
        )
    parts: list[Part] = []
    for i, part in enumerate(content):
        if not isinstance(part, dict):
            raise InvalidRequest(f"{where}.content[{i}] must be an object", param=where)
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(TextPart(text=part["text"], extra=_rest(part, _TEXT_KEYS)))
        elif kind == "image_url" and allow_images:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise InvalidRequest(
                    f"{where}.content[{i}].image_url.url must be a string", param=where
                )
            detail = image.get("detail") if isinstance(image, dict) else None
            parts.append(
                ImagePart(
                    url=url,
                    detail=detail if isinstance(detail, str) else None,
                    extra=_rest(part, _IMAGE_KEYS),
                )
            )
        else:
            parts.append(OpaquePart(protocol=PROTOCOL, data=part))
    return parts


def _decode_tool_call(raw: Any, where: str) -> ToolCallPart:
    if not isinstance(raw, dict) or not isinstance(raw.get("function"), dict):
        raise InvalidRequest(f"{where} must be a function tool call", param=where)
    function = raw["function"]
    name = function.get("name")
    if not isinstance(name, str):
        raise InvalidRequest(f"{where}.function.name must be a string", param=where)
    arguments = function.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = _encoder.encode(arguments).decode()
    call_id = raw.get("id")
    return ToolCallPart(
        id=call_id if isinstance(call_id, str) else "",
        name=name,
        arguments=arguments,
        extra=_rest(raw, _CALL_KEYS),
    )


def _decode_tools(tools: Any) -> list[Tool]:
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    out: list[Tool] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise InvalidRequest(f"tools[{i}] must be an object", param=f"tools[{i}]")
        if tool.get("type") != "function":
            # Chat nests a custom tool's name: {"type": "custom", "custom": {"name": ...}}
            inner = tool.get(tool["type"]) if isinstance(tool.get("type"), str) else None
            name = inner.get("name") if isinstance(inner, dict) else tool.get("name")
            out.append(Tool(name=str(name or ""), opaque=tool))
            continue
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"tools[{i}].function.name is required", param=f"tools[{i}]")
        parameters = function.get("parameters")
        strict = function.get("strict")
        description = function.get("description")
        extra = {}
        if tool_rest := _rest(tool, _TOOL_KEYS):
            extra["tool"] = tool_rest
        if function_rest := _rest(function, _FUNCTION_KEYS):
            extra["function"] = function_rest
        out.append(
            Tool(
                name=function["name"],
                description=description if isinstance(description, str) else None,
                parameters=parameters if isinstance(parameters, dict) else None,
                strict=strict if isinstance(strict, bool) else None,
                extra=extra or None,
            )
        )
    return out


def _rest(obj: dict[str, Any], known: frozenset[str]) -> dict[str, Any] | None:
    """The fields of ``obj`` the canonical model has no home for, or None."""
    if len(obj) <= len(known) and obj.keys() <= known:
        return None
    rest = {k: v for k, v in obj.items() if k not in known}
    return rest or None


def _decode_response_format(value: Any) -> ResponseFormat | None:
    """The canonical form, or None for shapes it cannot hold (kept as extra;
    the provider validates them)."""
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if kind in ("text", "json_object") and len(value) == 1:
        return ResponseFormat(type=kind)
    spec = value.get("json_schema")
    if kind == "json_schema" and isinstance(spec, dict) and isinstance(spec.get("name"), str):
        if set(spec) - {"name", "schema", "strict", "description"} or len(value) != 2:
            return None
        schema = spec.get("schema")
        strict = spec.get("strict")
        if (schema is not None and not isinstance(schema, dict)) or (
            strict is not None and not isinstance(strict, bool)
        ):
            return None
        description = spec.get("description")
        return ResponseFormat(
            type="json_schema",
            name=spec["name"],
            schema=schema,
            strict=strict,
            description=description if isinstance(description, str) else None,
        )
    return None


def _encode_response_format(value: ResponseFormat) -> dict[str, Any]:
    if value.type != "json_schema":
        return {"type": value.type}
    spec: dict[str, Any] = {"name": value.name or "response"}
    if value.description is not None:
        spec["description"] = value.description
    if value.schema is not None:
        spec["schema"] = value.schema
    if value.strict is not None:
        spec["strict"] = value.strict
    return {"type": "json_schema", "json_schema": spec}


def _effort(reasoning: Reasoning) -> str | None:
    """``reasoning_effort`` for a request; a budget maps to a level (heuristic)."""
    if reasoning.effort is not None:
        return reasoning.effort
    if reasoning.enabled is False:
        return None
    if reasoning.budget_tokens is not None:
        budget = reasoning.budget_tokens
        return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"
    return None


def _decode_tool_choice(choice: Any) -> ToolChoice | None:
    if choice in ("auto", "none", "required"):
        return ToolChoice(mode=choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return ToolChoice(mode="tool", name=function["name"])
    if not isinstance(choice, dict):
        raise InvalidRequest(
            "'tool_choice' must be 'none', 'auto', 'required' or a function choice",
            param="tool_choice",
        )
    return None  # other object forms (allowed_tools, custom) travel as extra


# -- encode ------------------------------------------------------------------


def encode_request(
    req: CanonicalRequest, model: str, *, max_tokens_field: str | None = None
) -> dict[str, Any]:
    same = req.protocol == PROTOCOL
    body: dict[str, Any] = {"model": model, "messages": []}
    messages: list[dict[str, Any]] = body["messages"]
    for message in req.messages:
        messages.extend(_encode_message(message, same))
    if req.tools is not None:
        tools = [t for t in (_encode_tool(t, same) for t in req.tools) if t is not None]
        # An empty list is the client's own choice only in the same protocol;
        # when every tool was of a kind this target cannot take, send none.
        if tools or same:
            body["tools"] = tools
    if req.tool_choice is not None:
        choice = req.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if choice.mode == "tool"
            else choice.mode
        )
    _put(body, "parallel_tool_calls", req.parallel_tool_calls)
    _put(body, "temperature", req.temperature)
    _put(body, "top_p", req.top_p)
    _put(body, "presence_penalty", req.presence_penalty)
    _put(body, "frequency_penalty", req.frequency_penalty)
    _put(body, "seed", req.seed)
    if req.stop is not None:
        single = same and req.hints.get("stop_form") == "string" and len(req.stop) == 1
        body["stop"] = req.stop[0] if single else req.stop
    _put(body, "user", req.user)
    if req.max_output_tokens is not None:
        field = req.hints.get("max_tokens_field") or max_tokens_field
        body[field or "max_tokens"] = req.max_output_tokens
    if req.reasoning is not None and (effort := _effort(req.reasoning)) is not None:
        body["reasoning_effort"] = effort
    if req.response_format is not None:
        body["response_format"] = _encode_response_format(req.response_format)
    if same:
        for key, value in req.extra.items():
            if key == "stream_options":
                continue
            body.setdefault(key, value)
    if req.stream:
        body["stream"] = True
        options = dict(req.extra.get("stream_options") or {}) if same else {}
        # Always ask for usage: the proxy accounts for it and hides it again
        # from clients that did not ask (see the stream encoder).
        options["include_usage"] = True
        body["stream_options"] = options
    body.update(req.passthrough)
    return body


def _put(body: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        body[key] = value


def _encode_message(message: Message, same: bool) -> list[dict[str, Any]]:
    role = message.role
    if role == "tool":
        out = []
        for part in message.content:
            if isinstance(part, ToolResultPart):
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": part.tool_call_id,
                        "content": _encode_parts(part.content, message.plain, same),
                    }
                )
        if same and message.name is not None and len(out) == 1:
            out[0]["name"] = message.name
        if same and message.extra and len(out) == 1:
            out[0].update({k: v for k, v in message.extra.items() if k not in out[0]})
        return out
    msg: dict[str, Any] = {"role": role}
    text_parts: list[Part] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, ToolCallPart):
            call = {
                "id": part.id,
                "type": "function",
                "function": {"name": part.name, "arguments": part.arguments},
            }
            if same and part.extra:
                call.update(part.extra)
            calls.append(call)
        elif isinstance(part, ToolResultPart):
            # Tool results inside other roles (Anthropic style) become tool messages.
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": part.tool_call_id,
                    "content": _encode_parts(part.content, True, same),
                }
            )
        elif isinstance(part, ReasoningPart):
            continue  # Chat Completions takes no reasoning input
        else:
            text_parts.append(part)
    if role == "assistant":
        msg["content"] = _encode_parts(text_parts, message.plain, same) if text_parts else None
        if calls:
            msg["tool_calls"] = calls
    else:
        msg["content"] = _encode_parts(text_parts, message.plain, same)
    if message.name is not None:
        msg["name"] = message.name
    if same and message.extra:
        for key, value in message.extra.items():
            msg.setdefault(key, value)
    if results and not text_parts and not calls:
        return results
    return [*results, msg] if results else [msg]


def _encode_parts(parts: list[Any], plain: bool, same: bool) -> str | list[dict[str, Any]]:
    if plain and all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts)
    if not same and parts and all(isinstance(p, TextPart) for p in parts):
        # From another protocol, text-only content goes as a string: many
        # OpenAI-compatible servers (llama.cpp's, older vLLM) accept arrays
        # only in user messages. Blocks are joined with a blank line.
        return "\n\n".join(p.text for p in parts)
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            text: dict[str, Any] = {"type": "text", "text": part.text}
            if same and part.extra:
                text.update(part.extra)
            out.append(text)
        elif isinstance(part, ImagePart):
            url = part.url or f"data:{part.media_type or 'image/png'};base64,{part.data or ''}"
            image: dict[str, Any] = {"url": url}
            if part.detail:
                image["detail"] = part.detail
            entry: dict[str, Any] = {"type": "image_url", "image_url": image}
            if same and part.extra:
                entry.update(part.extra)
            out.append(entry)
        elif isinstance(part, OpaquePart) and same and part.protocol == PROTOCOL:
            out.append(part.data)
    if len(out) == 1 and out[0].get("type") == "text" and plain:
        return str(out[0]["text"])
    return out


def _encode_tool(tool: Tool, same: bool) -> dict[str, Any] | None:
    if tool.opaque is not None:
        return tool.opaque if same else None
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    out: dict[str, Any] = {"type": "function", "function": function}
    if same and tool.extra:
        function.update(tool.extra.get("function") or {})
        out.update(tool.extra.get("tool") or {})
    return out
