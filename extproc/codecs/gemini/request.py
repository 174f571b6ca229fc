"""Gemini ``generateContent`` / ``countTokens`` client requests -> canonical requests.

The body has no model and no stream flag: the model is the path's
``models/{model}`` segment (``RequestMeta.path_params["model"]``) and the
stream flag is the action (``streamGenerateContent``).

Mapping rules (WIRE_FORMATS §4.2, §5.1-5.4; docs/translation.md):

* ``systemInstruction`` -> one leading ``system`` message (its text parts).
* ``contents[i]`` with role ``model`` -> an ``assistant`` message; role ``user``
  (or no role) -> a ``user`` message, except that each ``functionResponse`` part
  becomes its own ``tool`` message. Tool messages come first, the content's
  other parts after them in one ``user`` message (the order every other
  protocol needs); the messages after the first of one content carry
  ``extra["sameContent"]`` so a Gemini backend gets the content back whole.
* Tool call ids: ``functionCall.id`` when given, else ``call_<i>_<j>`` (content
  and part index: stable over a conversation's growing history). A result
  takes ``functionResponse.id`` when given, else the id of the first
  unanswered call of the same name, searching the model contents from the
  latest back (pairing by name and order); a result that matches no call gets
  ``call_<i>_<j>`` of its own position.
* Roles other than ``user``/``model``, empty ``contents`` or ``parts``, a
  ``functionResponse.response`` that is not an object, a function response in a
  model turn: 400 with ``param``. Unknown top-level fields (``safetySettings``,
  ``cachedContent``...) travel in ``extra``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extproc.canonical import (
    CanonicalRequest,
    Message,
    Part,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from extproc.codecs.base import RequestMeta
from extproc.codecs.gemini import generation as _generation
from extproc.codecs.gemini import tools as _tools
from extproc.codecs.gemini.parts import decode_part
from extproc.codecs.gemini.wire import PROTOCOL, SAME_CONTENT, get, names, rest
from extproc.errors import InvalidRequest

STREAM_ACTION = "streamGenerateContent"
_TOP_LEVEL = names(
    "contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "model"
)
_CONTENT_FIELDS = names("role", "parts")


def model_from(meta: RequestMeta) -> str:
    model = (meta.path_params.get("model") or "").strip()
    if model.startswith("models/"):
        model = model[len("models/") :]
    if not model:
        raise InvalidRequest("the request path names no model", param="model")
    return model


def decode_request(body: Mapping[str, Any], meta: RequestMeta) -> CanonicalRequest:
    stream = meta.path_params.get("action") == STREAM_ACTION
    return decode_generate(body, model_from(meta), stream=stream)


def decode_count_request(body: Mapping[str, Any], meta: RequestMeta) -> CanonicalRequest:
    """``countTokens``: ``{"contents": [...]}`` or ``{"generateContentRequest": {...}}``."""
    inner = get(body, "generateContentRequest")
    contents = get(body, "contents")
    if inner is not None and contents is not None:
        raise InvalidRequest(
            "contents and generateContentRequest are mutually exclusive", param="contents"
        )
    model = model_from(meta)
    if inner is not None:
        if not isinstance(inner, dict):
            raise InvalidRequest(
                "generateContentRequest must be an object", param="generateContentRequest"
            )
        return decode_generate(inner, model, stream=False, prefix="generateContentRequest.")
    return decode_generate({"contents": contents}, model, stream=False)


def decode_generate(
    body: Mapping[str, Any], model: str, *, stream: bool, prefix: str = ""
) -> CanonicalRequest:
    contents = get(body, "contents")
    if not isinstance(contents, list) or not contents:
        raise InvalidRequest(
            "contents is not specified: send a non-empty array of contents",
            param=f"{prefix}contents",
        )
    req = CanonicalRequest(protocol=PROTOCOL, model=model, stream=stream)
    system = get(body, "systemInstruction")
    if system is not None:
        req.messages.append(_decode_system(system, f"{prefix}systemInstruction"))
    _Contents(prefix).decode(contents, req.messages)
    tools = get(body, "tools")
    if tools is not None:
        req.tools = _tools.decode_tools(tools, f"{prefix}tools")
    tool_config = get(body, "toolConfig")
    if tool_config is not None:
        _tools.decode_tool_config(tool_config, req)
    generation = get(body, "generationConfig")
    if generation is not None:
        _generation.decode_generation(generation, req, f"{prefix}generationConfig")
    for key, value in body.items():
        if key not in _TOP_LEVEL:
            req.extra[key] = value
    return req


def _decode_system(system: Any, where: str) -> Message:
    if isinstance(system, str):
        return Message(role="system", content=[TextPart(text=system)], plain=True)
    if not isinstance(system, dict) or not isinstance(get(system, "parts"), list):
        raise InvalidRequest(f"{where} must be a Content with parts", param=where)
    parts: list[Part] = []
    for j, part in enumerate(get(system, "parts")):
        if not isinstance(part, dict):
            raise InvalidRequest(f"{where}.parts[{j}] must be an object", param=where)
        parts.append(decode_part(part, f"{where}.parts[{j}]", f"call_system_{j}"))
    extra = rest(system, names("parts")) or None
    return Message(role="system", content=parts, extra=extra)


class _Contents:
    """Decodes ``contents`` in order, pairing function responses with calls."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        #: Unanswered calls per model content, latest last: [(name, id)].
        self.open_calls: list[list[tuple[str, str]]] = []

    def decode(self, contents: list[Any], out: list[Message]) -> None:
        for i, content in enumerate(contents):
            where = f"{self.prefix}contents[{i}]"
            if not isinstance(content, dict):
                raise InvalidRequest(f"{where} must be an object", param=where)
            role = get(content, "role") or "user"
            if role not in ("user", "model"):
                raise InvalidRequest(
                    f"Please use a valid role: user, model (got {role!r} in {where}.role)",
                    param=f"{where}.role",
                )
            parts = get(content, "parts")
            if not isinstance(parts, list) or not parts:
                raise InvalidRequest(f"{where}.parts must not be empty", param=f"{where}.parts")
            decoded: list[Part] = []
            for j, part in enumerate(parts):
                if not isinstance(part, dict):
                    raise InvalidRequest(
                        f"{where}.parts[{j}] must be an object", param=f"{where}.parts[{j}]"
                    )
                decoded.append(decode_part(part, f"{where}.parts[{j}]", f"call_{i}_{j}"))
            extra = rest(content, _CONTENT_FIELDS) or None
            if role == "model":
                out.append(self._model(decoded, where, extra))
            else:
                out.extend(self._user(decoded, i, extra))

    def _model(self, parts: list[Part], where: str, extra: dict[str, Any] | None) -> Message:
        for j, part in enumerate(parts):
            if isinstance(part, ToolResultPart):
                raise InvalidRequest(
                    "a functionResponse belongs in a user content, not a model content",
                    param=f"{where}.parts[{j}]",
                )
        self.open_calls.append([(p.name, p.id) for p in parts if isinstance(p, ToolCallPart)])
        return Message(role="assistant", content=parts, extra=extra)

    def _user(self, parts: list[Part], i: int, extra: dict[str, Any] | None) -> list[Message]:
        messages: list[Message] = []
        others: list[Part] = []
        for j, part in enumerate(parts):
            if not isinstance(part, ToolResultPart):
                others.append(part)
                continue
            if not part.tool_call_id:
                part.tool_call_id = self._pair(part.name or "") or f"call_{i}_{j}"
            else:
                self._close(part.tool_call_id)
            messages.append(Message(role="tool", content=[part]))
        if others:
            messages.append(Message(role="user", content=others))
        for position, message in enumerate(messages):
            if position:
                message.extra = {SAME_CONTENT: True}
        messages[0].extra = {**(messages[0].extra or {}), **(extra or {})} or None
        return messages

    def _pair(self, name: str) -> str | None:
        for calls in reversed(self.open_calls):
            for index, (call_name, call_id) in enumerate(calls):
                if call_name == name:
                    del calls[index]
                    return call_id
        return None

    def _close(self, call_id: str) -> None:
        for calls in self.open_calls:
            for index, (_, open_id) in enumerate(calls):
                if open_id == call_id:
                    del calls[index]
                    return
