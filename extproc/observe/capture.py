"""Byte-precise wire capture: what crossed each leg of each request, in CBOR sequence files.

The observer roles (:mod:`extproc.processing.observer`) see the client leg and every provider
attempt of every request; they hand one *record* per ext_proc message to a
:class:`CaptureWriter` (its :meth:`~CaptureWriter.event` method is the observer's
``CaptureSink``). The writer never blocks the caller: records wait in a bounded queue and a
daemon thread encodes and appends them to files; when the queue is full a record is dropped,
counted and logged.

File format (docs/capture.md has the full table): an RFC 8742 CBOR sequence, extension
``.cbors``, named ``capture-YYYYMMDDTHHMMSSZ-NNNN.cbors`` (UTC time of creation, then a
sequence number) so that names sort chronologically. The first item of every file is a header
map ``{"format": "llm-proxy-capture", "version": 1, "created": wall_ns, "host": ..., "pid":
...}``; every later item is one record, a map with small integer keys (``KEY_*`` below). Body
bytes are stored as CBOR byte strings exactly as they crossed, one record per chunk. Credentials
in headers and in the ``:path`` query are masked before anything is written
(:func:`mask_headers`, :func:`mask_query`): a credential becomes ``***key-<12 hex>``, an id that
keeps no character of it.

Crash safety: each batch of complete record encodings goes to the file with one ``write()`` on
an unbuffered file, so a process killed at any point leaves every written record readable; only
the batch being written at that moment can be torn, and the reader reports a torn tail
(:class:`TruncatedTail`) instead of failing.

Reading: :func:`iter_records` yields records in file order; :func:`exchanges` groups them by
request id into :class:`Exchange` objects (client request and response, provider attempts,
timing) with helpers to reassemble bodies and decode SSE streams (:func:`parse_sse`,
:func:`summarize_stream`). The command line lives in :mod:`extproc.observe.capture_cli`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import gzip
import json
import logging
import os
import queue
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, Literal, TypeAlias
from urllib.parse import unquote_plus

import cbor2

from extproc.config.model import CaptureConfig
from extproc.pipeline.context import key_id

__all__ = [
    "FILE_GLOB",
    "FORMAT",
    "KINDS",
    "LEGS",
    "VERSION",
    "Attempt",
    "CaptureFormatError",
    "CaptureRecord",
    "CaptureWriter",
    "CorruptCapture",
    "Exchange",
    "Leg",
    "SSEEvent",
    "StreamSummary",
    "ToolCall",
    "TruncatedTail",
    "UnsupportedCapture",
    "capture_files",
    "decode_record",
    "encode_record",
    "exchanges",
    "is_credential_header",
    "iter_records",
    "make_record",
    "mask_headers",
    "mask_query",
    "mask_secret",
    "parse_sse",
    "read_header",
    "summarize_json",
    "summarize_stream",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# The schema (version 1). Keys are stable: new optional keys may be added to version 1, a
# changed meaning needs version 2. Readers ignore keys they do not know.

FORMAT: Final = "llm-proxy-capture"
VERSION: Final = 1
FILE_PREFIX: Final = "capture-"
FILE_SUFFIX: Final = ".cbors"
FILE_GLOB: Final = f"{FILE_PREFIX}*{FILE_SUFFIX}"

#: text: the request id (Envoy's ``x-request-id``), the same on every leg.
KEY_REQUEST_ID: Final = 1
#: text: the session id; omitted when unknown.
KEY_SESSION_ID: Final = 2
#: text: a non-reversible id of the client's key (``key-1a2b...``); omitted when none.
KEY_CLIENT_KEY_ID: Final = 3
#: text: one of :data:`LEGS`.
KEY_LEG: Final = 4
#: unsigned: provider attempt number (1, 2, ...); 0 on the client legs.
KEY_ATTEMPT: Final = 5
#: text: one of :data:`KINDS`.
KEY_KIND: Final = 6
#: unsigned: monotonic clock (ns) of the proxy process when the message was seen.
KEY_MONO_NS: Final = 7
#: unsigned: wall clock (ns since the Unix epoch) when the message was seen.
KEY_WALL_NS: Final = 8
#: array of [text name, bytes value]: headers (or trailers) in order, credentials masked.
KEY_HEADERS: Final = 9
#: bytes: this chunk of the body exactly as it crossed; omitted when empty.
KEY_BODY: Final = 10
#: bool: Envoy's end_of_stream flag on this message.
KEY_END_OF_STREAM: Final = 11
#: map text -> any: small annotations (status, model, backend, frontend, ...); omitted if empty.
KEY_ANNOTATIONS: Final = 12

LegName: TypeAlias = Literal[
    "client_request", "client_response", "provider_request", "provider_response"
]
Kind: TypeAlias = Literal["headers", "body", "end"]
LEGS: Final[tuple[str, ...]] = (
    "client_request",
    "client_response",
    "provider_request",
    "provider_response",
)
KINDS: Final[tuple[str, ...]] = ("headers", "body", "end")
_LEG_SET: Final = frozenset(LEGS)
_KIND_SET: Final = frozenset(KINDS)

HeaderValue: TypeAlias = str | bytes
HeaderPairs: TypeAlias = Sequence[tuple[str, HeaderValue]]

# --------------------------------------------------------------------------------------------
# Masking

_CREDENTIAL_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
    }
)
_CREDENTIAL_PARTS: Final = ("key", "token", "secret", "auth")
#: Rate-limit headers count tokens; they carry no secret and are worth keeping.
_NOT_CREDENTIAL_PARTS: Final = ("ratelimit", "rate-limit")
#: Headers holding a URL or a path whose query may carry a key (Gemini's ``?key=``).
_URL_HEADERS: Final = frozenset({":path", "x-envoy-original-path", "location", "referer"})
_SCHEME_RE: Final = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)( +)(\S.*)$", re.DOTALL)
_QUERY_SECRET_RE: Final = re.compile(
    r"([?&;](?:key|api_key|apikey|api-key|token|access_token|x-goog-api-key)=)([^&#;]*)",
    re.IGNORECASE,
)
#: A secret at least this long gets a stable id in its masked form; shorter ones are ``***``.
MIN_ID_SECRET: Final = 8
MASK: Final = "***"


def mask_secret(secret: str) -> str:
    """``***key-<12 hex>`` for a secret of 8 characters or more, ``***`` for a shorter one.

    The id is :func:`extproc.pipeline.context.key_id` of the secret (a truncated SHA-256): the
    ``client_key_id`` of the usage records, so a capture and a usage row can be matched, while
    no character of the secret is kept. Surrounding whitespace is not part of the secret.
    """
    if not secret:
        return secret
    bare = secret.strip()
    return MASK + key_id(bare) if len(bare) >= MIN_ID_SECRET else MASK


@functools.lru_cache(maxsize=4096)
def is_credential_header(name: str) -> bool:
    """True for headers whose value is a credential (masked in captures, dropped on replay)."""
    lower = name.lower()
    if lower in _CREDENTIAL_HEADERS:
        return True
    if lower.startswith(":") or any(part in lower for part in _NOT_CREDENTIAL_PARTS):
        return False
    return any(part in lower for part in _CREDENTIAL_PARTS)


def _mask_value(value: str) -> str:
    match = _SCHEME_RE.match(value)
    if match is not None:
        return f"{match.group(1)}{match.group(2)}{mask_secret(match.group(3))}"
    return mask_secret(value)


def mask_query(path: str) -> str:
    """``path`` with the values of ``key=``, ``api_key=``, ``token=`` (and kin) masked.

    A value is masked by :func:`mask_secret` of its percent-decoded form (the key the proxy
    reads from the query), so its id matches the ``client_key_id`` of the same key in a header.
    """
    if "=" not in path:
        return path
    return _QUERY_SECRET_RE.sub(lambda m: m.group(1) + mask_secret(unquote_plus(m.group(2))), path)


def _as_bytes(value: HeaderValue) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def mask_headers(headers: Iterable[tuple[str, HeaderValue]]) -> list[tuple[str, bytes]]:
    """Headers in order with credentials masked, values as bytes.

    A credential keeps its scheme (``Bearer ***key-1a2b3c4d5e6f``); see :func:`mask_secret`.
    URL-bearing headers (``:path``, ``location``...) get :func:`mask_query`.
    """
    out: list[tuple[str, bytes]] = []
    for name, value in headers:
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
        treatment = _treatment(name)
        if treatment == _CREDENTIAL:
            raw = _mask_value(raw.decode("latin-1")).encode("latin-1")
        elif treatment == _URL and b"=" in raw:
            raw = mask_query(raw.decode("latin-1")).encode("latin-1")
        out.append((name, raw))
    return out


_PLAIN, _CREDENTIAL, _URL = 0, 1, 2


@functools.lru_cache(maxsize=4096)
def _treatment(name: str) -> int:
    """What masking a header of this name needs (names repeat: cached)."""
    if is_credential_header(name):
        return _CREDENTIAL
    return _URL if name.lower() in _URL_HEADERS else _PLAIN


# --------------------------------------------------------------------------------------------
# Records


@dataclass(slots=True)
class CaptureRecord:
    """One ext_proc message of one leg. Headers are masked when the record is encoded."""

    request_id: str
    leg: str
    kind: str
    attempt: int = 0
    mono_ns: int = 0
    wall_ns: int = 0
    headers: HeaderPairs = ()
    body: bytes = b""
    end_of_stream: bool = False
    session_id: str | None = None
    client_key_id: str | None = None
    annotations: Mapping[str, Any] | None = None


def make_record(
    request_id: str,
    leg: str,
    kind: str,
    *,
    attempt: int = 0,
    headers: HeaderPairs | None = None,
    body: bytes | bytearray | memoryview | None = None,
    end_of_stream: bool = False,
    session_id: str | None = None,
    client_key_id: str | None = None,
    annotations: Mapping[str, Any] | None = None,
    mono_ns: int | None = None,
    wall_ns: int | None = None,
) -> CaptureRecord:
    """A checked record; timestamps default to now (take them where the message was seen)."""
    if leg not in _LEG_SET:
        raise ValueError(f"unknown capture leg {leg!r} (one of {', '.join(LEGS)})")
    if kind not in _KIND_SET:
        raise ValueError(f"unknown capture record kind {kind!r} (one of {', '.join(KINDS)})")
    data = b"" if body is None else bytes(body) if not isinstance(body, bytes) else body
    return CaptureRecord(
        request_id=request_id,
        leg=leg,
        kind=kind,
        attempt=attempt,
        mono_ns=time.monotonic_ns() if mono_ns is None else mono_ns,
        wall_ns=time.time_ns() if wall_ns is None else wall_ns,
        headers=headers or (),
        body=data,
        end_of_stream=end_of_stream,
        session_id=session_id,
        client_key_id=client_key_id,
        annotations=annotations,
    )


def _cbor_default(encoder: Any, value: Any) -> None:
    # Annotations are meant to be plain values; anything else is written as its text.
    encoder.encode(str(value))


def encode_record(record: CaptureRecord) -> bytes:
    """The CBOR encoding of ``record`` (headers masked here, whatever the caller passed)."""
    item: dict[int, Any] = {KEY_REQUEST_ID: record.request_id}
    if record.session_id is not None:
        item[KEY_SESSION_ID] = record.session_id
    if record.client_key_id is not None:
        item[KEY_CLIENT_KEY_ID] = record.client_key_id
    item[KEY_LEG] = record.leg
    item[KEY_ATTEMPT] = record.attempt
    item[KEY_KIND] = record.kind
    item[KEY_MONO_NS] = record.mono_ns
    item[KEY_WALL_NS] = record.wall_ns
    if record.headers:
        item[KEY_HEADERS] = [[name, value] for name, value in mask_headers(record.headers)]
    if record.body:
        item[KEY_BODY] = record.body
    item[KEY_END_OF_STREAM] = record.end_of_stream
    if record.annotations:
        notes = {str(k): v for k, v in record.annotations.items() if v is not None}
        if notes:
            item[KEY_ANNOTATIONS] = notes
    return cbor2.dumps(item, default=_cbor_default)


def _text(value: Any, default: str = "") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return default if value is None else str(value)


def decode_record(item: Any) -> CaptureRecord:
    """A record from its decoded CBOR map (unknown keys ignored). ValueError if not a record."""
    if not isinstance(item, dict):
        raise ValueError(f"a capture record is a map, got {type(item).__name__}")
    leg = _text(item.get(KEY_LEG))
    kind = _text(item.get(KEY_KIND))
    if KEY_REQUEST_ID not in item or not leg or not kind:
        raise ValueError("a capture record needs a request id, a leg and a kind")
    headers: list[tuple[str, bytes]] = []
    for pair in item.get(KEY_HEADERS) or ():
        if isinstance(pair, list | tuple) and len(pair) == 2:
            value = pair[1]
            raw = value if isinstance(value, bytes) else _text(value).encode("utf-8")
            headers.append((_text(pair[0]), raw))
    body = item.get(KEY_BODY, b"")
    notes = item.get(KEY_ANNOTATIONS)
    session = item.get(KEY_SESSION_ID)
    key = item.get(KEY_CLIENT_KEY_ID)
    return CaptureRecord(
        request_id=_text(item[KEY_REQUEST_ID]),
        leg=leg,
        kind=kind,
        attempt=int(item.get(KEY_ATTEMPT) or 0),
        mono_ns=int(item.get(KEY_MONO_NS) or 0),
        wall_ns=int(item.get(KEY_WALL_NS) or 0),
        headers=headers,
        body=body if isinstance(body, bytes) else _text(body).encode("utf-8"),
        end_of_stream=bool(item.get(KEY_END_OF_STREAM, False)),
        session_id=None if session is None else _text(session),
        client_key_id=None if key is None else _text(key),
        annotations={str(k): v for k, v in notes.items()} if isinstance(notes, dict) else None,
    )


def file_header(*, created_ns: int, host: str) -> dict[str, Any]:
    """The first item of every capture file."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": created_ns,
        "host": host,
        "pid": os.getpid(),
    }


# --------------------------------------------------------------------------------------------
# The writer

#: Seconds between two "records dropped" warnings.
DROP_WARNING_INTERVAL: Final = 10.0
#: Records taken from the queue and written with one write() at most.
_BATCH: Final = 512
#: Seconds the writer waits after waking before it drains the queue.
LINGER: Final = 0.05
#: The fields of a record handed over as a tuple (:meth:`CaptureWriter.submit_batch`),
#: in order: the keyword arguments of :meth:`CaptureWriter.event`.
RECORD_FIELDS: Final = (
    "request_id",
    "leg",
    "attempt",
    "kind",
    "mono_ns",
    "wall_ns",
    "headers",
    "body",
    "end_of_stream",
    "session_id",
    "client_key_id",
    "annotations",
)
_STOP: Final = object()

Opener: TypeAlias = Callable[[Path], IO[bytes]]


def _default_opener(path: Path) -> IO[bytes]:
    # Exclusive create (never clobber another writer's file); unbuffered, so every write()
    # goes straight to the kernel and survives the process being killed.
    return open(path, "xb", buffering=0)


class CaptureWriter:
    """Appends capture records to rotating files on a daemon thread, never blocking callers.

    ``monotonic`` (seconds) drives file age and the drop-warning interval, ``wall`` (seconds)
    the timestamps in file names; ``opener`` opens a new file for appending. All three exist
    for tests.
    """

    def __init__(
        self,
        config: CaptureConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        hostname: str | None = None,
        opener: Opener | None = None,
        body_filter: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.config = config
        #: Applied to every record's body before it is written (secret redaction).
        self._body_filter = body_filter
        self.directory = Path(config.directory)
        self._monotonic = monotonic
        self._wall = wall
        self._host = hostname if hostname is not None else socket.gethostname()
        self._opener: Opener = opener or _default_opener
        self._queue: queue.Queue[object] = queue.Queue(maxsize=config.queue_size)
        #: Records queued and not yet written (a batch is one queue item).
        self._backlog = 0
        self._backlog_lock = threading.Lock()
        self._closed = False
        self._drop_lock = threading.Lock()
        self._dropped = 0
        self._reported_drops = 0
        self._last_warning: float | None = None
        self._last_error_log: float | None = None
        self._written = 0
        self._files = 0
        self._sequence = 0
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._file_size = 0
        self._file_records = 0
        self._file_opened = 0.0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    # ---- the caller's side (any thread, never blocks) ----------------------------------------

    def submit(self, record: CaptureRecord) -> bool:
        """Queue ``record`` for writing; False (and counted in ``dropped``) if it was dropped."""
        return self._enqueue(record, 1)

    def submit_batch(self, records: list[tuple[Any, ...]]) -> bool:
        """Queue records given as tuples of the :data:`RECORD_FIELDS` values, in one hand-over.

        The roles' capture (extproc/processing/tap.py) hands over an exchange's records
        together: waking this thread once per record cost more than the records. They are
        checked and encoded on the writer thread; a bad one is dropped (and counted) there.
        """
        return self._enqueue(records, len(records))

    def _enqueue(self, item: object, count: int) -> bool:
        if self._closed:
            self._drop(count, "writer closed")
            return False
        with self._backlog_lock:
            if self._backlog + count > self.config.queue_size:
                full = True
            else:
                full = False
                self._backlog += count
        if full:
            self._drop(count, "queue full")
            return False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._backlog_lock:
                self._backlog -= count
            self._drop(count, "queue full")
            return False
        return True

    def event(
        self,
        *,
        request_id: str,
        leg: str,
        attempt: int,
        kind: str,
        mono_ns: int,
        wall_ns: int,
        headers: Sequence[tuple[str, bytes]] | None = None,
        body: bytes | None = None,
        end_of_stream: bool = False,
        session_id: str | None = None,
        client_key_id: str | None = None,
        annotations: dict[str, Any] | None = None,
    ) -> None:
        """The observer's ``CaptureSink``: one ext_proc message, queued without blocking."""
        self.submit(
            make_record(
                request_id,
                leg,
                kind,
                attempt=attempt,
                headers=headers,
                body=body,
                end_of_stream=end_of_stream,
                session_id=session_id,
                client_key_id=client_key_id,
                annotations=annotations,
                mono_ns=mono_ns,
                wall_ns=wall_ns,
            )
        )

    @property
    def queue_depth(self) -> int:
        """Records waiting for the writer thread."""
        return self._backlog

    @property
    def dropped(self) -> int:
        """Records dropped so far (queue full, writer closed, encoding or I/O errors)."""
        return self._dropped

    @property
    def written(self) -> int:
        """Records written to files so far."""
        return self._written

    @property
    def files(self) -> int:
        """Capture files this writer has created."""
        return self._files

    @property
    def current_path(self) -> Path | None:
        """The file being written, if any."""
        return self._path

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued so far is written; False on timeout."""
        with self._queue.all_tasks_done:
            return self._queue.all_tasks_done.wait_for(
                lambda: self._queue.unfinished_tasks == 0, timeout
            )

    def close(self, timeout: float | None = 10.0) -> bool:
        """Write what is queued, close the file and stop the thread; False on timeout."""
        if not self._closed:
            self._closed = True
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                log.error("capture: writer stuck; %d records not written", self.queue_depth)
        self._thread.join(timeout)
        done = not self._thread.is_alive()
        if done:
            # Records that raced with close() are counted, not silently lost.
            left = 0
            with contextlib.suppress(queue.Empty):
                while True:
                    item = self._queue.get_nowait()
                    if item is not _STOP:
                        left += len(item) if isinstance(item, list) else 1
            if left:
                self._drop(left, "writer closed")
        with self._drop_lock:
            unreported = self._dropped - self._reported_drops
            self._reported_drops = self._dropped
        if unreported:
            log.warning("capture: %d records dropped in total", self._dropped)
        return done

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _drop(self, count: int, why: str) -> None:
        with self._drop_lock:
            self._dropped += count
            total = self._dropped
            now = self._monotonic()
            last = self._last_warning
            warn = last is None or now - last >= DROP_WARNING_INTERVAL
            if warn:
                self._last_warning = now
                self._reported_drops = total
        if warn:
            log.warning(
                "capture: %s, records dropped (%d dropped so far, queue size %d)",
                why,
                total,
                self.config.queue_size,
            )

    # ---- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            if batch[0] is not _STOP:
                # Let records gather: one wake-up per interval, not per hand-over
                # (each wake-up takes the interpreter from the request path).
                time.sleep(LINGER)
            with contextlib.suppress(queue.Empty):
                while len(batch) < _BATCH:
                    batch.append(self._queue.get_nowait())
            stop = any(item is _STOP for item in batch)
            records: list[CaptureRecord] = []
            count = 0
            for item in batch:
                if isinstance(item, CaptureRecord):
                    records.append(item)
                    count += 1
                elif isinstance(item, list):
                    records += self._from_tuples(item)
                    count += len(item)
            with self._backlog_lock:  # taken off the queue: no longer waiting
                self._backlog -= count
            try:
                if records:
                    self._write_batch(records)
            except Exception:  # never let the thread die: count and carry on
                log.exception("capture: writer failed")
            finally:
                for _ in batch:
                    self._queue.task_done()
        self._close_file()

    def _from_tuples(self, items: list[tuple[Any, ...]]) -> list[CaptureRecord]:
        out = []
        for values in items:
            try:
                fields = dict(zip(RECORD_FIELDS, values, strict=True))
                out.append(
                    make_record(
                        fields.pop("request_id"), fields.pop("leg"), fields.pop("kind"), **fields
                    )
                )
            except (TypeError, ValueError):
                log.exception("capture: a malformed record was handed over")
                self._drop(1, "record malformed")
        return out

    def _write_batch(self, records: list[CaptureRecord]) -> None:
        pending = bytearray()
        count = 0
        body_filter = self._body_filter
        for record in records:
            try:
                if body_filter is not None and record.body:
                    record = dataclasses.replace(record, body=body_filter(record.body))
                data = encode_record(record)
            except Exception:
                log.exception("capture: cannot encode a record of %s", record.request_id)
                self._drop(1, "record not encodable")
                continue
            try:
                if self._file is None:
                    self._open_file()
                elif self._should_rotate(len(data)):
                    self._write(pending, count)
                    pending, count = bytearray(), 0
                    self._rotate()
            except OSError as exc:
                self._io_failed(exc, count + 1)
                pending, count = bytearray(), 0
                continue
            pending += data
            count += 1
            self._file_size += len(data)
            self._file_records += 1
        try:
            self._write(pending, count)
        except OSError as exc:
            self._io_failed(exc, count)

    def _should_rotate(self, size: int) -> bool:
        if self._file_records == 0:
            return False
        limit = self.config.max_file_bytes
        if limit > 0 and self._file_size + size > limit:
            return True
        age = self.config.max_file_age
        return age > 0 and self._monotonic() - self._file_opened >= age

    def _write(self, data: bytearray, count: int) -> None:
        if not data or self._file is None:
            return
        view = memoryview(data)
        while view:  # one write() in practice; a short write continues where it stopped
            written = self._file.write(view)
            if written is None:
                raise OSError("capture file write would block")
            view = view[written:]
        self._file.flush()
        self._written += count

    def _io_failed(self, exc: OSError, lost: int) -> None:
        now = self._monotonic()
        if self._last_error_log is None or now - self._last_error_log >= DROP_WARNING_INTERVAL:
            self._last_error_log = now
            log.error("capture: cannot write to %s: %s", self._path or self.directory, exc)
        if lost:
            self._drop(lost, "write error")
        self._close_file()

    def _rotate(self) -> None:
        self._close_file()
        self._open_file()

    def _close_file(self) -> None:
        file, self._file, self._path = self._file, None, None
        if file is not None:
            try:
                with contextlib.suppress(OSError):
                    os.fsync(file.fileno())
                file.close()
            except OSError as exc:
                log.error("capture: closing a capture file: %s", exc)

    def _open_file(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        wall = self._wall()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall))
        # A restarted process may find files of the same second: number after them.
        for existing in self.directory.glob(f"{FILE_PREFIX}{stamp}-*{FILE_SUFFIX}"):
            number = existing.name[len(FILE_PREFIX) + len(stamp) + 1 : -len(FILE_SUFFIX)]
            if number.isdigit():
                self._sequence = max(self._sequence, int(number))
        while True:
            self._sequence += 1
            path = self.directory / f"{FILE_PREFIX}{stamp}-{self._sequence:04d}{FILE_SUFFIX}"
            try:
                file = self._opener(path)
            except FileExistsError:
                continue
            break
        header = cbor2.dumps(file_header(created_ns=int(wall * 1e9), host=self._host))
        self._file, self._path = file, path
        self._file_size = len(header)
        self._file_records = 0
        self._file_opened = self._monotonic()
        self._files += 1
        self._write(bytearray(header), 0)
        self._enforce_retention()

    def _enforce_retention(self) -> None:
        limit = self.config.max_total_bytes
        if limit <= 0:
            return
        sizes: list[tuple[Path, int]] = []
        for path in capture_files(self.directory):
            with contextlib.suppress(FileNotFoundError):
                sizes.append((path, path.stat().st_size))
        total = sum(size for _, size in sizes)
        for path, size in sizes:  # oldest first
            if total <= limit:
                break
            if path == self._path:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("capture: cannot delete %s: %s", path, exc)
                continue
            total -= size
            log.info("capture: deleted %s (retention %d bytes)", path.name, limit)


# --------------------------------------------------------------------------------------------
# Reading


class CaptureFormatError(Exception):
    """A capture file that cannot be read to its end."""

    def __init__(self, path: Path, offset: int, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.offset = offset


class TruncatedTail(CaptureFormatError):
    """The file ends inside a record (the writer was killed mid-write, or is still writing)."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        super().__init__(
            path, offset, f"truncated record at byte {offset} ({size - offset} bytes ignored)"
        )
        self.ignored = size - offset


class CorruptCapture(CaptureFormatError):
    """Bytes that are not a capture record where a record should be."""


class UnsupportedCapture(CaptureFormatError):
    """Not a capture file, or a version this reader does not know."""


#: A record can be written (and land in a file) a while after its timestamp was taken.
PRUNE_MARGIN: Final = timedelta(hours=1)


def capture_files(path_or_dir: str | os.PathLike[str]) -> list[Path]:
    """The capture files of a directory in chronological (name) order, or ``[file]``."""
    path = Path(path_or_dir)
    if path.is_dir():
        return sorted(path.glob(FILE_GLOB))
    return [path]


def file_time(path: Path) -> datetime | None:
    """The UTC creation time in a capture file's name, if it has one."""
    name = path.name
    if not (name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX)):
        return None
    stamp = name[len(FILE_PREFIX) :].split("-", 1)[0]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header map of a capture file; UnsupportedCapture if it is not one."""
    file = Path(path)
    with open(file, "rb") as fp:
        try:
            header = cbor2.CBORDecoder(fp).decode()
        except cbor2.CBORDecodeError as exc:
            raise UnsupportedCapture(file, 0, f"not a capture file ({exc})") from None
    _check_header(file, header)
    return dict(header)


def _check_header(path: Path, header: Any) -> None:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise UnsupportedCapture(path, 0, f"not a capture file (no {FORMAT!r} header)")
    version = header.get("version")
    if version != VERSION:
        raise UnsupportedCapture(
            path, 0, f"capture format version {version!r}; this reader knows {VERSION}"
        )


def _report(
    problem: CaptureFormatError, problems: list[CaptureFormatError] | None, strict: bool
) -> None:
    if strict:
        raise problem
    if problems is not None:
        problems.append(problem)
    else:
        log.warning("capture: %s", problem)


def _iter_file(
    path: Path, problems: list[CaptureFormatError] | None, strict: bool
) -> Iterator[CaptureRecord]:
    with open(path, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        decoder = cbor2.CBORDecoder(fp)
        try:
            header = decoder.decode()
        except cbor2.CBORDecodeEOF:
            if size:  # an empty file is a writer that has not written its header yet
                _report(TruncatedTail(path, 0, size), problems, strict)
            return
        except cbor2.CBORDecodeError as exc:
            _report(UnsupportedCapture(path, 0, f"not a capture file ({exc})"), problems, strict)
            return
        try:
            _check_header(path, header)
        except UnsupportedCapture as exc:
            _report(exc, problems, strict)
            return
        while True:
            offset = fp.tell()
            if offset >= size:
                return
            try:
                item = decoder.decode()
            except cbor2.CBORDecodeEOF:
                _report(TruncatedTail(path, offset, size), problems, strict)
                return
            except cbor2.CBORDecodeError as exc:
                problem = CorruptCapture(path, offset, f"bad record at byte {offset}: {exc}")
                _report(problem, problems, strict)
                return
            try:
                record = decode_record(item)
            except ValueError as exc:
                _report(CorruptCapture(path, offset, f"byte {offset}: {exc}"), problems, strict)
                return
            yield record


def iter_records(
    path_or_dir: str | os.PathLike[str],
    *,
    problems: list[CaptureFormatError] | None = None,
    strict: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[CaptureRecord]:
    """Every record of a file, or of a directory's capture files, in file order.

    A file that ends inside a record (:class:`TruncatedTail`), holds garbage
    (:class:`CorruptCapture`) or is not a capture (:class:`UnsupportedCapture`) is read up to
    the problem, which is appended to ``problems`` (or logged when ``problems`` is None), and
    reading goes on with the next file; ``strict=True`` raises it instead. ``since`` and
    ``until`` skip whole files that, by the times in their names, hold only older or newer
    records, with a margin of :data:`PRUNE_MARGIN` for records that waited in the queue
    (records themselves are not filtered).
    """
    files = capture_files(path_or_dir)
    times = [file_time(path) for path in files]
    for index, path in enumerate(files):
        start = times[index]
        if until is not None and start is not None and start - PRUNE_MARGIN > until:
            continue
        following = times[index + 1] if index + 1 < len(times) else None
        if since is not None and following is not None and following + PRUNE_MARGIN < since:
            continue
        yield from _iter_file(path, problems, strict)


# --------------------------------------------------------------------------------------------
# SSE and stream summaries


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event: ``event`` (None when not named), ``data`` lines joined by LF."""

    data: str
    event: str | None = None
    id: str | None = None

    def json(self) -> Any:
        """The data as JSON, or None when it is not JSON (``[DONE]``...)."""
        try:
            return json.loads(self.data)
        except ValueError:
            return None


_LINE_RE: Final = re.compile(r"\r\n|\r|\n")


def parse_sse(data: bytes | str) -> list[SSEEvent]:
    """Events of an SSE stream (LF, CRLF or CR line ends; ``data:`` with or without a space).

    A last event without its terminating blank line is kept (a cut stream is still shown).
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    events: list[SSEEvent] = []
    lines: list[str] = []
    name: str | None = None
    event_id: str | None = None
    seen = False
    for line in [*_LINE_RE.split(text), ""]:
        if not line:
            if seen:
                events.append(SSEEvent("\n".join(lines), name, event_id))
            lines, name, event_id, seen = [], None, None, False
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "data":
            lines.append(value)
            seen = True
        elif key == "event":
            name = value
            seen = True
        elif key == "id":
            event_id = value
    return events


@dataclass(slots=True)
class ToolCall:
    """A tool call reassembled from a stream or read from a JSON answer."""

    name: str
    arguments: str = ""
    id: str | None = None

    def parsed_arguments(self) -> Any:
        """The arguments as JSON when they parse, else the raw string."""
        if not self.arguments.strip():
            return {}
        try:
            return json.loads(self.arguments)
        except ValueError:
            return self.arguments


@dataclass(slots=True)
class StreamSummary:
    """What an answer said, whatever the dialect: text, reasoning, tool calls, finish reason."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)


def _tool(calls: dict[Any, ToolCall], key: Any) -> ToolCall:
    if key not in calls:
        calls[key] = ToolCall("")
    return calls[key]


def _openai_chunk(obj: dict[str, Any], out: StreamSummary, calls: dict[Any, ToolCall]) -> None:
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or choice.get("message") or {}
        if isinstance(delta, dict):
            if isinstance(delta.get("content"), str):
                out.text += delta["content"]
            for key in ("reasoning_content", "reasoning"):
                if isinstance(delta.get(key), str):
                    out.reasoning += delta[key]
            for call in delta.get("tool_calls") or ():
                if not isinstance(call, dict):
                    continue
                tool = _tool(calls, ("openai", call.get("index", len(calls))))
                tool.id = call.get("id") or tool.id
                function = call.get("function") or {}
                tool.name += function.get("name") or ""
                tool.arguments += function.get("arguments") or ""
        if choice.get("finish_reason"):
            out.finish_reason = str(choice["finish_reason"])


def _anthropic_event(obj: dict[str, Any], out: StreamSummary, calls: dict[Any, ToolCall]) -> None:
    kind = obj.get("type")
    if kind == "content_block_start":
        block = obj.get("content_block") or {}
        if block.get("type") in ("tool_use", "server_tool_use"):
            tool = _tool(calls, ("anthropic", obj.get("index")))
            tool.name, tool.id = str(block.get("name") or ""), block.get("id")
            if block.get("input"):
                tool.arguments = json.dumps(block["input"])
        elif block.get("type") == "text":
            out.text += block.get("text") or ""
    elif kind == "content_block_delta":
        delta = obj.get("delta") or {}
        if delta.get("type") == "text_delta":
            out.text += delta.get("text") or ""
        elif delta.get("type") == "thinking_delta":
            out.reasoning += delta.get("thinking") or ""
        elif delta.get("type") == "input_json_delta":
            tool = _tool(calls, ("anthropic", obj.get("index")))
            tool.arguments += delta.get("partial_json") or ""
    elif kind == "message_start":
        usage = (obj.get("message") or {}).get("usage")
        if isinstance(usage, dict):
            out.usage = dict(usage)
    elif kind == "message_delta":
        delta = obj.get("delta") or {}
        if delta.get("stop_reason"):
            out.finish_reason = str(delta["stop_reason"])
        if isinstance(obj.get("usage"), dict):
            out.usage = {**(out.usage or {}), **obj["usage"]}


def _gemini_chunk(obj: dict[str, Any], out: StreamSummary, calls: dict[Any, ToolCall]) -> None:
    for candidate in obj.get("candidates") or ():
        if not isinstance(candidate, dict) or candidate.get("index", 0) != 0:
            continue
        for part in (candidate.get("content") or {}).get("parts") or ():
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                if part.get("thought"):
                    out.reasoning += part["text"]
                else:
                    out.text += part["text"]
            if isinstance(part.get("functionCall"), dict):
                call = part["functionCall"]
                tool = _tool(calls, ("gemini", len(calls)))
                tool.name, tool.id = str(call.get("name") or ""), call.get("id")
                tool.arguments = json.dumps(call.get("args") or {})
        if candidate.get("finishReason"):
            out.finish_reason = str(candidate["finishReason"])
    if isinstance(obj.get("usageMetadata"), dict):
        out.usage = dict(obj["usageMetadata"])


def _responses_event(obj: dict[str, Any], out: StreamSummary, calls: dict[Any, ToolCall]) -> None:
    kind = str(obj.get("type"))
    if kind == "response.output_text.delta":
        out.text += obj.get("delta") or ""
    elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
        out.reasoning += obj.get("delta") or ""
    elif kind == "response.output_item.added":
        item = obj.get("item") or {}
        if item.get("type") == "function_call":
            tool = _tool(calls, ("responses", obj.get("output_index")))
            tool.name, tool.id = str(item.get("name") or ""), item.get("call_id")
    elif kind == "response.function_call_arguments.delta":
        _tool(calls, ("responses", obj.get("output_index"))).arguments += obj.get("delta") or ""
    elif kind in ("response.completed", "response.incomplete", "response.failed"):
        response = obj.get("response") or {}
        out.finish_reason = str(response.get("status") or kind.rsplit(".", 1)[1])
        if isinstance(response.get("usage"), dict):
            out.usage = dict(response["usage"])
    elif kind == "error":
        out.errors.append(json.dumps(obj, ensure_ascii=False))


def _summarize_object(obj: Any, out: StreamSummary, calls: dict[Any, ToolCall]) -> None:
    if not isinstance(obj, dict):
        return
    kind = obj.get("type")
    if isinstance(kind, str) and kind.startswith("response."):
        _responses_event(obj, out, calls)
    elif kind == "error" or "error" in obj:
        out.errors.append(json.dumps(obj.get("error", obj), ensure_ascii=False))
    elif isinstance(kind, str) and kind.startswith(("message_", "content_block_")):
        _anthropic_event(obj, out, calls)
    elif "candidates" in obj or "usageMetadata" in obj:
        _gemini_chunk(obj, out, calls)
    elif "choices" in obj:
        _openai_chunk(obj, out, calls)
        if isinstance(obj.get("usage"), dict):
            out.usage = dict(obj["usage"])


def summarize_stream(events: Iterable[SSEEvent]) -> StreamSummary:
    """Text, tool calls, finish reason, usage and errors of an SSE stream in any dialect
    (OpenAI Chat and Responses, Anthropic Messages, Gemini)."""
    out = StreamSummary()
    calls: dict[Any, ToolCall] = {}
    for event in events:
        if event.event == "error":
            out.errors.append(event.data)
            continue
        _summarize_object(event.json(), out, calls)
    out.tool_calls = list(calls.values())
    return out


def summarize_json(body: Any) -> StreamSummary:
    """The same summary for a non-streamed JSON answer (any dialect)."""
    out = StreamSummary()
    calls: dict[Any, ToolCall] = {}
    if not isinstance(body, dict):
        return out
    if "error" in body or body.get("type") == "error":
        out.errors.append(json.dumps(body.get("error", body), ensure_ascii=False))
    if body.get("type") == "message" and isinstance(body.get("content"), list):  # Anthropic
        for block in body["content"]:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                out.text += block.get("text") or ""
            elif block.get("type") == "thinking":
                out.reasoning += block.get("thinking") or ""
            elif block.get("type") in ("tool_use", "server_tool_use"):
                calls[len(calls)] = ToolCall(
                    str(block.get("name") or ""),
                    json.dumps(block.get("input") or {}),
                    block.get("id"),
                )
        out.finish_reason = body.get("stop_reason")
        out.usage = body.get("usage")
    elif body.get("object") == "response" and isinstance(body.get("output"), list):  # Responses
        for item in body["output"]:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "message":
                for part in item.get("content") or ():
                    if isinstance(part, dict) and part.get("type") == "output_text":
                        out.text += part.get("text") or ""
            elif item.get("type") == "function_call":
                calls[len(calls)] = ToolCall(
                    str(item.get("name") or ""),
                    str(item.get("arguments") or ""),
                    item.get("call_id"),
                )
        out.finish_reason = body.get("status")
        out.usage = body.get("usage")
    else:  # OpenAI Chat and Gemini share the per-chunk readers
        _summarize_object({k: v for k, v in body.items() if k != "error"}, out, calls)
    out.tool_calls = list(calls.values())
    return out


# --------------------------------------------------------------------------------------------
# Exchanges


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def decode_content(body: bytes, encoding: str | None) -> bytes:
    """``body`` without its gzip/deflate content-encoding (unchanged if unknown or broken)."""
    encoding = (encoding or "").strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except (OSError, EOFError, zlib.error):
        pass
    return body


@dataclass(slots=True)
class Leg:
    """What crossed one leg (one direction of the client leg or of one provider attempt)."""

    name: str
    attempt: int = 0
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    #: Headers seen after the first headers record (trailers), or on the ``end`` record.
    trailers: list[tuple[str, bytes]] = field(default_factory=list)
    #: Body chunks in order (empty when the exchange was read without bodies).
    chunks: list[bytes] = field(default_factory=list)
    #: Monotonic ns of each body chunk, parallel to the chunk count.
    chunk_mono_ns: list[int] = field(default_factory=list)
    body_bytes: int = 0
    records: int = 0
    first_mono_ns: int | None = None
    last_mono_ns: int | None = None
    first_wall_ns: int | None = None
    end_of_stream: bool = False
    #: An ``end`` record was seen (the observer closed the leg).
    ended: bool = False
    annotations: dict[str, Any] = field(default_factory=dict)

    def add(self, record: CaptureRecord, keep_body: bool) -> None:
        self.records += 1
        if self.first_mono_ns is None:
            self.first_mono_ns, self.first_wall_ns = record.mono_ns, record.wall_ns
        self.last_mono_ns = record.mono_ns
        if record.headers:
            pairs = [(name, _as_bytes(value)) for name, value in record.headers]
            if record.kind == "headers" and not self.headers:
                self.headers = pairs
            else:
                self.trailers.extend(pairs)
        if record.body:
            self.body_bytes += len(record.body)
            self.chunk_mono_ns.append(record.mono_ns)
            if keep_body:
                self.chunks.append(record.body)
        if record.end_of_stream:
            self.end_of_stream = True
        if record.kind == "end":
            self.ended = True
        if record.annotations:
            self.annotations.update(record.annotations)

    @property
    def seen(self) -> bool:
        return self.records > 0

    @property
    def complete(self) -> bool:
        return self.end_of_stream or self.ended

    @property
    def body(self) -> bytes:
        """The body: every chunk concatenated, bytes exactly as they crossed."""
        return b"".join(self.chunks)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive) as text."""
        return _header(self.headers, name.lower())

    @property
    def status(self) -> int | None:
        value = self.header(":status")
        if value is not None and value.strip().isdigit():
            return int(value)
        note = self.annotations.get("status")
        return note if isinstance(note, int) else None

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";", 1)[0].strip().lower()

    @property
    def is_sse(self) -> bool:
        return self.content_type == "text/event-stream"

    @property
    def decoded_body(self) -> bytes:
        """The body without a gzip/deflate content-encoding."""
        return decode_content(self.body, self.header("content-encoding"))

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.decoded_body)
        except ValueError:
            return None

    def sse_events(self) -> list[SSEEvent]:
        """The body decoded as an SSE stream."""
        return parse_sse(self.decoded_body)

    def summary(self) -> StreamSummary:
        """What this answer said (stream or JSON, any dialect)."""
        if self.is_sse:
            return summarize_stream(self.sse_events())
        return summarize_json(self.json())


@dataclass(slots=True)
class Attempt:
    """One provider attempt: what went to the provider and what came back."""

    number: int
    request: Leg
    response: Leg


_MODEL_RE: Final = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.){1,200})"')
_GEMINI_MODEL_RE: Final = re.compile(r"/models/([^/:?]+)")


def frontend_of(path: str) -> str | None:
    """The client protocol a request path belongs to (best effort, for display)."""
    bare = path.split("?", 1)[0]
    if bare.endswith("/chat/completions"):
        return "openai-chat"
    if bare.endswith("/responses"):
        return "openai-responses"
    if bare.endswith(("/messages", "/messages/count_tokens")):
        return "anthropic"
    if ":generateContent" in bare or ":streamGenerateContent" in bare or ":countTokens" in bare:
        return "gemini"
    return None


@dataclass(slots=True)
class Exchange:
    """Every record of one request id: the client leg, the provider attempts, timing."""

    request_id: str
    session_id: str | None = None
    client_key_id: str | None = None
    client_request: Leg = field(default_factory=lambda: Leg("client_request"))
    client_response: Leg = field(default_factory=lambda: Leg("client_response"))
    attempts: dict[int, Attempt] = field(default_factory=dict)
    #: Annotations of every record, later values winning.
    annotations: dict[str, Any] = field(default_factory=dict)
    first_mono_ns: int | None = None
    last_mono_ns: int | None = None
    first_wall_ns: int | None = None
    last_wall_ns: int | None = None
    #: The ``model`` of the client request body when no annotation names one.
    request_model: str | None = None
    #: The client request body said ``"stream": true``.
    request_stream: bool = False
    keep_bodies: bool = True

    def add(self, record: CaptureRecord) -> None:
        if self.first_mono_ns is None:
            self.first_mono_ns, self.first_wall_ns = record.mono_ns, record.wall_ns
        self.last_mono_ns, self.last_wall_ns = record.mono_ns, record.wall_ns
        self.session_id = record.session_id or self.session_id
        self.client_key_id = record.client_key_id or self.client_key_id
        leg = self._slot(record.leg, record.attempt)
        is_request = record.leg == "client_request"
        leg.add(record, self.keep_bodies or is_request)
        if record.annotations:
            self.annotations.update({k: v for k, v in record.annotations.items() if v is not None})
        if is_request and record.end_of_stream:
            self._read_request(leg)

    def _read_request(self, leg: Leg) -> None:
        body = leg.body
        parsed: Any = None
        with contextlib.suppress(ValueError):
            parsed = json.loads(body)
        if isinstance(parsed, dict):
            if isinstance(parsed.get("model"), str):
                self.request_model = parsed["model"]
            self.request_stream = parsed.get("stream") is True
        elif (match := _MODEL_RE.search(body)) is not None:
            self.request_model = match.group(1).decode("utf-8", "replace")
        if not self.keep_bodies:
            leg.chunks.clear()

    def leg(self, name: str, attempt: int = 0) -> Leg:
        """A leg by name, provider legs by attempt number (an empty leg when none was seen)."""
        if name in ("provider_request", "provider_response") and attempt not in self.attempts:
            return Leg(name, attempt)
        return self._slot(name, attempt)

    def _slot(self, name: str, attempt: int) -> Leg:
        if name == "client_request":
            return self.client_request
        if name == "client_response":
            return self.client_response
        if name not in ("provider_request", "provider_response"):
            raise KeyError(name)
        found = self.attempts.get(attempt)
        if found is None:
            found = self.attempts[attempt] = Attempt(
                attempt,
                Leg("provider_request", attempt),
                Leg("provider_response", attempt),
            )
        return found.request if name == "provider_request" else found.response

    def legs(self) -> list[Leg]:
        """Every seen leg in wire order: client request, attempts, client response."""
        out = [self.client_request]
        for number in sorted(self.attempts):
            out += [self.attempts[number].request, self.attempts[number].response]
        out.append(self.client_response)
        return [leg for leg in out if leg.seen]

    def body(self, name: str, attempt: int = 0) -> bytes:
        """The reassembled body of a leg."""
        return self.leg(name, attempt).body

    def sse_events(self, name: str = "client_response", attempt: int = 0) -> list[SSEEvent]:
        return self.leg(name, attempt).sse_events()

    @property
    def method(self) -> str | None:
        return self.client_request.header(":method")

    @property
    def path(self) -> str | None:
        return self.client_request.header(":path")

    @property
    def status(self) -> int | None:
        status = self.client_response.status
        if status is None:
            note = self.annotations.get("status")
            status = note if isinstance(note, int) else None
        return status

    @property
    def model(self) -> str | None:
        note = self.annotations.get("model")
        if isinstance(note, str):
            return note
        if self.request_model:
            return self.request_model
        match = _GEMINI_MODEL_RE.search(self.path or "")
        return match.group(1) if match else None

    @property
    def frontend(self) -> str | None:
        note = self.annotations.get("frontend")
        return note if isinstance(note, str) else frontend_of(self.path or "")

    @property
    def backend(self) -> str | None:
        note = self.annotations.get("backend")
        return note if isinstance(note, str) else None

    @property
    def streamed(self) -> bool:
        if self.client_response.seen:
            return self.client_response.is_sse
        return self.request_stream or ":streamGenerateContent" in (self.path or "")

    @property
    def complete(self) -> bool:
        return self.client_response.complete

    @property
    def started(self) -> datetime | None:
        if self.first_wall_ns is None:
            return None
        return datetime.fromtimestamp(self.first_wall_ns / 1e9, UTC)

    @property
    def duration_ns(self) -> int:
        if self.first_mono_ns is None or self.last_mono_ns is None:
            return 0
        return max(0, self.last_mono_ns - self.first_mono_ns)

    @property
    def bytes_in(self) -> int:
        return self.client_request.body_bytes

    @property
    def bytes_out(self) -> int:
        return self.client_response.body_bytes


def exchanges(
    path_or_dir: str | os.PathLike[str],
    *,
    request_id: str | None = None,
    bodies: bool = True,
    problems: list[CaptureFormatError] | None = None,
    strict: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Exchange]:
    """Records grouped by request id, in order of first appearance.

    ``request_id`` keeps one exchange (an exact id, or a prefix of ids). ``bodies=False`` keeps
    only sizes and timings of bodies (the client request is still read for its model), for
    listing large captures. ``problems``, ``strict``, ``since`` and ``until`` are those of
    :func:`iter_records`.
    """
    found: dict[str, Exchange] = {}
    for record in iter_records(
        path_or_dir, problems=problems, strict=strict, since=since, until=until
    ):
        rid = record.request_id
        if request_id is not None and not rid.startswith(request_id):
            continue
        exchange = found.get(rid)
        if exchange is None:
            exchange = found[rid] = Exchange(rid, keep_bodies=bodies)
        exchange.add(record)
    if request_id is not None and request_id in found:
        return [found[request_id]]
    return list(found.values())


def body_for_json(data: bytes) -> dict[str, str]:
    """A body in a JSON document: text when valid UTF-8, else base64 (the key says which)."""
    try:
        return {"encoding": "utf-8", "text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"encoding": "base64", "data": base64.b64encode(data).decode("ascii")}
