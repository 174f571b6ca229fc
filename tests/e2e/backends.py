"""What a fake provider of each schema received, read in that schema's own terms.

The matrix tests check that what reached the backend is right in the
backend's protocol: the tool was offered, the system prompt is there, and the
tool result answers the call the backend itself made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Received:
    system: str
    tool_names: list[str]
    #: (call id, or name for Gemini; the result text) of the last tool result.
    tool_result: tuple[str, str] | None
    #: Ids (Gemini: names) of the tool calls in the request's model turns.
    call_ids: list[str]
    streamed: bool
    model: str


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(c.get("text", "") if isinstance(c, dict) else str(c) for c in content)
    return json.dumps(content)


def openai_chat(body: dict[str, Any], path: str) -> Received:
    system = "".join(
        _text(m.get("content")) for m in body["messages"] if m["role"] in ("system", "developer")
    )
    result = None
    for message in body["messages"]:
        if message["role"] == "tool":
            result = (message["tool_call_id"], _text(message["content"]))
    calls = [c["id"] for m in body["messages"] for c in m.get("tool_calls") or []]
    return Received(
        call_ids=calls,
        system=system,
        tool_names=[t["function"]["name"] for t in body.get("tools", [])],
        tool_result=result,
        streamed=bool(body.get("stream")),
        model=body["model"],
    )


def openai_responses(body: dict[str, Any], path: str) -> Received:
    items = body["input"] if isinstance(body["input"], list) else []
    system = body.get("instructions") or ""
    system += "".join(
        _text(i.get("content")) for i in items if i.get("role") in ("system", "developer")
    )
    result = None
    for item in items:
        if item.get("type") == "function_call_output":
            result = (item["call_id"], _text(item["output"]))
    calls = [i["call_id"] for i in items if i.get("type") == "function_call"]
    return Received(
        call_ids=calls,
        system=system,
        tool_names=[t["name"] for t in body.get("tools", []) if t.get("type") == "function"],
        tool_result=result,
        streamed=bool(body.get("stream")),
        model=body["model"],
    )


def anthropic(body: dict[str, Any], path: str) -> Received:
    result = None
    calls = []
    for message in body["messages"]:
        if not isinstance(message["content"], list):
            continue
        for block in message["content"]:
            if block.get("type") == "tool_result":
                result = (block["tool_use_id"], _text(block.get("content", "")))
            elif block.get("type") == "tool_use":
                calls.append(block["id"])
    return Received(
        call_ids=calls,
        system=_text(body.get("system", "")),
        tool_names=[t["name"] for t in body.get("tools", [])],
        tool_result=result,
        streamed=bool(body.get("stream")),
        model=body["model"],
    )


def gemini(body: dict[str, Any], path: str) -> Received:
    instruction = body.get("systemInstruction") or body.get("system_instruction") or {}
    system = "".join(p.get("text", "") for p in instruction.get("parts", []))
    result = None
    calls = []
    for content in body["contents"]:
        for part in content.get("parts", []):
            response = part.get("functionResponse")
            if response is not None:
                payload = response["response"]
                value = payload.get("output", payload)
                result = (response["name"], value if isinstance(value, str) else json.dumps(value))
            if part.get("functionCall") is not None:
                calls.append(part["functionCall"]["name"])
    declarations = [
        d["name"] for tool in body.get("tools", []) for d in tool.get("functionDeclarations", [])
    ]
    model = path.split("/models/", 1)[1].split(":", 1)[0] if "/models/" in path else ""
    return Received(
        call_ids=calls,
        system=system,
        tool_names=declarations,
        tool_result=result,
        streamed="streamGenerateContent" in path,
        model=model,
    )


READERS = {
    "openai-chat": openai_chat,
    "openai-responses": openai_responses,
    "anthropic": anthropic,
    "gemini": gemini,
}
