"""A fake Anthropic Messages provider (api.anthropic.com) for end-to-end tests and benchmarks.

The HTTP/1.1 server, request recording, scripted answers, fault knobs, control API and command
line are those of every fake (:mod:`tests.fakes.base`); this module speaks the protocol. It
follows ``WIRE_FORMATS.md`` section 3 (Anthropic Messages) and the fake-upstream checklist (5.11)
closely enough that the official ``anthropic`` SDK, and Envoy in front of it, take it for the
real thing:

* ``request-id``, ``anthropic-organization-id`` and ``anthropic-ratelimit-*`` headers on every
  response;
* non-streaming answers as ``application/json`` with ``content-length``;
* streaming answers as ``text/event-stream`` with ``transfer-encoding: chunked``, one SSE event
  per HTTP chunk, each with an ``event:`` line equal to its ``type``: ``message_start`` (empty
  content, ``stop_reason: null``, input usage), a ``ping``, per block ``content_block_start`` /
  deltas of ``chunk_chars`` characters / ``content_block_stop`` (thinking: ``thinking_delta``
  then ``signature_delta``; tool use: an empty ``input_json_delta`` first, then fragments of
  the scripted argument text), ``message_delta`` (stop reason and cumulative usage), then
  ``message_stop``;
* Anthropic-shaped errors ``{"type": "error", "error": {"type", "message"}, "request_id"}``
  and ``retry-after`` on 429, 503 and 529.

Endpoints, under ``path_prefix`` (default ``/v1``): ``POST {prefix}/messages``,
``POST {prefix}/messages/count_tokens`` (``{"input_tokens": N}``), ``GET {prefix}/models`` and
``GET {prefix}/models/{id}``. Other paths answer 404, a known path with the wrong method 405.
Every request needs an ``anthropic-version`` header; with ``expected_api_key`` set, every
request (health checks included) must carry ``x-api-key: <key>`` (``Authorization: Bearer``
also accepted, as the SDK allows) or gets 401 ``authentication_error``. Messages requests are
validated like the real API, with its 400 ``invalid_request_error`` answers: ``model``,
``max_tokens`` (integer >= 1) and a non-empty ``messages`` array present; roles ``user``,
``assistant`` and (text only) ``system``; content a string or blocks with a ``type``; no
empty content (except a final assistant message) and no empty text blocks; after
consecutive same-role turns are merged, every ``tool_use`` answered by a ``tool_result`` in
the next (user) turn, ``tool_result`` blocks first in their turn and matching a ``tool_use``
of the turn before; ``temperature`` 0..1; ``thinking.budget_tokens`` >= 1024 and below
``max_tokens``; ``tool_choice`` only with ``tools``; ``stream`` a boolean.

Answers: without a script the answer is ``f"{name} says hello to {model}"``, so a test can tell
which backend answered; ``answer_chars=N`` (``--answer-chars N``) stretches or cuts it to
exactly N characters. ``queue_response()`` scripts the next answers (text, tool calls,
thinking, redacted thinking, stop reason, usage numbers), with the OpenAI fake's argument
names. Usage is deterministic: input tokens are the length of the compact JSON of ``system``
and ``messages`` divided by 4, output tokens the length of the output divided by 4.

Fault knobs (``set_fault(...)``; see :mod:`tests.fakes.base` for their semantics), with the
OpenAI fake's API; with ``chat_only=True`` only ``POST .../messages`` sees them (not health
checks or token counts):

* ``status``: an Anthropic-shaped error body (400
  ``invalid_request_error``, 401 ``authentication_error``, 403 ``permission_error``, 404
  ``not_found_error``, 413 ``request_too_large``, 429 ``rate_limit_error``, 500 ``api_error``,
  503/529 ``overloaded_error``, 504 ``timeout_error``; others by class), on every path.
  ``retry_after`` (seconds) overrides the ``retry-after`` header, which defaults to 1 on 429,
  503 and 529.
* ``delay``, ``reset``, ``refuse``, ``stall_after``, ``chunk_delay``: as for every fake.
* ``midstream_error`` (streams only): after N SSE events send ``event: error`` with
  ``{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}``, end the
  body and close the connection, without ``message_stop``.

Command line (used by the benchmark)::

    python -m tests.fakes.anthropic_upstream --port 8002 --name gamma --control-port 8102

prints ``listening on PORT`` once ready. The control port serves the same JSON API as the
OpenAI fake: ``POST /faults`` (body: ``set_fault`` keyword arguments), ``DELETE /faults``,
``GET /faults``, ``GET /requests/count`` and ``DELETE /requests``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeGuard

from tests.fakes.base import (
    FAULT_KNOBS,
    REASONS,
    SSE_TYPE,
    Exchange,
    FakeUpstream,
    HttpRequest,
    JSONDict,
    RecordedRequest,
    Route,
    ScriptedAnswer,
    SentResponse,
    StatusFault,
    default_answer,
    dumps,
    format_seconds,
    pieces,
    run_cli,
    start_control_server,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_MODELS",
    "FAULT_KNOBS",
    "MODEL_CREATED_AT",
    "STOP_REASONS",
    "FakeAnthropic",
    "JSONDict",
    "RecordedRequest",
    "ScriptedResponse",
    "SentResponse",
    "default_answer",
    "main",
    "start_control_server",
]

DEFAULT_MODELS: Final = ("claude-sonnet-4-6", "claude-haiku-4-5-20251001")
MODEL_CREATED_AT: Final = "2025-09-29T00:00:00Z"
API_VERSION: Final = "2023-06-01"
STOP_REASONS: Final = frozenset(
    {
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
        "model_context_window_exceeded",
    }
)
#: OpenAI finish reasons accepted by ``queue_response`` (the shared knob API).
_OPENAI_FINISH: Final = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

_STATIC_HEADERS: Final = (
    "anthropic-organization-id: 00000000-0000-4000-8000-00000000fa4e\r\n"
    "anthropic-ratelimit-requests-limit: 4000\r\n"
    "anthropic-ratelimit-requests-remaining: 3999\r\n"
    "anthropic-ratelimit-requests-reset: 2026-01-01T00:00:01Z\r\n"
    "anthropic-ratelimit-tokens-limit: 2000000\r\n"
    "anthropic-ratelimit-tokens-remaining: 1999000\r\n"
    "anthropic-ratelimit-tokens-reset: 2026-01-01T00:00:01Z\r\n"
)
_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_RETRY_STATUSES: Final = frozenset({429, 503, 529})
#: ``system`` is the SDK's mid-conversation system message (text only).
_ROLES: Final = frozenset({"user", "assistant", "system"})


# --------------------------------------------------------------------------------------------
# Public value types


@dataclass(frozen=True, slots=True)
class ScriptedResponse(ScriptedAnswer):
    """A scripted answer; see ``FakeAnthropic.queue_response``."""

    thinking: str | None = None
    redacted_thinking: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    thinking_tokens: int = 0


# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class _ApiError:
    status: int
    message: str
    type: str
    retry_after: float | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def body(self, request_id: str) -> bytes:
        error = {"type": self.type, "message": self.message}
        return dumps({"type": "error", "error": error, "request_id": request_id}).encode()

    def response_headers(self) -> list[tuple[str, str]]:
        headers = list(self.headers)
        if self.retry_after is not None:
            headers.append(("retry-after", format_seconds(self.retry_after)))
        return headers


def _invalid(message: str) -> _ApiError:
    return _ApiError(400, message, "invalid_request_error")


# --------------------------------------------------------------------------------------------
# Request validation (the real API's rules that matter to translators)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_messages_request(payload: Any, *, count: bool) -> _ApiError | None:
    if not isinstance(payload, dict):
        return _invalid("There was an error parsing the body of your request: invalid JSON")
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        return _invalid("model: Field required")
    max_tokens = payload.get("max_tokens")
    if not count:
        if max_tokens is None:
            return _invalid("max_tokens: Field required")
        if not _is_int(max_tokens) or max_tokens < 1:
            return _invalid("max_tokens: Input should be a valid integer greater than 0")
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return _invalid("stream: Input should be a valid boolean")
    temperature = payload.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float) or not 0 <= temperature <= 1
    ):
        return _invalid("temperature: Input should be less than or equal to 1")
    if payload.get("tool_choice") is not None and not payload.get("tools"):
        return _invalid("tool_choice: tool_choice may only be specified while providing tools")
    error = _validate_thinking(payload.get("thinking"), max_tokens, count)
    return error or _validate_messages(payload.get("messages"))


def _validate_thinking(thinking: Any, max_tokens: Any, count: bool) -> _ApiError | None:
    if thinking is None:
        return None
    if not isinstance(thinking, dict) or thinking.get("type") not in (
        "enabled",
        "disabled",
        "adaptive",
    ):
        return _invalid("thinking: Input tag does not match any of the expected tags")
    if thinking["type"] != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not _is_int(budget) or budget < 1024:
        return _invalid(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        )
    if not count and _is_int(max_tokens) and max_tokens <= budget:
        return _invalid("`max_tokens` must be greater than `thinking.budget_tokens`")
    return None


def _validate_messages(messages: Any) -> _ApiError | None:
    if messages is None:
        return _invalid("messages: Field required")
    if not isinstance(messages, list):
        return _invalid("messages: Input should be a valid list")
    if not messages:
        return _invalid("messages: at least one message is required")
    turns: list[tuple[str, list[JSONDict], int]] = []  # merged turns: role, blocks, first index
    for index, message in enumerate(messages):
        error = _validate_message(message, index, index == len(messages) - 1)
        if error is not None:
            return error
        role, content = message["role"], message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)  # the API combines consecutive same-role turns
        else:
            turns.append((role, list(blocks), index))
    return _validate_tool_pairing(turns)


def _validate_message(message: Any, index: int, last: bool) -> _ApiError | None:
    where = f"messages.{index}"
    if not isinstance(message, dict):
        return _invalid(f"{where}: Input should be a valid dictionary")
    role = message.get("role")
    if role not in _ROLES:
        return _invalid(f"{where}.role: Input should be 'user', 'assistant' or 'system'")
    content = message.get("content")
    if not isinstance(content, str | list):
        return _invalid(f"{where}.content: Input should be a valid list")
    if not content and not (last and role == "assistant"):
        return _invalid(
            f"{where}: all messages must have non-empty content except for the optional final "
            "assistant message"
        )
    for position, block in enumerate(content if isinstance(content, list) else []):
        path = f"{where}.content.{position}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return _invalid(f"{path}: Input should be a valid dictionary with a type")
        if block["type"] == "text" and not (isinstance(block.get("text"), str) and block["text"]):
            return _invalid(f"{path}.text: text content blocks must be non-empty")
        if role == "system" and block["type"] != "text":
            return _invalid(f"{path}: system messages hold text blocks only")
        if block["type"] == "tool_use" and not isinstance(block.get("input"), dict):
            return _invalid(f"{path}.tool_use.input: Input should be a valid dictionary")
    return None


def _validate_tool_pairing(turns: list[tuple[str, list[JSONDict], int]]) -> _ApiError | None:
    """Tool results answer the calls of the turn just before, and come first in their turn."""
    pending: list[str] = []
    pending_at = 0
    for role, blocks, index in turns:
        if role == "assistant":
            if pending:
                break
            pending = [str(b.get("id")) for b in blocks if b.get("type") == "tool_use"]
            pending_at = index
            continue
        answered: list[str] = []
        seen_other = False
        for block in blocks:
            if block.get("type") != "tool_result":
                seen_other = True
                continue
            if seen_other:
                return _invalid(
                    f"messages.{index}: tool_result blocks must come before any other content "
                    "in a user message"
                )
            call_id = str(block.get("tool_use_id"))
            if call_id not in pending:
                return _invalid(
                    f"messages.{index}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{call_id}. Each `tool_result` block must have a corresponding `tool_use` "
                    "block in the previous message."
                )
            answered.append(call_id)
        missing = [call_id for call_id in pending if call_id not in answered]
        if missing:
            break
        pending = []
    if not pending:
        return None
    return _invalid(
        f"messages.{pending_at}: `tool_use` ids were found without `tool_result` blocks "
        f"immediately after: {', '.join(pending)}. Each `tool_use` block must have a "
        "corresponding `tool_result` block in the next message."
    )


# --------------------------------------------------------------------------------------------
# Answers and their wire encodings


@dataclass(frozen=True, slots=True)
class _Answer:
    id: str
    model: str
    content: tuple[JSONDict, ...]  # complete content blocks
    arguments: tuple[str, ...]  # per tool_use block, the scripted argument text
    stop_reason: str
    stop_sequence: str | None
    usage: JSONDict


def _fake_signature(name: str, thinking: str) -> str:
    digest = hashlib.sha256(f"{name}\0{thinking}".encode()).digest()
    return "Eq" + base64.b64encode(digest).decode()


def _message_body(answer: _Answer) -> bytes:
    body = {
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": list(answer.content),
        "stop_reason": answer.stop_reason,
        "stop_sequence": answer.stop_sequence,
        "usage": answer.usage,
    }
    return dumps(body).encode()


def _event(payload: JSONDict) -> bytes:
    return f"event: {payload['type']}\ndata: {dumps(payload)}\n\n".encode()


def _block_events(index: int, block: JSONDict, arguments: str | None, size: int) -> list[bytes]:
    kind = block["type"]
    deltas: list[JSONDict] = []
    if kind == "text":
        start: JSONDict = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in pieces(block["text"], size)]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": piece}
            for piece in pieces(block["thinking"], size)
        ]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "tool_use":
        start = {**block, "input": {}}
        fragments = ["", *pieces(arguments or "", size)]
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in fragments]
    else:  # redacted_thinking arrives whole
        start = block
    events = [_event({"type": "content_block_start", "index": index, "content_block": start})]
    events += [
        _event({"type": "content_block_delta", "index": index, "delta": delta}) for delta in deltas
    ]
    events.append(_event({"type": "content_block_stop", "index": index}))
    return events


def _stream_events(answer: _Answer, chunk_chars: int) -> list[bytes]:
    """All SSE events of a streamed answer, ``message_stop`` included."""
    usage = answer.usage
    start_usage = {**usage, "output_tokens": 1}
    message: JSONDict = {
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    events = [_event({"type": "message_start", "message": message}), _event({"type": "ping"})]
    calls = iter(answer.arguments)
    for index, block in enumerate(answer.content):
        arguments = next(calls) if block["type"] == "tool_use" else None
        events += _block_events(index, block, arguments, chunk_chars)
    final_usage = {
        key: usage[key]
        for key in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
            "output_tokens_details",
        )
        if key in usage
    }
    delta = {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence}
    events.append(_event({"type": "message_delta", "delta": delta, "usage": final_usage}))
    events.append(_event({"type": "message_stop"}))
    return events


_MIDSTREAM_ERROR: Final = _event(
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
)


def _model_object(model_id: str) -> JSONDict:
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id.replace("-", " ").title(),
        "created_at": MODEL_CREATED_AT,
    }


def _input_tokens(payload: JSONDict) -> int:
    counted = {"system": payload.get("system"), "messages": payload.get("messages")}
    return max(1, len(dumps(counted)) // 4)


def _tool_input(arguments: str) -> JSONDict:
    value = json.loads(arguments) if arguments.strip() else {}
    if not isinstance(value, dict):
        raise ValueError(f"tool arguments must be a JSON object, got {arguments!r}")
    return value


# --------------------------------------------------------------------------------------------
# The server


class FakeAnthropic(FakeUpstream[ScriptedResponse]):
    """A fake Anthropic Messages upstream running on a background thread."""

    default_models = DEFAULT_MODELS
    _script_type = ScriptedResponse
    _label = "anthropic"
    _cli_description = "Run a fake Anthropic Messages upstream."
    _api_key_help = "require x-api-key: KEY"

    def _setup(self) -> None:
        self._chat_path = f"{self.path_prefix}/messages"  # POST: the answering endpoint
        self._count_path = f"{self.path_prefix}/messages/count_tokens"
        self._call_ids = itertools.count(1)

    @property
    def sdk_base_url(self) -> str:
        """The ``anthropic`` SDK's base URL (it appends ``/v1/messages`` itself)."""
        return self.base_url.removesuffix("/v1")

    # ---- scripted answers ------------------------------------------------------------------

    def queue_response(
        self,
        text: str | None = None,
        *,
        tool_calls: Sequence[tuple[str, str]] = (),
        thinking: str | None = None,
        redacted_thinking: str | None = None,
        finish_reason: str | None = None,
        stop_sequence: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cached_tokens: int = 0,
        cache_creation_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> None:
        """Script the answer to the next messages request that reaches the answering stage.

        The argument names are the OpenAI fake's. ``tool_calls`` holds ``(name,
        arguments_json_string)`` pairs (an object or ``""``); ``thinking`` adds a signed
        thinking block first, ``redacted_thinking`` a redacted block (its ``data``).
        ``finish_reason`` is an Anthropic ``stop_reason`` (OpenAI's ``stop``/``length``/
        ``tool_calls`` are mapped); it defaults to ``tool_use`` with calls, else ``end_turn``
        (``stop_sequence`` when one is given). ``prompt_tokens`` is the total input, cache
        reads (``cached_tokens``) and writes included; ``reasoning_tokens`` appear as
        ``output_tokens_details.thinking_tokens``. Usage left None is computed.
        """
        if text is None and not tool_calls and thinking is None and redacted_thinking is None:
            raise ValueError("a scripted response needs text, tool_calls, thinking or both")
        for _, arguments in tool_calls:
            _tool_input(str(arguments))
        stop_reason = _OPENAI_FINISH.get(finish_reason or "", finish_reason)
        if stop_reason is not None and stop_reason not in STOP_REASONS:
            raise ValueError(f"unknown stop reason {finish_reason!r}")
        script = ScriptedResponse(
            text,
            tuple((str(name), str(arguments)) for name, arguments in tool_calls),
            thinking,
            redacted_thinking,
            stop_reason,
            stop_sequence,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            cache_creation_tokens,
            reasoning_tokens,
        )
        self._queue_script(script)

    # ---- protocol hooks --------------------------------------------------------------------

    def _next_request_id(self) -> str:
        return f"req_011Fake{self._id_tag}{next(self._sequence):012x}"

    def _head_fields(self, request_id: str, started: float, content_type: str) -> tuple[str, str]:
        after = "cache-control: no-cache\r\n" if content_type == SSE_TYPE else ""
        return f"request-id: {request_id}\r\n{_STATIC_HEADERS}", after

    def _bad_request(self, message: str) -> _ApiError:
        return _invalid(message)

    def _fault_error(self, fault: StatusFault) -> _ApiError:
        status, name = fault.status, self.name
        kind = _ERROR_TYPES.get(status) or (
            "api_error" if status >= 500 else "invalid_request_error"
        )
        retry = fault.retry_after
        if retry is None and status in _RETRY_STATUSES:
            retry = 1
        messages = {
            401: "invalid x-api-key",
            429: (
                f"This request would exceed the rate limit for your organization on fake "
                f"upstream {name}. Please try again in {format_seconds(retry or 1)}s."
            ),
            500: "Internal server error",
            503: "Overloaded",
            529: "Overloaded",
        }
        message = messages.get(
            status, f"{REASONS.get(status, 'Error')} (fault injected by fake upstream {name})"
        )
        return _ApiError(status, message, kind, retry)

    def _not_found(self, request: HttpRequest) -> _ApiError:
        return _ApiError(404, "Not Found", "not_found_error")

    def _wrong_method(self, request: HttpRequest, allowed: str) -> _ApiError:
        message = f"Method Not Allowed ({request.method} {request.path})"
        return _ApiError(405, message, "invalid_request_error", headers=(("allow", allowed),))

    def _route(self, path: str) -> Route | None:
        if path == self._chat_path:
            return "POST", self._messages
        if path == self._count_path:
            return "POST", self._count_tokens
        if path == self._models_path:
            return "GET", self._list_models
        model_id = self._model_id(path)
        return None if model_id is None else ("GET", partial(self._get_model, model_id=model_id))

    def _check_request(self, exchange: Exchange) -> _ApiError | None:
        headers = exchange.request.headers
        error = self._check_auth(headers)
        if error is None and not headers.get("anthropic-version"):
            error = _invalid("anthropic-version: header is required")
        return error

    def _check_auth(self, headers: dict[str, str]) -> _ApiError | None:
        expected = self.expected_api_key
        if expected is None:
            return None
        key = headers.get("x-api-key")
        if key is None:
            scheme, _, bearer = headers.get("authorization", "").partition(" ")
            key = bearer.strip() if scheme.lower() == "bearer" else None
        if not key:
            return _ApiError(401, "x-api-key header is required", "authentication_error")
        if key != expected:
            return _ApiError(401, "invalid x-api-key", "authentication_error")
        return None

    # ---- endpoints -------------------------------------------------------------------------

    async def _list_models(self, exchange: Exchange) -> bool:
        data = [_model_object(model) for model in self.models]
        body = {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return await exchange.send_json(200, dumps(body).encode())

    async def _get_model(self, exchange: Exchange, model_id: str) -> bool:
        if model_id not in self.models:
            error = _ApiError(404, f"model: {model_id}", "not_found_error")
            return await exchange.send_error(error)
        return await exchange.send_json(200, dumps(_model_object(model_id)).encode())

    async def _count_tokens(self, exchange: Exchange) -> bool:
        payload = exchange.payload
        error = _validate_messages_request(payload, count=True) or self._check_model(payload)
        if error is not None:
            return await exchange.send_error(error)
        body = {"input_tokens": _input_tokens(payload)}
        return await exchange.send_json(200, dumps(body).encode())

    async def _messages(self, exchange: Exchange) -> bool:
        payload = exchange.payload
        error = _validate_messages_request(payload, count=False) or self._check_model(payload)
        if error is not None:
            return await exchange.send_error(error)
        answer = self._answer(payload)
        if payload.get("stream") is not True:
            return await exchange.send_json(200, _message_body(answer))
        events = _stream_events(answer, self.chunk_chars)
        return await self._send_stream(exchange, events, _MIDSTREAM_ERROR)

    def _check_model(self, payload: JSONDict) -> _ApiError | None:
        model = payload["model"]
        if not self.strict_models or model in self.models:
            return None
        return _ApiError(404, f"model: {model}", "not_found_error")

    def _answer(self, payload: JSONDict) -> _Answer:
        model = payload["model"]
        script = self._next_script(model)
        content: list[JSONDict] = []
        if script.thinking is not None:
            signature = _fake_signature(self.name, script.thinking)
            content.append(
                {"type": "thinking", "thinking": script.thinking, "signature": signature}
            )
        if script.redacted_thinking is not None:
            content.append({"type": "redacted_thinking", "data": script.redacted_thinking})
        if script.text is not None:
            content.append({"type": "text", "text": script.text})
        for name, arguments in script.tool_calls:
            call_id = f"toolu_01Fake{next(self._call_ids):016d}"
            block = {"type": "tool_use", "id": call_id, "name": name}
            content.append({**block, "input": _tool_input(arguments)})
        output = (script.thinking or "") + (script.text or "")
        output += "".join(name + arguments for name, arguments in script.tool_calls)
        stop_reason = script.stop_reason or (
            "tool_use"
            if script.tool_calls
            else "stop_sequence"
            if script.stop_sequence
            else "end_turn"
        )
        total_input = _input_tokens(payload) if script.input_tokens is None else script.input_tokens
        cached = script.cache_read_tokens + script.cache_creation_tokens
        usage: JSONDict = {
            "input_tokens": max(total_input - cached, 0),
            "cache_creation_input_tokens": script.cache_creation_tokens,
            "cache_read_input_tokens": script.cache_read_tokens,
            "output_tokens": max(1, len(output) // 4)
            if script.output_tokens is None
            else script.output_tokens,
            "service_tier": "standard",
        }
        if script.thinking_tokens:
            usage["output_tokens_details"] = {"thinking_tokens": script.thinking_tokens}
        return _Answer(
            id=f"msg_01Fake{self._id_tag}{next(self._sequence):014x}",
            model=model,
            content=tuple(content),
            arguments=tuple(arguments for _, arguments in script.tool_calls),
            stop_reason=stop_reason,
            stop_sequence=script.stop_sequence if stop_reason == "stop_sequence" else None,
            usage=usage,
        )


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(FakeAnthropic, "tests.fakes.anthropic_upstream", argv)


if __name__ == "__main__":
    sys.exit(main())
