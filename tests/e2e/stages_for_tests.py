"""Custom stages the e2e tests load into the real proxy (``pipeline.custom``).

They exercise the stage contract itself through Envoy: ending an answer early
(and cancelling the upstream) and answering without a backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from extproc.canonical import CanonicalRequest, CanonicalResponse, StreamEvent, TextDelta, TextPart
from extproc.pipeline import AnswerFilter, Emit, EndAnswer, RequestContext, Respond, Stage

#: After this many text deltas the answer is cut.
CUT_AFTER = 3
NOTE = "[the proxy cut this answer]"


class _Cut(AnswerFilter):
    name = "cut"

    def __init__(self) -> None:
        self.seen = 0

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        for i, event in enumerate(events):
            if isinstance(event, TextDelta):
                self.seen += 1
                if self.seen > CUT_AFTER:
                    return Emit(list(events[:i]), end=EndAnswer("length", note=NOTE))
        return None


class CutStage(Stage):
    """Cuts answers whose last user message says 'cut me'."""

    name = "cut"

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter | None:
        last = request.messages[-1] if request.messages else None
        text = "".join(p.text for p in last.content if isinstance(p, TextPart)) if last else ""
        return _Cut() if "cut me" in text else None

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> Respond | None:
        last = request.messages[-1] if request.messages else None
        text = "".join(p.text for p in last.content if isinstance(p, TextPart)) if last else ""
        if text.strip() == "ping the proxy":
            return Respond(
                CanonicalResponse(
                    id="proxy-answer",
                    model=request.model,
                    content=[TextPart("pong from a stage")],
                    finish_reason="stop",
                )
            )
        return None


def cut_stage(config: Any) -> Stage:
    return CutStage()
