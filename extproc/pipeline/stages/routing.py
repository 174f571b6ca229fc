"""Routing: resolve what the request asks for to a cluster of the plan."""

from __future__ import annotations

from extproc.canonical import CanonicalRequest
from extproc.canonical.tokens import estimate_tokens
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Stage
from extproc.routing import Resolver, apply_params
from extproc.routing.resolver import RequestFacts


class RoutingStage(Stage):
    name = "routing"

    def __init__(self, resolver: Resolver, *, route_header: bool = False) -> None:
        self._resolver = resolver
        self._route_header = route_header

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> None:
        facts = RequestFacts(
            input_tokens=lambda: estimate_tokens(request),
            first_turn=not any(m.role == "assistant" for m in request.messages),
            client_key_id=ctx.client_key_id,
            header_route=ctx.route_header if self._route_header else None,
            streaming=request.stream,
        )
        decision = self._resolver.route(request.model, facts)
        ctx.route = decision
        if decision.params:
            apply_params(request, decision.params)
        if decision.model is not None:
            request.model = decision.model
