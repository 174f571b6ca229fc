"""A fake OpenAI-compatible Chat Completions provider for end-to-end tests and benchmarks.

The fake is a small HTTP/1.1 server written on ``asyncio`` and the standard library only. It
follows ``WIRE_FORMATS.md`` section 1 (Chat Completions) and the fake-upstream checklist (5.11)
closely enough that the official ``openai`` SDK, and Envoy in front of it, take it for the real
thing:

* keep-alive connections, request bodies framed by ``content-length`` or by
  ``transfer-encoding: chunked``, ``TCP_NODELAY`` on every accepted socket;
* ``x-request-id``, ``openai-version`` and rate-limit headers on every response;
* non-streaming answers as ``application/json`` with ``content-length``;
* streaming answers as ``text/event-stream`` with ``transfer-encoding: chunked``, one SSE event
  per HTTP chunk, drained immediately: ``data:`` lines only, the full chunk envelope on every
  chunk, the role chunk first, content (or tool-call argument) fragments of ``chunk_chars``
  characters, a finish chunk with an empty ``delta``, a usage chunk (``choices: []``) only when
  ``stream_options.include_usage`` is true, then ``data: [DONE]``;
* OpenAI-shaped errors ``{"error": {"message", "type", "param", "code"}}`` and ``retry-after`` on
  429 and 503.

Endpoints, under ``path_prefix`` (default ``/v1``): ``POST {prefix}/chat/completions``,
``GET {prefix}/models`` and ``GET {prefix}/models/{id}``. Other paths answer 404, a known path
with the wrong method 405. Chat requests are validated like the real API: a JSON object with a
``model`` and a non-empty ``messages`` array, known roles, every assistant ``tool_calls`` id
answered by a ``tool`` message, ``stream`` a boolean, ``stream_options`` only with ``stream``.
With ``expected_api_key`` set, every request (health checks included) must carry
``Authorization: Bearer <key>`` or gets 401.

Answers: without a script the answer is ``f"{name} says hello to {model}"``, so a test can tell
which backend answered; ``answer_chars=N`` (``--answer-chars N``) stretches or cuts that default
answer to exactly N characters, so a benchmark's streams have N / ``chunk_chars`` content chunks.
``queue_response()`` scripts the next chat answers (text, tool calls, finish reason, usage
numbers). Usage is deterministic: prompt tokens are the length of the compact JSON of
``messages`` divided by 4, completion tokens the length of the output divided by 4.

Fault knobs, set with ``set_fault(...)`` from any thread. Each applies to the next ``count``
requests it affects, or until ``clear_faults()`` when ``count`` is None. With ``chat_only=True``
requests other than ``POST .../chat/completions`` (health checks) neither see nor consume them;
the stream-only knobs are never seen or consumed by non-streaming requests.

* ``status``: answer with this HTTP status and an OpenAI-shaped error body (401
  ``invalid_api_key``, 429 ``rate_limit_exceeded``, 500 ``server_error``, 503 overloaded; others
  generic), on every path. ``retry_after`` (seconds) overrides the ``retry-after`` header, which
  defaults to 1 on 429 and 503.
* ``delay``: seconds to wait after reading the request, before the response headers.
* ``reset``: read the request, then abort the connection with a TCP RST and no response.
* ``refuse``: close the listening socket (new connections get ECONNREFUSED) and drop open
  connections; ``restore()`` or clearing the knob listens again on the same port. ``count`` does
  not apply.
* ``stall_after`` (streams only): send N SSE events, then send nothing more until the knob is
  cleared (the stream then continues) or the client goes away.
* ``chunk_delay`` (streams only): seconds between SSE events.
* ``midstream_error`` (streams only): after N SSE events send
  ``data: {"error": {..., "type": "server_error"}}``, end the body and close the connection,
  without ``[DONE]``.

Command line (used by the benchmark)::

    python -m tests.fakes.openai_upstream --port 8001 --name alpha --control-port 8101
    python -m tests.fakes.openai_upstream --answer-chars 256 --chunk-chars 4  # 64-chunk streams

prints ``listening on PORT`` once ready. The control port serves a tiny JSON API:
``POST /faults`` (body: ``set_fault`` keyword arguments), ``DELETE /faults``, ``GET /faults``,
``GET /requests/count`` and ``DELETE /requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import unquote

JSONDict = dict[str, Any]
_T = TypeVar("_T")

FAULT_KNOBS: Final = (
    "status",
    "delay",
    "reset",
    "refuse",
    "stall_after",
    "chunk_delay",
    "midstream_error",
)
DEFAULT_MODELS: Final = ("gpt-4o-mini", "gpt-4o")
SYSTEM_FINGERPRINT: Final = "fp_fake0c0ffee"
MODEL_CREATED: Final = 1_715_367_049

_REQUEST_KNOBS: Final = ("reset", "delay", "status")
_STREAM_KNOBS: Final = ("stall_after", "chunk_delay", "midstream_error")
_HEAD_LIMIT: Final = 1 << 20
_LAST_CHUNK: Final = b"0\r\n\r\n"
_DONE_EVENT: Final = b"data: [DONE]\n\n"
_JSON_TYPE: Final = "application/json"
_SSE_TYPE: Final = "text/event-stream"
_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_KEY_HELP: Final = "You can find your API key at https://platform.openai.com/account/api-keys."
_STATIC_HEADERS: Final = (
    "openai-version: 2020-10-01\r\n"
    "x-ratelimit-limit-requests: 10000\r\n"
    "x-ratelimit-limit-tokens: 30000000\r\n"
    "x-ratelimit-remaining-requests: 9999\r\n"
    "x-ratelimit-remaining-tokens: 29999000\r\n"
    "x-ratelimit-reset-requests: 6ms\r\n"
    "x-ratelimit-reset-tokens: 2ms\r\n"
)
_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


# --------------------------------------------------------------------------------------------
# Public value types


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    json: Any  # the parsed body, or None when it is empty or not JSON
    received_at: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class ScriptedResponse:
    """A scripted chat answer; see ``FakeOpenAI.queue_response``."""

    text: str | None = None
    tool_calls: tuple[tuple[str, str], ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    #: Reasoning text, sent as ``reasoning_content`` the way OpenAI-compatible
    #: reasoning servers (DeepSeek, vLLM, llama.cpp) do; OpenAI itself never does.
    reasoning: str | None = None


# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class _ApiError:
    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    retry_after: float | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return _dumps({"error": error}).encode()

    def response_headers(self) -> list[tuple[str, str]]:
        headers = list(self.headers)
        if self.retry_after is not None:
            headers.append(("retry-after", _format_seconds(self.retry_after)))
        return headers


def _invalid(message: str, param: str | None = None, code: str | None = None) -> _ApiError:
    return _ApiError(400, message, "invalid_request_error", param, code)


def _mask_key(key: str) -> str:
    return f"{key[:3]}{'*' * max(len(key) - 7, 3)}{key[-4:]}" if len(key) > 8 else "***"


@dataclass(frozen=True, slots=True)
class _StatusFault:
    status: int
    retry_after: float | None

    def error(self, name: str) -> _ApiError:
        status, retry = self.status, self.retry_after
        if status == 401:
            message = f"Incorrect API key provided: sk-fake*********key. {_KEY_HELP}"
            return _ApiError(401, message, "invalid_request_error", None, "invalid_api_key", retry)
        if status == 429:
            wait = _format_seconds(1 if retry is None else retry)
            message = (
                f"Rate limit reached for requests per min (RPM) on fake upstream {name}: "
                f"Limit 500, Used 500, Requested 1. Please try again in {wait}s."
            )
            retry = 1 if retry is None else retry
            return _ApiError(429, message, "requests", None, "rate_limit_exceeded", retry)
        if status == 500:
            message = "The server had an error while processing your request. Sorry about that!"
            return _ApiError(500, message, "server_error", None, None, retry)
        if status == 503:
            message = "The engine is currently overloaded, please try again later."
            retry = 1 if retry is None else retry
            return _ApiError(503, message, "server_error", None, "server_is_overloaded", retry)
        kind = "server_error" if status >= 500 else "invalid_request_error"
        message = f"{_REASONS.get(status, 'Error')} (fault injected by fake upstream {name})"
        return _ApiError(status, message, kind, None, None, retry)


# --------------------------------------------------------------------------------------------
# Fault knobs


@dataclass(slots=True)
class _Knob:
    value: Any
    remaining: int | None
    chat_only: bool

    def describe(self) -> JSONDict:
        value = self.value
        described: JSONDict = {"remaining": self.remaining, "chat_only": self.chat_only}
        if isinstance(value, _StatusFault):
            described.update(value=value.status, retry_after=value.retry_after)
        else:
            described["value"] = value
        return described


class _FaultBoard:
    """Thread-safe store of the armed fault knobs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._knobs: dict[str, _Knob] = {}

    def arm(self, knobs: dict[str, Any], count: int | None, chat_only: bool) -> None:
        with self._lock:
            for name, value in knobs.items():
                self._knobs[name] = _Knob(value, count, chat_only)

    def clear(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in names:
                self._knobs.pop(name, None)

    def describe(self) -> dict[str, JSONDict]:
        with self._lock:
            return {name: knob.describe() for name, knob in self._knobs.items()}

    def take(self, names: Sequence[str], *, is_chat: bool) -> dict[str, Any]:
        """Return the knobs among ``names`` that apply to one request, consuming one use each."""
        if not self._knobs:  # lock-free fast path for the common case
            return {}
        taken: dict[str, Any] = {}
        with self._lock:
            for name in names:
                knob = self._knobs.get(name)
                if knob is None or (knob.chat_only and not is_chat):
                    continue
                taken[name] = knob.value
                if knob.remaining is not None:
                    knob.remaining -= 1
                    if knob.remaining <= 0:
                        del self._knobs[name]
        return taken


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# HTTP/1.1 request parsing


class _BadRequest(Exception):
    pass


@dataclass(slots=True)
class _HttpRequest:
    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(f"malformed request line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(f"malformed header line {line!r}")
        key, value = name.strip().lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return parts[0], parts[1], parts[2], headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadRequest("malformed chunk size") from None
        if size == 0:
            break
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _BadRequest("chunk not terminated by CRLF")
    while await reader.readuntil(b"\r\n") != b"\r\n":  # skip trailer fields
        pass
    return b"".join(parts)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    length_text = headers.get("content-length")
    if length_text is None:
        return b""
    try:
        length = int(length_text)
    except ValueError:
        raise _BadRequest("malformed content-length") from None
    if length < 0:
        raise _BadRequest("negative content-length")
    return await reader.readexactly(length) if length else b""


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> _HttpRequest | None:
    """Read one request; None when the client closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("truncated request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise _BadRequest("request head too large") from None
    method, target, version, headers = _parse_head(head)
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await _read_body(reader, headers)
    path, _, query = target.partition("?")
    return _HttpRequest(method, path, query, version, headers, body)


def _parse_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Responses


def _render_head(
    status: int,
    content_type: str,
    length: int | None,
    *,
    request_id: str,
    started: float,
    keep_alive: bool,
    extra: Iterable[tuple[str, str]] = (),
) -> bytes:
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    parts = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n",
        f"content-type: {content_type}\r\n",
        f"x-request-id: {request_id}\r\n",
        f"openai-processing-ms: {elapsed_ms}\r\n",
        _STATIC_HEADERS,
        f"content-length: {length}\r\n" if length is not None else "transfer-encoding: chunked\r\n",
    ]
    if not keep_alive:
        parts.append("connection: close\r\n")
    parts.extend(f"{name}: {value}\r\n" for name, value in extra)
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Exchange:
    """One request/response exchange on a connection."""

    __slots__ = ("keep_alive", "payload", "reader", "request", "request_id", "started", "writer")

    def __init__(
        self,
        request: _HttpRequest,
        payload: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request_id: str,
    ) -> None:
        self.request = request
        self.payload = payload
        self.reader = reader
        self.writer = writer
        self.request_id = request_id
        self.keep_alive = request.keep_alive
        self.started = time.perf_counter()

    def head(
        self, status: int, content_type: str, length: int | None, extra: Iterable[tuple[str, str]]
    ) -> bytes:
        return _render_head(
            status,
            content_type,
            length,
            request_id=self.request_id,
            started=self.started,
            keep_alive=self.keep_alive,
            extra=extra,
        )

    async def send_json(
        self, status: int, body: bytes, extra: Iterable[tuple[str, str]] = ()
    ) -> bool:
        self.writer.write(self.head(status, _JSON_TYPE, len(body), extra) + body)
        await self.writer.drain()
        return self.keep_alive

    async def send_error(self, error: _ApiError) -> bool:
        return await self.send_json(error.status, error.body(), error.response_headers())


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --------------------------------------------------------------------------------------------
# Chat request validation


def _validate_chat(payload: Any) -> _ApiError | None:
    if not isinstance(payload, dict):
        return _invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)"
        )
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        return _invalid("you must provide a model parameter")
    error = _validate_messages(payload.get("messages"))
    if error is None:
        error = _validate_stream_flags(payload)
    return error


def _validate_messages(messages: Any) -> _ApiError | None:
    if messages is None:
        return _invalid(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(messages, list):
        kind = type(messages).__name__
        return _invalid(
            f"Invalid type for 'messages': expected an array, but got {kind} instead.",
            "messages",
            "invalid_type",
        )
    if not messages:
        return _invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
            "empty array instead.",
            "messages",
            "empty_array",
        )
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            return _invalid(
                f"Invalid value: {role!r}. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                f"messages[{index}].role",
                "invalid_value",
            )
    return _validate_tool_answers(messages)


def _tool_call_ids(message: JSONDict) -> list[str]:
    calls = message.get("tool_calls") if message.get("role") == "assistant" else None
    if not isinstance(calls, list):
        return []
    return [str(call.get("id")) for call in calls if isinstance(call, dict)]


def _validate_tool_answers(messages: list[JSONDict]) -> _ApiError | None:
    """Every assistant tool call must be answered by a tool message before the next turn."""
    pending: list[str] = []
    pending_at = -1
    for index, message in enumerate(messages):
        if message.get("role") == "tool":
            if message.get("tool_call_id") not in pending:
                return _invalid(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{index}].role",
                )
            pending.remove(message["tool_call_id"])
            continue
        if pending:
            break
        pending, pending_at = _tool_call_ids(message), index
    if not pending:
        return None
    return _invalid(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to "
        "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(pending),
        f"messages.[{pending_at}].role",
    )


def _validate_stream_flags(payload: JSONDict) -> _ApiError | None:
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        kind = type(stream).__name__
        return _invalid(
            f"Invalid type for 'stream': expected a boolean, but got {kind} instead.",
            "stream",
            "invalid_type",
        )
    if payload.get("stream_options") is not None and stream is not True:
        return _invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    return None


def _include_usage(payload: JSONDict) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# --------------------------------------------------------------------------------------------
# Answers and their wire encodings


@dataclass(frozen=True, slots=True)
class _ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class _Answer:
    id: str
    model: str
    created: int
    text: str | None
    tool_calls: tuple[_ToolCall, ...]
    finish_reason: str
    usage: JSONDict
    reasoning: str | None = None


def _usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> JSONDict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)]


def _completion_body(answer: _Answer) -> bytes:
    message: JSONDict = {
        "role": "assistant",
        "content": answer.text,
        "refusal": None,
        "annotations": [],
    }
    if answer.reasoning is not None:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in answer.tool_calls
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": answer.finish_reason,
    }
    body = {
        "id": answer.id,
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [choice],
        "usage": answer.usage,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    return _dumps(body).encode()


class _ChunkEncoder:
    """Renders ``chat.completion.chunk`` SSE events sharing one envelope."""

    def __init__(self, answer: _Answer, include_usage: bool) -> None:
        envelope = _dumps(
            {
                "id": answer.id,
                "object": "chat.completion.chunk",
                "created": answer.created,
                "model": answer.model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "service_tier": "default",
            }
        )
        self._head = "data: " + envelope[:-1] + ',"choices":'
        self._tail = ',"usage":null}\n\n' if include_usage else "}\n\n"

    def delta(self, delta: JSONDict, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return f"{self._head}[{_dumps(choice)}]{self._tail}".encode()

    def usage(self, usage: JSONDict) -> bytes:
        return f'{self._head}[],"usage":{_dumps(usage)}}}\n\n'.encode()


def _tool_call_events(encoder: _ChunkEncoder, answer: _Answer, size: int) -> list[bytes]:
    events: list[bytes] = []
    for index, call in enumerate(answer.tool_calls):
        function = {"name": call.name, "arguments": ""}
        opening = {"index": index, "id": call.id, "type": "function", "function": function}
        events.append(encoder.delta({"tool_calls": [opening]}))
        for piece in _pieces(call.arguments, size):
            fragment = {"index": index, "function": {"arguments": piece}}
            events.append(encoder.delta({"tool_calls": [fragment]}))
    return events


def _stream_events(answer: _Answer, *, include_usage: bool, chunk_chars: int) -> list[bytes]:
    """All SSE events of a streamed answer, ``data: [DONE]`` included."""
    encoder = _ChunkEncoder(answer, include_usage)
    if answer.text is not None:
        role: JSONDict = {"role": "assistant", "content": "", "refusal": None}
    else:
        role = {"role": "assistant", "content": None}
    events = [encoder.delta(role)]
    events += [
        encoder.delta({"reasoning_content": piece})
        for piece in _pieces(answer.reasoning or "", chunk_chars)
    ]
    events += [
        encoder.delta({"content": piece}) for piece in _pieces(answer.text or "", chunk_chars)
    ]
    events += _tool_call_events(encoder, answer, chunk_chars)
    events.append(encoder.delta({}, answer.finish_reason))
    if include_usage:
        events.append(encoder.usage(answer.usage))
    events.append(_DONE_EVENT)
    return events


_MIDSTREAM_ERROR: Final = (
    b'data: {"error":{"message":"The server had an error while processing your request. '
    b'Sorry about that!","type":"server_error","param":null,"code":null}}\n\n'
)


_ANSWER_FILLER: Final = " and keeps on talking, so that the answer streams in many small chunks."


def default_answer(name: str, model: str, answer_chars: int | None = None) -> str:
    """The unscripted answer: the greeting, stretched (or cut) to ``answer_chars`` characters."""
    text = f"{name} says hello to {model}"
    if answer_chars is None:
        return text
    while len(text) < answer_chars:
        text += _ANSWER_FILLER
    return text[:answer_chars]


def _model_object(model_id: str) -> JSONDict:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": "system"}


# --------------------------------------------------------------------------------------------
# The server

_Handler = Callable[[_Exchange], Awaitable[bool]]


class FakeOpenAI:
    """A fake OpenAI Chat Completions upstream running on a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "fake",
        *,
        models: Sequence[str] = DEFAULT_MODELS,
        path_prefix: str = "/v1",
        expected_api_key: str | None = None,
        chunk_chars: int = 4,
        answer_chars: int | None = None,
        strict_models: bool = False,
        max_recorded: int | None = 10_000,
        log_requests: bool = False,
    ) -> None:
        self.name = name
        self.models = tuple(models)
        self.path_prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
        self.expected_api_key = expected_api_key
        self.chunk_chars = _check_int("chunk_chars", chunk_chars, 1)
        self.answer_chars = (
            None if answer_chars is None else _check_int("answer_chars", answer_chars, 1)
        )
        self.strict_models = strict_models
        self.log_requests = log_requests
        self._host = host
        self._port = port
        self._id_tag = "".join(c for c in name if c.isascii() and (c.isalnum() or c in "-_"))
        self._chat_path = f"{self.path_prefix}/chat/completions"
        self._models_path = f"{self.path_prefix}/models"
        self._lock = threading.Lock()
        self._recorded: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._request_count = 0
        self._chat_count = 0
        self._accepted = 0
        self._scripts: deque[ScriptedResponse] = deque()
        self._faults = _FaultBoard()
        self._refused = False
        self._sequence = itertools.count(1)
        self._call_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}
        self._stall_release: asyncio.Event | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        """Start serving on a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"fake-openai-{self.name}", daemon=True
        )
        self._thread.start()
        try:
            self._run(self._boot())
        except BaseException:
            self._halt_loop()
            raise
        return self

    def stop(self) -> None:
        """Stop serving, dropping every open connection."""
        if self._loop is None:
            return
        try:
            self._run(self._shutdown())
        finally:
            self._halt_loop()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was requested)."""
        return self._port

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self._host in ("", "0.0.0.0", "::") else self._host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._port}{self.path_prefix}"

    # ---- recorded requests -----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the recorded requests, oldest first (health checks included)."""
        with self._lock:
            return list(self._recorded)

    def chat_requests(self) -> list[RecordedRequest]:
        """The recorded ``POST {prefix}/chat/completions`` requests."""
        return [r for r in self.requests if r.method == "POST" and r.path == self._chat_path]

    def clear_requests(self) -> None:
        with self._lock:
            self._recorded.clear()

    @property
    def request_count(self) -> int:
        """Requests received since start, recorded or not."""
        return self._request_count

    @property
    def chat_request_count(self) -> int:
        return self._chat_count

    @property
    def connections_accepted(self) -> int:
        return self._accepted

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # ---- scripted answers ------------------------------------------------------------------

    def queue_response(
        self,
        text: str | None = None,
        *,
        tool_calls: Sequence[tuple[str, str]] = (),
        finish_reason: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        reasoning: str | None = None,
    ) -> None:
        """Script the answer to the next chat request that reaches the answering stage.

        ``tool_calls`` holds ``(name, arguments_json_string)`` pairs. ``finish_reason`` defaults
        to ``tool_calls`` when there are calls and ``stop`` otherwise. Usage numbers left None are
        computed as for unscripted answers.
        """
        if text is None and not tool_calls:
            raise ValueError("a scripted response needs text, tool_calls or both")
        script = ScriptedResponse(
            text,
            tuple((str(name), str(arguments)) for name, arguments in tool_calls),
            finish_reason,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            reasoning_tokens,
            reasoning,
        )
        self._scripts.append(script)

    def clear_responses(self) -> None:
        self._scripts.clear()

    # ---- faults ----------------------------------------------------------------------------

    def set_fault(
        self,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        delay: float | None = None,
        reset: bool = False,
        refuse: bool = False,
        stall_after: int | None = None,
        chunk_delay: float | None = None,
        midstream_error: int | None = None,
        count: int | None = None,
        chat_only: bool = False,
    ) -> None:
        """Arm fault knobs (see the module docstring). Knobs not given keep their state."""
        if count is not None:
            _check_int("count", count, 1)
        knobs: dict[str, Any] = {}
        if status is not None:
            _check_int("status", status, 400)
            if status > 599:
                raise ValueError(f"status must be 400..599, got {status}")
            retry = None if retry_after is None else _check_seconds("retry_after", retry_after)
            knobs["status"] = _StatusFault(status, retry)
        elif retry_after is not None:
            raise ValueError("retry_after only applies together with status")
        if delay is not None:
            knobs["delay"] = _check_seconds("delay", delay)
        if reset:
            knobs["reset"] = True
        if stall_after is not None:
            knobs["stall_after"] = _check_int("stall_after", stall_after, 0)
        if chunk_delay is not None:
            knobs["chunk_delay"] = _check_seconds("chunk_delay", chunk_delay)
        if midstream_error is not None:
            knobs["midstream_error"] = _check_int("midstream_error", midstream_error, 0)
        self._faults.arm(knobs, count, bool(chat_only))
        if refuse and not self._refused:
            self._run(self._close_listener())

    def clear_faults(self, *names: str) -> None:
        """Disarm the named knobs (all when none are named), release stalls, restore listening."""
        unknown = set(names) - set(FAULT_KNOBS)
        if unknown:
            raise ValueError(f"unknown fault knobs: {sorted(unknown)}")
        targets = names or FAULT_KNOBS
        self._faults.clear(targets)
        if "stall_after" in targets and self._loop is not None:
            self._loop.call_soon_threadsafe(self._release_stalls)
        if "refuse" in targets:
            self.restore()

    def restore(self) -> None:
        """Listen again on the same port after a ``refuse`` fault."""
        if self._refused:
            self._run(self._open_listener())

    @property
    def refused(self) -> bool:
        return self._refused

    def active_faults(self) -> dict[str, JSONDict]:
        faults = self._faults.describe()
        if self._refused:
            faults["refuse"] = {"value": True, "remaining": None, "chat_only": False}
        return faults

    # ---- event-loop side: lifecycle ------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the fake server is not running")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("must not be called from the fake server's own event loop")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def _halt_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()

    async def _boot(self) -> None:
        self._stall_release = asyncio.Event()
        await self._open_listener()

    async def _open_listener(self) -> None:
        self._refused = False
        try:
            self._server = await asyncio.start_server(
                self._serve_connection,
                self._host,
                self._port,
                limit=_HEAD_LIMIT,
                backlog=1024,
                reuse_address=True,
            )
        except BaseException:
            self._refused = True
            raise
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        self._refused = True
        if self._server is not None:
            self._server.close()  # closes the listening sockets right away
            self._server = None
        for writer in list(self._connections):
            writer.transport.abort()

    async def _shutdown(self) -> None:
        await self._close_listener()
        tasks = list(self._connections.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _release_stalls(self) -> None:
        if self._stall_release is not None:
            self._stall_release.set()
        self._stall_release = asyncio.Event()

    # ---- event-loop side: connections ------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if self._refused or task is None:  # accepted just before the listener closed
            writer.transport.abort()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._connections[writer] = task
        self._accepted += 1
        try:
            while await self._serve_one(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the peer went away, or the connection was aborted on purpose
        except asyncio.CancelledError:
            # stop() cancels connection tasks; end quietly, because asyncio's own done-callback
            # for client_connected_cb tasks (Python 3.11) raises on a cancelled task
            pass
        finally:
            self._connections.pop(writer, None)
            writer.close()

    def _next_request_id(self) -> str:
        return f"req_{self._id_tag}_{next(self._sequence):012x}"

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; True when the connection stays open for another one."""
        try:
            request = await _read_request(reader, writer)
        except _BadRequest as exc:
            body = _invalid(str(exc)).body()
            head = _render_head(
                400,
                _JSON_TYPE,
                len(body),
                request_id=self._next_request_id(),
                started=time.perf_counter(),
                keep_alive=False,
            )
            writer.write(head + body)
            await writer.drain()
            return False
        if request is None:
            return False
        payload = _parse_json(request.body)
        is_chat = self._record(request, payload)
        exchange = _Exchange(request, payload, reader, writer, self._next_request_id())
        faults = self._faults.take(_REQUEST_KNOBS, is_chat=is_chat)
        if faults.get("reset"):
            _abort_with_rst(writer)
            return False
        if faults.get("delay"):
            await asyncio.sleep(faults["delay"])
        status_fault: _StatusFault | None = faults.get("status")
        if status_fault is not None:
            return await exchange.send_error(status_fault.error(self.name))
        return await self._dispatch(exchange)

    def _record(self, request: _HttpRequest, payload: Any) -> bool:
        is_chat = request.method == "POST" and request.path == self._chat_path
        record = RecordedRequest(
            request.method,
            request.path,
            request.query,
            request.headers,
            request.body,
            payload,
            time.monotonic(),
        )
        with self._lock:
            self._recorded.append(record)
            self._request_count += 1
            self._chat_count += is_chat
        if self.log_requests:
            print(f"[{self.name}] {request.method} {request.path}", file=sys.stderr, flush=True)
        return is_chat

    # ---- routing ---------------------------------------------------------------------------

    def _route(self, path: str) -> tuple[str, _Handler] | None:
        if path == self._chat_path:
            return "POST", self._chat
        if path == self._models_path:
            return "GET", self._list_models
        if path.startswith(self._models_path + "/") and len(path) > len(self._models_path) + 1:
            return "GET", self._get_model
        return None

    async def _dispatch(self, exchange: _Exchange) -> bool:
        request = exchange.request
        auth_error = self._check_auth(request.headers)
        if auth_error is not None:
            return await exchange.send_error(auth_error)
        route = self._route(request.path)
        if route is None:
            message = f"Invalid URL ({request.method} {request.path})"
            return await exchange.send_error(_ApiError(404, message, "invalid_request_error"))
        method, handler = route
        if request.method != method:
            message = f"Method Not Allowed ({request.method} {request.path})"
            error = _ApiError(405, message, "invalid_request_error", headers=(("allow", method),))
            return await exchange.send_error(error)
        return await handler(exchange)

    def _check_auth(self, headers: dict[str, str]) -> _ApiError | None:
        expected = self.expected_api_key
        if expected is None:
            return None
        authorization = headers.get("authorization", "")
        scheme, _, key = authorization.partition(" ")
        if not authorization or not key.strip():
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). "
                + _KEY_HELP
            )
            return _ApiError(401, message, "invalid_request_error")
        if scheme.lower() != "bearer" or key.strip() != expected:
            message = f"Incorrect API key provided: {_mask_key(key.strip())}. {_KEY_HELP}"
            return _ApiError(401, message, "invalid_request_error", None, "invalid_api_key")
        return None

    # ---- endpoints -------------------------------------------------------------------------

    async def _list_models(self, exchange: _Exchange) -> bool:
        body = {"object": "list", "data": [_model_object(model) for model in self.models]}
        return await exchange.send_json(200, _dumps(body).encode())

    async def _get_model(self, exchange: _Exchange) -> bool:
        model_id = unquote(exchange.request.path[len(self._models_path) + 1 :])
        if model_id not in self.models:
            message = f"The model '{model_id}' does not exist"
            error = _ApiError(404, message, "invalid_request_error", "model", "model_not_found")
            return await exchange.send_error(error)
        return await exchange.send_json(200, _dumps(_model_object(model_id)).encode())

    async def _chat(self, exchange: _Exchange) -> bool:
        payload = exchange.payload
        error = _validate_chat(payload) or self._check_model(payload)
        if error is not None:
            return await exchange.send_error(error)
        answer = self._answer(payload)
        if payload.get("stream") is not True:
            return await exchange.send_json(200, _completion_body(answer))
        events = _stream_events(
            answer, include_usage=_include_usage(payload), chunk_chars=self.chunk_chars
        )
        return await self._send_stream(exchange, events)

    def _check_model(self, payload: JSONDict) -> _ApiError | None:
        model = payload["model"]
        if not self.strict_models or model in self.models:
            return None
        message = f"The model `{model}` does not exist or you do not have access to it."
        return _ApiError(404, message, "invalid_request_error", None, "model_not_found")

    def _answer(self, payload: JSONDict) -> _Answer:
        model = payload["model"]
        prompt_tokens = max(1, len(_dumps(payload["messages"])) // 4)
        try:
            script = self._scripts.popleft()
        except IndexError:
            script = ScriptedResponse(text=default_answer(self.name, model, self.answer_chars))
        calls = tuple(
            _ToolCall(f"call_fake{next(self._call_ids):015d}", name, arguments)
            for name, arguments in script.tool_calls
        )
        output = (script.text or "") + "".join(c.name + c.arguments for c in calls)
        usage = _usage(
            prompt_tokens if script.prompt_tokens is None else script.prompt_tokens,
            max(1, len(output) // 4)
            if script.completion_tokens is None
            else script.completion_tokens,
            script.cached_tokens,
            script.reasoning_tokens,
        )
        finish_reason = script.finish_reason or ("tool_calls" if calls else "stop")
        return _Answer(
            id=f"chatcmpl-{next(self._sequence):024x}",
            model=model,
            created=int(time.time()),
            text=script.text,
            tool_calls=calls,
            finish_reason=finish_reason,
            usage=usage,
            reasoning=script.reasoning,
        )

    # ---- streaming -------------------------------------------------------------------------

    async def _send_stream(self, exchange: _Exchange, events: list[bytes]) -> bool:
        faults = self._faults.take(_STREAM_KNOBS, is_chat=True)
        release = self._stall_release  # captured now, so a clear from now on wakes this stream
        last = len(events) - 1
        error_at: int | None = faults.get("midstream_error")
        if error_at is not None:
            error_at = min(error_at, last)
            exchange.keep_alive = False
        stall_at: int | None = faults.get("stall_after")
        gap: float = faults.get("chunk_delay", 0.0)
        writer = exchange.writer
        pending = exchange.head(200, _SSE_TYPE, None, ())
        for index, event in enumerate(events):
            if index == error_at:
                writer.write(pending + _chunk(_MIDSTREAM_ERROR) + _LAST_CHUNK)
                await writer.drain()
                return False
            if index == stall_at:
                writer.write(pending)
                pending = b""
                await writer.drain()
                if not await _stall(exchange.reader, release):
                    return False
            if index and gap:
                await asyncio.sleep(gap)
            writer.write(pending + _chunk(event) + (_LAST_CHUNK if index == last else b""))
            pending = b""
            await writer.drain()
        return exchange.keep_alive


async def _stall(reader: asyncio.StreamReader, release: asyncio.Event | None) -> bool:
    """Wait until ``release`` is set (True) or the client closes the connection (False)."""
    if release is None:
        return True
    released = asyncio.ensure_future(release.wait())
    client_gone = asyncio.ensure_future(reader.read(1))
    try:
        await asyncio.wait({released, client_gone}, return_when=asyncio.FIRST_COMPLETED)
        gone = client_gone.done()
    finally:
        released.cancel()
        client_gone.cancel()
        # let the cancelled read finish, so the reader is free for the next request
        await asyncio.gather(released, client_gone, return_exceptions=True)
    return not gone


# --------------------------------------------------------------------------------------------
# Control API and command line


class _ControlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeOpenAI) -> None:
        super().__init__(address, _ControlHandler)
        self.fake = fake


class _ControlHandler(BaseHTTPRequestHandler):
    """``POST /faults``, ``DELETE /faults``, ``GET /faults``, ``GET /requests/count``,
    ``DELETE /requests``."""

    protocol_version = "HTTP/1.1"
    server_version = "fake-openai-control"

    @property
    def _fake(self) -> FakeOpenAI:
        server = self.server
        assert isinstance(server, _ControlServer)
        return server.fake

    def do_GET(self) -> None:
        fake = self._fake
        if self.path == "/requests/count":
            counts = {
                "count": fake.request_count,
                "chat": fake.chat_request_count,
                "recorded": len(fake.requests),
            }
            self._reply(200, counts)
        elif self.path == "/faults":
            self._reply(200, fake.active_faults())
        else:
            self._reply(404, {"error": f"no such control endpoint: GET {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/faults":
            self._reply(404, {"error": f"no such control endpoint: POST {self.path}"})
            return
        length = int(self.headers.get("content-length") or 0)
        try:
            knobs = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(knobs, dict):
                raise ValueError("expected a JSON object of set_fault keyword arguments")
            self._fake.set_fault(**knobs)
        except (ValueError, TypeError) as exc:
            self._reply(400, {"error": str(exc)})
            return
        self._reply(200, self._fake.active_faults())

    def do_DELETE(self) -> None:
        if self.path == "/faults":
            self._fake.clear_faults()
            self._reply(200, self._fake.active_faults())
        elif self.path == "/requests":
            self._fake.clear_requests()
            self._reply(200, {"count": 0})
        else:
            self._reply(404, {"error": f"no such control endpoint: DELETE {self.path}"})

    def _reply(self, status: int, payload: Any) -> None:
        body = _dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", _JSON_TYPE)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request logging."""


def start_control_server(fake: FakeOpenAI, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the JSON control API for ``fake`` on a daemon thread."""
    server = _ControlServer((host, port), fake)
    thread = threading.Thread(target=server.serve_forever, name="fake-openai-control", daemon=True)
    thread.start()
    return server


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.openai_upstream",
        description="Run a fake OpenAI Chat Completions upstream.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--name", default="fake", help="appears in the default answer text")
    parser.add_argument("--control-port", type=int, default=None, help="serve the control API")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated ids")
    parser.add_argument("--path-prefix", default="/v1")
    parser.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY")
    parser.add_argument("--chunk-chars", type=int, default=4)
    parser.add_argument(
        "--answer-chars",
        type=int,
        default=None,
        help="make the default answer exactly N characters long (streams: N/chunk-chars chunks)",
    )
    parser.add_argument("--strict-models", action="store_true", help="404 for unknown models")
    parser.add_argument("--record-limit", type=int, default=1000, help="recorded requests kept")
    parser.add_argument("--log-requests", action="store_true")
    args = parser.parse_args(argv)
    if args.control_port is not None and args.control_port <= 0:
        parser.error("--control-port needs an explicit port")
    if args.answer_chars is not None and args.answer_chars < 1:
        parser.error("--answer-chars must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    fake = FakeOpenAI(
        args.host,
        args.port,
        args.name,
        models=[model for model in args.models.split(",") if model],
        path_prefix=args.path_prefix,
        expected_api_key=args.api_key,
        chunk_chars=args.chunk_chars,
        answer_chars=args.answer_chars,
        strict_models=args.strict_models,
        max_recorded=args.record_limit,
        log_requests=args.log_requests,
    )
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # inherited by the server threads
    fake.start()
    control = None
    try:
        if args.control_port is not None:
            control = start_control_server(fake, args.host, args.control_port)
        print(f"listening on {fake.port}", flush=True)
        signal.sigwait(stop_signals)
    finally:
        if control is not None:
            control.shutdown()
            control.server_close()
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
