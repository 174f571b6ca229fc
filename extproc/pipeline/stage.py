"""Stages and the pipeline that runs them.

A stage is a small object with optional hooks; the pipeline calls the hooks
a stage overrides, in the configured order. Stages see the canonical model
and the request context only: they never parse wire bytes or touch gRPC.

A stream hook returns the event list it was given when it changed nothing;
returning a different list tells the translator the events were rewritten
(so a same-protocol stream can no longer pass raw bytes through).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from extproc.canonical import CanonicalRequest, CanonicalResponse, StreamEvent
from extproc.pipeline.context import RequestContext


class Stage:
    """Base class; override only the hooks a feature needs."""

    name: str = "stage"

    def on_request_headers(self, ctx: RequestContext, headers: Mapping[str, str]) -> None:
        """Before the body arrives: reject early (raise a ProxyError)."""

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> None:
        """The decoded request: inspect, rewrite in place, or raise."""

    def on_response(self, ctx: RequestContext, response: CanonicalResponse) -> CanonicalResponse:
        """A complete (non-streaming) answer; return it or a replacement."""
        return response

    def on_stream_events(self, ctx: RequestContext, events: list[StreamEvent]) -> list[StreamEvent]:
        """Events decoded from one wire event of a streamed answer."""
        return events

    def on_end(self, ctx: RequestContext) -> None:
        """The exchange is over (answer sent, or failed)."""


def _overrides(stage: Stage, hook: str) -> bool:
    return getattr(type(stage), hook) is not getattr(Stage, hook)


#: Wraps one stage hook call (timing, a trace span): ``phase(ctx, "stage.routing")``.
PhaseFactory = Callable[[RequestContext, str], AbstractContextManager[Any]]


class Pipeline:
    """Runs stages in order; only the stages that define a hook are called.

    With a ``phase`` factory, each request-level hook call (headers, request,
    whole response) runs inside ``phase(ctx, "stage.<name>")``; per-chunk
    stream hooks are not wrapped (they are part of the translation phase).
    """

    def __init__(self, stages: Sequence[Stage], phase: PhaseFactory | None = None) -> None:
        self.stages = list(stages)
        self._phase = phase
        self._headers = [s for s in self.stages if _overrides(s, "on_request_headers")]
        self._request = [s for s in self.stages if _overrides(s, "on_request")]
        self._response = [s for s in self.stages if _overrides(s, "on_response")]
        self._stream = [s for s in self.stages if _overrides(s, "on_stream_events")]
        self._end = [s for s in self.stages if _overrides(s, "on_end")]

    @property
    def inspects_stream(self) -> bool:
        return bool(self._stream)

    @property
    def inspects_response(self) -> bool:
        """Some stage needs to see answers (whole or streamed)."""
        return bool(self._response or self._stream)

    def request_headers(self, ctx: RequestContext, headers: Mapping[str, str]) -> None:
        phase = self._phase
        for stage in self._headers:
            if phase is None:
                stage.on_request_headers(ctx, headers)
            else:
                with phase(ctx, f"stage.{stage.name}"):
                    stage.on_request_headers(ctx, headers)

    def request(self, ctx: RequestContext, request: CanonicalRequest) -> None:
        phase = self._phase
        for stage in self._request:
            if phase is None:
                stage.on_request(ctx, request)
            else:
                with phase(ctx, f"stage.{stage.name}"):
                    stage.on_request(ctx, request)

    def response(self, ctx: RequestContext, response: CanonicalResponse) -> CanonicalResponse:
        phase = self._phase
        for stage in self._response:
            if phase is None:
                response = stage.on_response(ctx, response)
            else:
                with phase(ctx, f"stage.{stage.name}"):
                    response = stage.on_response(ctx, response)
        return response

    def stream_events(self, ctx: RequestContext, events: list[StreamEvent]) -> list[StreamEvent]:
        for stage in self._stream:
            events = stage.on_stream_events(ctx, events)
        return events

    def end(self, ctx: RequestContext) -> None:
        for stage in self._end:
            stage.on_end(ctx)
