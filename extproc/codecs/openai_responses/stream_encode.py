"""Canonical stream events -> the typed ``response.*`` SSE stream of a Responses client.

Every event is ``event: <type>`` + ``data: <json>`` whose JSON starts with
``type`` and a gap-free ``sequence_number`` from 0 (WIRE_FORMATS §2.4), in the
order the official SDK's stream accumulator and Codex expect:

* ``response.created`` and ``response.in_progress`` first (``usage: null``);
* ``ReasoningDelta`` text -> a ``reasoning`` item: ``output_item.added``,
  ``reasoning_summary_part.added``, ``reasoning_summary_text.delta``...,
  closed by ``reasoning_summary_text.done``, ``reasoning_summary_part.done``,
  ``output_item.done`` (summary only: replay tokens of stream events have no
  provider and are never shown as ``encrypted_content``);
* ``TextDelta`` -> a ``message`` item: ``output_item.added``,
  ``content_part.added``, ``output_text.delta``..., closed by
  ``output_text.done``, ``content_part.done``, ``output_item.done``;
* ``ToolCallStart`` / ``ToolCallDelta`` -> a ``function_call`` item
  (``call_id`` = canonical id): ``output_item.added``,
  ``function_call_arguments.delta``..., closed by
  ``function_call_arguments.done`` and ``output_item.done`` (``{}`` when no
  arguments came).

Output indexes are given in order of first appearance; each canonical tool
index keeps its own item, so several calls and interleaved argument deltas
work. A reasoning or message item closes when another kind of item starts;
tool-call items stay open until the finish (arguments may still come).
``Finish`` closes every open item; the terminal event follows at
``StreamEnd`` (or :meth:`finish`), after any late usage: ``response.completed``,
``response.incomplete`` (``length`` -> ``max_output_tokens``,
``content_filter``) or ``response.failed`` (``error``), carrying the full
Response with usage. A ``StreamError`` (or :meth:`error`) sends an ``error``
event - nested ``error`` object for the SDK, which raises on it, plus the
documented flat fields - then ``response.failed``. A stream that ends without
a finish reason ends the same way (``upstream_stream_truncated``); one whose
provider ``error`` event went out unchanged gets just ``response.failed``.

Same protocol: the provider's raw events pass through unchanged while no
stage changed anything, and :meth:`observe` follows them: the canonical
events give the answer's shape; the raw event, when the caller hands it over,
gives the provider's ``sequence_number``, item ids and output indexes, and
each finished item as the provider sent it. Once an event had to be
re-encoded, everything after it is re-encoded too: numbering goes on from the
provider's, items the client already saw opened keep their id and index and
are closed by the proxy, and the terminal event lists the provider's own
finished items verbatim (the official SDK checks item identities). Without
the raw events the encoder infers the items (one after another, as providers
send them) and can only give them proxy ids.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from extproc.canonical import (
    CanonicalError,
    Finish,
    FinishReason,
    ReasoningDelta,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageReport,
)
from extproc.codecs.openai_responses.common import (
    as_dict,
    failure_code,
    item_token,
    proxy_item_id,
    response_id,
    status_from_finish,
)
from extproc.codecs.openai_responses.response import (
    function_call_item,
    message_item,
    response_object,
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
_DATA_LINE = re.compile(rb"^data: ?(.*?)\r?$", re.MULTILINE)
_KINDS = ("message", "reasoning", "function_call")
_PREFIX = {"message": "msg", "reasoning": "rs", "function_call": "fc"}
_TRUNCATED = CanonicalError(
    502,
    "the provider's stream ended before the answer was complete",
    type="server_error",
    code="upstream_stream_truncated",
)


@dataclass(eq=False)
class _Item:
    """One output item of the client's stream (compared by identity)."""

    index: int
    kind: str  # message | reasoning | function_call | other (a provider item we do not know)
    id: str
    text: str = ""  # output text, summary text or arguments
    call_id: str = ""
    name: str = ""
    done: bool = False
    status: str = "in_progress"
    #: The item as the provider sent it (passed through), shown instead of ours.
    final: dict[str, Any] | None = None
    #: The message's content part / the reasoning's summary part is open for the client.
    part_open: bool = False
    summary_index: int = 0

    def wire(self) -> dict[str, Any]:
        """The item as ``output_item.*`` events and the Response ``output`` show it."""
        if self.final is not None:
            return self.final
        if self.kind == "message":
            content = [_text_part(self.text)] if self.done or self.text else []
            return message_item(self.id, content, self.status)
        if self.kind == "reasoning":
            summary = [_summary_part(self.text)] if self.done or self.text else []
            return {"type": "reasoning", "id": self.id, "summary": summary}
        return function_call_item(self.id, self.call_id, self.name, self.text, self.status)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _summary_part(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


def _provider_event(raw: bytes) -> dict[str, Any] | None:
    lines = _DATA_LINE.findall(raw)
    if not lines:
        return None
    try:
        data = _decoder.decode(b"\n".join(lines))
    except msgspec.DecodeError:
        return None
    return data if isinstance(data, dict) else None


class ResponsesStreamEncoder:
    """Canonical events -> ``response.*`` SSE for Responses clients (SDK, Codex)."""

    def __init__(self, request_model: str) -> None:
        self._model = request_model
        self._id = ""
        self._token = ""
        self._created = 0
        self._seq = 0
        self._out: list[bytes] = []
        self._shadow = False  # following passed-through events: emit nothing
        self._diverged = False
        self._started = False
        self._closed = False
        self._items: list[_Item] = []
        self._next_index = 0
        #: Provider items the client saw opened that no canonical event claimed yet, by kind.
        self._pending: dict[str, list[_Item]] = {kind: [] for kind in _KINDS}
        self._message: _Item | None = None
        self._reasoning: _Item | None = None
        self._tools: dict[int, _Item] = {}
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._upstream_error: CanonicalError | None = None  # passed through, not yet failed

    # -- pass-through bookkeeping -------------------------------------------

    def can_pass_through(self, events: list[StreamEvent]) -> bool:
        return not self._diverged

    def observe(self, events: list[StreamEvent], raw: bytes | None = None) -> None:
        """Account for a provider event that went out unchanged (``raw``: its bytes)."""
        data = _provider_event(raw) if raw else None
        if data is not None:
            self._follow(data)
        self._shadow = True
        try:
            for event in events:
                if isinstance(event, StreamEnd):
                    self._closed = True
                elif isinstance(event, StreamError):
                    self._upstream_error = event.error
                else:
                    self._apply(event)
        finally:
            self._shadow = False
        number = data.get("sequence_number") if data is not None else None
        # The provider's event went out with this number (gap-free from 0).
        self._seq = number + 1 if isinstance(number, int) else self._seq + 1

    def _follow(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        index = data.get("output_index")
        if not isinstance(index, int):
            return
        if kind == "response.output_item.added":
            raw_item = as_dict(data.get("item"))
            item_kind = raw_item.get("type")
            item = _Item(index, item_kind if item_kind in _KINDS else "other", "")
            item.id = str(raw_item.get("id") or proxy_item_id("item", self._token, index))
            item.call_id = str(raw_item.get("call_id") or "")
            item.name = str(raw_item.get("name") or "")
            self._next_index = max(self._next_index, index + 1)
            if item.kind == "other":
                item.final = raw_item
                self._items.append(item)
            else:
                self._pending[item.kind].append(item)
            return
        found = self._find(index)
        if found is None:
            return
        item = found
        if kind in ("response.content_part.added", "response.reasoning_summary_part.added"):
            item.part_open = True
            summary_index = data.get("summary_index")
            item.summary_index = summary_index if isinstance(summary_index, int) else 0
        elif kind in ("response.content_part.done", "response.reasoning_summary_part.done"):
            item.part_open = False
        elif kind == "response.output_item.done":
            item.final = as_dict(data.get("item")) or None
            item.done = True
            self._claim(item)
            if item is self._message:
                self._message = None
            if item is self._reasoning:
                self._reasoning = None

    def _find(self, index: int) -> _Item | None:
        for item in self._items:
            if item.index == index:
                return item
        for waiting in self._pending.values():
            for item in waiting:
                if item.index == index:
                    return item
        return None

    def _claim(self, item: _Item) -> None:
        """A provider item becomes one of ours (first canonical event, or its end)."""
        waiting = self._pending.get(item.kind, [])
        if item in waiting:
            waiting.remove(item)
            self._items.append(item)

    # -- encoding ------------------------------------------------------------

    def encode(self, events: list[StreamEvent]) -> bytes:
        self._diverged = True
        for event in events:
            if self._closed:
                break
            if isinstance(event, StreamEnd):
                self._end()
            elif isinstance(event, StreamError):
                self._fail(event.error)
            else:
                self._apply(event)
        return self._flush()

    def finish(self) -> bytes:
        self._diverged = True
        if not self._closed:
            self._end()
        return self._flush()

    def error(self, error: CanonicalError) -> bytes:
        self._diverged = True
        if self._closed:
            return b""
        self._fail(error)
        return self._flush()

    # -- the state machine ---------------------------------------------------

    def _apply(self, event: StreamEvent) -> None:
        if isinstance(event, StreamStart):
            self._start(event)
        elif isinstance(event, TextDelta):
            if event.text:
                self._text(event.text)
        elif isinstance(event, ReasoningDelta):
            if event.text:
                self._reasoning_text(event.text)
        elif isinstance(event, ToolCallStart):
            self._ensure_started()
            if event.index not in self._tools:
                self._open_call(event.index, event.id, event.name)
        elif isinstance(event, ToolCallDelta):
            self._arguments(event.index, event.arguments)
        elif isinstance(event, Finish):
            self._ensure_started()
            self._finish = event.reason
            self._close_all()
        elif isinstance(event, UsageReport):
            self._usage = event.usage

    def _start(self, event: StreamStart) -> None:
        if self._started:
            return
        self._id = response_id(event.id)
        self._model = event.model or self._model
        self._created = event.created
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        if not self._id:
            self._id = response_id("")
        self._token = item_token(self._id)
        self._created = self._created or int(time.time())
        for kind in ("response.created", "response.in_progress"):
            self._emit(kind, response=self._response("in_progress"))

    def _open(self, kind: str, call_id: str = "", name: str = "") -> _Item:
        """A new item: one the client saw opened already, or a new one of ours."""
        if self._shadow:
            # Providers send items one after another: a new one ends the open ones.
            self._close_open()
        waiting = self._pending[kind]
        if waiting:
            item = waiting[0]
            self._claim(item)
            return item
        index = self._next_index
        self._next_index += 1
        item_id = proxy_item_id(_PREFIX[kind], self._token, index)
        item = _Item(index, kind, item_id, call_id=call_id, name=name)
        self._items.append(item)
        self._emit("response.output_item.added", output_index=index, item=item.wire())
        return item

    def _text(self, text: str) -> None:
        self._ensure_started()
        self._close_reasoning()
        item = self._message
        if item is None:
            item = self._message = self._open("message")
        if not item.part_open:
            item.part_open = True
            self._emit(
                "response.content_part.added",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                part=_text_part(""),
            )
        item.text += text
        self._emit(
            "response.output_text.delta",
            item_id=item.id,
            output_index=item.index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _reasoning_text(self, text: str) -> None:
        self._ensure_started()
        self._close_message()
        item = self._reasoning
        if item is None:
            item = self._reasoning = self._open("reasoning")
        if not item.part_open:
            item.part_open = True
            self._emit(
                "response.reasoning_summary_part.added",
                **self._summary_ref(item),
                part=_summary_part(""),
            )
        item.text += text
        self._emit("response.reasoning_summary_text.delta", **self._summary_ref(item), delta=text)

    def _summary_ref(self, item: _Item) -> dict[str, Any]:
        return {"item_id": item.id, "output_index": item.index, "summary_index": item.summary_index}

    def _open_call(self, index: int, call_id: str, name: str) -> _Item:
        self._close_message()
        self._close_reasoning()
        item = self._open("function_call", call_id, name)
        self._tools[index] = item
        return item

    def _arguments(self, index: int, arguments: str) -> None:
        self._ensure_started()
        item = self._tools.get(index)
        if item is None:
            item = self._open_call(index, f"call_{index}", "")
        if item.done or not arguments:
            return
        item.text += arguments
        self._emit(
            "response.function_call_arguments.delta",
            item_id=item.id,
            output_index=item.index,
            delta=arguments,
        )

    # -- closing items -------------------------------------------------------

    def _close_message(self) -> None:
        item, self._message = self._message, None
        if item is None or item.done:
            return
        if item.part_open:
            item.part_open = False
            ref = {"item_id": item.id, "output_index": item.index, "content_index": 0}
            self._emit("response.output_text.done", **ref, text=item.text, logprobs=[])
            self._emit("response.content_part.done", **ref, part=_text_part(item.text))
        self._done(item)

    def _close_reasoning(self) -> None:
        item, self._reasoning = self._reasoning, None
        if item is None or item.done:
            return
        if item.part_open:
            item.part_open = False
            ref = self._summary_ref(item)
            self._emit("response.reasoning_summary_text.done", **ref, text=item.text)
            self._emit("response.reasoning_summary_part.done", **ref, part=_summary_part(item.text))
        self._done(item)

    def _close_call(self, item: _Item) -> None:
        if item.done:
            return
        if not item.text:
            item.text = "{}"
            self._emit(
                "response.function_call_arguments.delta",
                item_id=item.id,
                output_index=item.index,
                delta="{}",
            )
        self._emit(
            "response.function_call_arguments.done",
            item_id=item.id,
            output_index=item.index,
            name=item.name,
            arguments=item.text,
        )
        self._done(item)

    def _done(self, item: _Item) -> None:
        item.done = True
        item.status = "incomplete" if self._finish == "length" else "completed"
        self._emit("response.output_item.done", output_index=item.index, item=item.wire())

    def _close_all(self) -> None:
        for waiting in self._pending.values():
            while waiting:  # opened for the client, never continued: close them too
                self._claim(waiting[0])
        self._close_open()

    def _close_open(self) -> None:
        self._close_reasoning()
        self._close_message()
        for item in sorted(self._items, key=lambda i: i.index):
            if item.done:
                continue
            if item.kind == "function_call":
                self._close_call(item)
            else:
                self._done(item)

    # -- the end -------------------------------------------------------------

    def _end(self) -> None:
        """The provider's stream is over: the terminal event, or a failure."""
        if self._upstream_error is not None:
            self._fail(self._upstream_error, announced=True)
        elif self._finish is None:
            self._fail(_TRUNCATED)
        else:
            self._terminal()

    def _terminal(self) -> None:
        self._ensure_started()
        self._close_all()
        status, details = status_from_finish(self._finish)
        error = None
        if status == "failed":
            error = {"code": "server_error", "message": "the provider reported an error"}
        kind = "response.completed" if status == "completed" else f"response.{status}"
        response = self._response(status, details=details, error=error)
        self._emit(kind, response=response)
        self._closed = True

    def _fail(self, error: CanonicalError, *, announced: bool = False) -> None:
        """``error`` (unless the provider's own went out already), then ``response.failed``."""
        self._ensure_started()
        for item in self._items:
            if not item.done:
                item.status = "incomplete"
        if not announced:
            code = error.code or ("server_error" if error.status >= 500 else error.type)
            body = {
                "type": error.type,
                "code": code,
                "message": error.message,
                "param": error.param,
            }
            self._emit("error", code=code, message=error.message, param=error.param, error=body)
        failure = {"code": failure_code(error), "message": error.message}
        self._emit("response.failed", response=self._response("failed", error=failure))
        self._closed = True

    # -- wire ----------------------------------------------------------------

    def _response(
        self,
        status: str,
        *,
        details: dict[str, str] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        final = status != "in_progress"
        items = sorted(self._items, key=lambda i: i.index)
        return response_object(
            self._id,
            self._created,
            self._model,
            status,
            [item.wire() for item in items] if final else [],
            self._usage if final else None,
            incomplete_details=details,
            error=error,
        )

    def _emit(self, kind: str, **fields: Any) -> None:
        if self._shadow:
            return
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        self._out.append(b"event: " + kind.encode() + b"\ndata: " + _encoder.encode(payload))
        self._out.append(b"\n\n")

    def _flush(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out
