"""Canonical requests -> Gemini ``generateContent`` requests (backend schema ``gemini``).

Path: ``/models/{model}:generateContent``, or
``/models/{model}:streamGenerateContent?alt=sse`` for streams (the backend's
base URL ends in ``/v1beta``). The body is lowerCamelCase.

Mapping rules (WIRE_FORMATS §4.2, §5; docs/translation.md):

* ``system``/``developer`` messages -> ``systemInstruction``: their texts joined,
  in order, with a blank line (positions are lost); a Gemini client's own
  instruction parts come back as they were.
* ``user`` -> role ``user``, ``assistant`` -> role ``model``, ``tool`` -> role
  ``user`` with ``functionResponse`` parts. Consecutive messages of the same
  Gemini role share one content (so consecutive tool results are one user
  content, and Gemini sees no same-role runs); for a Gemini client the
  content boundaries it sent are kept instead (``extra["sameContent"]``).
* A tool result's ``functionResponse.name`` is its canonical ``name``, else the
  name of the assistant tool call with that id; a result answering no known
  call is a 400. The ``response`` is ``{"output": text}`` (``{"error": text}``
  for errors); images in a result follow it as ``inlineData`` parts.
* A tool choice becomes ``toolConfig`` only when function declarations are sent
  (Gemini rejects a calling mode without them); ``parallel_tool_calls`` is dropped.
* Tool calls -> ``functionCall`` with ``args`` an object (``""`` -> ``{}``,
  not a JSON object -> ``{"_raw_arguments": text}``); no ``id`` unless the Gemini
  client sent one.
* Reasoning parts are sent only when they came from Gemini
  (``provider == "gemini"``), as ``thought: true`` parts with their
  ``thoughtSignature``; other providers' reasoning is dropped. A Gemini
  client's ``thoughtSignature`` on text and call parts comes back in place
  (``extra``); replay tokens never cross providers.
* Images: base64 / ``data:`` -> ``inlineData``; Files API URIs -> ``fileData``;
  other ``http(s)`` URLs -> 400.
* Opaque parts and tools, unknown fields (``safetySettings``...) are sent only
  for a Gemini client; ``passthrough`` fields always: ``generationConfig`` and
  ``thinkingConfig`` field names go inside those objects, others at the top.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from extproc.canonical import (
    CanonicalRequest,
    ImagePart,
    Message,
    OpaquePart,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from extproc.codecs.base import REQUIRES_PROTOCOL, EncodedRequest
from extproc.codecs.gemini import generation as _generation
from extproc.codecs.gemini import tools as _tools
from extproc.codecs.gemini.parts import (
    call_out,
    image_out,
    result_extras,
    result_response,
    text_out,
    thought_out,
)
from extproc.codecs.gemini.wire import PROTOCOL, SAME_CONTENT, camel, encoder
from extproc.errors import InvalidRequest

_SYSTEM_ROLES = ("system", "developer")
_GEMINI_ROLE = {"user": "user", "tool": "user", "assistant": "model"}


def request_path(model: str, stream: bool) -> str:
    if model.startswith("models/"):
        model = model[len("models/") :]
    if stream:
        return f"/models/{model}:streamGenerateContent?alt=sse"
    return f"/models/{model}:generateContent"


def encode_request(
    request: CanonicalRequest,
    model: str,
    adjust: Callable[[dict[str, Any]], None] | None = None,
) -> EncodedRequest:
    required = request.hints.get(REQUIRES_PROTOCOL)
    if required is not None and required != PROTOCOL:
        raise InvalidRequest(
            f"this request needs a {required} backend; the chosen backend speaks gemini",
            code="unsupported_for_backend",
        )
    body = encode_body(request, model)
    if adjust is not None:
        adjust(body)
    return EncodedRequest(request_path(model, request.stream), encoder.encode(body))


def encode_body(req: CanonicalRequest, model: str) -> dict[str, Any]:
    same = req.protocol == PROTOCOL
    body: dict[str, Any] = {"contents": _Contents(req, same).build()}
    system = _system_instruction(req.messages, same)
    if system is not None:
        body["systemInstruction"] = system
    tools = _tools.encode_tools(req.tools or [], same)
    if tools:
        body["tools"] = tools
    tool_config = _tools.encode_tool_config(req, same)
    declared = any("functionDeclarations" in tool for tool in tools)
    if tool_config is not None and (same or declared):
        body["toolConfig"] = tool_config
    generation = _generation.encode_generation(req, model, same)
    if same:
        for key, value in req.extra.items():
            if key not in ("generationConfig", "toolConfig"):
                body.setdefault(key, value)
    _passthrough(req.passthrough, body, generation)
    if generation:
        body["generationConfig"] = generation
    return body


def _passthrough(fields: dict[str, Any], body: dict[str, Any], generation: dict[str, Any]) -> None:
    for key, value in fields.items():
        name = camel(key)
        if name in _generation.THINKING_PASSTHROUGH:
            generation.setdefault("thinkingConfig", {})[name] = value
        elif name in _generation.GENERATION_PASSTHROUGH:
            generation[name] = value
        else:
            body[key] = value


def _system_instruction(messages: list[Message], same: bool) -> dict[str, Any] | None:
    systems = [m for m in messages if m.role in _SYSTEM_ROLES]
    if not systems:
        return None
    if same:
        parts = [text_out(p, None) for m in systems for p in m.content if isinstance(p, TextPart)]
        instruction: dict[str, Any] = {"parts": parts}
        for message in systems:
            for key, value in (message.extra or {}).items():
                instruction.setdefault(key, value)
        return instruction if parts else None
    texts = ["".join(p.text for p in m.content if isinstance(p, TextPart)) for m in systems]
    text = "\n\n".join(t for t in texts if t)
    return {"parts": [{"text": text}]} if text else None


class _Contents:
    """Builds ``contents`` from the non-system messages."""

    def __init__(self, req: CanonicalRequest, same: bool) -> None:
        self.req = req
        self.same = same
        self.keep: frozenset[str] | None = None if same else frozenset()
        self.names = {
            p.id: p.name for m in req.messages for p in m.content if isinstance(p, ToolCallPart)
        }
        self.contents: list[dict[str, Any]] = []

    def build(self) -> list[dict[str, Any]]:
        for index, message in enumerate(self.req.messages):
            if message.role in _SYSTEM_ROLES:
                continue
            where = f"messages[{index}]"
            parts: list[dict[str, Any]] = []
            for j, part in enumerate(message.content):
                parts.extend(self._part(part, f"{where}.content[{j}]"))
            self._add(message, parts)
        if not self.contents:
            raise InvalidRequest(
                "a Gemini backend needs at least one user or assistant message",
                param="messages",
            )
        return self.contents

    def _add(self, message: Message, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        role = _GEMINI_ROLE[message.role]
        extra = message.extra or {}
        last = self.contents[-1] if self.contents else None
        joins = extra.get(SAME_CONTENT) is True if self.same else True
        if last is not None and last["role"] == role and joins:
            last["parts"].extend(parts)
            return
        content: dict[str, Any] = {"role": role, "parts": parts}
        if self.same:
            content.update({k: v for k, v in extra.items() if k != SAME_CONTENT})
        self.contents.append(content)

    def _part(self, part: Part, where: str) -> list[dict[str, Any]]:
        keep = self.keep
        if isinstance(part, TextPart):
            return [text_out(part, keep)]
        if isinstance(part, ToolCallPart):
            return [call_out(part, keep, with_id=False)]
        if isinstance(part, ToolResultPart):
            return self._result(part, where)
        if isinstance(part, ImagePart):
            return [image_out(part, keep, where)]
        if isinstance(part, ReasoningPart):
            if part.provider != PROTOCOL or part.redacted is not None:
                return []
            return [thought_out(part, keep, signed=True)]
        if isinstance(part, OpaquePart) and part.protocol == PROTOCOL and self.same:
            return [part.data]
        return []

    def _result(self, part: ToolResultPart, where: str) -> list[dict[str, Any]]:
        name = part.name or self.names.get(part.tool_call_id)
        if not name:
            raise InvalidRequest(
                f"the tool result {part.tool_call_id!r} answers no earlier tool call; a Gemini "
                "backend needs the function's name",
                param=where,
            )
        nested, extras = result_extras(part, self.same)
        response: dict[str, Any] = {"name": name, "response": result_response(part, self.same)}
        response.update(nested)
        out = [{"functionResponse": response, **extras}]
        out.extend(image_out(p, self.keep, where) for p in part.content if isinstance(p, ImagePart))
        return out
