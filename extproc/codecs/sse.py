"""Incremental Server-Sent Events parsing and encoding, on bytes.

The parser keeps state across chunks: an event may be split anywhere, even
inside a UTF-8 character or between ``\\r`` and ``\\n``. It accepts LF, CRLF
and CR line ends, ``data:`` with or without a space, ignores comments and
unknown fields, and joins several ``data:`` lines with ``\\n`` (the SSE
standard). Each event keeps its exact raw bytes so a same-protocol path can
pass it through unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\n|\r")
_BOM = b"\xef\xbb\xbf"

#: Default bound on one event's size; a stream that exceeds it is broken.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class SseError(ValueError):
    """The stream is not valid SSE (e.g. one event exceeds the size bound)."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: bytes
    event: str | None = None
    raw: bytes = b""


class SseParser:
    """Feed body chunks, get complete events back."""

    __slots__ = (
        "_bom_checked",
        "_buf",
        "_data",
        "_event",
        "_line_start",
        "_max",
        "_seen_field",
        "_start",
    )

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._start = 0  # start of the current event's raw bytes in _buf
        self._line_start = 0  # start of the first unparsed line in _buf
        self._bom_checked = False  # a UTF-8 byte-order mark may open the stream
        self._data: list[bytes] = []
        self._event: str | None = None
        self._seen_field = False
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buf += chunk
        if not self._bom_checked:
            if len(self._buf) < len(_BOM) and _BOM.startswith(bytes(self._buf)):
                return []  # could still be a split byte-order mark
            self._bom_checked = True
            if self._buf.startswith(_BOM):
                del self._buf[: len(_BOM)]
        return self._parse(final=False)

    def finish(self) -> list[SseEvent]:
        """End of stream: flush a last event that lacked its blank line."""
        events = self._parse(final=True)
        if self._line_start < len(self._buf):
            self._line(bytes(self._buf[self._line_start :]).rstrip(b"\r\n"))
        raw = bytes(self._buf[self._start :])
        self._buf.clear()
        self._start = self._line_start = 0
        if raw and not raw.endswith((b"\n\n", b"\r\n\r\n", b"\r\r")):
            # Pass-through must never emit an event the client cannot end:
            # complete it with a blank line in its own line-end style.
            for eol in (b"\r\n", b"\n", b"\r"):
                if raw.endswith(eol):
                    raw += eol
                    break
            else:
                raw += b"\n\n"
        events.extend(self._dispatch(raw))
        return events

    def _parse(self, final: bool) -> list[SseEvent]:
        buf = self._buf
        events: list[SseEvent] = []
        pos = self._start
        line_start = self._line_start
        while True:
            match = _LINE_END.search(buf, line_start)
            if match is None:
                break
            if match.group() == b"\r" and match.end() == len(buf) and not final:
                break  # a "\r\n" may be split across chunks: wait
            line = bytes(buf[line_start : match.start()])
            line_start = match.end()
            if line:
                self._line(line)
            else:
                if line_start - pos > self._max:
                    raise SseError(f"an SSE event exceeds {self._max} bytes")
                raw = bytes(buf[pos:line_start])
                events.extend(self._dispatch(raw))
                pos = line_start
        if pos:
            del buf[:pos]
            line_start -= pos
            pos = 0
        self._start = pos
        self._line_start = line_start
        if len(buf) > self._max:
            raise SseError(f"an SSE event exceeds {self._max} bytes")
        return events

    def _line(self, line: bytes) -> None:
        if line[:1] == b":":
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._seen_field = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
            self._seen_field = True

    def _dispatch(self, raw: bytes) -> list[SseEvent]:
        if not self._seen_field:
            return []
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = SseEvent(data=data, event=self._event, raw=raw)
        self._data = []
        self._event = None
        self._seen_field = False
        return [event]


def encode_event(data: bytes, event: str | None = None) -> bytes:
    """One SSE event: optional ``event:`` line, ``data:`` line(s), blank line."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    if b"\n" in data:
        body = b"".join(b"data: " + line + b"\n" for line in data.split(b"\n"))
    else:
        body = b"data: " + data + b"\n"
    return head + body + b"\n"
