"""Routing: selectors, the cluster plan, and resolution."""

from extproc.routing.params import apply_params
from extproc.routing.resolver import Resolver, RouteDecision
from extproc.routing.selector import Selector, parse_selector
from extproc.routing.topology import ClusterPlan, Endpoint, plan_clusters

__all__ = [
    "ClusterPlan",
    "Endpoint",
    "Resolver",
    "RouteDecision",
    "Selector",
    "apply_params",
    "parse_selector",
    "plan_clusters",
]
