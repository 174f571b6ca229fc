"""A fake Anthropic Messages provider (api.anthropic.com) for end-to-end tests and benchmarks.

The fake is a small HTTP/1.1 server written on ``asyncio`` and the standard library only, with
the same design and knob API as :mod:`tests.fakes.openai_upstream`. It follows
``WIRE_FORMATS.md`` section 3 (Anthropic Messages) and the fake-upstream checklist (5.11)
closely enough that the official ``anthropic`` SDK, and Envoy in front of it, take it for the
real thing:

* keep-alive connections, request bodies framed by ``content-length`` or by
  ``transfer-encoding: chunked``, ``TCP_NODELAY`` on every accepted socket;
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

Fault knobs, set with ``set_fault(...)`` from any thread, exactly as in the OpenAI fake. Each
applies to the next ``count`` requests it affects, or until ``clear_faults()`` when ``count``
is None. With ``chat_only=True`` requests other than ``POST .../messages`` (health checks,
token counts) neither see nor consume them; the stream-only knobs are never seen or consumed
by non-streaming requests.

* ``status``: answer with this HTTP status and an Anthropic-shaped error body (400
  ``invalid_request_error``, 401 ``authentication_error``, 403 ``permission_error``, 404
  ``not_found_error``, 413 ``request_too_large``, 429 ``rate_limit_error``, 500 ``api_error``,
  503/529 ``overloaded_error``, 504 ``timeout_error``; others by class), on every path.
  ``retry_after`` (seconds) overrides the ``retry-after`` header, which defaults to 1 on 429,
  503 and 529.
* ``delay``: seconds to wait after reading the request, before the response headers.
* ``reset``: read the request, then abort the connection with a TCP RST and no response.
* ``refuse``: close the listening socket (new connections get ECONNREFUSED) and drop open
  connections; ``restore()`` or clearing the knob listens again on the same port. ``count`` does
  not apply.
* ``stall_after`` (streams only): send N SSE events, then send nothing more until the knob is
  cleared (the stream then continues) or the client goes away.
* ``chunk_delay`` (streams only): seconds between SSE events.
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

import argparse
import asyncio
import base64
import hashlib
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
from typing import Any, Final, TypeGuard, TypeVar
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

_REQUEST_KNOBS: Final = ("reset", "delay", "status")
_STREAM_KNOBS: Final = ("stall_after", "chunk_delay", "midstream_error")
_HEAD_LIMIT: Final = 1 << 20
_LAST_CHUNK: Final = b"0\r\n\r\n"
_JSON_TYPE: Final = "application/json"
_SSE_TYPE: Final = "text/event-stream"
_STATIC_HEADERS: Final = (
    "anthropic-organization-id: 00000000-0000-4000-8000-00000000fa4e\r\n"
    "anthropic-ratelimit-requests-limit: 4000\r\n"
    "anthropic-ratelimit-requests-remaining: 3999\r\n"
    "anthropic-ratelimit-requests-reset: 2026-01-01T00:00:01Z\r\n"
    "anthropic-ratelimit-tokens-limit: 2000000\r\n"
    "anthropic-ratelimit-tokens-remaining: 1999000\r\n"
    "anthropic-ratelimit-tokens-reset: 2026-01-01T00:00:01Z\r\n"
)
_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}
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
    """A scripted answer; see ``FakeAnthropic.queue_response``."""

    text: str | None = None
    tool_calls: tuple[tuple[str, str], ...] = ()
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
        return _dumps({"type": "error", "error": error, "request_id": request_id}).encode()

    def response_headers(self) -> list[tuple[str, str]]:
        headers = list(self.headers)
        if self.retry_after is not None:
            headers.append(("retry-after", _format_seconds(self.retry_after)))
        return headers


def _invalid(message: str) -> _ApiError:
    return _ApiError(400, message, "invalid_request_error")


@dataclass(frozen=True, slots=True)
class _StatusFault:
    status: int
    retry_after: float | None

    def error(self, name: str) -> _ApiError:
        status = self.status
        kind = _ERROR_TYPES.get(status) or (
            "api_error" if status >= 500 else "invalid_request_error"
        )
        retry = self.retry_after
        if retry is None and status in _RETRY_STATUSES:
            retry = 1
        messages = {
            401: "invalid x-api-key",
            429: (
                f"This request would exceed the rate limit for your organization on fake upstream "
                f"{name}. Please try again in {_format_seconds(retry or 1)}s."
            ),
            500: "Internal server error",
            503: "Overloaded",
            529: "Overloaded",
        }
        message = messages.get(
            status, f"{_REASONS.get(status, 'Error')} (fault injected by fake upstream {name})"
        )
        return _ApiError(status, message, kind, retry)


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
    keep_alive: bool,
    extra: Iterable[tuple[str, str]] = (),
) -> bytes:
    parts = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n",
        f"content-type: {content_type}\r\n",
        f"request-id: {request_id}\r\n",
        _STATIC_HEADERS,
        f"content-length: {length}\r\n" if length is not None else "transfer-encoding: chunked\r\n",
    ]
    if content_type == _SSE_TYPE:
        parts.append("cache-control: no-cache\r\n")
    if not keep_alive:
        parts.append("connection: close\r\n")
    parts.extend(f"{name}: {value}\r\n" for name, value in extra)
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Exchange:
    """One request/response exchange on a connection."""

    __slots__ = ("keep_alive", "payload", "reader", "request", "request_id", "writer")

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

    def head(
        self, status: int, content_type: str, length: int | None, extra: Iterable[tuple[str, str]]
    ) -> bytes:
        return _render_head(
            status,
            content_type,
            length,
            request_id=self.request_id,
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
        body = error.body(self.request_id)
        return await self.send_json(error.status, body, error.response_headers())


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


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


def _pieces(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)]


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
    return _dumps(body).encode()


def _event(payload: JSONDict) -> bytes:
    return f"event: {payload['type']}\ndata: {_dumps(payload)}\n\n".encode()


def _block_events(index: int, block: JSONDict, arguments: str | None, size: int) -> list[bytes]:
    kind = block["type"]
    deltas: list[JSONDict] = []
    if kind == "text":
        start: JSONDict = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"], size)]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": piece}
            for piece in _pieces(block["thinking"], size)
        ]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "tool_use":
        start = {**block, "input": {}}
        fragments = ["", *_pieces(arguments or "", size)]
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
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id.replace("-", " ").title(),
        "created_at": MODEL_CREATED_AT,
    }


def _input_tokens(payload: JSONDict) -> int:
    counted = {"system": payload.get("system"), "messages": payload.get("messages")}
    return max(1, len(_dumps(counted)) // 4)


def _tool_input(arguments: str) -> JSONDict:
    value = json.loads(arguments) if arguments.strip() else {}
    if not isinstance(value, dict):
        raise ValueError(f"tool arguments must be a JSON object, got {arguments!r}")
    return value


# --------------------------------------------------------------------------------------------
# The server

_Handler = Callable[[_Exchange], Awaitable[bool]]


class FakeAnthropic:
    """A fake Anthropic Messages upstream running on a background thread."""

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
        self._id_tag = "".join(c for c in name if c.isascii() and c.isalnum())
        self._messages_path = f"{self.path_prefix}/messages"
        self._count_path = f"{self.path_prefix}/messages/count_tokens"
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

    def start(self) -> FakeAnthropic:
        """Start serving on a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"fake-anthropic-{self.name}", daemon=True
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

    def __enter__(self) -> FakeAnthropic:
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
        """``http://HOST:PORT/v1``: the proxy's base URL for this backend."""
        host = "127.0.0.1" if self._host in ("", "0.0.0.0", "::") else self._host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._port}{self.path_prefix}"

    @property
    def sdk_base_url(self) -> str:
        """The ``anthropic`` SDK's base URL (it appends ``/v1/messages`` itself)."""
        return self.base_url.removesuffix("/v1")

    # ---- recorded requests -----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the recorded requests, oldest first (health checks included)."""
        with self._lock:
            return list(self._recorded)

    def chat_requests(self) -> list[RecordedRequest]:
        """The recorded ``POST {prefix}/messages`` requests."""
        return [r for r in self.requests if r.method == "POST" and r.path == self._messages_path]

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

    # ---- event-loop side: lifecycle --------------------------------------------------------

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
        return f"req_011Fake{self._id_tag}{next(self._sequence):012x}"

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; True when the connection stays open for another one."""
        try:
            request = await _read_request(reader, writer)
        except _BadRequest as exc:
            request_id = self._next_request_id()
            body = _invalid(str(exc)).body(request_id)
            head = _render_head(400, _JSON_TYPE, len(body), request_id=request_id, keep_alive=False)
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
        is_chat = request.method == "POST" and request.path == self._messages_path
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
        if path == self._messages_path:
            return "POST", self._messages
        if path == self._count_path:
            return "POST", self._count_tokens
        if path == self._models_path:
            return "GET", self._list_models
        if path.startswith(self._models_path + "/") and len(path) > len(self._models_path) + 1:
            return "GET", self._get_model
        return None

    async def _dispatch(self, exchange: _Exchange) -> bool:
        request = exchange.request
        error = self._check_auth(request.headers)
        if error is None and not request.headers.get("anthropic-version"):
            error = _invalid("anthropic-version: header is required")
        if error is not None:
            return await exchange.send_error(error)
        route = self._route(request.path)
        if route is None:
            return await exchange.send_error(_ApiError(404, "Not Found", "not_found_error"))
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

    async def _list_models(self, exchange: _Exchange) -> bool:
        data = [_model_object(model) for model in self.models]
        body = {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return await exchange.send_json(200, _dumps(body).encode())

    async def _get_model(self, exchange: _Exchange) -> bool:
        model_id = unquote(exchange.request.path[len(self._models_path) + 1 :])
        if model_id not in self.models:
            error = _ApiError(404, f"model: {model_id}", "not_found_error")
            return await exchange.send_error(error)
        return await exchange.send_json(200, _dumps(_model_object(model_id)).encode())

    async def _count_tokens(self, exchange: _Exchange) -> bool:
        payload = exchange.payload
        error = _validate_messages_request(payload, count=True) or self._check_model(payload)
        if error is not None:
            return await exchange.send_error(error)
        body = {"input_tokens": _input_tokens(payload)}
        return await exchange.send_json(200, _dumps(body).encode())

    async def _messages(self, exchange: _Exchange) -> bool:
        payload = exchange.payload
        error = _validate_messages_request(payload, count=False) or self._check_model(payload)
        if error is not None:
            return await exchange.send_error(error)
        answer = self._answer(payload)
        if payload.get("stream") is not True:
            return await exchange.send_json(200, _message_body(answer))
        return await self._send_stream(exchange, _stream_events(answer, self.chunk_chars))

    def _check_model(self, payload: JSONDict) -> _ApiError | None:
        model = payload["model"]
        if not self.strict_models or model in self.models:
            return None
        return _ApiError(404, f"model: {model}", "not_found_error")

    def _answer(self, payload: JSONDict) -> _Answer:
        model = payload["model"]
        try:
            script = self._scripts.popleft()
        except IndexError:
            script = ScriptedResponse(text=default_answer(self.name, model, self.answer_chars))
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

    def __init__(self, address: tuple[str, int], fake: FakeAnthropic) -> None:
        super().__init__(address, _ControlHandler)
        self.fake = fake


class _ControlHandler(BaseHTTPRequestHandler):
    """``POST /faults``, ``DELETE /faults``, ``GET /faults``, ``GET /requests/count``,
    ``DELETE /requests``."""

    protocol_version = "HTTP/1.1"
    server_version = "fake-anthropic-control"

    @property
    def _fake(self) -> FakeAnthropic:
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


def start_control_server(fake: FakeAnthropic, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the JSON control API for ``fake`` on a daemon thread."""
    server = _ControlServer((host, port), fake)
    thread = threading.Thread(
        target=server.serve_forever, name="fake-anthropic-control", daemon=True
    )
    thread.start()
    return server


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.anthropic_upstream",
        description="Run a fake Anthropic Messages upstream.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--name", default="fake", help="appears in the default answer text")
    parser.add_argument("--control-port", type=int, default=None, help="serve the control API")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated ids")
    parser.add_argument("--path-prefix", default="/v1")
    parser.add_argument("--api-key", default=None, help="require x-api-key: KEY")
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
    fake = FakeAnthropic(
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
