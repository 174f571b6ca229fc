"""A fake OpenAI Responses provider (``POST /v1/responses``) for end-to-end tests and benchmarks.

It is the Chat Completions fake of ``tests.fakes.openai_upstream`` speaking the Responses API
instead: the same HTTP/1.1 server (keep-alive, chunked bodies, ``TCP_NODELAY``, one SSE event per
HTTP chunk), the same headers, recorded requests, scripted answers, fault knobs, control API and
command line - :class:`FakeResponses` subclasses :class:`~tests.fakes.openai_upstream.FakeOpenAI`
and replaces only the endpoints. It follows ``WIRE_FORMATS.md`` section 2 and the fake-upstream
checklist (5.11):

* ``POST {prefix}/responses``: a full Response object as ``application/json``, or with
  ``stream: true`` the typed event stream: ``event: <type>`` + ``data:`` with ``type`` and a
  gap-free ``sequence_number`` from 0; ``response.created``, ``response.in_progress``, then per
  output item (reasoning, message, function calls - in that order) ``output_item.added``, its
  part / delta / done events, ``output_item.done``, and finally ``response.completed`` (or
  ``response.incomplete`` for a ``length`` / ``content_filter`` script) carrying the full
  Response; ``usage`` is null until that terminal event; no ``[DONE]``.
* ``POST {prefix}/responses/input_tokens``: ``{"object": "response.input_tokens",
  "input_tokens": N}`` for a create body (``model`` optional there).
* ``GET {prefix}/models`` and ``GET {prefix}/models/{id}`` as the Chat fake.

Requests are validated like the real API where it matters to translators: a JSON object with
a ``model`` and an ``input`` (unless ``previous_response_id``, ``conversation`` or ``prompt``
stand in for it), items that are objects with known message roles, ``function_call`` items
with ``call_id``/``name``/string ``arguments``, every ``function_call_output`` answering an
earlier ``function_call`` of the input ("No tool call found for function call output with
call_id ...") and every ``function_call`` answered ("No tool output found for function
call ..."), reasoning items replayed with ``store: false`` only with ``encrypted_content``
(404 "Item with id ... not found") and only with encrypted content this fake issued (400;
the real wording of that one is unconfirmed), function tools with a name,
``max_output_tokens`` >= 16, ``stream`` a boolean and ``stream_options`` only with it.
``chat_requests()`` returns the recorded ``POST {prefix}/responses`` requests.

Answers: unscripted, ``f"{name} says hello to {model}"``. ``queue_response(text=...,
tool_calls=[(name, arguments_json)], reasoning=..., finish_reason=..., prompt_tokens=...,
completion_tokens=..., cached_tokens=..., reasoning_tokens=...)`` scripts the next answers,
with the Chat fake's signature: ``reasoning`` becomes a ``reasoning`` item first in the output,
whose summary holds the text when the request asked for one (``reasoning.summary``) and is
empty otherwise, with ``encrypted_content`` when ``include`` asks for
``reasoning.encrypted_content``; ``finish_reason`` ``length`` / ``content_filter`` end the
answer ``incomplete`` with reason ``max_output_tokens`` / ``content_filter``. Usage:
input tokens are the compact JSON of ``input`` (plus ``instructions``) divided by 4, output
tokens the output text and calls divided by 4 plus the reasoning tokens.

Fault knobs: exactly those of the Chat fake (``status``, ``retry_after``, ``delay``, ``reset``,
``refuse``, ``stall_after``, ``chunk_delay``, ``midstream_error``, ``count``, ``chat_only``).
``midstream_error=N`` sends, after N events, an ``error`` event carrying both the observed
nested ``error`` object (the SDK raises on it) and the documented flat fields, then
``response.failed``, and closes the connection.

Command line::

    python -m tests.fakes.responses_upstream --port 8002 --name beta --control-port 8102
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from tests.fakes.base import Exchange, JSONDict, Route, dumps, pieces, run_cli
from tests.fakes.openai_upstream import (
    _NOT_JSON,
    DEFAULT_MODELS,
    FakeOpenAI,
    ScriptedResponse,
    _ApiError,
    _invalid,
    default_answer,
    start_control_server,
)

__all__ = [
    "DEFAULT_MODELS",
    "FakeOpenAI",
    "FakeResponses",
    "JSONDict",
    "ScriptedResponse",
    "default_answer",
    "main",
    "start_control_server",
]

_ROLES: Final = ("user", "assistant", "system", "developer")
_STATE_FIELDS: Final = ("previous_response_id", "conversation", "prompt")
_ENCRYPTED_PREFIX: Final = "gAAAAB-fake-encrypted-"
_MIDSTREAM_MESSAGE: Final = (
    "The server had an error while processing your request. Sorry about that!"
)


# --------------------------------------------------------------------------------------------
# Request validation


def _missing(param: str) -> _ApiError:
    return _invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _wrong_type(param: str, expected: str, value: Any) -> _ApiError:
    kind = type(value).__name__
    return _invalid(
        f"Invalid type for '{param}': expected {expected}, but got {kind} instead.",
        param,
        "invalid_type",
    )


def _validate(payload: Any, *, count_only: bool = False) -> _ApiError | None:
    if not isinstance(payload, dict):
        return _NOT_JSON
    model = payload.get("model")
    if model is None and not count_only:
        return _missing("model")
    if model is not None and (not isinstance(model, str) or not model):
        return _wrong_type("model", "a string", model)
    return (
        _validate_input(payload)
        or _validate_tools(payload.get("tools"))
        or _validate_settings(payload, count_only)
    )


def _validate_input(payload: JSONDict) -> _ApiError | None:
    items = payload.get("input")
    if items is None:
        if any(payload.get(field) is not None for field in _STATE_FIELDS):
            return None
        return _missing("input")
    if isinstance(items, str):
        return None
    if not isinstance(items, list):
        return _wrong_type("input", "a string or an array", items)
    for index, item in enumerate(items):
        error = _validate_item(item, f"input[{index}]")
        if error is not None:
            return error
    return _validate_pairs(items, payload)


def _validate_item(item: Any, where: str) -> _ApiError | None:
    if not isinstance(item, dict):
        return _wrong_type(where, "an object", item)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        if item.get("role") not in _ROLES:
            return _invalid(
                f"Invalid value: {item.get('role')!r}. Supported values are: 'assistant', "
                "'system', 'developer', and 'user'.",
                f"{where}.role",
                "invalid_value",
            )
        content = item.get("content")
        if content is None:
            return _missing(f"{where}.content")
        if not isinstance(content, str | list):
            return _wrong_type(f"{where}.content", "a string or an array", content)
    elif kind == "function_call":
        for field in ("call_id", "name", "arguments"):
            if not isinstance(item.get(field), str):
                return _missing(f"{where}.{field}")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            return _missing(f"{where}.call_id")
        if not isinstance(item.get("output"), str | list):
            return _missing(f"{where}.output")
    elif kind is None and not isinstance(item.get("id"), str):
        return _missing(f"{where}.type")
    return None


def _validate_pairs(items: list[JSONDict], payload: JSONDict) -> _ApiError | None:
    """Tool outputs answer earlier calls, calls are answered, reasoning replays are valid."""
    stateful = payload.get("previous_response_id") is not None
    calls: list[str] = []
    answered: set[str] = set()
    for item in items:
        kind = item.get("type")
        if kind == "function_call":
            calls.append(item["call_id"])
        elif kind == "function_call_output":
            if item["call_id"] not in calls and not stateful:
                return _invalid(
                    f"No tool call found for function call output with call_id {item['call_id']}.",
                    "input",
                )
            answered.add(item["call_id"])
        elif kind == "reasoning":
            error = _validate_reasoning(item, payload)
            if error is not None:
                return error
    for call_id in calls:
        if call_id not in answered:
            return _invalid(f"No tool output found for function call {call_id}.", "input")
    return None


def _validate_reasoning(item: JSONDict, payload: JSONDict) -> _ApiError | None:
    item_id = item.get("id")
    encrypted = item.get("encrypted_content")
    if encrypted is None:
        if payload.get("store") is False:
            return _ApiError(
                404,
                f"Item with id '{item_id}' not found. Items are not persisted when `store` is "
                "set to false. Try again with `store` set to true, or remove this item from "
                "your input.",
                "invalid_request_error",
                "input",
            )
        return None
    if encrypted != f"{_ENCRYPTED_PREFIX}{item_id}":
        return _invalid(
            f"The encrypted content for item {item_id} could not be verified.",
            "input",
            "invalid_encrypted_content",
        )
    return None


def _validate_tools(tools: Any) -> _ApiError | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        return _wrong_type("tools", "an array", tools)
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            return _missing(f"tools[{index}].type")
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            return _missing(f"tools[{index}].name")
    return None


def _validate_settings(payload: JSONDict, count_only: bool) -> _ApiError | None:
    limit = payload.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        return _wrong_type("max_output_tokens", "an integer", limit)
    if isinstance(limit, int) and limit < 16:
        return _invalid(
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, "
            f"but got {limit} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )
    if count_only:
        return None
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return _wrong_type("stream", "a boolean", stream)
    if payload.get("stream_options") is not None and stream is not True:
        return _invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    include = payload.get("include")
    if include is not None and not (
        isinstance(include, list) and all(isinstance(i, str) for i in include)
    ):
        return _wrong_type("include", "an array of strings", include)
    return None


# --------------------------------------------------------------------------------------------
# Answers and their wire encodings


@dataclass(frozen=True, slots=True)
class _Call:
    id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class _Answer:
    response: JSONDict  # the final Response object
    reasoning_id: str | None
    reasoning: str | None
    summary: bool
    encrypted: bool
    message_id: str
    text: str | None
    calls: tuple[_Call, ...]


def _input_tokens(payload: JSONDict) -> int:
    seen = dumps(payload.get("input") or "") + str(payload.get("instructions") or "")
    return max(1, len(seen) // 4)


def _usage(input_tokens: int, output_tokens: int, cached: int, reasoning: int) -> JSONDict:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def _wants_summary(payload: JSONDict) -> bool:
    reasoning = payload.get("reasoning")
    if not isinstance(reasoning, dict):
        return False
    summary = reasoning.get("summary") or reasoning.get("generate_summary")
    return isinstance(summary, str) and summary != "none"


def _wants_encrypted(payload: JSONDict) -> bool:
    include = payload.get("include")
    return isinstance(include, list) and "reasoning.encrypted_content" in include


def _reasoning_item(answer: _Answer, *, final: bool) -> JSONDict:
    assert answer.reasoning_id is not None
    item: JSONDict = {"type": "reasoning", "id": answer.reasoning_id, "summary": []}
    if final and answer.summary and answer.reasoning:
        item["summary"] = [{"type": "summary_text", "text": answer.reasoning}]
    if final and answer.encrypted:
        item["encrypted_content"] = f"{_ENCRYPTED_PREFIX}{answer.reasoning_id}"
    return item


def _text_part(text: str) -> JSONDict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(answer: _Answer, status: str, content: list[JSONDict]) -> JSONDict:
    return {
        "type": "message",
        "id": answer.message_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _call_item(call: _Call, arguments: str, status: str) -> JSONDict:
    return {
        "type": "function_call",
        "id": call.id,
        "call_id": call.call_id,
        "name": call.name,
        "arguments": arguments,
        "status": status,
    }


def _output(answer: _Answer, message_status: str) -> list[JSONDict]:
    output: list[JSONDict] = []
    if answer.reasoning_id is not None:
        output.append(_reasoning_item(answer, final=True))
    if answer.text is not None:
        output.append(_message_item(answer, message_status, [_text_part(answer.text)]))
    output.extend(_call_item(call, call.arguments, "completed") for call in answer.calls)
    return output


class _EventWriter:
    """Renders ``event:`` + ``data:`` SSE events with a gap-free ``sequence_number``."""

    def __init__(self) -> None:
        self.events: list[bytes] = []

    def __call__(self, kind: str, **fields: Any) -> None:
        payload = {"type": kind, "sequence_number": len(self.events), **fields}
        self.events.append(f"event: {kind}\ndata: {dumps(payload)}\n\n".encode())


def _stream_events(answer: _Answer, size: int) -> list[bytes]:
    """All SSE events of a streamed answer (WIRE_FORMATS §2.4 (a)-(c))."""
    final = answer.response
    opening = {**final, "status": "in_progress", "incomplete_details": None, "output": []}
    opening["usage"] = None
    emit = _EventWriter()
    emit("response.created", response=opening)
    emit("response.in_progress", response=opening)
    index = 0
    if answer.reasoning_id is not None:
        _reasoning_events(emit, answer, index, size)
        index += 1
    if answer.text is not None:
        _message_events(emit, answer, index, size, final["output"][index]["status"])
        index += 1
    for call in answer.calls:
        emit(
            "response.output_item.added",
            output_index=index,
            item=_call_item(call, "", "in_progress"),
        )
        common = {"item_id": call.id, "output_index": index}
        for piece in pieces(call.arguments, size):
            emit("response.function_call_arguments.delta", **common, delta=piece)
        emit(
            "response.function_call_arguments.done",
            **common,
            name=call.name,
            arguments=call.arguments,
        )
        item = _call_item(call, call.arguments, "completed")
        emit("response.output_item.done", output_index=index, item=item)
        index += 1
    terminal = "response.completed" if final["status"] == "completed" else "response.incomplete"
    emit(terminal, response=final)
    return emit.events


def _reasoning_events(emit: _EventWriter, answer: _Answer, index: int, size: int) -> None:
    assert answer.reasoning_id is not None
    emit(
        "response.output_item.added", output_index=index, item=_reasoning_item(answer, final=False)
    )
    if answer.summary and answer.reasoning:
        common = {"item_id": answer.reasoning_id, "output_index": index, "summary_index": 0}
        empty = {"type": "summary_text", "text": ""}
        emit("response.reasoning_summary_part.added", **common, part=empty)
        for piece in pieces(answer.reasoning, size):
            emit("response.reasoning_summary_text.delta", **common, delta=piece)
        emit("response.reasoning_summary_text.done", **common, text=answer.reasoning)
        part = {"type": "summary_text", "text": answer.reasoning}
        emit("response.reasoning_summary_part.done", **common, part=part)
    emit("response.output_item.done", output_index=index, item=_reasoning_item(answer, final=True))


def _message_events(
    emit: _EventWriter, answer: _Answer, index: int, size: int, status: str
) -> None:
    text = answer.text or ""
    emit(
        "response.output_item.added",
        output_index=index,
        item=_message_item(answer, "in_progress", []),
    )
    common = {"item_id": answer.message_id, "output_index": index, "content_index": 0}
    empty = {"type": "output_text", "text": "", "annotations": []}
    emit("response.content_part.added", **common, part=empty)
    for piece in pieces(text, size):
        emit("response.output_text.delta", **common, delta=piece, logprobs=[])
    emit("response.output_text.done", **common, text=text, logprobs=[])
    emit(
        "response.content_part.done",
        **common,
        part={"type": "output_text", "text": text, "annotations": []},
    )
    emit(
        "response.output_item.done",
        output_index=index,
        item=_message_item(answer, status, [_text_part(text)]),
    )


def _failure_events(response_id: str, model: str, created: int, at: int) -> bytes:
    """The in-band failure: a nested + flat ``error`` event, then ``response.failed``."""
    error = {
        "type": "server_error",
        "code": "server_error",
        "message": _MIDSTREAM_MESSAGE,
        "param": None,
    }
    emit = _EventWriter()
    emit.events = [b""] * at  # continue the numbering
    emit("error", code="server_error", message=_MIDSTREAM_MESSAGE, param=None, error=error)
    failed = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "failed",
        "error": {"code": "server_error", "message": _MIDSTREAM_MESSAGE},
        "incomplete_details": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": None,
    }
    emit("response.failed", response=failed)
    return b"".join(emit.events[at:])


# --------------------------------------------------------------------------------------------
# The server


class FakeResponses(FakeOpenAI):
    """A fake OpenAI Responses upstream running on a background thread."""

    _cli_description = "Run a fake OpenAI Responses upstream."

    def _setup(self) -> None:
        super()._setup()
        # The "chat" path of the base class is the one that answers: knobs with
        # chat_only=True, chat_requests() and chat_request_count all follow it.
        self._chat_path = f"{self.path_prefix}/responses"
        self._count_path = f"{self.path_prefix}/responses/input_tokens"
        self._ids = itertools.count(1)

    def _route(self, path: str) -> Route | None:
        if path == self._chat_path:
            return "POST", self._responses
        if path == self._count_path:
            return "POST", self._input_tokens
        return super()._route(path)

    # ---- endpoints -------------------------------------------------------------------------

    async def _input_tokens(self, exchange: Exchange) -> bool:
        payload = exchange.payload
        error = _validate(payload, count_only=True)
        if error is not None:
            return await exchange.send_error(error)
        body = {"object": "response.input_tokens", "input_tokens": _input_tokens(payload)}
        return await exchange.send_json(200, dumps(body).encode())

    async def _responses(self, exchange: Exchange) -> bool:
        payload = exchange.payload
        error = _validate(payload) or self._check_model(payload)
        if error is not None:
            return await exchange.send_error(error)
        answer = self._responses_answer(payload)
        if payload.get("stream") is not True:
            return await exchange.send_json(200, dumps(answer.response).encode())
        response = answer.response
        failure = partial(
            _failure_events, response["id"], response["model"], response["created_at"]
        )
        return await self._send_stream(exchange, _stream_events(answer, self.chunk_chars), failure)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):040x}"

    def _responses_answer(self, payload: JSONDict) -> _Answer:
        model = payload["model"]
        response_id = self._next_id("resp")
        script = self._next_script(model)
        calls = tuple(
            _Call(self._next_id("fc"), self._next_id("call"), name, arguments)
            for name, arguments in script.tool_calls
        )
        reasoning_tokens = script.reasoning_tokens
        if script.reasoning and not reasoning_tokens:
            reasoning_tokens = max(1, len(script.reasoning) // 4)
        output_text = (script.text or "") + "".join(c.name + c.arguments for c in calls)
        output_tokens = (
            max(1, len(output_text) // 4) + reasoning_tokens
            if script.completion_tokens is None
            else script.completion_tokens
        )
        input_tokens = (
            _input_tokens(payload) if script.prompt_tokens is None else script.prompt_tokens
        )
        answer = _Answer(
            response={},
            reasoning_id=self._next_id("rs") if script.reasoning is not None else None,
            reasoning=script.reasoning,
            summary=_wants_summary(payload),
            encrypted=_wants_encrypted(payload),
            message_id=self._next_id("msg"),
            text=script.text,
            calls=calls,
        )
        incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}
        reason = incomplete.get(script.finish_reason or "")
        answer.response.update(
            {
                "id": response_id,
                "object": "response",
                "created_at": int(time.time()),
                "status": "incomplete" if reason else "completed",
                "error": None,
                "incomplete_details": {"reason": reason} if reason else None,
                "instructions": payload.get("instructions"),
                "max_output_tokens": payload.get("max_output_tokens"),
                "model": model,
                "output": _output(answer, "incomplete" if reason else "completed"),
                "parallel_tool_calls": payload.get("parallel_tool_calls", True),
                "previous_response_id": payload.get("previous_response_id"),
                "reasoning": payload.get("reasoning") or {"effort": None, "summary": None},
                "store": payload.get("store", True),
                "temperature": payload.get("temperature", 1.0),
                "text": payload.get("text") or {"format": {"type": "text"}},
                "tool_choice": payload.get("tool_choice", "auto"),
                "tools": payload.get("tools") or [],
                "top_p": payload.get("top_p", 1.0),
                "truncation": payload.get("truncation", "disabled"),
                "usage": _usage(
                    input_tokens, output_tokens, script.cached_tokens, reasoning_tokens
                ),
                "user": payload.get("user"),
                "metadata": payload.get("metadata") or {},
            }
        )
        return answer


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(FakeResponses, "tests.fakes.responses_upstream", argv)


if __name__ == "__main__":
    sys.exit(main())
