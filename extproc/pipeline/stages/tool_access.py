"""Tool access control: tools a request may not use vanish from it and from its answer.

Rules (``tool_access.rules``) allow or deny tool names per model, client key
and agent (User-Agent). A disallowed tool's definition is removed from the
request in every dialect (the model never learns of it); a ``tool_choice``
naming it falls back to ``auto`` (or to none when no tool is left); a call to
it in the answer (a model may still invent one) is swallowed with a note, or
refused with 403 (``action: error``).
"""

from __future__ import annotations

from collections.abc import Callable

from extproc.canonical import CanonicalRequest, ToolCallPart, ToolChoice
from extproc.errors import PermissionDenied
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import RequestOutcome, Stage
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.pipeline.toolgate import Block, ToolCheck, ToolVerdict
from extproc.safety.tool_access import ToolFilter, ToolPolicy, ToolScope

__all__ = ["ToolAccessStage"]

_STATE = "tool_access.filter"


class ToolAccessStage(Stage):
    name = "tool_access"

    def __init__(
        self,
        policy: ToolPolicy,
        *,
        action: str = "steer",
        policies: KeyPolicies | None = None,
        on_block: Callable[[str], None] | None = None,
    ) -> None:
        self._policy = policy
        self._error = action == "error"
        self._policies = policies
        self._on_block = on_block

    def _filter(self, ctx: RequestContext, request: CanonicalRequest) -> ToolFilter | None:
        if self._policies is not None and self._policies.disabled(ctx, self.name):
            return None
        scope = ToolScope(
            model=request.model,
            key_id=ctx.client_key_id,
            user_agent=ctx.headers.get("user-agent", ""),
            requested_model=ctx.requested_model,
        )
        return self._policy.for_scope(scope)

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> RequestOutcome:
        flt = self._filter(ctx, request)
        ctx.state[_STATE] = flt
        if flt is None or not request.tools:
            return None
        kept = [tool for tool in request.tools if flt.allows(tool.name)]
        if len(kept) == len(request.tools):
            return None
        request.tools = kept or None
        choice = request.tool_choice
        if choice is not None and choice.mode == "tool" and not flt.allows(choice.name or ""):
            request.tool_choice = ToolChoice(mode="auto") if kept else None
        elif choice is not None and choice.mode == "required" and not kept:
            request.tool_choice = None
        return None

    def tool_check(self, ctx: RequestContext, request: CanonicalRequest) -> ToolCheck | None:
        flt = ctx.state.get(_STATE)
        if not isinstance(flt, ToolFilter):
            return None
        return _AccessCheck(flt, self._error, self._on_block)


class _AccessCheck:
    name = "tool_access"

    def __init__(
        self, flt: ToolFilter, error: bool, on_block: Callable[[str], None] | None
    ) -> None:
        self._filter = flt
        self._error = error
        self._on_block = on_block

    def check(self, call: ToolCallPart) -> ToolVerdict | None:
        denial = self._filter.denial(call.name)
        if denial is None:
            return None
        if self._on_block is not None:
            self._on_block("tool")
        message = (
            f"The proxy blocked a call to the tool {call.name!r}: {denial}. "
            "Use only the tools you were given."
        )
        error = PermissionDenied(message, code="tool_not_allowed") if self._error else None
        return Block(message, error=error)
