"""Empty answers: a 200 with no content and no tool call becomes a clear error (on by default).

An agent that gets an empty answer does nothing and says nothing: the user
waits, then retries by hand. The proxy turns such an answer (no text, no
reasoning, no tool call, and not cut by ``length`` or a content filter) into
a 502 ``empty_answer`` in the client's dialect — a whole answer's error
status, or the dialect's error event at the end of a stream, whose 200 status
line has already gone out.

It is not retried: Envoy retries on the status line and on resets, before an
answer's headers go to the client; by the time a body shows the answer empty,
the attempt is over in Envoy (for whole answers and streams alike), and a
proxy-made second request is outside the design (Envoy owns retries). Clients
and agents do retry on a 5xx.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from extproc.canonical import (
    CanonicalError,
    CanonicalRequest,
    Finish,
    ReasoningDelta,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallStart,
)
from extproc.pipeline.answer import AnswerFilter, Emit, EndAnswer
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Stage
from extproc.pipeline.stages.policies import KeyPolicies

__all__ = ["EmptyAnswerStage"]

_EXEMPT = ("length", "content_filter")


class EmptyAnswerStage(Stage):
    name = "empty_answers"

    def __init__(
        self, policies: KeyPolicies | None = None, count: Callable[[], None] | None = None
    ) -> None:
        self._policies = policies
        self._count = count

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter | None:
        if self._policies is not None and self._policies.disabled(ctx, self.name):
            return None
        return EmptyAnswerFilter(self._count)


class EmptyAnswerFilter(AnswerFilter):
    """Watches for content; never holds anything."""

    name = "empty_answers"

    def __init__(self, count: Callable[[], None] | None) -> None:
        self._count = count
        self._content = False

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        if self._content:
            return None
        for at, event in enumerate(events):
            if (
                isinstance(event, ToolCallStart)
                or (isinstance(event, TextDelta) and event.text.strip())
                or (
                    isinstance(event, ReasoningDelta)
                    and (event.text.strip() or event.signature or event.redacted)
                )
            ):
                self._content = True
                return None
            if isinstance(event, Finish):
                if event.reason in _EXEMPT:
                    self._content = True  # cut by a limit: the client knows why
                    return None
                if self._count is not None:
                    self._count()
                error = CanonicalError(
                    502,
                    "the provider sent an empty answer (no text and no tool call); "
                    "send the request again",
                    type="server_error",
                    code="empty_answer",
                )
                return Emit([*events[:at], StreamError(error)], end=EndAnswer(reason="error"))
        return None
