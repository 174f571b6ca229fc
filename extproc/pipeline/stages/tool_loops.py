"""Tool-call loops: an agent repeating the same call is told so, then stopped (on by default).

Read from the history the client resends (:mod:`extproc.guards.tool_loops`),
so it works without any state: when the newest calls repeat one call (or one
failing output) past the threshold, the request goes up with a steering note
appended to the newest tool result, telling the model it repeats itself; if
the model goes on, the request is refused with 409 in the client's dialect
and a message the agent shows its user. The user's next message starts the
count again.
"""

from __future__ import annotations

from collections.abc import Callable

from extproc.canonical import CanonicalRequest, TextPart, ToolResultPart
from extproc.errors import LoopRefused
from extproc.guards.tool_loops import (
    ToolLoopConfig,
    find_tool_loop,
    refusal_message,
    steering_note,
)
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Reject, RequestOutcome, Stage
from extproc.pipeline.stages.policies import KeyPolicies

__all__ = ["ToolLoopStage"]


class ToolLoopStage(Stage):
    name = "tool_loops"

    def __init__(
        self,
        config: ToolLoopConfig,
        *,
        policies: KeyPolicies | None = None,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._policies = policies
        self._count = count

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> RequestOutcome:
        messages = request.messages
        if not messages or not any(isinstance(p, ToolResultPart) for p in messages[-1].content):
            return None  # no tool result to answer: nothing can be looping now
        if self._policies is not None and self._policies.disabled(ctx, self.name):
            return None
        loop = find_tool_loop(messages, self._config)
        if loop is None:
            return None
        if loop.refuse:
            if self._count is not None:
                self._count("refused")
            # Not worth a retry: the same history is refused again until the user speaks.
            return Reject(LoopRefused(refusal_message(loop), headers={"x-should-retry": "false"}))
        if self._count is not None:
            self._count("steered")
        _append_note(request, steering_note(loop))
        return None


def _append_note(request: CanonicalRequest, note: str) -> None:
    """The note goes with the newest tool result (every dialect carries its text)."""
    for part in reversed(request.messages[-1].content):
        if isinstance(part, ToolResultPart):
            part.content = [*part.content, TextPart(text="\n\n" + note)]
            return
