"""Anthropic Messages SSE streams from a provider -> canonical stream events.

One result per wire event (its raw bytes kept for same-protocol pass-through):

* ``message_start`` -> ``StreamStart`` (id, model) and ``UsageReport`` of its input usage.
* ``content_block_start``: ``tool_use`` -> ``ToolCallStart`` with the next canonical tool index
  (block index -> tool index is remembered; server-tool blocks get none); a ``thinking`` or
  ``text`` block with initial content, or ``redacted_thinking``, -> the matching delta.
* ``content_block_delta``: ``text_delta`` -> ``TextDelta``; ``input_json_delta`` ->
  ``ToolCallDelta`` (the JSON fragment, empty ones skipped); ``thinking_delta`` and
  ``signature_delta`` -> ``ReasoningDelta`` (text / signature); citations are ignored.
* ``message_delta`` -> ``Finish`` (stop reason per §5.5, with the stop sequence) and a
  ``UsageReport`` of the usage so far: counts are cumulative, so the message_delta's fields
  replace those of message_start and the ones it leaves out keep their value.
* ``message_stop`` -> ``StreamEnd``; ``error`` -> ``StreamError`` (status from the error
  type, e.g. 529 for ``overloaded_error``); ``ping``, ``content_block_stop`` and unknown
  events -> nothing. Invalid JSON -> a 502 ``StreamError``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from extproc.canonical import (
    CanonicalError,
    Finish,
    ReasoningDelta,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from extproc.codecs.anthropic.common import (
    PROTOCOL,
    decoder,
    finish_in,
    status_for,
    tool_arguments,
    usage_in,
)
from extproc.codecs.sse import SseEvent, SseParser

Decoded = list[tuple[bytes, list[StreamEvent]]]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


class AnthropicStreamDecoder:
    """Provider ``text/event-stream`` of Messages events -> canonical events."""

    def __init__(self) -> None:
        self._parser = SseParser()
        self._tools: dict[int, int] = {}  # content block index -> canonical tool index
        self._usage: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> Decoded:
        return [(ev.raw, self._decode(ev)) for ev in self._parser.feed(chunk)]

    def finish(self) -> Decoded:
        return [(ev.raw, self._decode(ev)) for ev in self._parser.finish()]

    def _decode(self, ev: SseEvent) -> list[StreamEvent]:
        if not ev.data.strip():
            return []
        try:
            data = decoder.decode(ev.data)
        except msgspec.DecodeError:
            error = CanonicalError(502, "the provider sent invalid JSON in its stream")
            return [StreamError(error)]
        if not isinstance(data, dict):
            return []
        kind = data.get("type") or ev.event
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "message_start":
            return self._message_start(_dict(data.get("message")))
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            return [StreamEnd()]
        if kind == "error":
            err = _dict(data.get("error"))
            error_type = _str(err.get("type")) or "api_error"
            message = _str(err.get("message")) or "the provider reported an error in its stream"
            return [StreamError(CanonicalError(status_for(error_type), message, type=error_type))]
        return []  # ping, content_block_stop, and event types added later

    def _message_start(self, message: dict[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = [
            StreamStart(
                id=_str(message.get("id")), model=_str(message.get("model")), protocol=PROTOCOL
            )
        ]
        if isinstance(message.get("usage"), dict):
            self._usage = dict(message["usage"])
            events.append(self._usage_report())
        return events

    def _block_start(self, data: dict[str, Any]) -> list[StreamEvent]:
        index = data.get("index")
        block = _dict(data.get("content_block"))
        kind = block.get("type")
        if kind == "text" and (text := _str(block.get("text"))):
            return [TextDelta(text)]
        if kind == "thinking":
            text, signature = _str(block.get("thinking")), _str(block.get("signature"))
            return (
                [ReasoningDelta(text=text, signature=signature or None)]
                if text or signature
                else []
            )
        if kind == "redacted_thinking":
            return [ReasoningDelta(redacted=_str(block.get("data")))]
        if kind != "tool_use" or not isinstance(index, int):
            return []
        tool = self._tools[index] = len(self._tools)
        events: list[StreamEvent] = [
            ToolCallStart(index=tool, id=_str(block.get("id")), name=_str(block.get("name")))
        ]
        initial = block.get("input")
        if initial is not None and initial != {}:
            events.append(ToolCallDelta(index=tool, arguments=tool_arguments(initial)))
        return events

    def _delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        delta = _dict(data.get("delta"))
        kind = delta.get("type")
        if kind == "text_delta":
            text = _str(delta.get("text"))
            return [TextDelta(text)] if text else []
        if kind == "input_json_delta":
            tool = self._tools.get(data["index"]) if isinstance(data.get("index"), int) else None
            fragment = _str(delta.get("partial_json"))
            return (
                [ToolCallDelta(index=tool, arguments=fragment)]
                if tool is not None and fragment
                else []
            )
        if kind == "thinking_delta":
            text = _str(delta.get("thinking"))
            return [ReasoningDelta(text=text)] if text else []
        if kind == "signature_delta":
            signature = _str(delta.get("signature"))
            return [ReasoningDelta(signature=signature)] if signature else []
        return []

    def _message_delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        delta = _dict(data.get("delta"))
        reason = finish_in(delta.get("stop_reason"))
        if reason is not None:
            stop_sequence = delta.get("stop_sequence")
            events.append(Finish(reason, stop_sequence if isinstance(stop_sequence, str) else None))
        usage = data.get("usage")
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)
            events.append(self._usage_report())
        return events

    def _usage_report(self) -> UsageReport:
        usage = usage_in(self._usage)
        assert usage is not None
        return UsageReport(usage)
