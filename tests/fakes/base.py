"""The protocol-neutral machinery shared by the fake LLM providers of ``tests.fakes``.

Each fake (:mod:`~tests.fakes.openai_upstream`, :mod:`~tests.fakes.responses_upstream`,
:mod:`~tests.fakes.anthropic_upstream`, :mod:`~tests.fakes.gemini_upstream`) subclasses
:class:`FakeUpstream` and adds only what is its own: endpoints and request validation, the
encoding of answers, streams and errors in its protocol, its scripted-answer fields and its
defaults. What they share lives here:

* a small HTTP/1.1 server on ``asyncio`` and the standard library only, running its event loop
  on a background thread: keep-alive connections, request bodies framed by ``content-length`` or
  by ``transfer-encoding: chunked``, ``TCP_NODELAY`` on every accepted socket; non-streaming
  answers with ``content-length``, streams with ``transfer-encoding: chunked`` and one event per
  HTTP chunk, drained immediately;
* request recording (:class:`RecordedRequest`), the counters, ``chat_requests()``, and the
  answers as sent (:class:`SentResponse`, ``sent_responses``, ``chat_sent_responses()``);
* the queue of scripted answers (``queue_response()`` of each fake, ``clear_responses()``);
* ``start()``/``stop()``, the context manager, ``port`` and ``base_url``;
* the fault knobs, the JSON control API and the command line described below.

Fault knobs, set with ``set_fault(...)`` from any thread. Each applies to the next ``count``
requests it affects, or until ``clear_faults()`` when ``count`` is None. With ``chat_only=True``
requests other than the fake's answering endpoint (health checks, token counts, model reads)
neither see nor consume them; the stream-only knobs are never seen or consumed by non-streaming
requests.

* ``status``: answer with this HTTP status (400..599) and an error body in the fake's protocol,
  on every path. ``retry_after`` (seconds) goes with it: a ``retry-after`` header, or where the
  protocol says it in the body, there.
* ``delay``: seconds to wait after reading the request, before the response headers.
* ``reset``: read the request, then abort the connection with a TCP RST and no response.
* ``refuse``: close the listening socket (new connections get ECONNREFUSED) and drop open
  connections; ``restore()`` or clearing the knob listens again on the same port. ``count`` does
  not apply.
* ``stall_after`` (streams only): send N events, then send nothing more until the knob is
  cleared (the stream then continues) or the client goes away.
* ``chunk_delay`` (streams only): seconds between events.
* ``midstream_error`` (streams only): after N events send the protocol's in-band error, end the
  body and close the connection.

Command line: ``python -m tests.fakes.<fake>_upstream --port N --name NAME --control-port M``
(see :func:`run_cli` for every flag) prints ``listening on PORT`` once ready and runs until
SIGINT or SIGTERM. The control port serves a tiny JSON API: ``POST /faults`` (body:
``set_fault`` keyword arguments), ``DELETE /faults``, ``GET /faults``, ``GET /requests/count``
and ``DELETE /requests``.
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
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Final, Generic, Protocol, Self, TypeVar
from urllib.parse import parse_qs, unquote

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
JSON_TYPE: Final = "application/json"
SSE_TYPE: Final = "text/event-stream"
#: The terminating zero-size chunk of a chunked body.
LAST_CHUNK: Final = b"0\r\n\r\n"
REASONS: Final = {status.value: status.phrase for status in HTTPStatus}

_REQUEST_KNOBS: Final = ("reset", "delay", "status")
_STREAM_KNOBS: Final = ("stall_after", "chunk_delay", "midstream_error")
_HEAD_LIMIT: Final = 1 << 20
_ANSWER_FILLER: Final = " and keeps on talking, so that the answer streams in many small chunks."


def dumps(value: Any) -> str:
    """Compact JSON, as the real APIs send it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def format_seconds(seconds: float) -> str:
    """``1`` for 1.0, ``2.5`` for 2.5: a number of seconds for a header or a message."""
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def pieces(text: str, size: int) -> list[str]:
    """``text`` cut into pieces of ``size`` characters (the last one may be shorter)."""
    return [text[start : start + size] for start in range(0, len(text), size)]


def chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def default_answer(name: str, model: str, answer_chars: int | None = None) -> str:
    """The unscripted answer: the greeting, stretched (or cut) to ``answer_chars`` characters."""
    text = f"{name} says hello to {model}"
    if answer_chars is None:
        return text
    while len(text) < answer_chars:
        text += _ANSWER_FILLER
    return text[:answer_chars]


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


@dataclass(slots=True, eq=False)
class SentResponse:
    """One answer as the fake sent it, filled in as it goes out (a stream grows chunk by chunk).

    ``chunks`` are the body bytes without the HTTP framing: the whole body of a JSON answer, or
    one piece per HTTP chunk (one event) of a stream. Each piece is recorded just before it is
    written, so whatever a client has received is already here.
    """

    request: RecordedRequest
    #: None until the response head is written (and for ``reset``: no answer at all).
    status: int | None = None
    #: The raw response head (status line and headers, ending with the blank line).
    head: bytes = b""
    chunks: list[bytes] = field(default_factory=list)
    #: The whole body was written (a stream: its last chunk; a stall or a gone client: False).
    complete: bool = False

    @property
    def body(self) -> bytes:
        """The body bytes sent so far, unframed."""
        return b"".join(self.chunks)


@dataclass(frozen=True, slots=True)
class ScriptedAnswer:
    """What every fake's scripted answer holds; its ``ScriptedResponse`` adds its own fields."""

    text: str | None = None
    #: ``(name, arguments_json_string)`` pairs
    tool_calls: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ScriptedChatAnswer(ScriptedAnswer):
    """A scripted answer with the finish reason and usage under ``queue_response``'s (OpenAI's)
    names; None numbers are computed."""

    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0


ScriptT = TypeVar("ScriptT", bound=ScriptedAnswer)


@dataclass(frozen=True, slots=True)
class StatusFault:
    """The armed ``status`` knob; each fake turns it into an error in its protocol."""

    status: int
    retry_after: float | None
    #: The account is out of quota/credit (each fake answers its provider's way).
    quota: bool = False


class ApiError(Protocol):
    """An error answer in a fake's protocol."""

    @property
    def status(self) -> int: ...

    def body(self, request_id: str, /) -> bytes:
        """The JSON error body; ``request_id`` is the response's (empty when it has none)."""
        ...

    def response_headers(self) -> Sequence[tuple[str, str]]:
        """Extra response headers (``retry-after``, ``allow``)."""
        ...


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
        if isinstance(value, StatusFault):
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


# --------------------------------------------------------------------------------------------
# HTTP/1.1 request parsing


class _BadRequest(Exception):
    pass


@dataclass(slots=True)
class HttpRequest:
    """One parsed HTTP/1.1 request."""

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
) -> HttpRequest | None:
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
    return HttpRequest(method, path, query, version, headers, body)


def _parse_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Responses


def render_head(
    status: int,
    content_type: str,
    length: int | None,
    *,
    keep_alive: bool,
    fields: tuple[str, str] = ("", ""),
    extra: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A response head: ``content-length`` framing, or chunked when ``length`` is None.

    ``fields`` are a fake's own header lines (each ending in CRLF), the first before the framing
    header, the second after it; ``extra`` are per-response headers, last.
    """
    parts = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n",
        f"content-type: {content_type}\r\n",
        fields[0],
        f"content-length: {length}\r\n" if length is not None else "transfer-encoding: chunked\r\n",
        fields[1],
    ]
    if not keep_alive:
        parts.append("connection: close\r\n")
    parts.extend(f"{name}: {value}\r\n" for name, value in extra)
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


class Exchange:
    """One request/response exchange on a connection."""

    __slots__ = (
        "_fake",
        "_query",
        "keep_alive",
        "payload",
        "reader",
        "request",
        "request_id",
        "sent",
        "started",
        "writer",
    )

    def __init__(
        self,
        fake: FakeUpstream[Any],
        request: HttpRequest,
        payload: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request_id: str,
        recorded: RecordedRequest | None = None,
    ) -> None:
        """``recorded`` is the request's record, when it was recorded."""
        self._fake = fake
        self._query: dict[str, str] | None = None
        self.request = request
        self.payload = payload  # the parsed JSON body, or None
        self.reader = reader
        self.writer = writer
        self.request_id = request_id
        self.keep_alive = request.keep_alive
        self.started = time.perf_counter()
        if recorded is None:
            recorded = RecordedRequest(
                request.method,
                request.path,
                request.query,
                request.headers,
                request.body,
                payload,
                time.monotonic(),
            )
        #: What this exchange sent, as it goes out.
        self.sent = SentResponse(recorded)

    @property
    def query(self) -> dict[str, str]:
        """The query parameters (the last value of a repeated one)."""
        if self._query is None:
            parsed = parse_qs(self.request.query, keep_blank_values=True)
            self._query = {name: values[-1] for name, values in parsed.items()}
        return self._query

    def head(
        self,
        status: int,
        content_type: str,
        length: int | None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        fields = self._fake._head_fields(self.request_id, self.started, content_type)
        return render_head(
            status, content_type, length, keep_alive=self.keep_alive, fields=fields, extra=extra
        )

    async def send_json(
        self, status: int, body: bytes, extra: Iterable[tuple[str, str]] = ()
    ) -> bool:
        """Send a JSON answer; True when the connection stays open for another request."""
        head = self.head(status, self._fake._json_type, len(body), extra)
        self.sent.status, self.sent.head = status, head
        self.sent.chunks.append(body)
        self.sent.complete = True
        self.writer.write(head + body)
        await self.writer.drain()
        return self.keep_alive

    async def send_error(self, error: ApiError) -> bool:
        body = error.body(self.request_id)
        return await self.send_json(error.status, body, error.response_headers())


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


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
# The server

Handler = Callable[[Exchange], Awaitable[bool]]
#: The method a path accepts and its handler.
Route = tuple[str, Handler]


class FakeUpstream(ABC, Generic[ScriptT]):
    """A fake LLM upstream running on a background thread; ``ScriptT`` is its scripted answer.

    A subclass sets ``_script_type`` (its ``ScriptedResponse``), implements the hooks marked
    abstract (routing and errors in its protocol) and may override the others (``_setup``,
    ``_is_chat``, ``_check_request``, ``_next_request_id``, ``_head_fields``, ``_malformed``). Its
    endpoints answer with ``exchange.send_json`` / ``exchange.send_error``, or with
    :meth:`_send_stream`, which applies the stream knobs.
    """

    _script_type: type[ScriptT]

    #: The served model ids and the path prefix when the constructor is not given them.
    default_models: ClassVar[tuple[str, ...]] = ()
    default_path_prefix: ClassVar[str] = "/v1"
    #: Names the threads (``fake-{label}-{name}``) and the control API's ``server`` header.
    _label: ClassVar[str] = "upstream"
    _json_type: ClassVar[str] = JSON_TYPE
    #: Characters of ``name`` kept in generated ids besides ASCII letters and digits.
    _id_tag_extra: ClassVar[str] = ""
    #: For the command line's ``--help``.
    _cli_description: ClassVar[str] = "Run a fake LLM upstream."
    _api_key_help: ClassVar[str] = "require API key KEY"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "fake",
        *,
        models: Sequence[str] | None = None,
        path_prefix: str | None = None,
        expected_api_key: str | None = None,
        chunk_chars: int = 4,
        answer_chars: int | None = None,
        strict_models: bool = False,
        max_recorded: int | None = 10_000,
        log_requests: bool = False,
    ) -> None:
        """``models`` and ``path_prefix`` default to the class's ``default_models`` and
        ``default_path_prefix``; ``name`` appears in the default answer, ``chunk_chars`` is the
        size of the streamed text pieces, ``answer_chars`` stretches the default answer,
        ``strict_models`` answers 404 for unknown models, ``max_recorded`` bounds the recorded
        requests and ``log_requests`` prints each request to stderr."""
        prefix = (self.default_path_prefix if path_prefix is None else path_prefix).strip("/")
        self.name = name
        self.models = tuple(self.default_models if models is None else models)
        self.path_prefix = "/" + prefix if prefix else ""
        self.expected_api_key = expected_api_key
        self.chunk_chars = check_int("chunk_chars", chunk_chars, 1)
        self.answer_chars = (
            None if answer_chars is None else check_int("answer_chars", answer_chars, 1)
        )
        self.strict_models = strict_models
        self.log_requests = log_requests
        self._host = host
        self._port = port
        extra = self._id_tag_extra
        self._id_tag = "".join(c for c in name if c.isascii() and (c.isalnum() or c in extra))
        self._models_path = f"{self.path_prefix}/models"
        self._chat_path = ""  # the answering endpoint, for the default ``_is_chat``
        self._lock = threading.Lock()
        self._recorded: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._sent: deque[SentResponse] = deque(maxlen=max_recorded)
        self._request_count = 0
        self._chat_count = 0
        self._accepted = 0
        self._scripts: deque[ScriptT] = deque()
        self._faults = _FaultBoard()
        self._refused = False
        self._sequence = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}
        self._stall_release: asyncio.Event | None = None
        self._setup()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving on a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"fake-{self._label}-{self.name}", daemon=True
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

    def __enter__(self) -> Self:
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
        """``http://HOST:PORT{path_prefix}``: the base URL of this backend."""
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
        """The recorded requests to the answering endpoint (chat, messages, generate)."""
        return [r for r in self.requests if self._is_chat(r.method, r.path)]

    def clear_requests(self) -> None:
        """Forget the recorded requests and the answers sent to them."""
        with self._lock:
            self._recorded.clear()
            self._sent.clear()

    @property
    def sent_responses(self) -> list[SentResponse]:
        """The answers as sent, oldest first, one per recorded request (health checks included);
        a stream still being sent keeps growing."""
        with self._lock:
            return list(self._sent)

    def chat_sent_responses(self) -> list[SentResponse]:
        """The answers sent to requests to the answering endpoint."""
        return [s for s in self.sent_responses if self._is_chat(s.request.method, s.request.path)]

    @property
    def request_count(self) -> int:
        """Requests received since start, recorded or not."""
        return self._request_count

    @property
    def chat_request_count(self) -> int:
        """Requests to the answering endpoint received since start."""
        return self._chat_count

    @property
    def connections_accepted(self) -> int:
        return self._accepted

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # ---- scripted answers ------------------------------------------------------------------

    def clear_responses(self) -> None:
        """Drop the scripted answers not used yet."""
        self._scripts.clear()

    def _queue_script(self, script: ScriptT) -> None:
        self._scripts.append(script)

    def _next_script(self, model: str) -> ScriptT:
        """The next scripted answer, or else ``default_answer`` for ``model``."""
        try:
            return self._scripts.popleft()
        except IndexError:
            return self._script_type(text=default_answer(self.name, model, self.answer_chars))

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
        quota: bool = False,
    ) -> None:
        """Arm fault knobs (see :mod:`tests.fakes.base`). Knobs not given keep their state."""
        if count is not None:
            check_int("count", count, 1)
        knobs: dict[str, Any] = {}
        if status is not None:
            check_int("status", status, 400)
            if status > 599:
                raise ValueError(f"status must be 400..599, got {status}")
            retry = None if retry_after is None else check_seconds("retry_after", retry_after)
            knobs["status"] = StatusFault(status, retry, quota)
        elif quota:
            raise ValueError("quota only applies together with status")
        elif retry_after is not None:
            raise ValueError("retry_after only applies together with status")
        if delay is not None:
            knobs["delay"] = check_seconds("delay", delay)
        if reset:
            knobs["reset"] = True
        if stall_after is not None:
            knobs["stall_after"] = check_int("stall_after", stall_after, 0)
        if chunk_delay is not None:
            knobs["chunk_delay"] = check_seconds("chunk_delay", chunk_delay)
        if midstream_error is not None:
            knobs["midstream_error"] = check_int("midstream_error", midstream_error, 0)
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

    # ---- protocol hooks --------------------------------------------------------------------

    def _setup(self) -> None:
        """Protocol state (endpoint paths, id counters), set at the end of ``__init__``."""

    def _is_chat(self, method: str, path: str) -> bool:
        """Whether a request goes to the answering endpoint (``chat_only`` knobs, counts)."""
        return method == "POST" and path == self._chat_path

    @abstractmethod
    def _route(self, path: str) -> Route | None:
        """The method ``path`` accepts and its handler; None for an unknown path."""

    def _model_id(self, path: str) -> str | None:
        """``ID`` (unquoted) for a ``{prefix}/models/ID`` path, else None."""
        head = self._models_path + "/"
        if not path.startswith(head) or len(path) == len(head):
            return None
        return unquote(path[len(head) :])

    def _check_request(self, exchange: Exchange) -> ApiError | None:
        """An error for a request the protocol refuses on any path (auth), else None."""
        return None

    @abstractmethod
    def _not_found(self, request: HttpRequest) -> ApiError:
        """The 404 error for an unknown path."""

    @abstractmethod
    def _wrong_method(self, request: HttpRequest, allowed: str) -> ApiError:
        """The 405 error for a known path asked with another method than ``allowed``."""

    @abstractmethod
    def _bad_request(self, message: str) -> ApiError:
        """The 400 error for a request that is not valid HTTP/1.1."""

    @abstractmethod
    def _fault_error(self, fault: StatusFault) -> ApiError:
        """The error the ``status`` knob answers with."""

    def _next_request_id(self) -> str:
        """A new response id for the protocol's request-id header ("" when it has none)."""
        return ""

    def _head_fields(self, request_id: str, started: float, content_type: str) -> tuple[str, str]:
        """The protocol's own header lines, before and after the framing header (see
        :func:`render_head`); ``started`` is the ``time.perf_counter()`` of the request."""
        return "", ""

    def _malformed(self, message: str) -> bytes:
        """The whole 400 response to a request that is not valid HTTP/1.1 (then it closes)."""
        request_id = self._next_request_id()
        body = self._bad_request(message).body(request_id)
        fields = self._head_fields(request_id, time.perf_counter(), self._json_type)
        return render_head(400, self._json_type, len(body), keep_alive=False, fields=fields) + body

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

    # ---- event-loop side: connections and requests -----------------------------------------

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

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; True when the connection stays open for another one."""
        try:
            request = await _read_request(reader, writer)
        except _BadRequest as exc:
            writer.write(self._malformed(str(exc)))
            await writer.drain()
            return False
        if request is None:
            return False
        payload = _parse_json(request.body)
        recorded, is_chat = self._record_request(request, payload)
        exchange = Exchange(
            self, request, payload, reader, writer, self._next_request_id(), recorded
        )
        with self._lock:
            self._sent.append(exchange.sent)
        faults = self._faults.take(_REQUEST_KNOBS, is_chat=is_chat)
        if faults.get("reset"):
            _abort_with_rst(writer)
            return False
        if faults.get("delay"):
            await asyncio.sleep(faults["delay"])
        status_fault: StatusFault | None = faults.get("status")
        if status_fault is not None:
            return await exchange.send_error(self._fault_error(status_fault))
        return await self._dispatch(exchange)

    def _record(self, request: HttpRequest, payload: Any) -> bool:
        """Record ``request``; True when it went to the answering endpoint."""
        return self._record_request(request, payload)[1]

    def _record_request(self, request: HttpRequest, payload: Any) -> tuple[RecordedRequest, bool]:
        """Record ``request``: its record, and whether it went to the answering endpoint."""
        is_chat = self._is_chat(request.method, request.path)
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
        return record, is_chat

    async def _dispatch(self, exchange: Exchange) -> bool:
        request = exchange.request
        error = self._check_request(exchange)
        if error is not None:
            return await exchange.send_error(error)
        route = self._route(request.path)
        if route is None:
            return await exchange.send_error(self._not_found(request))
        method, handler = route
        if request.method != method:
            return await exchange.send_error(self._wrong_method(request, method))
        return await handler(exchange)

    async def _send_stream(
        self,
        exchange: Exchange,
        events: list[bytes],
        failure: bytes | Callable[[int], bytes],
        content_type: str = SSE_TYPE,
    ) -> bool:
        """Stream ``events`` one per HTTP chunk, applying the stream knobs.

        ``failure`` is the in-band error ``midstream_error`` sends instead of event N, or a
        function of N that makes it.
        """
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
        pending = exchange.head(200, content_type, None)
        sent = exchange.sent
        sent.status, sent.head = 200, pending
        for index, event in enumerate(events):
            if index == error_at:
                error = failure(index) if callable(failure) else failure
                sent.chunks.append(error)
                sent.complete = True
                writer.write(pending + chunk(error) + LAST_CHUNK)
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
            sent.chunks.append(event)
            sent.complete = index == last
            writer.write(pending + chunk(event) + (LAST_CHUNK if index == last else b""))
            pending = b""
            await writer.drain()
        return exchange.keep_alive


# --------------------------------------------------------------------------------------------
# Control API and command line


class _ControlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeUpstream[Any]) -> None:
        super().__init__(address, _ControlHandler)
        self.fake = fake


class _ControlHandler(BaseHTTPRequestHandler):
    """``POST /faults``, ``DELETE /faults``, ``GET /faults``, ``GET /requests/count``,
    ``DELETE /requests``."""

    protocol_version = "HTTP/1.1"

    @property
    def _fake(self) -> FakeUpstream[Any]:
        server = self.server
        assert isinstance(server, _ControlServer)
        return server.fake

    def version_string(self) -> str:
        return f"fake-{self._fake._label}-control {self.sys_version}"

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
        body = dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", JSON_TYPE)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request logging."""


def start_control_server(fake: FakeUpstream[Any], host: str, port: int) -> ThreadingHTTPServer:
    """Serve the JSON control API for ``fake`` on a daemon thread."""
    server = _ControlServer((host, port), fake)
    thread = threading.Thread(
        target=server.serve_forever, name=f"fake-{fake._label}-control", daemon=True
    )
    thread.start()
    return server


def _parse_args(
    fake_type: type[FakeUpstream[Any]], module: str, argv: Sequence[str] | None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}", description=fake_type._cli_description
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--name", default="fake", help="appears in the default answer text")
    parser.add_argument("--control-port", type=int, default=None, help="serve the control API")
    parser.add_argument(
        "--models", default=",".join(fake_type.default_models), help="comma-separated ids"
    )
    parser.add_argument("--path-prefix", default=fake_type.default_path_prefix)
    parser.add_argument("--api-key", default=None, help=fake_type._api_key_help)
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


def run_cli(
    fake_type: type[FakeUpstream[Any]], module: str, argv: Sequence[str] | None = None
) -> int:
    """``python -m {module}``: serve a ``fake_type`` until SIGINT or SIGTERM, then exit 0.

    Flags: ``--host``, ``--port`` (0 picks a free one), ``--name``, ``--control-port`` (serve
    the control API), ``--models`` (comma-separated), ``--path-prefix``, ``--api-key``,
    ``--chunk-chars``, ``--answer-chars``, ``--strict-models``, ``--record-limit`` and
    ``--log-requests``.
    """
    args = _parse_args(fake_type, module, argv)
    fake = fake_type(
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
