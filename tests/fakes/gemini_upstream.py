"""A fake Gemini API (``generativelanguage.googleapis.com``) for end-to-end tests and benchmarks.

It follows ``WIRE_FORMATS.md`` section 4 (Gemini generateContent) and the fake-upstream checklist
(5.11) closely enough that the official ``google-genai`` SDK, and Envoy in front of it, take it
for the real thing. It shares the HTTP/1.1 plumbing, the fault board and the knob API of
:mod:`tests.fakes.openai_upstream` (keep-alive, chunked request bodies, ``TCP_NODELAY``; the same
``set_fault`` knobs with the same semantics); only the protocol differs:

* endpoints, under ``path_prefix`` (default ``/v1beta``, so ``base_url`` is
  ``http://127.0.0.1:PORT/v1beta``): ``POST {prefix}/models/{model}:generateContent``,
  ``:streamGenerateContent`` (``?alt=sse``: ``data:`` lines with CRLF line ends, one complete
  ``GenerateContentResponse`` per event, no ``event:`` lines, no ``[DONE]``, the body just ends;
  without ``alt=sse``: one JSON array whose elements arrive one per HTTP chunk, like the real
  service), ``:countTokens``, ``GET {prefix}/models`` (``pageSize``, ``pageToken``) and
  ``GET {prefix}/models/{model}``. Other paths answer 404, a known path with the wrong method
  405;
* every error in Google's shape ``{"error": {"code", "message", "status", "details"?}}``;
  429 (and 503) carry a ``RetryInfo`` detail (``retryDelay``), not a ``retry-after`` header;
* with ``expected_api_key`` set, every request needs ``x-goog-api-key: KEY`` or ``?key=KEY``:
  none -> 403 ``PERMISSION_DENIED``, a wrong one -> 400 ``INVALID_ARGUMENT`` with an
  ``ErrorInfo`` reason ``API_KEY_INVALID`` (what the real API answers);
* requests are validated like the real API, accepting lowerCamelCase and snake_case field names:
  a non-empty ``contents`` array, roles ``user``/``model`` only, non-empty ``parts`` with exactly
  one data field each, ``functionCall.args`` and ``functionResponse.response`` objects, a
  function-response turn right after a function-call turn with as many responses as calls,
  function names that Gemini accepts, and, for ``gemini-3*`` models, a ``thoughtSignature`` on
  the first function call of each model turn of the current turn (all as Google-shaped 400s);
  ``countTokens`` takes ``contents`` or ``generateContentRequest``, not both.

Answers: without a script the answer is ``f"{name} says hello to {model}"`` (``answer_chars``
stretches it, as in the OpenAI fake). ``queue_response()`` scripts the next generate answers:
text, whole function calls (``(name, args_json)``; the first call part carries a
``thoughtSignature``, as the real service's do), a thought summary (``thinking``, sent as
``thought: true`` parts only when the request asked for ``includeThoughts``, always counted in
``thoughtsTokenCount``; with thinking, the last text part carries a ``thoughtSignature`` too),
the finish reason (a Gemini ``finishReason``, or OpenAI's name for it) and usage numbers.
Usage is deterministic: prompt tokens are the length of the
compact JSON of ``contents`` (plus ``systemInstruction``) divided by 4, candidate tokens the
length of the output divided by 4. Streams send thoughts and text in ``chunk_chars`` pieces with
prompt-only ``usageMetadata``, each function call whole in its own event, and the
``finishReason`` with the complete ``usageMetadata`` on the last event (an empty text part for
text answers, the last call otherwise).

Fault knobs (``set_fault``, ``clear_faults``, ``restore``) are those of the OpenAI fake: ``status``
(+ ``retry_after``, seconds, into ``RetryInfo``), ``delay``, ``reset``, ``refuse``,
``stall_after``, ``chunk_delay``, ``midstream_error`` (after N events, ``data: {"error":
{"code": 500, ..., "status": "INTERNAL"}}`` and the connection closes), ``count`` and
``chat_only`` (only generate requests see the knobs; ``countTokens`` and model reads do not).

Command line::

    python -m tests.fakes.gemini_upstream --port 8003 --name gem --control-port 8103

prints ``listening on PORT``; the control port serves the same JSON API as the OpenAI fake.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, unquote

from tests.fakes.openai_upstream import (
    _LAST_CHUNK,
    _REASONS,
    FAULT_KNOBS,
    RecordedRequest,
    _abort_with_rst,
    _BadRequest,
    _check_int,
    _check_seconds,
    _chunk,
    _dumps,
    _FaultBoard,
    _HttpRequest,
    _parse_json,
    _read_request,
    _stall,
    _StatusFault,
    default_answer,
)

JSONDict = dict[str, Any]
_T = TypeVar("_T")

__all__ = [
    "DEFAULT_MODELS",
    "FAULT_KNOBS",
    "FakeGemini",
    "RecordedRequest",
    "ScriptedResponse",
    "default_answer",
    "main",
]

DEFAULT_MODELS: Final = ("gemini-2.5-flash", "gemini-2.5-pro")
GENERATE_ACTIONS: Final = frozenset({"generateContent", "streamGenerateContent"})

_REQUEST_KNOBS: Final = ("reset", "delay", "status")
_STREAM_KNOBS: Final = ("stall_after", "chunk_delay", "midstream_error")
_HEAD_LIMIT: Final = 1 << 20
_JSON_TYPE: Final = "application/json; charset=UTF-8"
_SSE_TYPE: Final = "text/event-stream"
_STATIC_HEADERS: Final = (
    "vary: Origin, X-Origin, Referer\r\n"
    "server: scaffolding on HTTPServer2\r\n"
    "x-xss-protection: 0\r\n"
    "x-frame-options: SAMEORIGIN\r\n"
    "x-content-type-options: nosniff\r\n"
)
_RPC_PREFIX: Final = "type.googleapis.com/google.rpc."
_RPC_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FAULT_MESSAGES: Final = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_DATA_FIELDS: Final = (
    ("text", "text"),
    ("inlineData", "inline_data"),
    ("fileData", "file_data"),
    ("functionCall", "function_call"),
    ("functionResponse", "function_response"),
    ("executableCode", "executable_code"),
    ("codeExecutionResult", "code_execution_result"),
)
#: OpenAI finish reasons accepted by ``queue_response`` (the shared knob API).
_OPENAI_FINISH: Final = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "content_filter": "SAFETY",
}
_FUNCTION_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,127}$")
_UPPER: Final = re.compile(r"([A-Z])")


def _get(obj: Any, name: str) -> Any:
    """Field ``name`` (lowerCamelCase) or its snake_case spelling, as the real API accepts."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(name)
    if value is None:
        value = obj.get(_UPPER.sub(lambda m: "_" + m.group(1).lower(), name))
    return value


# --------------------------------------------------------------------------------------------
# Public value types


@dataclass(frozen=True, slots=True)
class ScriptedResponse:
    """A scripted answer; see ``FakeGemini.queue_response``."""

    text: str | None = None
    tool_calls: tuple[tuple[str, str], ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    #: A thought summary, sent as ``thought: true`` parts when the request asks for them.
    thinking: str | None = None


# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class _ApiError:
    status: int
    message: str
    details: tuple[JSONDict, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def payload(self) -> JSONDict:
        error: JSONDict = {
            "code": self.status,
            "message": self.message,
            "status": _RPC_STATUS.get(self.status, "INTERNAL" if self.status >= 500 else "UNKNOWN"),
        }
        if self.details:
            error["details"] = list(self.details)
        return {"error": error}

    def body(self) -> bytes:
        return _dumps(self.payload()).encode()


def _invalid(message: str, field: str | None = None) -> _ApiError:
    if field is None:
        return _ApiError(400, message)
    violation = {"field": field, "description": message}
    return _ApiError(
        400, message, ({"@type": _RPC_PREFIX + "BadRequest", "fieldViolations": [violation]},)
    )


def _retry_info(seconds: float) -> JSONDict:
    delay = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
    return {"@type": _RPC_PREFIX + "RetryInfo", "retryDelay": f"{delay}s"}


def _fault_error(fault: _StatusFault, name: str) -> _ApiError:
    status, retry = fault.status, fault.retry_after
    message = _FAULT_MESSAGES.get(
        status, f"{_REASONS.get(status, 'Error')} (fault injected by fake upstream {name})"
    )
    details: tuple[JSONDict, ...] = ()
    if status in (429, 503) or retry is not None:
        details = (_retry_info(1 if retry is None else retry),)
    return _ApiError(status, message, details)


# --------------------------------------------------------------------------------------------
# Request validation


def _validate_contents(contents: Any, where: str, model: str) -> _ApiError | None:
    if not isinstance(contents, list) or not contents:
        return _invalid(f"* GenerateContentRequest.{where}: contents is not specified\n", where)
    for i, content in enumerate(contents):
        at = f"{where}[{i}]"
        if not isinstance(content, dict):
            return _invalid(f"Invalid JSON payload received. Invalid value at '{at}'.", at)
        if _get(content, "role") not in (None, "", "user", "model"):
            return _invalid("Please use a valid role: user, model.", f"{at}.role")
        parts = _get(content, "parts")
        if not isinstance(parts, list) or not parts:
            return _invalid(
                f"* GenerateContentRequest.{at}.parts: contents.parts must not be empty.\n",
                f"{at}.parts",
            )
        for j, part in enumerate(parts):
            error = _validate_part(part, f"{at}.parts[{j}]")
            if error is not None:
                return error
    return _validate_turns(contents, model)


def _validate_part(part: Any, at: str) -> _ApiError | None:
    if not isinstance(part, dict):
        return _invalid(f"Invalid JSON payload received. Invalid value at '{at}'.", at)
    present = [camel for camel, snake in _DATA_FIELDS if camel in part or snake in part]
    if not present:
        return _invalid(
            f"* GenerateContentRequest.{at}.data: required oneof field 'data' must have one "
            "initialized field\n",
            f"{at}.data",
        )
    if len(present) > 1:
        return _invalid(
            f"Invalid JSON payload received. Oneof field 'data' is already set. Cannot set "
            f"'{present[1]}' at '{at}'.",
            at,
        )
    call = _get(part, "functionCall")
    if call is not None:
        if not isinstance(_get(call, "name"), str):
            return _invalid(f"* GenerateContentRequest.{at}.function_call.name: missing\n", at)
        args = _get(call, "args")
        if args is not None and not isinstance(args, dict):
            return _invalid(
                f"Invalid JSON payload received. Invalid value at '{at}.function_call.args' "
                "(type.googleapis.com/google.protobuf.Struct)",
                f"{at}.function_call.args",
            )
    result = _get(part, "functionResponse")
    if result is not None and not isinstance(_get(result, "response"), dict):
        return _invalid(
            f"Invalid JSON payload received. Invalid value at '{at}.function_response.response' "
            "(type.googleapis.com/google.protobuf.Struct)",
            f"{at}.function_response.response",
        )
    return None


def _count(content: JSONDict, field: str) -> int:
    parts = _get(content, "parts") or []
    return sum(1 for part in parts if _get(part, field) is not None)


def _validate_turns(contents: list[JSONDict], model: str) -> _ApiError | None:
    """Function-call/response turn order and counts; Gemini 3 thought signatures."""
    for i, content in enumerate(contents):
        responses = _count(content, "functionResponse")
        if not responses:
            continue
        previous = contents[i - 1] if i else None
        calls = _count(previous, "functionCall") if previous is not None else 0
        if previous is None or _get(previous, "role") != "model" or not calls:
            return _invalid(
                "Please ensure that function response turn comes immediately after a function "
                "call turn."
            )
        if calls != responses:
            return _invalid(
                "Please ensure that the number of function response parts is equal to the number "
                "of function call parts of the function call turn."
            )
    if not model.startswith("gemini-3"):
        return None
    start = 0
    for i, content in enumerate(contents):
        parts = _get(content, "parts") or []
        if _get(content, "role") != "model" and any(_get(p, "text") is not None for p in parts):
            start = i
    for i in range(start, len(contents)):
        if _get(contents[i], "role") != "model":
            continue
        for j, part in enumerate(_get(contents[i], "parts") or []):
            call = _get(part, "functionCall")
            if call is None:
                continue
            if _get(part, "thoughtSignature") is None:
                return _invalid(
                    "Function call is missing a thought_signature in functionCall parts. This is "
                    "required for tools to work correctly, and missing thought_signature may lead "
                    "to degraded model performance. Additional data, function call "
                    f"`default_api:{_get(call, 'name')}` , position {j + 1}. Please refer to "
                    "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
                )
            break  # only the first call of a step carries the signature
    return None


def _validate_tools(tools: Any) -> _ApiError | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        return _invalid("Invalid JSON payload received. Invalid value at 'tools'.", "tools")
    for i, tool in enumerate(tools):
        declarations = _get(tool, "functionDeclarations") or []
        for j, declaration in enumerate(declarations if isinstance(declarations, list) else []):
            name = _get(declaration, "name")
            if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
                at = f"tools[{i}].function_declarations[{j}].name"
                return _invalid(
                    f"* GenerateContentRequest.{at}: Invalid function name. Must start with a "
                    "letter or an underscore. Must be a-z, A-Z, 0-9, or contain underscores, dots, "
                    "colons and dashes, with a maximum length of 128.\n",
                    at,
                )
    return None


def _validate_generate(payload: Any, model: str) -> _ApiError | None:
    if not isinstance(payload, dict):
        return _invalid("Invalid JSON payload received. Unexpected token.")
    error = _validate_contents(_get(payload, "contents"), "contents", model)
    if error is None:
        error = _validate_tools(_get(payload, "tools"))
    config = _get(payload, "generationConfig")
    if error is None and config is not None and not isinstance(config, dict):
        error = _invalid(
            "Invalid JSON payload received. Invalid value at 'generation_config'.",
            "generation_config",
        )
    return error


# --------------------------------------------------------------------------------------------
# Answers and their wire encodings


@dataclass(frozen=True, slots=True)
class _Answer:
    id: str
    model: str
    text: str | None
    calls: tuple[tuple[str, JSONDict], ...]
    thinking: str | None  # None unless the request asked for thoughts
    signature: str | None  # on the first call, or (with thinking) the last text part
    finish_reason: str
    usage: JSONDict
    prompt_tokens: int

    def parts(self) -> list[JSONDict]:
        parts: list[JSONDict] = []
        if self.thinking:
            parts.append({"text": self.thinking, "thought": True})
        if self.text is not None:
            parts.append({"text": self.text})
            if self.signature is not None and not self.calls:
                parts[-1]["thoughtSignature"] = self.signature
        parts.extend(self._call_part(index) for index in range(len(self.calls)))
        return parts

    def _call_part(self, index: int) -> JSONDict:
        name, args = self.calls[index]
        part: JSONDict = {"functionCall": {"name": name, "args": args}}
        if index == 0 and self.signature is not None:
            part["thoughtSignature"] = self.signature
        return part

    def body(self, parts: list[JSONDict], *, final: bool, usage: JSONDict) -> JSONDict:
        candidate: JSONDict = {"content": {"parts": parts, "role": "model"}}
        if final:
            candidate["finishReason"] = self.finish_reason
        candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": self.id,
        }

    def stream_bodies(self, chunk_chars: int) -> list[JSONDict]:
        """The ``GenerateContentResponse`` of each stream event, in order."""
        early = {
            "promptTokenCount": self.prompt_tokens,
            "totalTokenCount": self.prompt_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt_tokens}],
        }
        bodies = [
            self.body([{"text": piece, "thought": True}], final=False, usage=early)
            for piece in _pieces(self.thinking or "", chunk_chars)
        ]
        bodies += [
            self.body([{"text": piece}], final=False, usage=early)
            for piece in _pieces(self.text or "", chunk_chars)
        ]
        for index in range(len(self.calls)):
            last = index == len(self.calls) - 1
            usage = self.usage if last else early
            bodies.append(self.body([self._call_part(index)], final=last, usage=usage))
        if not self.calls:
            tail: JSONDict = {"text": ""}
            if self.signature is not None:
                tail["thoughtSignature"] = self.signature
            bodies.append(self.body([tail], final=True, usage=self.usage))
        return bodies


def _pieces(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)]


def _usage(prompt: int, candidates: int, thoughts: int, cached: int) -> JSONDict:
    usage: JSONDict = {"promptTokenCount": prompt, "candidatesTokenCount": candidates}
    if cached:
        usage["cachedContentTokenCount"] = cached
    usage["totalTokenCount"] = prompt + candidates + thoughts
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if cached:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _sse(body: JSONDict) -> bytes:
    return b"data: " + _dumps(body).encode() + b"\r\n\r\n"


_MIDSTREAM_PAYLOAD: Final = {
    "error": {"code": 500, "message": _FAULT_MESSAGES[500], "status": "INTERNAL"}
}
_MIDSTREAM_ERROR: Final = _sse(_MIDSTREAM_PAYLOAD)


def _prompt_tokens(payload: JSONDict) -> int:
    counted = _dumps(_get(payload, "contents")) + _dumps(_get(payload, "systemInstruction") or "")
    return max(1, len(counted) // 4)


def _wants_thoughts(payload: JSONDict) -> bool:
    config = _get(payload, "generationConfig")
    return _get(_get(config, "thinkingConfig"), "includeThoughts") is True


def _model_object(model_id: str) -> JSONDict:
    return {
        "name": f"models/{model_id}",
        "baseModelId": model_id,
        "version": "001",
        "displayName": model_id.replace("-", " ").title(),
        "description": f"A fake {model_id}",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "temperature": 1,
        "maxTemperature": 2,
        "topP": 0.95,
        "topK": 64,
        "thinking": True,
    }


# --------------------------------------------------------------------------------------------
# HTTP exchange


class _Exchange:
    """One request/response exchange on a connection."""

    __slots__ = ("keep_alive", "payload", "query", "reader", "request", "started", "writer")

    def __init__(
        self,
        request: _HttpRequest,
        payload: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.request = request
        self.payload = payload
        self.query = {k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()}
        self.reader = reader
        self.writer = writer
        self.keep_alive = request.keep_alive
        self.started = time.perf_counter()

    def head(
        self,
        status: int,
        content_type: str,
        length: int | None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        elapsed_ms = int((time.perf_counter() - self.started) * 1000)
        parts = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n",
            f"content-type: {content_type}\r\n",
            _STATIC_HEADERS,
            f"server-timing: gfet4t7; dur={elapsed_ms}\r\n",
            f"content-length: {length}\r\n"
            if length is not None
            else "transfer-encoding: chunked\r\n",
        ]
        if not self.keep_alive:
            parts.append("connection: close\r\n")
        parts.extend(f"{name}: {value}\r\n" for name, value in extra)
        parts.append("\r\n")
        return "".join(parts).encode("latin-1")

    async def send_json(
        self, status: int, body: bytes, extra: Sequence[tuple[str, str]] = ()
    ) -> bool:
        self.writer.write(self.head(status, _JSON_TYPE, len(body), extra) + body)
        await self.writer.drain()
        return self.keep_alive

    async def send_error(self, error: _ApiError) -> bool:
        return await self.send_json(error.status, error.body(), error.headers)


_Handler = Callable[[_Exchange, str], Awaitable[bool]]


# --------------------------------------------------------------------------------------------
# The server


class FakeGemini:
    """A fake Gemini API upstream running on a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "fake",
        *,
        models: Sequence[str] = DEFAULT_MODELS,
        path_prefix: str = "/v1beta",
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
        self._signatures = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}
        self._stall_release: asyncio.Event | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeGemini:
        """Start serving on a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"fake-gemini-{self.name}", daemon=True
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

    def __enter__(self) -> FakeGemini:
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
        """``http://HOST:PORT/v1beta``: the base URL of a Gemini backend (with the version)."""
        host = "127.0.0.1" if self._host in ("", "0.0.0.0", "::") else self._host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._port}{self.path_prefix}"

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT``: what the google-genai SDK takes as ``base_url``."""
        return self.base_url[: len(self.base_url) - len(self.path_prefix)]

    # ---- recorded requests -----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the recorded requests, oldest first."""
        with self._lock:
            return list(self._recorded)

    def chat_requests(self) -> list[RecordedRequest]:
        """The recorded generate requests (``:generateContent`` and ``:streamGenerateContent``)."""
        return [r for r in self.requests if r.method == "POST" and self._is_generate(r.path)]

    def clear_requests(self) -> None:
        with self._lock:
            self._recorded.clear()

    @property
    def request_count(self) -> int:
        """Requests received since start, recorded or not."""
        return self._request_count

    @property
    def chat_request_count(self) -> int:
        """Generate requests received since start."""
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
        thinking: str | None = None,
        reasoning: str | None = None,
    ) -> None:
        """Script the answer to the next generate request that reaches the answering stage.

        The argument names are the OpenAI fake's. ``tool_calls`` holds ``(name,
        arguments_json_string)`` pairs; the arguments must be a JSON object (``""`` means
        ``{}``). ``thinking`` (or its alias ``reasoning``) is a thought summary.
        ``finish_reason`` is a Gemini ``finishReason`` (OpenAI's ``stop``/``length``/
        ``tool_calls``/``content_filter`` are mapped); it defaults to ``STOP``, also for function
        calls. Usage numbers left None are computed as for unscripted answers;
        ``reasoning_tokens`` defaults to a count of the thought summary.
        """
        if text is None and not tool_calls:
            raise ValueError("a scripted response needs text, tool_calls or both")
        if thinking is not None and reasoning is not None:
            raise ValueError("thinking and reasoning are the same knob: give one")
        native = _OPENAI_FINISH.get(finish_reason or "", finish_reason)
        if native is not None and not re.fullmatch(r"[A-Z][A-Z_]*", native):
            raise ValueError(f"unknown finish reason {finish_reason!r}")
        for name, arguments in tool_calls:
            args = json.loads(arguments) if str(arguments).strip() else {}
            if not isinstance(args, dict):
                raise ValueError(f"arguments of {name!r} must be a JSON object")
        script = ScriptedResponse(
            text,
            tuple((str(name), str(arguments)) for name, arguments in tool_calls),
            native,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            reasoning_tokens,
            thinking if thinking is not None else reasoning,
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
            self._server.close()
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
        if self._refused or task is None:
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
            pass
        except asyncio.CancelledError:
            pass  # stop() cancels connection tasks (see the OpenAI fake)
        finally:
            self._connections.pop(writer, None)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; True when the connection stays open for another one."""
        try:
            request = await _read_request(reader, writer)
        except _BadRequest as exc:
            body = _invalid(str(exc)).body()
            head = (
                f"HTTP/1.1 400 Bad Request\r\ncontent-type: {_JSON_TYPE}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            ).encode("latin-1")
            writer.write(head + body)
            await writer.drain()
            return False
        if request is None:
            return False
        payload = _parse_json(request.body)
        is_chat = self._record(request, payload)
        exchange = _Exchange(request, payload, reader, writer)
        faults = self._faults.take(_REQUEST_KNOBS, is_chat=is_chat)
        if faults.get("reset"):
            _abort_with_rst(writer)
            return False
        if faults.get("delay"):
            await asyncio.sleep(faults["delay"])
        status_fault: _StatusFault | None = faults.get("status")
        if status_fault is not None:
            return await exchange.send_error(_fault_error(status_fault, self.name))
        return await self._dispatch(exchange)

    def _is_generate(self, path: str) -> bool:
        target = self._model_target(path)
        return target is not None and target[1] in GENERATE_ACTIONS

    def _model_target(self, path: str) -> tuple[str, str | None] | None:
        """(model, action or None) for ``{prefix}/models/{model}[:{action}]`` paths."""
        head = self._models_path + "/"
        if not path.startswith(head) or len(path) == len(head):
            return None
        target = unquote(path[len(head) :])
        model, sep, action = target.rpartition(":")
        if sep and model and action.isalpha():
            return model, action
        return target, None

    def _record(self, request: _HttpRequest, payload: Any) -> bool:
        is_chat = request.method == "POST" and self._is_generate(request.path)
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

    async def _dispatch(self, exchange: _Exchange) -> bool:
        request = exchange.request
        auth_error = self._check_auth(request.headers, exchange.query)
        if auth_error is not None:
            return await exchange.send_error(auth_error)
        route = self._route(request.path)
        if route is None:
            return await exchange.send_error(_ApiError(404, "Method not found."))
        method, handler, model = route
        if request.method != method:
            error = _ApiError(405, f"Method not allowed: {request.method} {request.path}.")
            return await exchange.send_error(
                _ApiError(error.status, error.message, headers=(("allow", method),))
            )
        return await handler(exchange, model)

    def _route(self, path: str) -> tuple[str, _Handler, str] | None:
        if path in (self._models_path, self._models_path + "/"):
            return "GET", self._list_models, ""
        target = self._model_target(path)
        if target is None:
            return None
        model, action = target
        if action is None:
            return "GET", self._get_model, model
        if action in GENERATE_ACTIONS:
            return "POST", self._generate, model
        if action == "countTokens":
            return "POST", self._count_tokens, model
        return None

    def _check_auth(self, headers: dict[str, str], query: dict[str, str]) -> _ApiError | None:
        expected = self.expected_api_key
        if expected is None:
            return None
        key = headers.get("x-goog-api-key") or query.get("key")
        if not key:
            return _ApiError(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if key != expected:
            info = {
                "@type": _RPC_PREFIX + "ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
            return _ApiError(400, "API key not valid. Please pass a valid API key.", (info,))
        return None

    # ---- endpoints -------------------------------------------------------------------------

    def _unknown_model(self, model: str, action: str) -> _ApiError | None:
        if not self.strict_models or model in self.models:
            return None
        return _ApiError(
            404,
            f"models/{model} is not found for API version {self.path_prefix.strip('/')}, or is "
            f"not supported for {action}. Call ListModels to see the list of available models and "
            "their supported methods.",
        )

    async def _list_models(self, exchange: _Exchange, _model: str) -> bool:
        try:
            size = int(exchange.query.get("pageSize") or 50)
            start = int(exchange.query.get("pageToken") or 0)
        except ValueError:
            return await exchange.send_error(_invalid("Invalid page token or size."))
        size = max(1, min(size, 1000))
        body: JSONDict = {"models": [_model_object(m) for m in self.models[start : start + size]]}
        if start + size < len(self.models):
            body["nextPageToken"] = str(start + size)
        return await exchange.send_json(200, _dumps(body).encode())

    async def _get_model(self, exchange: _Exchange, model: str) -> bool:
        model = model.removeprefix("models/")
        if model not in self.models:
            return await exchange.send_error(_ApiError(404, f"models/{model} is not found"))
        return await exchange.send_json(200, _dumps(_model_object(model)).encode())

    async def _count_tokens(self, exchange: _Exchange, model: str) -> bool:
        payload = exchange.payload
        error = self._unknown_model(model, "countTokens")
        if error is None and not isinstance(payload, dict):
            error = _invalid("Invalid JSON payload received. Unexpected token.")
        if error is None:
            inner = _get(payload, "generateContentRequest")
            if inner is not None and _get(payload, "contents") is not None:
                error = _invalid(
                    "* CountTokensRequest: contents and generate_content_request are mutually "
                    "exclusive\n"
                )
            else:
                target = inner if isinstance(inner, dict) else payload
                error = _validate_contents(_get(target, "contents"), "contents", model)
        if error is not None:
            return await exchange.send_error(error)
        target = _get(payload, "generateContentRequest") or payload
        tokens = _prompt_tokens(target)
        body = {
            "totalTokens": tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}],
        }
        return await exchange.send_json(200, _dumps(body).encode())

    async def _generate(self, exchange: _Exchange, model: str) -> bool:
        payload = exchange.payload
        error = self._unknown_model(model, "generateContent") or _validate_generate(payload, model)
        if error is not None:
            return await exchange.send_error(error)
        answer = self._answer(payload, model)
        if not exchange.request.path.endswith(":streamGenerateContent"):
            body = answer.body(answer.parts(), final=True, usage=answer.usage)
            return await exchange.send_json(200, _dumps(body).encode())
        bodies = answer.stream_bodies(self.chunk_chars)
        if exchange.query.get("alt") == "sse":
            events = [_sse(b) for b in bodies]
            return await self._send_stream(exchange, events, _SSE_TYPE, _MIDSTREAM_ERROR)
        # Without alt=sse: one JSON array, its elements arriving one by one.
        events = [(b"[" if i == 0 else b",\r\n") + _dumps(b).encode() for i, b in enumerate(bodies)]
        events[-1] += b"]"
        array_error = b",\r\n" + _dumps(_MIDSTREAM_PAYLOAD).encode() + b"]"
        return await self._send_stream(exchange, events, _JSON_TYPE, array_error)

    def _answer(self, payload: JSONDict, model: str) -> _Answer:
        try:
            script = self._scripts.popleft()
        except IndexError:
            script = ScriptedResponse(text=default_answer(self.name, model, self.answer_chars))
        calls = tuple(
            (name, json.loads(arguments) if arguments.strip() else {})
            for name, arguments in script.tool_calls
        )
        prompt = _prompt_tokens(payload) if script.prompt_tokens is None else script.prompt_tokens
        output = (script.text or "") + "".join(name + _dumps(args) for name, args in calls)
        candidates = (
            max(1, len(output) // 4)
            if script.completion_tokens is None
            else script.completion_tokens
        )
        thoughts = script.reasoning_tokens or (len(script.thinking or "") + 3) // 4
        signature = None
        if calls or script.thinking:
            raw = f"fake-thought-signature-{self._id_tag}-{next(self._signatures)}"
            signature = base64.b64encode(raw.encode()).decode()
        return _Answer(
            id=f"fake{self._id_tag}{next(self._sequence):012x}",
            model=model,
            text=script.text,
            calls=calls,
            thinking=script.thinking if _wants_thoughts(payload) else None,
            signature=signature,
            finish_reason=script.finish_reason or "STOP",
            usage=_usage(prompt, candidates, thoughts, script.cached_tokens),
            prompt_tokens=prompt,
        )

    # ---- streaming -------------------------------------------------------------------------

    async def _send_stream(
        self, exchange: _Exchange, events: list[bytes], ctype: str, error: bytes
    ) -> bool:
        faults = self._faults.take(_STREAM_KNOBS, is_chat=True)
        release = self._stall_release
        last = len(events) - 1
        error_at: int | None = faults.get("midstream_error")
        if error_at is not None:
            error_at = min(error_at, last)
            exchange.keep_alive = False
        stall_at: int | None = faults.get("stall_after")
        gap: float = faults.get("chunk_delay", 0.0)
        writer = exchange.writer
        pending = exchange.head(200, ctype, None)
        for index, event in enumerate(events):
            if index == error_at:
                writer.write(pending + _chunk(error) + _LAST_CHUNK)
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


# --------------------------------------------------------------------------------------------
# Control API and command line


class _ControlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeGemini) -> None:
        super().__init__(address, _ControlHandler)
        self.fake = fake


class _ControlHandler(BaseHTTPRequestHandler):
    """``POST /faults``, ``DELETE /faults``, ``GET /faults``, ``GET /requests/count``,
    ``DELETE /requests`` (as for the OpenAI fake)."""

    protocol_version = "HTTP/1.1"
    server_version = "fake-gemini-control"

    @property
    def _fake(self) -> FakeGemini:
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
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request logging."""


def start_control_server(fake: FakeGemini, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the JSON control API for ``fake`` on a daemon thread."""
    server = _ControlServer((host, port), fake)
    thread = threading.Thread(target=server.serve_forever, name="fake-gemini-control", daemon=True)
    thread.start()
    return server


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.gemini_upstream",
        description="Run a fake Gemini API upstream.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--name", default="fake", help="appears in the default answer text")
    parser.add_argument("--control-port", type=int, default=None, help="serve the control API")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated ids")
    parser.add_argument("--path-prefix", default="/v1beta")
    parser.add_argument("--api-key", default=None, help="require x-goog-api-key: KEY or ?key=KEY")
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
    fake = FakeGemini(
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
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
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
