"""OpenAI Chat Completions SSE streams <-> canonical stream events."""

from __future__ import annotations

import time
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
from extproc.codecs.openai_chat.request import PROTOCOL
from extproc.codecs.openai_chat.response import (
    decode_error,
    error_body,
    finish_in,
    finish_out,
    usage_in,
    usage_out,
)
from extproc.codecs.sse import SseEvent, SseParser

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_DONE = b"data: [DONE]\n\n"


class ChatStreamDecoder:
    """Provider ``chat.completion.chunk`` stream -> canonical events."""

    def __init__(self) -> None:
        self._parser = SseParser()
        self._started = False
        self._tools_started: set[int] = set()

    def feed(self, chunk: bytes) -> list[tuple[bytes, list[StreamEvent]]]:
        return [(ev.raw, self._decode(ev)) for ev in self._parser.feed(chunk)]

    def finish(self) -> list[tuple[bytes, list[StreamEvent]]]:
        return [(ev.raw, self._decode(ev)) for ev in self._parser.finish()]

    def _decode(self, ev: SseEvent) -> list[StreamEvent]:
        if ev.data == b"[DONE]":
            return [StreamEnd()]
        try:
            data = _decoder.decode(ev.data)
        except msgspec.DecodeError:
            return [
                StreamError(CanonicalError(502, "the provider sent invalid JSON in its stream"))
            ]
        if not isinstance(data, dict):
            return []
        choices = data.get("choices")
        if data.get("error") is not None and not choices:
            error = decode_error(500, ev.data, None)
            return [StreamError(error)]
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            extra = {k: data[k] for k in ("system_fingerprint", "service_tier") if data.get(k)}
            events.append(
                StreamStart(
                    id=str(data.get("id") or ""),
                    model=str(data.get("model") or ""),
                    created=data["created"] if isinstance(data.get("created"), int) else 0,
                    extra=extra or None,
                    protocol=PROTOCOL,
                )
            )
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    self._choice(choice, events)
        usage = usage_in(data.get("usage"))
        if usage is not None:
            events.append(UsageReport(usage))
        return events

    def _choice(self, choice: dict[str, Any], events: list[StreamEvent]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                events.append(ReasoningDelta(text=reasoning))
            content = delta.get("content")
            if isinstance(content, str) and content:
                events.append(TextDelta(content))
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for position, call in enumerate(calls):
                    if isinstance(call, dict):
                        self._tool_call(call, position, events)
        finish = finish_in(choice.get("finish_reason"))
        if finish is not None:
            events.append(Finish(finish))

    def _tool_call(self, call: dict[str, Any], position: int, events: list[StreamEvent]) -> None:
        index = call.get("index")
        if not isinstance(index, int):
            index = position
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        assert isinstance(function, dict)
        if index not in self._tools_started:
            self._tools_started.add(index)
            events.append(
                ToolCallStart(
                    index=index,
                    id=str(call.get("id") or f"call_{index}"),
                    name=str(function.get("name") or ""),
                )
            )
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            events.append(ToolCallDelta(index=index, arguments=arguments))


class ChatStreamEncoder:
    """Canonical events -> ``chat.completion.chunk`` SSE for OpenAI clients."""

    def __init__(self, include_usage: bool, request_model: str) -> None:
        self.include_usage = include_usage
        self._id = "chatcmpl-proxy"
        self._model = request_model
        self._created = int(time.time())
        self._extra: dict[str, Any] = {}
        self._role_sent = False
        self._usage: Usage | None = None
        self._usage_sent = False
        self._finished = False
        self._closed = False

    # -- pass-through bookkeeping -------------------------------------------

    def can_pass_through(self, events: list[StreamEvent]) -> bool:
        if self._closed:
            return False
        return self.include_usage or not any(isinstance(e, UsageReport) for e in events)

    def observe(self, events: list[StreamEvent], raw: bytes | None = None) -> None:
        for event in events:
            if isinstance(event, StreamStart):
                self._start(event)
                self._role_sent = True
            elif isinstance(event, UsageReport):
                self._usage = event.usage
                self._usage_sent = True
            elif isinstance(event, Finish):
                self._finished = True
            elif isinstance(event, StreamEnd | StreamError):
                self._closed = True

    # -- encoding ------------------------------------------------------------

    def encode(self, events: list[StreamEvent]) -> bytes:
        out: list[bytes] = []
        for event in events:
            if self._closed:
                break
            if isinstance(event, StreamStart):
                self._start(event)
                self._ensure_role(out)
            elif isinstance(event, TextDelta):
                self._ensure_role(out)
                out.append(self._chunk({"content": event.text}))
            elif isinstance(event, ReasoningDelta):
                self._ensure_role(out)
                if event.text:
                    out.append(self._chunk({"reasoning_content": event.text}))
            elif isinstance(event, ToolCallStart):
                self._ensure_role(out)
                call = {
                    "index": event.index,
                    "id": event.id,
                    "type": "function",
                    "function": {"name": event.name, "arguments": ""},
                }
                out.append(self._chunk({"tool_calls": [call]}))
            elif isinstance(event, ToolCallDelta):
                call = {"index": event.index, "function": {"arguments": event.arguments}}
                out.append(self._chunk({"tool_calls": [call]}))
            elif isinstance(event, Finish):
                self._ensure_role(out)
                self._finished = True
                out.append(self._chunk({}, finish_out(event.reason)))
            elif isinstance(event, UsageReport):
                self._usage = event.usage
            elif isinstance(event, StreamEnd):
                out.append(self._end())
            elif isinstance(event, StreamError):
                out.append(self.error(event.error))
        return b"".join(out)

    def finish(self) -> bytes:
        if self._closed:
            return b""
        if not self._finished:
            return self.error(
                CanonicalError(
                    502,
                    "the provider's stream ended before the answer was complete",
                    type="server_error",
                    code="upstream_stream_truncated",
                )
            )
        return self._end()

    def error(self, error: CanonicalError) -> bytes:
        self._closed = True
        return b"data: " + _encoder.encode(error_body(error)) + b"\n\n"

    # -- helpers -------------------------------------------------------------

    def _start(self, event: StreamStart) -> None:
        self._id = event.id or self._id
        self._model = event.model or self._model
        self._created = event.created or self._created
        if event.extra:
            self._extra = event.extra

    def _ensure_role(self, out: list[bytes]) -> None:
        if not self._role_sent:
            self._role_sent = True
            out.append(self._chunk({"role": "assistant", "content": ""}))

    def _end(self) -> bytes:
        self._closed = True
        usage = b""
        if self.include_usage and self._usage is not None and not self._usage_sent:
            self._usage_sent = True
            usage = self._envelope([], usage_out(self._usage))
        return usage + _DONE

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._envelope([choice], None)

    def _envelope(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }
        chunk.update(self._extra)
        chunk["choices"] = choices
        if usage is not None or self.include_usage:
            chunk["usage"] = usage
        return b"data: " + _encoder.encode(chunk) + b"\n\n"
