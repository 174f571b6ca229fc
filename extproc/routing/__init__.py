"""Routing: selectors, the cluster plan, and resolution."""

from extproc.routing.params import apply_params
from extproc.routing.resolver import Resolver, RouteDecision
from extproc.routing.selector import Leg, Route, Selector, parse_route, parse_selector
from extproc.routing.topology import ClusterPlan, Endpoint, plan_clusters

__all__ = [
    "ClusterPlan",
    "Endpoint",
    "Leg",
    "Resolver",
    "Route",
    "RouteDecision",
    "Selector",
    "apply_params",
    "parse_route",
    "parse_selector",
    "plan_clusters",
]
