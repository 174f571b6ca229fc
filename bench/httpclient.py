"""A lean asyncio HTTP/1.1 client for load generation.

One :class:`HttpConnection` is one keep-alive TCP connection (``TCP_NODELAY``) carrying one
request at a time. It is an :class:`asyncio.Protocol`, so parsing happens in ``data_received``
and every timestamp (``time.perf_counter_ns``) is taken when the bytes arrive, not when the
awaiting coroutine gets scheduled. It understands exactly what the benchmark needs: a status
line, headers, ``content-length`` bodies and ``transfer-encoding: chunked`` bodies, whose chunks
are kept with their arrival time (for time-to-first-token on SSE streams).

Validation (status, JSON, SSE framing) is left to the caller and done after the timed window.
"""

from __future__ import annotations

import asyncio
import socket
from time import perf_counter_ns
from typing import Final

_HEAD: Final = 0
_LENGTH: Final = 1
_CHUNK_SIZE: Final = 2
_CHUNK_DATA: Final = 3
_TRAILER: Final = 4
_UNTIL_CLOSE: Final = 5

_HEAD_LIMIT: Final = 1 << 20


class ProtocolError(Exception):
    """The server sent something this client cannot parse."""


class Response:
    """One response; times are ``perf_counter_ns`` values."""

    __slots__ = (
        "body",
        "chunks",
        "headers",
        "keep_alive",
        "status",
        "t_done",
        "t_first_byte",
        "t_sent",
    )

    def __init__(self, t_sent: int) -> None:
        self.t_sent = t_sent
        self.t_first_byte = 0
        self.t_done = 0
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        #: ``(arrival time, payload)`` per HTTP chunk when the body is chunked, else None.
        self.chunks: list[tuple[int, bytes]] | None = None
        self.keep_alive = True

    @property
    def latency_ns(self) -> int:
        return self.t_done - self.t_sent

    def full_body(self) -> bytes:
        if self.chunks is None:
            return self.body
        return b"".join(data for _, data in self.chunks)


def build_request(
    host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    """The bytes of one ``POST`` with a JSON body, ready to be written as they are."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        f"content-length: {len(body)}",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one outstanding request at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._state = _HEAD
        self._remaining = 0
        self._response: Response | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self.closed = False

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        now = perf_counter_ns()
        response = self._response
        if response is None:
            self._fail(ProtocolError(f"unexpected {len(data)} bytes with no request outstanding"))
            return
        if not response.t_first_byte:
            response.t_first_byte = now
        self._buf += data
        try:
            done = self._parse(response, now)
        except (ProtocolError, ValueError) as exc:
            self._fail(exc if isinstance(exc, ProtocolError) else ProtocolError(str(exc)))
            return
        if done:
            self._complete(response, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        if response is not None and self._state == _UNTIL_CLOSE:
            response.body = bytes(self._buf)
            self._complete(response, perf_counter_ns())
            return
        waiter = self._waiter
        self._waiter = self._response = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(f"connection lost: {exc or 'closed by peer'}"))

    # ---- API -------------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[Response]:
        """Write one request; the future resolves with its complete response."""
        transport = self._transport
        if self.closed or transport is None:
            raise ConnectionError("connection is closed")
        if self._response is not None:
            raise RuntimeError("a request is already outstanding on this connection")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        self._waiter = waiter
        self._response = Response(perf_counter_ns())
        transport.write(request)
        return waiter

    @property
    def outstanding_since(self) -> int:
        """``perf_counter_ns`` when the outstanding request was sent, 0 when idle."""
        response = self._response
        return response.t_sent if response is not None else 0

    def abort(self, reason: str) -> None:
        """Drop the connection, failing the outstanding request with ``reason``."""
        self._fail(TimeoutError(reason))

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # ---- internals -------------------------------------------------------------------------

    def _complete(self, response: Response, now: int) -> None:
        response.t_done = now
        waiter = self._waiter
        self._waiter = self._response = None
        self._state = _HEAD
        if self._buf:
            extra = len(self._buf)
            self._buf.clear()
            response.keep_alive = False
            self.close()
            if waiter is not None and not waiter.done():
                waiter.set_exception(ProtocolError(f"{extra} unexpected bytes after a response"))
            return
        if not response.keep_alive:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        self._waiter = self._response = None
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _parse(self, response: Response, now: int) -> bool:
        """Advance the parser over the buffer; True when the response is complete."""
        buf = self._buf
        if self._state == _HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _HEAD_LIMIT:
                    raise ProtocolError("response head too large")
                return False
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            self._parse_head(response, head)
            if 100 <= response.status < 200:  # an interim response: the real one follows
                return self._parse(response, now)
        state = self._state
        if state == _LENGTH:
            if len(buf) < self._remaining:
                return False
            response.body = bytes(buf[: self._remaining])
            del buf[: self._remaining]
            return True
        if state == _UNTIL_CLOSE:
            return False
        chunks = response.chunks
        assert chunks is not None
        while True:
            if state == _CHUNK_SIZE:
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    return False
                size = int(bytes(buf[:line_end]).split(b";", 1)[0].strip(), 16)
                del buf[: line_end + 2]
                if size:
                    self._remaining = size
                    state = self._state = _CHUNK_DATA
                else:
                    state = self._state = _TRAILER
            elif state == _CHUNK_DATA:
                size = self._remaining
                if len(buf) < size + 2:
                    return False
                if buf[size : size + 2] != b"\r\n":
                    raise ProtocolError("chunk not terminated by CRLF")
                chunks.append((now, bytes(buf[:size])))
                del buf[: size + 2]
                state = self._state = _CHUNK_SIZE
            else:  # _TRAILER: trailer fields until an empty line
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    return False
                del buf[: line_end + 2]
                if line_end == 0:
                    return True

    def _parse_head(self, response: Response, head: str) -> None:
        lines = head.split("\r\n")
        status_line = lines[0]
        if not status_line.startswith("HTTP/1.") or len(status_line) < 12:
            raise ProtocolError(f"malformed status line {status_line[:80]!r}")
        response.status = int(status_line[9:12])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"malformed header line {line[:80]!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        response.headers = headers
        if 100 <= response.status < 200:
            return
        connection = headers.get("connection", "").lower()
        response.keep_alive = "close" not in connection and status_line.startswith("HTTP/1.1")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            response.chunks = []
            self._state = _CHUNK_SIZE
        elif "content-length" in headers:
            self._remaining = int(headers["content-length"])
            self._state = _LENGTH
        else:
            response.keep_alive = False
            self._state = _UNTIL_CLOSE


async def connect(host: str, port: int) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(HttpConnection, host, port)
    return protocol
