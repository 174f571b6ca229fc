"""Canonical stream events -> an Anthropic Messages SSE stream for Anthropic clients.

Every event has an ``event:`` line equal to its ``type`` (the SDK dispatches on it).

* ``message_start`` goes out with the first group that has a ``StreamStart`` (or before the
  first content): its ``usage`` has the provider's input counts when that group carries them
  (Anthropic's own ``message_start``), else the proxy's estimate
  (``ResponseContext.estimated_input_tokens``); ``content`` empty, ``stop_reason`` null.
* Blocks get consecutive indexes in the order they open; at most one text or thinking block is
  open at a time. Text -> a ``text`` block of ``text_delta``s. Reasoning -> a ``thinking`` block
  (``content_block_start`` has ``"signature": ""``) of ``thinking_delta``s, then a
  ``signature_delta``; more reasoning after a signature opens a new thinking block. A
  redacted block -> ``redacted_thinking``, whole.
* Replay tokens only from an Anthropic source: ``ReasoningDelta`` carries no provider, so the
  encoder trusts signatures and redacted blocks only when the stream was decoded from
  Anthropic (``StreamStart.protocol``); otherwise thinking text is shown with an empty signature and
  redacted blocks are dropped (never replayed to Anthropic by mistake).
* Tool calls: canonical tool index -> block index, remembered. A ``tool_use`` block opens with
  ``input: {}``; its arguments go out as ``input_json_delta`` fragments as they come. A new call
  closes the calls whose arguments are already a complete JSON object; the others stay open, so
  interleaved fragments still reach their own block (by index). Arguments that are empty get
  ``{}``, arguments that do not start with ``{`` are held back and sent as
  ``{"_raw_arguments": text}`` when the block closes. Text or reasoning closes every open block.
* ``Finish`` closes the open blocks; ``message_delta`` (stop reason per §5.5 - ``tool_use``
  when calls were made and the reason is a plain stop - stop sequence, and the cumulative
  usage, input included, correcting the estimate) and ``message_stop`` follow at the end of the
  stream, once late usage has arrived.
* ``StreamError`` -> ``event: error`` with Anthropic's error shape; an end without a finish
  reason -> an ``api_error`` error event, never a silent end.
* Same protocol: raw events pass through unchanged while the encoder has not encoded anything
  itself; ``observe`` keeps the state needed to finish such a stream properly.
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
    Usage,
    UsageReport,
)
from extproc.codecs.anthropic.common import (
    PROTOCOL,
    decoder,
    encoder,
    error_body,
    stop_reason_out,
    tool_id,
    usage_out,
)
from extproc.codecs.anthropic.response import new_message_id
from extproc.codecs.base import ResponseContext
from extproc.codecs.sse import encode_event

TRUNCATED = CanonicalError(
    502,
    "the provider's stream ended before the answer was complete",
    type="api_error",
    code="upstream_stream_truncated",
)


class _ToolBlock:
    """One ``tool_use`` block: its index and the arguments seen so far."""

    __slots__ = ("arguments", "closed", "index", "mode")

    def __init__(self, index: int, closed: bool = False) -> None:
        self.index = index
        self.arguments = ""
        self.mode = "pending"  # pending (only blank so far) | stream (an object) | raw
        self.closed = closed

    def feed(self, fragment: str) -> str:
        """Take a fragment; return the text to send now."""
        self.arguments += fragment
        if self.mode == "stream":
            return fragment
        if self.mode == "raw":
            return ""
        head = self.arguments.lstrip()
        if not head:
            return ""
        if head[0] == "{":
            self.mode = "stream"
            return self.arguments
        self.mode = "raw"
        return ""

    def complete(self) -> bool:
        """The arguments are a whole JSON object: no fragment can follow."""
        if self.mode != "stream":
            return False
        try:
            return isinstance(decoder.decode(self.arguments), dict)
        except msgspec.DecodeError:
            return False

    def tail(self) -> str:
        """What to send before the block closes, so the input is a valid object."""
        if self.mode == "passed":  # the provider's own deltas went out unchanged
            return ""
        if self.mode == "pending":
            return "{}"
        if self.mode == "raw":
            return encoder.encode({"_raw_arguments": self.arguments}).decode()
        return ""


class AnthropicStreamEncoder:
    """Canonical events -> ``text/event-stream`` of Messages events, one per client stream."""

    def __init__(self, ctx: ResponseContext) -> None:
        self._model = ctx.request_model
        self._estimate = ctx.estimated_input_tokens
        self._id = ""
        self._signatures = False
        self._usage: Usage | None = None
        self._started = False
        self._next = 0  # the next block index
        self._open: str | None = None  # kind of the open text/thinking block
        self._open_index = 0
        self._signed = False
        self._tools: dict[int, _ToolBlock] = {}
        self._open_tools: list[int] = []
        self._called = False
        self._finish: Finish | None = None
        self._delta_sent = False
        self._closed = False
        self._encoded = False
        self._last_kind: str | None = None  # pass-through bookkeeping

    # -- pass-through bookkeeping ------------------------------------------------------

    def can_pass_through(self, events: list[StreamEvent]) -> bool:
        return not self._closed and not self._encoded

    def observe(self, events: list[StreamEvent], raw: bytes | None = None) -> None:
        block = self._follow(raw) if raw else None
        for event in events:
            if isinstance(event, StreamStart):
                self._on_start(event)
                self._started = True
            elif block is not None:
                if isinstance(event, ToolCallStart):
                    tool = _ToolBlock(block, closed=False)
                    tool.mode = "passed"
                    self._tools[event.index] = tool
                    self._open_tools.append(event.index)
                    self._called = True
                    self._open = None
            elif isinstance(event, TextDelta):
                self._count_block("text" if event.text else self._last_kind)
            elif isinstance(event, ReasoningDelta):
                if event.redacted is not None:
                    self._count_block(None, force=True)
                elif event.text or event.signature:
                    self._count_block("thinking")
            elif isinstance(event, ToolCallStart):
                self._tools[event.index] = _ToolBlock(self._next, closed=True)
                self._called = True
                self._count_block("tool", force=True)
            elif isinstance(event, Finish):
                self._finish = event
                self._delta_sent = True  # the provider's message_delta carried it
            elif isinstance(event, UsageReport):
                self._usage = event.usage
            elif isinstance(event, StreamEnd | StreamError):
                self._closed = True

    def _follow(self, raw: bytes) -> int | None:
        """Track the provider's own blocks from a passed-through event, so that encoding
        can take over mid-answer: the index of a block this event starts, if any."""
        if b"content_block_st" not in raw:
            return None
        data = raw[raw.find(b"data:") + 5 :]
        try:
            event = decoder.decode(data)
        except msgspec.DecodeError:
            return None
        if not isinstance(event, dict) or not isinstance(event.get("index"), int):
            return None
        index: int = event["index"]
        if event.get("type") == "content_block_stop":
            if self._open is not None and self._open_index == index:
                self._open = None
            for key in [k for k in self._open_tools if self._tools[k].index == index]:
                self._tools[key].closed = True
                self._open_tools.remove(key)
            return None
        if event.get("type") != "content_block_start":
            return None
        block = event.get("content_block")
        kind = block.get("type") if isinstance(block, dict) else None
        self._next = max(self._next, index + 1)
        self._last_kind = kind
        # A text or thinking block goes on in encoding; any other block (tool use,
        # server tools) is closed before anything else is encoded.
        self._open = {"text": "text", "thinking": "thinking"}.get(str(kind), "other")
        self._open_index = index
        self._signed = False
        return index

    def _count_block(self, kind: str | None, force: bool = False) -> None:
        if force or kind != self._last_kind:
            self._next += 1
        self._last_kind = kind

    # -- encoding ----------------------------------------------------------------------

    def encode(self, events: list[StreamEvent]) -> bytes:
        if self._closed or not events:
            return b""
        self._encoded = True
        out: list[bytes] = []
        if not self._started:
            # message_start reports input usage: use the provider's if this group has it.
            for event in events:
                if isinstance(event, UsageReport):
                    self._usage = event.usage
        start_pending = False
        for event in events:
            if self._closed:
                break
            if isinstance(event, StreamStart):
                self._on_start(event)
                start_pending = True
            elif isinstance(event, TextDelta):
                if event.text:
                    self._text(out, event.text)
            elif isinstance(event, ReasoningDelta):
                self._reasoning(out, event)
            elif isinstance(event, ToolCallStart):
                self._tool_start(out, event.index, event.id, event.name)
            elif isinstance(event, ToolCallDelta):
                self._tool_delta(out, event)
            elif isinstance(event, Finish):
                self._ensure_started(out)
                self._close_blocks(out)
                self._finish = event
            elif isinstance(event, UsageReport):
                self._usage = event.usage
            elif isinstance(event, StreamEnd):
                out.append(self._end())
            elif isinstance(event, StreamError):
                out.append(self.error(event.error))
        if start_pending and not self._closed:
            self._ensure_started(out)
        return b"".join(out)

    def finish(self) -> bytes:
        if self._closed:
            return b""
        return self._end()

    def error(self, error: CanonicalError) -> bytes:
        self._closed = True
        return encode_event(encoder.encode(error_body(error)), "error")

    # -- message and blocks ------------------------------------------------------------

    def _on_start(self, event: StreamStart) -> None:
        self._id = event.id or self._id
        self._model = event.model or self._model
        self._signatures = event.protocol == PROTOCOL

    def _emit(self, out: list[bytes], payload: dict[str, Any]) -> None:
        out.append(encode_event(encoder.encode(payload), payload["type"]))

    def _ensure_started(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        self._id = self._id or new_message_id()
        usage = self._usage
        if usage is None or not usage.input_tokens:
            output = usage.output_tokens if usage is not None else 0
            usage = Usage(input_tokens=self._estimate, output_tokens=output)
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_out(usage),
        }
        self._emit(out, {"type": "message_start", "message": message})

    def _open_block(self, out: list[bytes], block: dict[str, Any]) -> int:
        index = self._next
        self._next += 1
        self._emit(out, {"type": "content_block_start", "index": index, "content_block": block})
        return index

    def _delta(self, out: list[bytes], index: int, delta: dict[str, Any]) -> None:
        self._emit(out, {"type": "content_block_delta", "index": index, "delta": delta})

    def _stop_block(self, out: list[bytes], index: int) -> None:
        self._emit(out, {"type": "content_block_stop", "index": index})

    def _close_current(self, out: list[bytes]) -> None:
        if self._open is not None:
            self._stop_block(out, self._open_index)
            self._open = None

    def _close_tool(self, out: list[bytes], index: int) -> None:
        tool = self._tools[index]
        if tail := tool.tail():
            self._delta(out, tool.index, {"type": "input_json_delta", "partial_json": tail})
        self._stop_block(out, tool.index)
        tool.closed = True
        self._open_tools.remove(index)

    def _close_blocks(self, out: list[bytes]) -> None:
        self._close_current(out)
        for index in list(self._open_tools):
            self._close_tool(out, index)

    def _text(self, out: list[bytes], text: str) -> None:
        self._ensure_started(out)
        if self._open != "text":
            self._close_blocks(out)
            self._open_index = self._open_block(out, {"type": "text", "text": ""})
            self._open = "text"
        self._delta(out, self._open_index, {"type": "text_delta", "text": text})

    def _reasoning(self, out: list[bytes], event: ReasoningDelta) -> None:
        if event.redacted is not None:
            if self._signatures:
                self._ensure_started(out)
                self._close_blocks(out)
                block = {"type": "redacted_thinking", "data": event.redacted}
                self._stop_block(out, self._open_block(out, block))
            return
        signature = event.signature if self._signatures else None
        if not event.text and not signature:
            return
        self._ensure_started(out)
        if self._open != "thinking" or (self._signed and event.text):
            self._close_blocks(out)
            block = {"type": "thinking", "thinking": "", "signature": ""}
            self._open_index = self._open_block(out, block)
            self._open = "thinking"
            self._signed = False
        if event.text:
            self._delta(out, self._open_index, {"type": "thinking_delta", "thinking": event.text})
        if signature:
            self._delta(out, self._open_index, {"type": "signature_delta", "signature": signature})
            self._signed = True

    def _tool_start(self, out: list[bytes], index: int, call_id: str, name: str) -> None:
        if index in self._tools:
            return
        self._ensure_started(out)
        self._close_current(out)
        for open_index in list(self._open_tools):
            if self._tools[open_index].complete():
                self._close_tool(out, open_index)
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": tool_id(call_id or f"call_{index}"),
            "name": name,
            "input": {},
        }
        self._tools[index] = _ToolBlock(self._open_block(out, block))
        self._open_tools.append(index)
        self._called = True

    def _tool_delta(self, out: list[bytes], event: ToolCallDelta) -> None:
        if event.index not in self._tools:
            self._tool_start(out, event.index, "", "")
        tool = self._tools[event.index]
        if tool.closed:
            return  # its block has ended (text came in between); Anthropic cannot reopen it
        if fragment := tool.feed(event.arguments):
            self._delta(out, tool.index, {"type": "input_json_delta", "partial_json": fragment})

    def _end(self) -> bytes:
        if self._finish is None:
            return self.error(TRUNCATED)
        out: list[bytes] = []
        self._ensure_started(out)
        self._close_blocks(out)
        if not self._delta_sent:
            self._delta_sent = True
            reason = self._finish.reason
            if reason == "stop" and self._called:
                reason = "tool_calls"
            delta = {
                "stop_reason": stop_reason_out(reason, self._finish.stop_sequence),
                "stop_sequence": self._finish.stop_sequence,
            }
            usage = usage_out(self._usage) if self._usage is not None else {"output_tokens": 0}
            self._emit(out, {"type": "message_delta", "delta": delta, "usage": usage})
        self._emit(out, {"type": "message_stop"})
        self._closed = True
        return b"".join(out)
