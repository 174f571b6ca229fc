"""Tool-call repair: calls written as text become real calls; broken arguments are mended.

For requests that declare tools (on by default):

* a tool call the model wrote as *text* for a declared tool — JSON in a
  fence, a bare ``{"name": ..., "arguments": ...}``, Cline-style
  ``<tool><param>…</param></tool>``, ``<function_calls><invoke …>`` blocks,
  ``TOOL CALL: name {json}`` lines and the open models' own tool-call tags —
  is turned into a real tool call in the client's dialect. In a stream, text
  that might become a call is held (bounded) and released unchanged when it
  does not; the calls made this way pass the tool-call gate like any other,
  so every check (dangerous commands, sandbox, tool access) applies to them;
* a real call's broken argument JSON (truncated, trailing commas, single
  quotes, unquoted keys) is repaired with ``json-repair`` and checked against
  the tool's JSON schema: a missing required property is filled only from its
  ``default``, ``const`` or single-value ``enum``; forbidden extra properties
  are dropped; near-miss property and tool names (case, ``-``/``_``) are fixed
  only when unique. Values are never invented; what cannot be repaired safely
  (an ambiguous name) is refused with a note to the model.

Each repair is counted in ``llm_proxy_safety_actions_total{stage="tool_repair"}``;
captures hold the provider's answer and the repaired one side by side.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from extproc.canonical import (
    CanonicalRequest,
    Finish,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
)
from extproc.guards.repair import TextCallSniffer, repair_arguments, repair_tool_name
from extproc.pipeline.answer import AnswerFilter, Emit
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Stage
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.pipeline.toolgate import Block, Rewrite, ToolCheck, ToolVerdict

__all__ = ["ToolRepairStage"]

#: Arguments beyond this size are passed on as they are (never refused for size).
_MAX_REPAIR_BYTES = 1_000_000

#: ``count(kind)``: one repair of that kind (``text_call``, ``json_syntax``, ``tool_name``...).
Counter = Callable[[str], None]


def _tools(request: CanonicalRequest) -> dict[str, dict[str, Any] | None]:
    return {t.name: t.parameters for t in request.tools or () if t.opaque is None}


class ToolRepairStage(Stage):
    name = "tool_repair"

    def __init__(
        self,
        *,
        text_calls: bool = True,
        arguments: bool = True,
        max_hold: int = 64 * 1024,
        policies: KeyPolicies | None = None,
        count: Counter | None = None,
    ) -> None:
        self._text_calls = text_calls
        self._arguments = arguments
        self._max_hold = max_hold
        self._policies = policies
        self._count = count or (lambda kind: None)

    def _off(self, ctx: RequestContext, request: CanonicalRequest) -> bool:
        if not request.tools:
            return True
        return self._policies is not None and self._policies.disabled(ctx, self.name)

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter | None:
        if not self._text_calls or self._off(ctx, request):
            return None
        tools = _tools(request)
        return TextCallFilter(tools, self._max_hold, self._count) if tools else None

    def tool_check(self, ctx: RequestContext, request: CanonicalRequest) -> ToolCheck | None:
        if not self._arguments or self._off(ctx, request):
            return None
        tools = _tools(request)
        return _ArgumentCheck(tools, self._count) if tools else None


class TextCallFilter(AnswerFilter):
    """Holds text that might be a tool call; at the end, turns it into calls or releases it."""

    name = "tool_repair"
    makes_tool_calls = True

    def __init__(
        self, tools: Mapping[str, dict[str, Any] | None], max_hold: int, count: Counter
    ) -> None:
        self._sniffer = TextCallSniffer(tools, max_hold=max_hold)
        self._count = count
        #: Calls made from text (their Finish becomes ``tool_calls``).
        self._made = 0
        #: The next free tool-call index of the stream.
        self._next_index = 0
        self._done = False

    @property
    def holding(self) -> bool:
        return self._sniffer.holding

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        out: list[StreamEvent] = []
        changed = False
        for event in events:
            if isinstance(event, TextDelta) and not self._done:
                text = self._sniffer.feed(event.text)
                if text is event.text:
                    out.append(event)
                else:
                    changed = True
                    if text:
                        out.append(TextDelta(text=text))
                continue
            if isinstance(event, ToolCallStart | ToolCallDelta):
                # The model called tools natively: what it wrote stays text.
                self._next_index = max(self._next_index, event.index + 1)
                if self.holding:
                    changed = True
                    out += self._release()
                self._done = True
            elif isinstance(event, Finish) and self._made:
                changed = True
                event = Finish(reason="tool_calls")
            out.append(event)
        return Emit(out) if changed else None

    def on_flush(self) -> Emit | None:
        if self._done:
            return None
        self._done = True
        held, calls = self._sniffer.finish()
        if calls is None or not calls.calls:
            return Emit([TextDelta(text=held)]) if held else None
        out: list[StreamEvent] = []
        if calls.text:
            out.append(TextDelta(text=calls.text))
        tag = secrets.token_hex(4)
        for call in calls.calls:
            index = self._next_index
            self._next_index += 1
            self._made += 1
            self._count(f"text_call:{call.format}")
            out.append(ToolCallStart(index=index, id=f"call_proxy_{tag}_{index}", name=call.name))
            out.append(ToolCallDelta(index=index, arguments=call.arguments))
        return Emit(out)

    def _release(self) -> list[StreamEvent]:
        held, _ = self._sniffer.finish()
        return [TextDelta(text=held)] if held else []


class _ArgumentCheck:
    """Each complete tool call: a near-miss tool name and broken arguments mended."""

    name = "tool_repair"

    def __init__(self, tools: Mapping[str, dict[str, Any] | None], count: Counter) -> None:
        self._tools = tools
        self._count = count

    def check(self, call: ToolCallPart) -> ToolVerdict | None:
        name = call.name
        if name not in self._tools:
            fixed = repair_tool_name(name, self._tools)
            if fixed is None:
                return None  # not a declared tool (hosted tools, or the agent's problem)
            name = fixed
            self._count("tool_name")
        if len(call.arguments) > _MAX_REPAIR_BYTES:
            # Too big to repair here (the gate's own cap bounds what is held): as sent.
            return Rewrite(arguments=call.arguments, name=name) if name != call.name else None
        repaired = repair_arguments(call.arguments, self._tools.get(name))
        if repaired.error is not None:
            self._count("refused")
            return Block(
                f"The proxy could not repair the {name} tool call's arguments "
                f"({repaired.error}); it was not sent. Call the tool again with valid JSON "
                "arguments that match its schema."
            )
        for change in repaired.changes:
            self._count(change)
        if name == call.name and not repaired.changes:
            return None
        return Rewrite(arguments=repaired.arguments, name=name if name != call.name else None)
