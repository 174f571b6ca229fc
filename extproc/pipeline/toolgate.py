"""The tool-call gate: complete tool calls, checked before the client sees them.

Stages that judge tool calls (command protection, tool access, the file
sandbox, redaction of arguments) do not each parse streamed argument
fragments: they give a :class:`ToolCheck`, and one :class:`ToolCallGate` per
answer holds the calls until their arguments are complete, asks every check
in stage order, and emits the verdict.

* From the first tool call on, the gate holds the rest of the answer's
  content (providers send tool calls last; anything after one stays in
  order). The hold is bounded (``max_bytes`` of held arguments and text):
  past it the answer fails closed with an error.
* :class:`Rewrite` replaces a call's arguments (e.g. redacted secrets).
* :class:`Block` swallows the call. A blocked call blocks *every* call of
  that answer (parallel calls may prepare or depend on the blocked one, so
  none runs); the client gets, in their place, an assistant text saying what
  was blocked, why and what to do instead, with finish reason ``stop`` (the
  agent's turn ends normally, and the model reads the note next turn).
  With ``error`` set, the answer ends with that error instead (a 403 in the
  client's dialect for a whole answer; the dialect's error event in a
  stream, whose status line has already gone out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from extproc.canonical import (
    CanonicalError,
    Finish,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
)
from extproc.errors import ProxyError
from extproc.pipeline.answer import AnswerFilter, Emit, EndAnswer

__all__ = ["Block", "Rewrite", "ToolCallGate", "ToolCheck", "ToolVerdict"]


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Send the call with these arguments (JSON text) instead (and this tool name)."""

    arguments: str
    #: A corrected tool name (tool-call repair), or None: unchanged.
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Block:
    """Do not let the call reach the client."""

    #: What the agent is told (why, and what to do instead).
    message: str
    #: End the answer with this error instead of the note (the ``error`` action).
    error: ProxyError | None = None


ToolVerdict = Rewrite | Block


class ToolCheck(Protocol):
    """One stage's judgement of complete tool calls (one object per answer)."""

    name: str

    def check(self, call: ToolCallPart) -> ToolVerdict | None:
        """``None``: the call may go as it is."""
        ...


@dataclass(slots=True)
class _Held:
    id: str
    name: str
    arguments: list[str]


class ToolCallGate(AnswerFilter):
    """Holds an answer's tool calls until complete, then applies the checks."""

    name = "tool-gate"

    def __init__(self, checks: Sequence[ToolCheck], max_bytes: int = 4 * 1024 * 1024) -> None:
        self._checks = list(checks)
        self._max = max_bytes
        self._holding = False
        #: Held content in order: tool calls (by stream index) and other events.
        self._held: list[StreamEvent | int] = []
        self._calls: dict[int, _Held] = {}
        self._bytes = 0
        self._blocked = False

    @property
    def holding(self) -> bool:
        return self._holding

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        if not self._holding:
            if not any(isinstance(e, ToolCallStart | ToolCallDelta) for e in events):
                if self._blocked and any(isinstance(e, Finish) for e in events):
                    return Emit([_stopped(e) for e in events])
                return None
            self._holding = True
            at = next(
                i for i, e in enumerate(events) if isinstance(e, ToolCallStart | ToolCallDelta)
            )
            passed = list(events[:at])
            self._take(events[at:])
            return self._checked_size(passed)
        self._take(events)
        return self._checked_size([])

    def on_flush(self) -> Emit | None:
        if not self._holding:
            return None
        self._holding = False
        held, calls = self._held, self._calls
        self._held, self._calls, self._bytes = [], {}, 0
        parts = [
            ToolCallPart(id=c.id, name=c.name, arguments="".join(c.arguments))
            for c in calls.values()
        ]
        checked: list[ToolCallPart] = []
        blocks: list[tuple[ToolCallPart, Block]] = []
        for part in parts:
            for check in self._checks:
                verdict = check.check(part)
                if isinstance(verdict, Rewrite):
                    part = ToolCallPart(
                        id=part.id, name=verdict.name or part.name, arguments=verdict.arguments
                    )
                elif isinstance(verdict, Block):
                    blocks.append((part, verdict))
                    break
            checked.append(part)
        if blocks:
            return self._blocked_answer(held, parts, blocks)
        by_index = dict(zip(calls, checked, strict=True))
        out: list[StreamEvent] = []
        for item in held:
            if isinstance(item, int):
                part = by_index[item]
                out.append(ToolCallStart(index=item, id=part.id, name=part.name))
                if part.arguments:
                    out.append(ToolCallDelta(index=item, arguments=part.arguments))
            else:
                out.append(item)
        return Emit(out)

    # -- helpers ---------------------------------------------------------------

    def _take(self, events: Sequence[StreamEvent]) -> None:
        for event in events:
            if isinstance(event, ToolCallStart):
                if event.index not in self._calls:
                    self._held.append(event.index)
                self._calls[event.index] = _Held(event.id, event.name, [])
            elif isinstance(event, ToolCallDelta):
                call = self._calls.get(event.index)
                if call is None:  # a delta without its start: keep it addressable
                    call = self._calls[event.index] = _Held(f"call_{event.index}", "", [])
                    self._held.append(event.index)
                call.arguments.append(event.arguments)
                self._bytes += len(event.arguments)
            else:
                if isinstance(event, TextDelta):
                    self._bytes += len(event.text)
                self._held.append(event)

    def _checked_size(self, passed: list[StreamEvent]) -> Emit:
        if self._bytes <= self._max:
            return Emit(passed)
        self._holding = False
        self._held, self._calls, self._bytes = [], {}, 0
        error = CanonicalError(
            413,
            f"the answer's tool calls exceed the {self._max} bytes the proxy can inspect; "
            "they were not sent",
            type="invalid_request_error",
            code="tool_call_too_large",
        )
        return Emit([*passed, StreamError(error)], end=EndAnswer(reason="error"))

    def _blocked_answer(
        self,
        held: list[StreamEvent | int],
        parts: list[ToolCallPart],
        blocks: list[tuple[ToolCallPart, Block]],
    ) -> Emit:
        first_error = next((b.error for _, b in blocks if b.error is not None), None)
        if first_error is not None:
            error = CanonicalError(
                first_error.status,
                first_error.message,
                type=first_error.error_type,
                code=first_error.code,
            )
            return Emit([StreamError(error)], end=EndAnswer(reason="error"))
        self._blocked = True
        text = [e for e in held if isinstance(e, TextDelta)]
        lines = [f"[llm-proxy] {b.message}" for _, b in blocks]
        others = len(parts) - len(blocks)
        if others:
            lines.append(
                f"[llm-proxy] The other {others} tool call(s) of this answer were not sent "
                "either: request them again without the blocked one."
            )
        note = "\n\n" + "\n".join(lines)
        return Emit([*text, TextDelta(note)])


def _stopped(event: StreamEvent) -> StreamEvent:
    """A tool-call finish becomes a plain stop once the calls were swallowed."""
    if isinstance(event, Finish) and event.reason == "tool_calls":
        return Finish("stop", stop_sequence=event.stop_sequence)
    return event
