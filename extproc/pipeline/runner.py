"""The pipeline: runs the configured stages' hooks in order for one request."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from extproc.canonical import CanonicalRequest
from extproc.pipeline.answer import AnswerChain, AnswerFilter
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import RequestOutcome, Stage
from extproc.pipeline.toolgate import ToolCallGate, ToolCheck

__all__ = ["PhaseFactory", "Pipeline"]

#: Wraps one stage hook call (timing, a trace span): ``phase(ctx, "stage.routing")``.
PhaseFactory = Callable[[RequestContext, str], AbstractContextManager[Any]]


def _overrides(stage: Stage, hook: str) -> bool:
    return getattr(type(stage), hook) is not getattr(Stage, hook)


class Pipeline:
    """Runs stages in order; only the stages that define a hook are called.

    With a ``phase`` factory, each request-level hook call runs inside
    ``phase(ctx, "stage.<name>")`` (``stage.<name>.headers`` for the headers
    hook); per-event answer filters are not wrapped (they are part of the
    translation phase).
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        phase: PhaseFactory | None = None,
        *,
        max_tool_call_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.stages = list(stages)
        self._phase = phase
        self._max_tool_call_bytes = max_tool_call_bytes
        self._headers = [s for s in self.stages if _overrides(s, "on_request_headers")]
        self._request = [s for s in self.stages if _overrides(s, "on_request")]
        self._answer = [
            s for s in self.stages if _overrides(s, "answer_filter") or _overrides(s, "tool_check")
        ]
        self._end = [s for s in self.stages if _overrides(s, "on_end")]

    def request_headers(self, ctx: RequestContext, headers: Mapping[str, str]) -> None:
        phase = self._phase
        for stage in self._headers:
            if phase is None:
                stage.on_request_headers(ctx, headers)
            else:
                with phase(ctx, f"stage.{stage.name}.headers"):
                    stage.on_request_headers(ctx, headers)

    def request(
        self, ctx: RequestContext, request: CanonicalRequest
    ) -> RequestOutcome | Awaitable[RequestOutcome]:
        """Run the request hooks; awaitable only once a stage turned out to be async."""
        return self._request_from(0, ctx, request)

    def _request_from(
        self, start: int, ctx: RequestContext, request: CanonicalRequest
    ) -> RequestOutcome | Awaitable[RequestOutcome]:
        stages = self._request
        for i in range(start, len(stages)):
            stage = stages[i]
            outcome = self._call(stage, ctx, request)
            if outcome is None:  # the common case: on to the next stage
                continue
            if inspect.isawaitable(outcome):
                return self._finish_async(outcome, i, stage, ctx, request)
            return outcome
        return None

    async def _finish_async(
        self,
        pending: Awaitable[RequestOutcome],
        index: int,
        stage: Stage,
        ctx: RequestContext,
        request: CanonicalRequest,
    ) -> RequestOutcome:
        phase = self._phase
        if phase is None:
            outcome = await pending
        else:
            with phase(ctx, f"stage.{stage.name}"):
                outcome = await pending
        if outcome is not None:
            return outcome
        rest = self._request_from(index + 1, ctx, request)
        if inspect.isawaitable(rest):
            return await rest
        return rest

    def _call(
        self, stage: Stage, ctx: RequestContext, request: CanonicalRequest
    ) -> RequestOutcome | Awaitable[RequestOutcome]:
        phase = self._phase
        if phase is None or not stage.timed:
            return stage.on_request(ctx, request)
        with phase(ctx, f"stage.{stage.name}"):
            return stage.on_request(ctx, request)

    def answer(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerChain | None:
        """This request's answer chain, or None when no stage needs its answer."""
        filters: list[AnswerFilter] = []
        checks: list[ToolCheck] = []
        gate_at: int | None = None
        makers_end = 0
        for stage in self._answer:
            flt = stage.answer_filter(ctx, request)
            if flt is not None:
                filters.append(flt)
                if flt.makes_tool_calls:
                    makers_end = len(filters)
            check = stage.tool_check(ctx, request)
            if check is not None:
                checks.append(check)
                if gate_at is None:
                    gate_at = len(filters)
        if gate_at is not None:
            # After every filter that makes tool calls (calls written as text), in
            # any stage order: each check sees them.
            gate_at = max(gate_at, makers_end)
            filters.insert(gate_at, ToolCallGate(checks, self._max_tool_call_bytes))
        return AnswerChain(filters) if filters else None

    def end(self, ctx: RequestContext) -> None:
        for stage in self._end:
            stage.on_end(ctx)
