"""One adapter per frontend: the official SDK of each dialect, driven the same way.

Each adapter runs a tool round trip in its own dialect: ask with one tool
offered (the backend is scripted to call it), then send the tool's result
back (the backend is scripted to answer with text). The matrix tests pair
every adapter with every backend schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import anthropic
import openai
from google import genai
from google.genai import types as gtypes

from tests.harness import CLIENT_KEY, ProxyProcess

TOOL_NAME = "lookup_tide"
TOOL_DESCRIPTION = "Tide times for a port"
TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"port": {"type": "string"}},
    "required": ["port"],
}
SYSTEM = "You are a harbour assistant."
QUESTION = "When is high tide in Porto?"
TOOL_RESULT = '{"high": "14:05"}'


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Turn:
    """What the client saw for one request."""

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    finish: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: The client-side history of this turn, to send back in the next request.
    history: Any = None


class Frontend(Protocol):
    name: str

    def ask(self, proxy: ProxyProcess, model: str, stream: bool) -> Turn: ...

    def answer_tool(
        self, proxy: ProxyProcess, model: str, stream: bool, first: Turn, result: str
    ) -> Turn: ...


# -- OpenAI Chat Completions -------------------------------------------------------


class ChatFrontend:
    name = "openai-chat"

    def _client(self, proxy: ProxyProcess) -> openai.OpenAI:
        return openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)

    def _run(self, proxy: ProxyProcess, model: str, stream: bool, messages: list[Any]) -> Turn:
        tools: Any = [
            {
                "type": "function",
                "function": {
                    "name": TOOL_NAME,
                    "description": TOOL_DESCRIPTION,
                    "parameters": TOOL_SCHEMA,
                },
            }
        ]
        client = self._client(proxy)
        turn = Turn(history=messages)
        if not stream:
            answer = client.chat.completions.create(model=model, messages=messages, tools=tools)
            message = answer.choices[0].message
            turn.text = message.content or ""
            turn.finish = answer.choices[0].finish_reason
            for call in message.tool_calls or []:
                assert call.type == "function"
                turn.calls.append(
                    ToolCall(call.id, call.function.name, json.loads(call.function.arguments))
                )
            if answer.usage is not None:
                turn.input_tokens = answer.usage.prompt_tokens
                turn.output_tokens = answer.usage.completion_tokens
            return turn
        calls: dict[int, dict[str, str]] = {}
        for chunk in client.chat.completions.create(
            model=model,
            messages=messages,
            tools=tools,
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.usage is not None:
                turn.input_tokens = chunk.usage.prompt_tokens
                turn.output_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                turn.text += choice.delta.content or ""
                turn.finish = choice.finish_reason or turn.finish
                for delta in choice.delta.tool_calls or []:
                    entry = calls.setdefault(delta.index, {"id": "", "name": "", "args": ""})
                    entry["id"] += delta.id or ""
                    if delta.function is not None:
                        entry["name"] += delta.function.name or ""
                        entry["args"] += delta.function.arguments or ""
        for index in sorted(calls):
            entry = calls[index]
            turn.calls.append(
                ToolCall(entry["id"], entry["name"], json.loads(entry["args"] or "{}"))
            )
        return turn

    def ask(self, proxy: ProxyProcess, model: str, stream: bool) -> Turn:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
        return self._run(proxy, model, stream, messages)

    def answer_tool(
        self, proxy: ProxyProcess, model: str, stream: bool, first: Turn, result: str
    ) -> Turn:
        call = first.calls[0]
        messages = [
            *first.history,
            {
                "role": "assistant",
                "content": first.text or None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ]
        return self._run(proxy, model, stream, messages)


# -- OpenAI Responses ----------------------------------------------------------------


class ResponsesFrontend:
    name = "openai-responses"

    def _run(self, proxy: ProxyProcess, model: str, stream: bool, items: list[Any]) -> Turn:
        client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
        tools: Any = [
            {
                "type": "function",
                "name": TOOL_NAME,
                "description": TOOL_DESCRIPTION,
                "parameters": TOOL_SCHEMA,
                "strict": False,
            }
        ]
        if stream:
            with client.responses.stream(
                model=model, instructions=SYSTEM, input=items, tools=tools
            ) as events:
                response = events.get_final_response()
        else:
            response = client.responses.create(
                model=model, instructions=SYSTEM, input=items, tools=tools
            )
        turn = Turn(history=items, text=response.output_text, finish=response.status or "")
        outputs: list[Any] = []
        for item in response.output:
            outputs.append(item.model_dump(exclude_none=True))
            if item.type == "function_call":
                turn.calls.append(ToolCall(item.call_id, item.name, json.loads(item.arguments)))
        turn.history = [*items, *outputs]
        if response.usage is not None:
            turn.input_tokens = response.usage.input_tokens
            turn.output_tokens = response.usage.output_tokens
        return turn

    def ask(self, proxy: ProxyProcess, model: str, stream: bool) -> Turn:
        return self._run(proxy, model, stream, [{"role": "user", "content": QUESTION}])

    def answer_tool(
        self, proxy: ProxyProcess, model: str, stream: bool, first: Turn, result: str
    ) -> Turn:
        call = first.calls[0]
        items = [
            *first.history,
            {"type": "function_call_output", "call_id": call.id, "output": result},
        ]
        return self._run(proxy, model, stream, items)


# -- Anthropic Messages --------------------------------------------------------------


class AnthropicFrontend:
    name = "anthropic"

    def __init__(self, dedicated_listener: bool = False) -> None:
        self.dedicated_listener = dedicated_listener

    def _client(self, proxy: ProxyProcess) -> anthropic.Anthropic:
        base = (
            proxy.anthropic_base_url if self.dedicated_listener else f"{proxy.base_url}/anthropic"
        )
        return anthropic.Anthropic(base_url=base, api_key=CLIENT_KEY, max_retries=0)

    def _run(self, proxy: ProxyProcess, model: str, stream: bool, messages: list[Any]) -> Turn:
        client = self._client(proxy)
        tools: Any = [
            {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": TOOL_SCHEMA}
        ]
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": 1024,
            "system": SYSTEM,
            "messages": messages,
            "tools": tools,
        }
        if stream:
            with client.messages.stream(**kwargs) as events:
                message = events.get_final_message()
        else:
            message = client.messages.create(**kwargs)
        turn = Turn(finish=message.stop_reason or "")
        for block in message.content:
            if block.type == "text":
                turn.text += block.text
            elif block.type == "tool_use":
                turn.calls.append(ToolCall(block.id, block.name, dict(block.input)))  # type: ignore[call-overload]
        turn.input_tokens = message.usage.input_tokens
        turn.output_tokens = message.usage.output_tokens
        turn.history = [
            *messages,
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in message.content],
            },
        ]
        return turn

    def ask(self, proxy: ProxyProcess, model: str, stream: bool) -> Turn:
        return self._run(proxy, model, stream, [{"role": "user", "content": QUESTION}])

    def answer_tool(
        self, proxy: ProxyProcess, model: str, stream: bool, first: Turn, result: str
    ) -> Turn:
        call = first.calls[0]
        messages = [
            *first.history,
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": result}],
            },
        ]
        return self._run(proxy, model, stream, messages)


# -- Gemini --------------------------------------------------------------------------


class GeminiFrontend:
    name = "gemini"

    def __init__(self, api_version: str = "v1beta") -> None:
        self.api_version = api_version

    def _client(self, proxy: ProxyProcess) -> genai.Client:
        return genai.Client(
            api_key=CLIENT_KEY,
            http_options=gtypes.HttpOptions(
                base_url=proxy.base_url, api_version=self.api_version, timeout=20_000
            ),
        )

    def _run(
        self, proxy: ProxyProcess, model: str, stream: bool, contents: list[gtypes.Content]
    ) -> Turn:
        client = self._client(proxy)
        config = gtypes.GenerateContentConfig(
            system_instruction=SYSTEM,
            tools=[
                gtypes.Tool(
                    function_declarations=[
                        gtypes.FunctionDeclaration(
                            name=TOOL_NAME,
                            description=TOOL_DESCRIPTION,
                            parameters_json_schema=TOOL_SCHEMA,
                        )
                    ]
                )
            ],
            automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
        )
        chunks = (
            list(
                client.models.generate_content_stream(model=model, contents=contents, config=config)
            )
            if stream
            else [client.models.generate_content(model=model, contents=contents, config=config)]
        )
        turn = Turn()
        parts: list[gtypes.Part] = []
        for chunk in chunks:
            if chunk.usage_metadata is not None:
                turn.input_tokens = chunk.usage_metadata.prompt_token_count
                turn.output_tokens = chunk.usage_metadata.candidates_token_count
            for candidate in chunk.candidates or []:
                if candidate.finish_reason is not None:
                    turn.finish = str(candidate.finish_reason.value)
                for part in (candidate.content.parts or []) if candidate.content else []:
                    parts.append(part)
                    if part.text and not part.thought:
                        turn.text += part.text
                    if part.function_call is not None:
                        call = part.function_call
                        turn.calls.append(
                            ToolCall(call.id or "", call.name or "", dict(call.args or {}))
                        )
        turn.history = [*contents, gtypes.Content(role="model", parts=parts)]
        return turn

    def ask(self, proxy: ProxyProcess, model: str, stream: bool) -> Turn:
        contents = [gtypes.Content(role="user", parts=[gtypes.Part(text=QUESTION)])]
        return self._run(proxy, model, stream, contents)

    def answer_tool(
        self, proxy: ProxyProcess, model: str, stream: bool, first: Turn, result: str
    ) -> Turn:
        call = first.calls[0]
        response = gtypes.Part(
            function_response=gtypes.FunctionResponse(
                name=call.name, id=call.id or None, response={"output": json.loads(result)}
            )
        )
        contents = [*first.history, gtypes.Content(role="user", parts=[response])]
        return self._run(proxy, model, stream, contents)


FRONTENDS: dict[str, Frontend] = {
    "openai-chat": ChatFrontend(),
    "openai-responses": ResponsesFrontend(),
    "anthropic": AnthropicFrontend(),
    "gemini": GeminiFrontend(),
}
