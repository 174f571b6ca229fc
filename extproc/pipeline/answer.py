"""Answer filters and the chain that runs them over one answer.

An answer (streamed, or whole: a whole answer is turned into the events a
stream of it would carry) reaches the stages as canonical stream events, in
order. Each filter of the chain sees what the filters before it emitted.

The change signal is explicit: a filter returns ``None`` when it let the
events through untouched, or an :class:`Emit` with the events to send in
their place (fewer, more, or other ones). Nothing is inferred from object
identity, and filters never mutate the events they are given (build new
ones). A same-protocol stream keeps sending the provider's raw bytes only
while every filter returned ``None``.

A filter may **hold** events (return fewer than it got, keep the rest) and
release them later; every hold must be bounded by the filter. Before the
first terminal event (:class:`Finish`, :class:`StreamError`,
:class:`StreamEnd`) — or when the provider's stream ends without one — the
chain **flushes** each filter in order (:meth:`AnswerFilter.on_flush`), so
held content still goes out before the answer's end. A filter may **end**
the answer early (:class:`EndAnswer`): the chain flushes the filters after
it, closes the answer with a finish reason (and an optional note the client
sees), and tells the caller to stop reading the provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from extproc.canonical import (
    CanonicalError,
    CanonicalResponse,
    Finish,
    FinishReason,
    ReasoningPart,
    StreamEnd,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallPart,
)
from extproc.canonical.aggregate import aggregate_events, response_events

__all__ = ["AnswerChain", "AnswerFilter", "Emit", "EndAnswer", "StageFailed"]

_TERMINAL = (Finish, StreamError, StreamEnd)


@dataclass(frozen=True, slots=True)
class EndAnswer:
    """End the answer now: the client gets a proper end in its dialect."""

    #: The finish reason the client sees.
    reason: FinishReason = "stop"
    #: Text appended to the answer before its end (e.g. why the proxy cut it). The
    #: provider is no longer read: Envoy resets the upstream request once the
    #: client's answer is complete.
    note: str | None = None


@dataclass(slots=True)
class Emit:
    """A filter's output in place of what it was given (the events changed)."""

    events: list[StreamEvent] = field(default_factory=list)
    #: End the answer after these events.
    end: EndAnswer | None = None


class StageFailed(Exception):
    """A stage raised while processing an answer (the exchange fails closed)."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause


class AnswerFilter:
    """One stage's view of one answer; override what the stage needs."""

    #: The stage's name (errors, metrics).
    name: str = "filter"
    #: The filter may emit tool calls of its own (tool calls written as text): the
    #: tool-call gate goes after it, so every check sees them.
    makes_tool_calls: bool = False
    #: Set by :meth:`AnswerChain.whole`: the events are a whole answer, nothing
    #: follows them, so text cannot grow past their end (a filter need not hold it).
    complete: bool = False

    @property
    def holding(self) -> bool:
        """True while events are held back. The provider's raw bytes then cannot pass
        through (later wire events would overtake what is held): the translator
        re-encodes until nothing is held."""
        return False

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        """Events in answer order; ``None``: pass them on unchanged."""
        return None

    def on_flush(self) -> Emit | None:
        """The provider's content is over: release what is held.

        May be called more than once (before the answer's end, and when the
        provider's stream ends): each call releases what is held then.
        """
        return None


class AnswerChain:
    """The filters of one request's answer, in stage order."""

    __slots__ = ("_filters", "_flushed", "ended")

    def __init__(self, filters: Sequence[AnswerFilter]) -> None:
        self._filters = list(filters)
        self._flushed = False
        #: Set once a filter ended the answer; nothing more is read.
        self.ended: EndAnswer | None = None

    def feed(self, events: list[StreamEvent]) -> tuple[list[StreamEvent], bool]:
        """The events to send for ``events``, and whether they differ from them."""
        if self.ended is not None:
            return [], True
        if self._flushed:
            return self._run(events, 0)
        for at, event in enumerate(events):
            if isinstance(event, _TERMINAL):
                head, changed = self._run(events[:at], 0)
                if self.ended is not None:
                    return head, True
                flushed, flush_changed = self._flush(0)
                if self.ended is not None:
                    return head + flushed, True
                tail, tail_changed = self._run(events[at:], 0)
                return head + flushed + tail, changed or flush_changed or tail_changed
        return self._run(events, 0)

    @property
    def holding(self) -> bool:
        """Some filter holds events back (see :attr:`AnswerFilter.holding`)."""
        return any(f.holding for f in self._filters)

    def finish(self) -> list[StreamEvent]:
        """The provider's stream ended (with or without a terminal event): flush.

        Filters are flushed again even after a terminal event flushed them, in
        case something arrived after it; a flush with nothing held is ``None``.
        """
        if self.ended is not None:
            return []
        events, _ = self._flush(0)
        return events

    def whole(self, response: CanonicalResponse) -> tuple[CanonicalResponse, CanonicalError | None]:
        """A whole answer through the filters, as the events a stream of it would carry.

        Returns ``response`` itself when no filter changed anything (so the
        provider's bytes can go out), else the answer the emitted events spell
        (id, model, usage and source fields kept), or the error a filter ended
        it with.
        """
        for flt in self._filters:
            flt.complete = True
        events, changed = self.feed(response_events(response))
        rest = self.finish()
        if rest:  # released only now: the answer changed
            events, changed = events + rest, True
        if not changed and self.ended is None:
            return response, None
        failure = next((e.error for e in events if isinstance(e, StreamError)), None)
        if failure is not None:
            return response, failure
        final = aggregate_events(events)
        final.id, final.model, final.created = response.id, response.model, response.created
        final.protocol, final.extra = response.protocol, response.extra
        final.usage = response.usage
        _keep_source_fields(response, final)
        return final, None

    def _flush(self, start: int) -> tuple[list[StreamEvent], bool]:
        self._flushed = True
        out: list[StreamEvent] = []
        changed = False
        for i in range(start, len(self._filters)):
            flt = self._filters[i]
            try:
                emitted = flt.on_flush()
            except Exception as exc:
                raise StageFailed(flt.name, exc) from exc
            if emitted is None:
                continue
            changed = True
            more, _ = self._run(emitted.events, i + 1)
            out.extend(more)
            if emitted.end is not None:
                out.extend(self._close(emitted.end, i + 1))
                return out, True
            if self.ended is not None:
                return out, True
        return out, changed

    def _run(self, events: list[StreamEvent], start: int) -> tuple[list[StreamEvent], bool]:
        changed = False
        filters = self._filters
        for i in range(start, len(filters)):
            if not events:
                break
            flt = filters[i]
            try:
                emitted = flt.on_events(events)
            except Exception as exc:
                raise StageFailed(flt.name, exc) from exc
            if emitted is None:
                continue
            changed = True
            events = emitted.events
            if emitted.end is not None:
                rest, _ = self._run(events, i + 1)
                return rest + self._close(emitted.end, i + 1), True
            if self.ended is not None:
                return events, True
        return events, changed

    def _close(self, end: EndAnswer, after: int) -> list[StreamEvent]:
        """Flush the filters after the one that ended, then the answer's end."""
        out: list[StreamEvent] = []
        if not self._flushed:
            out, _ = self._flush(after)
            if self.ended is not None:  # a later filter ended it while flushing
                return out
        self.ended = end
        if end.note:
            out.append(TextDelta(end.note))
        out.append(Finish(end.reason))
        return out


def _keep_source_fields(original: CanonicalResponse, final: CanonicalResponse) -> None:
    """Source-protocol fields events do not carry (a tool call's replay token, a reasoning
    item's id) go back on the parts that survived, matched by call id and by order."""
    calls = {p.id: p for p in original.content if isinstance(p, ToolCallPart) and p.extra}
    reasoning = [p for p in original.content if isinstance(p, ReasoningPart) and p.extra]
    for part in final.content:
        if isinstance(part, ToolCallPart) and part.id in calls:
            part.extra = calls[part.id].extra
        elif isinstance(part, ReasoningPart) and reasoning:
            part.extra = reasoning.pop(0).extra
