"""Routing: resolve the request's model selector to a cluster of the plan."""

from __future__ import annotations

from extproc.canonical import CanonicalRequest
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Stage
from extproc.routing import Resolver, apply_params, parse_selector


class RoutingStage(Stage):
    name = "routing"

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> None:
        selector = parse_selector(request.model)
        decision = self._resolver.resolve(selector)
        ctx.selector = selector
        ctx.route = decision
        if decision.params:
            apply_params(request, decision.params)
        if decision.model is not None:
            request.model = decision.model
