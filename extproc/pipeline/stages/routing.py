"""Routing: resolve what the request asks for to a cluster of the plan.

Precedence (docs/commands.md): a static route > the session's route (in-chat
commands) > the request's model; and for parameters, the session's settings
> a selector's URI parameters > the request body > config defaults.
"""

from __future__ import annotations

from extproc.canonical import CanonicalRequest, Reasoning
from extproc.canonical.tokens import estimate_tokens
from extproc.errors import ProxyError
from extproc.interactive.presets import Presets
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Stage
from extproc.routing import Resolver, apply_params
from extproc.routing.resolver import RequestFacts


class RoutingStage(Stage):
    name = "routing"

    def __init__(
        self, resolver: Resolver, *, route_header: bool = False, presets: Presets | None = None
    ) -> None:
        self._resolver = resolver
        self._route_header = route_header
        self._presets = presets

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> None:
        overrides = ctx.overrides
        facts = RequestFacts(
            input_tokens=lambda: estimate_tokens(request),
            first_turn=not any(m.role == "assistant" for m in request.messages),
            client_key_id=ctx.client_key_id,
            header_route=ctx.route_header if self._route_header else None,
            streaming=request.stream,
            session_route=overrides.route,
            session_why=overrides.why or "session",
        )
        try:
            decision = self._resolver.route(request.model, facts)
        except ProxyError as exc:
            if overrides.route is not None:
                # Say where the route came from: the user set it in the chat.
                exc.message += (
                    f" (this session routes to {overrides.route!r} [{overrides.why}]: "
                    "!/unset(model, backend) or !/route-clear to drop it)"
                )
            raise
        ctx.route = decision
        if decision.params:
            apply_params(request, decision.params)
        if decision.model is not None:
            request.model = decision.model
        if overrides.params:
            apply_params(request, overrides.params)
        if overrides.preset is not None and self._presets is not None:
            self._presets.apply(overrides.preset, request.model, request)
        if overrides.thinking_budget is not None:
            reasoning = request.reasoning or Reasoning()
            reasoning.budget_tokens = overrides.thinking_budget
            reasoning.enabled = overrides.thinking_budget > 0
            request.reasoning = reasoning
