"""Canonical stream events: the small vocabulary every stream translates through.

A stream decoder turns provider bytes into these events, grouped by the wire
event they came from; stages may inspect or replace them; a stream encoder
turns them into the client's dialect. When source and target speak the same
protocol and nothing changed, the raw wire event goes out byte for byte.
"""

from __future__ import annotations

from typing import Any

import msgspec

from extproc.canonical.model import CanonicalError, FinishReason, Usage


class StreamStart(msgspec.Struct, tag="start", omit_defaults=True):
    id: str = ""
    model: str = ""
    created: int = 0
    extra: dict[str, Any] | None = None
    #: The wire protocol the stream was decoded from. Encoders emit replay
    #: tokens (signatures, redacted thinking) only when it is their own.
    protocol: str | None = None


class TextDelta(msgspec.Struct, tag="text", omit_defaults=True):
    text: str


class ReasoningDelta(msgspec.Struct, tag="reasoning", omit_defaults=True):
    """Reasoning text and/or its replay token (``signature``), or a redacted block."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None


class ToolCallStart(msgspec.Struct, tag="tool_start", omit_defaults=True):
    index: int
    id: str
    name: str


class ToolCallDelta(msgspec.Struct, tag="tool_delta", omit_defaults=True):
    index: int
    arguments: str


class Finish(msgspec.Struct, tag="finish", omit_defaults=True):
    reason: FinishReason
    stop_sequence: str | None = None


class UsageReport(msgspec.Struct, tag="usage", omit_defaults=True):
    usage: Usage


class StreamError(msgspec.Struct, tag="error", omit_defaults=True):
    error: CanonicalError


class StreamEnd(msgspec.Struct, tag="end", omit_defaults=True):
    pass


StreamEvent = (
    StreamStart
    | TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallDelta
    | Finish
    | UsageReport
    | StreamError
    | StreamEnd
)
