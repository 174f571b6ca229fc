"""Canonical requests -> Anthropic Messages requests (``POST {base}/messages``).

Rules beyond :mod:`~extproc.codecs.anthropic.messages` (system, turns, blocks):

* ``max_tokens`` is required: the client's value, else 8192. For another protocol, when
  thinking is enabled and ``max_tokens`` is not above the budget it is raised to
  budget + 4096.
* ``tools``: ``{name, description, input_schema}`` (``{"type": "object", "properties": {}}``
  when the tool has no schema). Opaque tools (server tools, other protocols' hosted tools) and
  ``strict`` go only to the same protocol; when no tool is left, neither ``tools`` nor
  ``tool_choice`` is sent.
* ``tool_choice`` ``auto``/``required``/``tool``/``none`` -> ``auto``/``any``/``tool``/``none``;
  ``parallel_tool_calls: false`` -> ``disable_parallel_tool_use: true`` (on ``auto`` when no
  choice was given).
* Reasoning: :mod:`~extproc.codecs.anthropic.reasoning`. For another protocol thinking is left
  out when it cannot work: with a forced tool choice (``any``/``tool``), or when the last
  assistant turn (a tool call, or a final prefill) has no signed Anthropic thinking block to
  start it (history from another provider). With thinking on, ``temperature`` (unless 1),
  ``top_k`` and a ``top_p`` below 0.95 are not sent (the API rejects them).
* ``temperature`` from another protocol is clamped to Anthropic's 0..1; ``stop`` ->
  ``stop_sequences``; ``user`` -> ``metadata.user_id``; a JSON-schema ``response_format`` ->
  ``output_config.format``; ``seed``, penalties and ``json_object`` have no equivalent and are
  dropped.
* Same protocol: ``extra`` fields are merged back (nested objects field by field) and the
  ``anthropic-beta``/``anthropic-version`` headers are forwarded. ``passthrough`` always wins.
"""

from __future__ import annotations

from typing import Any

from extproc.canonical import CanonicalRequest, Tool
from extproc.codecs.anthropic.common import FORWARDED_HEADERS, PROTOCOL
from extproc.codecs.anthropic.messages import encode_messages
from extproc.codecs.anthropic.reasoning import foreign_thinking, same_protocol_thinking

DEFAULT_MAX_TOKENS = 8192
THINKING_HEADROOM = 4096
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
_CHOICE_TYPES = {"auto": "auto", "required": "any", "tool": "tool", "none": "none"}
_REPLAY_TYPES = ("thinking", "redacted_thinking")


def encode_request(req: CanonicalRequest, model: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body and the protocol headers of ``req`` for an Anthropic backend."""
    same = req.protocol == PROTOCOL
    system, messages = encode_messages(req.messages, same)
    body: dict[str, Any] = {"model": model}
    max_tokens = req.max_output_tokens if req.max_output_tokens is not None else DEFAULT_MAX_TOKENS
    if system is not None:
        body["system"] = system
    body["messages"] = messages
    tools = _encode_tools(req.tools, same)
    if tools is not None:
        body["tools"] = tools
    choice = _encode_tool_choice(req, same, has_tools=bool(tools))
    if choice is not None:
        body["tool_choice"] = choice
    output_config: dict[str, Any] = {}
    if same:
        thinking, effort = same_protocol_thinking(req)
        if effort is not None:
            output_config["effort"] = effort
    else:
        thinking = _usable(foreign_thinking(req), messages, choice)
        budget = thinking.get("budget_tokens") if thinking else None
        if isinstance(budget, int) and max_tokens <= budget:
            max_tokens = budget + THINKING_HEADROOM
    body["max_tokens"] = max_tokens
    if thinking is not None:
        body["thinking"] = thinking
    _sampling(body, req, same, thinking_on=thinking is not None and thinking["type"] != "disabled")
    if req.user is not None:
        body["metadata"] = {"user_id": req.user}
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.schema is not None:
        output_config["format"] = {"type": "json_schema", "schema": fmt.schema}
    if output_config:
        body["output_config"] = output_config
    if req.stream:
        body["stream"] = True
    headers: dict[str, str] = {}
    if same:
        _merge_extra(body, req.extra)
        headers = {name: req.hints[name] for name in FORWARDED_HEADERS if name in req.hints}
    body.update(req.passthrough)
    return body, headers


def _sampling(body: dict[str, Any], req: CanonicalRequest, same: bool, thinking_on: bool) -> None:
    limited = thinking_on and not same
    if req.temperature is not None:
        temperature = req.temperature if same else min(max(req.temperature, 0.0), 1.0)
        if not limited or temperature == 1.0:
            body["temperature"] = temperature
    if req.top_p is not None and (not limited or req.top_p >= 0.95):
        body["top_p"] = req.top_p
    if req.top_k is not None and not limited:
        body["top_k"] = req.top_k
    if req.stop is not None:
        body["stop_sequences"] = req.stop


def _encode_tools(tools: list[Tool] | None, same: bool) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    out: list[dict[str, Any]] = []
    for tool in tools:
        if tool.opaque is not None:
            if same:
                out.append(tool.opaque)
            continue
        entry: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            entry["description"] = tool.description
        schema = tool.parameters if tool.parameters is not None else _EMPTY_SCHEMA
        if not same and "type" not in schema:
            schema = {"type": "object", **schema}
        entry["input_schema"] = schema
        if same:
            if tool.strict is not None:
                entry["strict"] = tool.strict
            if tool.extra:
                entry.update(tool.extra)
        out.append(entry)
    return out if out or same else None


def _encode_tool_choice(
    req: CanonicalRequest, same: bool, *, has_tools: bool
) -> dict[str, Any] | None:
    choice, parallel = req.tool_choice, req.parallel_tool_calls
    if not same and not has_tools:
        return None
    if choice is None:
        if parallel is False and not same:
            return {"type": "auto", "disable_parallel_tool_use": True}
        return None
    out: dict[str, Any] = {"type": _CHOICE_TYPES[choice.mode]}
    if choice.mode == "tool":
        if choice.name:
            out["name"] = choice.name
        else:
            out["type"] = "any"
    if parallel is not None and (same or (parallel is False and out["type"] != "none")):
        out["disable_parallel_tool_use"] = not parallel
    return out


def _usable(
    thinking: dict[str, Any] | None,
    messages: list[dict[str, Any]],
    choice: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """``thinking`` unless the request cannot work with it (another protocol's history)."""
    if thinking is None or thinking["type"] != "enabled":
        return thinking
    if choice is not None and choice["type"] in ("any", "tool"):
        return None
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        if message["role"] != "assistant":
            continue
        content = message["content"]
        blocks = content if isinstance(content, list) else [{"type": "text"}]
        opens_with_replay = bool(blocks) and blocks[0].get("type") in _REPLAY_TYPES
        calls = any(block.get("type") == "tool_use" for block in blocks)
        if not opens_with_replay and (calls or position == len(messages) - 1):
            return None
        break
    return thinking


def _merge_extra(body: dict[str, Any], extra: dict[str, Any]) -> None:
    """Put the client's own fields back; nested objects are filled field by field."""
    for key, value in extra.items():
        current = body.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            for inner, inner_value in value.items():
                current.setdefault(inner, inner_value)
        else:
            body.setdefault(key, value)
