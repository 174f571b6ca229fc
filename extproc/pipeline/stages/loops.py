"""Loop detection in answers: a model repeating itself is cut off (on by default).

Every text (and reasoning) delta of the answer goes through a
:class:`~extproc.guards.loops.LoopDetector` — linear in the generated text,
bounded memory, a few microseconds per chunk. On a loop:

* a stream ends there, cleanly in the client's dialect: finish reason
  ``stop``, a short note saying the proxy cut a loop, usage so far; the
  provider is no longer read (Envoy resets the upstream request);
* a whole answer has its repeated tail cut to the first occurrence, and the
  same note.

Envoy cannot retry a request whose answer has arrived (its retry policy acts
on status and resets only), so a looping answer is cut, not re-asked.
Per session: ``!/set(loop-detection=off)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from extproc.canonical import (
    CanonicalRequest,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallStart,
)
from extproc.guards.loops import LoopConfig, LoopDetector, LoopFound
from extproc.pipeline.answer import AnswerFilter, Emit, EndAnswer
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Stage
from extproc.pipeline.stages.policies import KeyPolicies

__all__ = ["LoopStage", "loop_note"]


def loop_note(found: LoopFound) -> str:
    sample = " ".join(found.text.split())[:80]
    return (
        f"\n\n[proxy: answer cut: the model was repeating itself ({found.repeats} times the "
        f"same {found.period} characters: {sample!r}…). Ask again, or rephrase the request.]"
    )


class LoopStage(Stage):
    name = "loop_detection"

    def __init__(
        self,
        config: LoopConfig,
        *,
        reasoning: bool = True,
        policies: KeyPolicies | None = None,
        on_loop: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._reasoning = reasoning
        self._policies = policies
        self._on_loop = on_loop

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter | None:
        if self._policies is not None and self._policies.disabled(ctx, self.name):
            return None
        return LoopFilter(self._config, self._reasoning, self._on_loop)


class LoopFilter(AnswerFilter):
    """Watches the answer; never holds anything (no added latency)."""

    name = "loop_detection"

    def __init__(
        self, config: LoopConfig, reasoning: bool, on_loop: Callable[[str], None] | None
    ) -> None:
        self._text = _Channel(config)
        self._thinking = _Channel(config) if reasoning else None
        self._on_loop = on_loop

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        for at, event in enumerate(events):
            if isinstance(event, TextDelta):
                found = self._text.feed(event.text)
                if found is not None:
                    return self._cut(events, at, found, self._text.consumed)
            elif isinstance(event, ReasoningDelta) and self._thinking is not None and event.text:
                found = self._thinking.feed(event.text)
                if found is not None and not any(
                    isinstance(e, TextDelta | ToolCallStart) for e in events[at:]
                ):
                    return self._cut(events, at, found, None)
                # (When the answer already follows — a whole answer — the loop in its
                # thinking ended by itself: it goes out as it is.)
        return None

    def _cut(
        self, events: Sequence[StreamEvent], at: int, found: LoopFound, consumed: int | None
    ) -> Emit:
        """The events up to the loop (the repeated tail of this batch cut), then the end."""
        if self._on_loop is not None:
            self._on_loop("reasoning" if consumed is None else "text")
        out = list(events[:at])
        event = events[at]
        if consumed is not None and isinstance(event, TextDelta):
            # Text offsets: this delta covers [consumed - len, consumed). Keep what lies
            # before the end of the first period; earlier deltas of this batch past it
            # (a whole answer comes as one batch) are trimmed as well.
            keep_until = found.start + found.period
            delta_start = consumed - len(event.text)
            out = _trim(out, delta_start, keep_until)
            if keep_until > delta_start:
                out.append(TextDelta(text=event.text[: keep_until - delta_start]))
        return Emit(out, end=EndAnswer(reason="stop", note=loop_note(found)))


class _Channel:
    """One detector, made only once the channel's text could hold a loop.

    No loop is found in less than :attr:`LoopConfig.min_alarm_chars` chars: until
    then the deltas are only kept, then fed as one (most answers end before).
    """

    __slots__ = ("_config", "_detector", "_pending", "_pending_chars")

    def __init__(self, config: LoopConfig) -> None:
        self._config = config
        self._detector: LoopDetector | None = None
        self._pending: list[str] = []
        self._pending_chars = 0

    @property
    def consumed(self) -> int:
        """Chars received so far."""
        detector = self._detector
        return self._pending_chars if detector is None else detector.consumed

    def feed(self, text: str) -> LoopFound | None:
        detector = self._detector
        if detector is None:
            self._pending.append(text)
            self._pending_chars += len(text)
            if self._pending_chars < self._config.min_alarm_chars:
                return None
            detector = self._detector = LoopDetector(self._config)
            text = "".join(self._pending)
            self._pending = []
        return detector.feed(text)


def _trim(events: list[StreamEvent], end_offset: int, keep_until: int) -> list[StreamEvent]:
    """``events`` (whose text ends at ``end_offset``) without text past ``keep_until``."""
    if keep_until >= end_offset:
        return events
    cut = end_offset - keep_until  # chars to drop from the end of these events' text
    out: list[StreamEvent] = []
    for event in reversed(events):
        if cut > 0 and isinstance(event, TextDelta):
            if len(event.text) <= cut:
                cut -= len(event.text)
                continue
            event = TextDelta(text=event.text[: len(event.text) - cut])
            cut = 0
        out.append(event)
    out.reverse()
    return out
