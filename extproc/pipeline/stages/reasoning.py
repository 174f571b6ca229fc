"""Reasoning controls: what the client gets of the model's reasoning (docs/commands.md).

The mode comes from the ``x-llmproxy-reasoning-mode`` header, else the first
``reasoning.rules`` entry whose agent globs match the User-Agent, else
``reasoning.mode``:

* ``passthrough`` — reasoning goes to clients as their dialect carries it;
* ``coerce_to_content`` — reasoning becomes visible text inside
  ``<think>…</think>`` (for clients that cannot show reasoning);
* ``drop`` — reasoning is removed from the answer.

``reasoning.think_tags`` handles ``<think>…</think>`` that open models write
into plain text: ``reasoning`` turns it into reasoning parts, ``drop``
removes it, ``keep`` leaves the text alone. Tags split across stream chunks
are found (a bounded hold of a few characters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

from extproc.canonical import CanonicalRequest, ReasoningDelta, StreamEvent, TextDelta
from extproc.config.sessions import ReasoningConfig, ReasoningMode
from extproc.errors import InvalidRequest
from extproc.internalapi import REASONING_MODE_HEADER
from extproc.pipeline.answer import AnswerFilter, Emit
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Stage
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.rewrite import ThinkSplitter
from extproc.safety.tool_access import compile_globs, matches_glob

__all__ = ["MODE_HEADER", "ReasoningStage"]

MODE_HEADER = REASONING_MODE_HEADER
_MODES = ("passthrough", "coerce_to_content", "drop")
ThinkTags = Literal["keep", "reasoning", "drop"]


class ReasoningStage(Stage):
    name = "reasoning"

    def __init__(self, config: ReasoningConfig, policies: KeyPolicies | None = None) -> None:
        self._policies = policies
        self._default: ReasoningMode = config.mode
        self._rules = [(compile_globs(r.agents), r.mode) for r in config.rules]
        self._think: ThinkTags = config.think_tags

    def mode(self, ctx: RequestContext) -> ReasoningMode:
        header = ctx.headers.get(MODE_HEADER)
        if header is not None:
            value = header.strip().lower()
            if value not in _MODES:
                raise InvalidRequest(
                    f"{MODE_HEADER} must be one of {', '.join(_MODES)}, not {header!r}",
                    code="invalid_reasoning_mode",
                )
            return cast(ReasoningMode, value)
        agent = ctx.headers.get("user-agent", "")
        for pattern, mode in self._rules:
            if matches_glob(pattern, agent):
                return mode
        return self._default

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter | None:
        if self._policies is not None and self._policies.disabled(ctx, self.name):
            return None
        mode = self.mode(ctx)  # a bad header value: 400 before the request goes on
        if mode == "passthrough" and self._think == "keep":
            return None
        return ReasoningFilter(mode, self._think)


class ReasoningFilter(AnswerFilter):
    name = "reasoning"

    def __init__(self, mode: ReasoningMode, think: ThinkTags) -> None:
        self._mode = mode
        self._splitter = ThinkSplitter() if think != "keep" else None
        self._think = think
        #: Inside a coerced reasoning block (its ``<think>`` went out).
        self._open = False

    @property
    def holding(self) -> bool:
        return self._splitter is not None and self._splitter.held > 0

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        out: list[StreamEvent] = []
        changed = False
        for event in events:
            if isinstance(event, TextDelta) and self._splitter is not None:
                changed = True
                for kind, text in self._splitter.feed(event.text):
                    self._segment(kind, text, out)
            elif isinstance(event, ReasoningDelta) and self._mode != "passthrough":
                changed = True
                if self._mode == "coerce_to_content" and event.text:
                    self._reasoning_text(event.text, out)
            else:
                if not isinstance(event, TextDelta | ReasoningDelta) and self.holding:
                    # A possible tag start held back goes out before a tool call
                    # or the end: nothing overtakes held text.
                    assert self._splitter is not None
                    changed = True
                    for kind, text in self._splitter.flush():
                        self._segment(kind, text, out)
                if self._open and not isinstance(event, ReasoningDelta):
                    changed = True
                    self._close(out)
                out.append(event)
        return Emit(out) if changed else None

    def on_flush(self) -> Emit | None:
        out: list[StreamEvent] = []
        if self._splitter is not None:
            for kind, text in self._splitter.flush():
                self._segment(kind, text, out)
        if self._open:
            self._close(out)
        return Emit(out) if out else None

    def _segment(self, kind: str, text: str, out: list[StreamEvent]) -> None:
        if kind == "text":
            if self._open:
                self._close(out)
            out.append(TextDelta(text=text))
        elif self._think == "reasoning":
            if self._mode == "passthrough":
                out.append(ReasoningDelta(text=text))
            elif self._mode == "coerce_to_content":
                self._reasoning_text(text, out)

    def _reasoning_text(self, text: str, out: list[StreamEvent]) -> None:
        if not self._open:
            self._open = True
            text = "<think>\n" + text
        out.append(TextDelta(text=text))

    def _close(self, out: list[StreamEvent]) -> None:
        self._open = False
        out.append(TextDelta(text="\n</think>\n\n"))
