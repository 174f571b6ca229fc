"""Gemini ``streamGenerateContent?alt=sse`` streams <-> canonical stream events.

The wire (WIRE_FORMATS §4.4): ``data:`` lines only (no ``event:``, no ``[DONE]``),
CRLF line ends, each event a complete ``GenerateContentResponse`` holding only
the new parts; the stream ends with the body.

Decoding, per event: the first event opens the stream (``StreamStart`` with
``responseId``/``modelVersion``); text parts -> ``TextDelta``; ``thought`` parts ->
``ReasoningDelta`` (with their signature); a ``thoughtSignature`` on any other
part -> a signature-only ``ReasoningDelta`` just before that part's events;
each ``functionCall`` part -> ``ToolCallStart`` + one ``ToolCallDelta`` holding
the whole ``args`` JSON (ids: ``functionCall.id``, else ``call_<responseId>_<n>``
as for whole answers); ``usageMetadata`` -> ``UsageReport`` (each one; the last
wins); an ``{"error": ...}`` event -> ``StreamError``. ``finishReason`` is not an
end signal (older models sent ``STOP`` on every chunk): the last one seen
becomes the ``Finish`` event at the end of the body (``tool_calls`` when the
answer held calls), in a group of its own with empty raw bytes. A body that
ends without any ``finishReason`` yields no ``Finish``, so the client's stream
ends with an error event.

Encoding, for Gemini clients: one ``data:`` event (CRLF) per group of events
that produced output, each a ``GenerateContentResponse`` with the new parts.
Text and reasoning (``thought: true``) go out at once; a tool call is
accumulated from its start and argument deltas and sent as one whole
``functionCall`` part (``args`` an object, with its ``id``) when any other kind
of event arrives (text, reasoning, finish, end), so calls whose arguments
arrive in pieces (OpenAI, Anthropic) still reach the client whole. A
signature-only ``ReasoningDelta`` attaches its ``thoughtSignature`` to the next
part of the same group (a tool call, a text), or becomes an empty text part
carrying it. ``finishReason`` (tool calls -> ``STOP``) and the latest
``usageMetadata`` go on a last event sent when the source stream ends, because
usage may follow the finish reason (OpenAI's usage chunk); the parts still
pending at the finish (the last tool calls) ride on that last event. In-band errors
and a stream that ended before a finish reason end with
``data: {"error": {...}}`` in Google's error shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
from extproc.codecs.gemini.errors import decode_error, error_body
from extproc.codecs.gemini.response import (
    DecodeError,
    blocked,
    candidate_of,
    candidate_parts,
    new_response_id,
)
from extproc.codecs.gemini.wire import (
    PROTOCOL,
    args_object,
    args_text,
    decoder,
    encoder,
    finish_in,
    finish_out,
    get,
    usage_in,
    usage_out,
)
from extproc.codecs.sse import SseEvent, SseParser

_END = b"\r\n\r\n"

Decoded = list[tuple[bytes, list[StreamEvent]]]


class GeminiStreamDecoder:
    """Provider ``GenerateContentResponse`` SSE stream -> canonical events."""

    def __init__(self) -> None:
        self._parser = SseParser()
        self._started = False
        self._response_id = ""
        self._calls = 0
        self._native_finish: str | None = None
        self._blocked = False
        self._failed = False

    def feed(self, chunk: bytes) -> Decoded:
        return [(ev.raw, self._decode(ev)) for ev in self._parser.feed(chunk)]

    def finish(self) -> Decoded:
        out = [(ev.raw, self._decode(ev)) for ev in self._parser.finish()]
        reason: FinishReason | None = finish_in(self._native_finish, self._calls > 0)
        if reason is None and self._blocked:
            reason = "content_filter"
        if reason is not None and not self._failed:
            out.append((b"", [Finish(reason)]))
        return out

    def _decode(self, ev: SseEvent) -> list[StreamEvent]:
        try:
            data = decoder.decode(ev.data)
        except msgspec.DecodeError:
            return self._fail(CanonicalError(502, "the provider sent invalid JSON in its stream"))
        if not isinstance(data, dict):
            return []
        error = data.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            status = code if isinstance(code, int) and code >= 400 else 500
            return self._fail(decode_error(status, ev.data, None))
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            given = get(data, "responseId")
            model = get(data, "modelVersion")
            self._response_id = given if isinstance(given, str) and given else new_response_id()
            events.append(
                StreamStart(
                    id=given if isinstance(given, str) else "",
                    model=model if isinstance(model, str) else "",
                    protocol=PROTOCOL,
                )
            )
        try:
            candidate = candidate_of(data)
            parts = candidate_parts(candidate) if candidate is not None else []
        except DecodeError as exc:
            return self._fail(CanonicalError(502, f"the provider sent a malformed chunk: {exc}"))
        for part in parts:
            self._part(part, events)
        if candidate is not None:
            native = get(candidate, "finishReason")
            if isinstance(native, str) and native:
                self._native_finish = native
        elif blocked(data):
            self._blocked = True
        usage = usage_in(get(data, "usageMetadata"))
        if usage is not None:
            events.append(UsageReport(usage))
        return events

    def _part(self, part: dict[str, Any], events: list[StreamEvent]) -> None:
        signature = get(part, "thoughtSignature")
        signature = signature if isinstance(signature, str) else None
        text = get(part, "text")
        if isinstance(text, str) and get(part, "thought") is True:
            if text or signature:
                events.append(ReasoningDelta(text=text, signature=signature))
            return
        if signature is not None:
            events.append(ReasoningDelta(signature=signature))
        if isinstance(text, str):
            if text:
                events.append(TextDelta(text))
            return
        call = get(part, "functionCall")
        if isinstance(call, dict) and isinstance(get(call, "name"), str):
            index = self._calls
            self._calls += 1
            given = get(call, "id")
            call_id = (
                given if isinstance(given, str) and given else f"call_{self._response_id}_{index}"
            )
            events.append(ToolCallStart(index=index, id=call_id, name=get(call, "name")))
            events.append(ToolCallDelta(index=index, arguments=args_text(get(call, "args"))))

    def _fail(self, error: CanonicalError) -> list[StreamEvent]:
        self._failed = True
        return [StreamError(error)]


@dataclass(slots=True)
class _OpenCall:
    id: str
    name: str
    signature: str | None
    arguments: list[str] = field(default_factory=list)


class GeminiStreamEncoder:
    """Canonical events -> ``GenerateContentResponse`` SSE events for Gemini clients."""

    def __init__(self, request_model: str) -> None:
        self._id = new_response_id()
        self._model = request_model
        self._calls: dict[int, _OpenCall] = {}
        self._signature: str | None = None
        self._finish: FinishReason | None = None  # encoded, not yet sent
        self._finished = False  # a finish reason was seen (sent raw or pending)
        self._usage: Usage | None = None
        self._held: list[dict[str, Any]] = []  # parts for the last event, after a finish
        self._closed = False
        self._trusted = False  # set from StreamStart.protocol

    # -- pass-through bookkeeping -------------------------------------------------------------

    def can_pass_through(self, events: list[StreamEvent]) -> bool:
        pending = self._calls or self._signature is not None or self._finish is not None
        return not self._closed and not pending

    def observe(self, events: list[StreamEvent], raw: bytes | None = None) -> None:
        for event in events:
            if isinstance(event, StreamStart):
                self._start(event)
            elif isinstance(event, UsageReport):
                self._usage = event.usage
            elif isinstance(event, Finish):
                self._finished = True
            elif isinstance(event, StreamEnd | StreamError):
                self._closed = True

    # -- encoding ----------------------------------------------------------------------------

    def encode(self, events: list[StreamEvent]) -> bytes:
        out: list[bytes] = []
        parts: list[dict[str, Any]] = []
        for event in events:
            if self._closed:
                break
            if isinstance(event, StreamStart):
                self._start(event)
            elif isinstance(event, TextDelta):
                self._flush_calls(parts)
                if event.text or self._signature is not None:
                    parts.append(self._signed({"text": event.text}))
            elif isinstance(event, ReasoningDelta):
                self._reasoning(event, parts)
            elif isinstance(event, ToolCallStart):
                self._calls[event.index] = _OpenCall(event.id, event.name, self._signature)
                self._signature = None
            elif isinstance(event, ToolCallDelta):
                call = self._calls.get(event.index)
                if call is None:
                    call = self._calls[event.index] = _OpenCall(f"call_{event.index}", "", None)
                call.arguments.append(event.arguments)
            elif isinstance(event, Finish):
                self._flush_calls(parts)
                self._finish = event.reason
                self._finished = True
            elif isinstance(event, UsageReport):
                self._usage = event.usage
            elif isinstance(event, StreamEnd):
                out.append(self._end(self._held + parts))
                parts = []
            elif isinstance(event, StreamError):
                self._calls.clear()
                out.append(self._chunk(self._held + parts))
                parts = []
                out.append(self.error(event.error))
        if self._signature is not None and not self._calls and not self._closed:
            parts.append({"text": "", "thoughtSignature": self._signature})
            self._signature = None
        if self._finish is not None:
            self._held.extend(parts)  # they go out with the finish reason
        elif not self._closed:
            out.append(self._chunk(parts))
        return b"".join(out)

    def finish(self) -> bytes:
        return self._end(self._held)

    def error(self, error: CanonicalError) -> bytes:
        self._closed = True
        return b"data: " + encoder.encode(error_body(error)) + _END

    # -- helpers -----------------------------------------------------------------------------

    def _start(self, event: StreamStart) -> None:
        self._id = event.id or self._id
        self._model = event.model or self._model
        # thoughtSignatures are replay tokens: only a Gemini stream's are real.
        self._trusted = event.protocol == PROTOCOL

    def _reasoning(self, event: ReasoningDelta, parts: list[dict[str, Any]]) -> None:
        if not self._trusted and event.signature is not None:
            event = ReasoningDelta(text=event.text)
        if event.text:
            self._flush_calls(parts)
            if event.signature is not None and self._signature is not None:
                parts.append({"text": "", "thoughtSignature": self._signature})
            signature = event.signature or self._signature
            self._signature = None
            part: dict[str, Any] = {"text": event.text, "thought": True}
            if signature is not None:
                part["thoughtSignature"] = signature
            parts.append(part)
        elif event.signature is not None:
            self._flush_calls(parts)
            if self._signature is not None:
                parts.append({"text": "", "thoughtSignature": self._signature})
            self._signature = event.signature

    def _signed(self, part: dict[str, Any]) -> dict[str, Any]:
        if self._signature is not None:
            part["thoughtSignature"] = self._signature
            self._signature = None
        return part

    def _flush_calls(self, parts: list[dict[str, Any]]) -> None:
        for index in sorted(self._calls):
            call = self._calls[index]
            function = {"name": call.name, "args": args_object("".join(call.arguments))}
            if call.id:
                function["id"] = call.id
            part: dict[str, Any] = {"functionCall": function}
            if call.signature is not None:
                part["thoughtSignature"] = call.signature
            parts.append(part)
        self._calls.clear()

    def _end(self, parts: list[dict[str, Any]] | None = None) -> bytes:
        """The source stream ended: the last event (with ``parts``, the group's own), or,
        when it was cut short, ``parts`` without unfinished calls and an error event."""
        if self._closed:
            return b""
        parts = parts if parts is not None else []
        if not self._finished:
            self._calls.clear()
            self._signature = None
            return self._chunk(parts) + self.error(
                CanonicalError(
                    502,
                    "the provider's stream ended before the answer was complete",
                    type="api_error",
                    code="upstream_stream_truncated",
                )
            )
        self._flush_calls(parts)
        if self._signature is not None:
            parts.append({"text": "", "thoughtSignature": self._signature})
            self._signature = None
        reason, self._finish = self._finish, None
        self._closed = True
        if reason is None and not parts:
            return b""  # the finish reason already went out with the provider's own bytes
        return self._chunk(parts, finish_out(reason or "stop"))

    def _chunk(self, parts: list[dict[str, Any]], finish: str | None = None) -> bytes:
        if not parts and finish is None:
            return b""
        candidate: dict[str, Any] = {}
        if parts or finish != "SAFETY":
            candidate["content"] = {"parts": parts or [{"text": ""}], "role": "model"}
        if finish is not None:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        body: dict[str, Any] = {"candidates": [candidate]}
        if self._usage is not None:
            body["usageMetadata"] = usage_out(self._usage)
        body["modelVersion"] = self._model
        body["responseId"] = self._id
        return b"data: " + encoder.encode(body) + _END
