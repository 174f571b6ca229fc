"""``GET /v1/diagnostics``: every instance's health as Envoy and the proxy see it,
the routing preferences per model, and for ``?model=X`` the decision explained.

``POST /v1/diagnostics/backends/{instance}/reactivate`` ends a disable or a
cool-down. In multi-user mode both need an admin key (the ROUTER role checks).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

from extproc.errors import InvalidRequest, NotFound, ProxyError
from extproc.routing.resolver import RequestFacts
from extproc.routing.topology import instance_cluster

if TYPE_CHECKING:
    from extproc.processing.app import App

#: How long the Envoy admin API gets to answer.
ENVOY_TIMEOUT = 2.0


async def envoy_hosts(admin_port: int) -> dict[str, Any]:
    """Cluster name -> [host health] from Envoy's admin API, or ``{"error": ...}``."""
    url = f"http://127.0.0.1:{admin_port}/clusters?format=json"
    try:
        async with httpx.AsyncClient(timeout=ENVOY_TIMEOUT) as client:
            response = await client.get(url)
            response.raise_for_status()
            data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": f"Envoy's admin API at {url} did not answer: {type(exc).__name__}"}
    out: dict[str, Any] = {}
    for cluster in data.get("cluster_statuses", []):
        hosts = []
        for host in cluster.get("host_statuses", []):
            status = host.get("health_status", {})
            flags = sorted(k for k, v in status.items() if k.startswith("failed_") and v is True)
            address = host.get("address", {}).get("socket_address", {})
            hosts.append(
                {
                    "address": f"{address.get('address')}:{address.get('port_value')}",
                    "priority": int(host.get("priority", 0)),
                    "healthy": not flags
                    and status.get("eds_health_status", "HEALTHY") == "HEALTHY",
                    "flags": flags,
                }
            )
        out[cluster.get("name", "")] = hosts
    return out


def _envoy_view(app: App, envoy: dict[str, Any], instance: str) -> dict[str, Any]:
    """The instance in every cluster it is in (each cluster checks and ejects on its own)."""
    if "error" in envoy:
        return {"error": envoy["error"]}
    if instance_cluster(instance) not in envoy:
        return {"error": "Envoy reports no such cluster"}
    problems: dict[str, list[str]] = {}
    for name, plan in app.plans.items():
        # Envoy lists hosts by priority, then in configured order: as planned.
        planned = sorted(plan.endpoints, key=lambda e: e.priority)
        hosts = sorted(envoy.get(name) or [], key=lambda h: int(h["priority"]))
        for endpoint, host in zip(planned, hosts, strict=False):
            if endpoint.instance == instance and not host["healthy"]:
                problems[name] = host["flags"] or ["unhealthy"]
    return {"healthy": not problems, "unhealthy_in": problems}


def preferences(app: App) -> dict[str, Any]:
    """Model names with more than one possible target, and their order or weights."""
    config = app.config
    out: dict[str, Any] = {}
    for name, route in config.models.items():
        out[name] = {"kind": "failover", "targets": list(route.failover)}
    for name, expression in config.routing.aliases.items():
        out[name] = {"kind": "alias", "expression": expression}
    for family, instances in config.families().items():
        if len(instances) > 1 and family not in config.backends:
            out[f"{family}:*"] = {"kind": "family failover", "targets": instances}
    if config.routing.static_route:
        out["*"] = {"kind": "static route", "expression": config.routing.static_route}
    return out


async def diagnostics(app: App, query: dict[str, str]) -> dict[str, Any]:
    config = app.config
    envoy = await envoy_hosts(config.admin_port)
    instances = {}
    for name in config.backends:
        instances[name] = {
            "type": config.backend_type(name),
            "schema": config.backend_schema(name),
            "base_url": config.base_url(name),
            "models": list(config.backends[name].models),
            "proxy": app.health.snapshot(name),
            "envoy": _envoy_view(app, envoy, name),
        }
    body: dict[str, Any] = {
        "object": "diagnostics",
        "generated_at": int(time.time()),
        "instances": instances,
        "preferences": preferences(app),
    }
    model = query.get("model")
    if model:
        body["decision"] = explain(app, model, query)
    return body


def explain(app: App, model: str, query: dict[str, str]) -> dict[str, Any]:
    """What a request for ``model`` would get now (weighted rotations do not move)."""
    tokens = query.get("tokens")
    try:
        estimate = int(tokens) if tokens else None
    except ValueError:
        raise InvalidRequest("tokens must be a whole number", param="tokens") from None
    facts = RequestFacts(
        input_tokens=(lambda: estimate or 0) if estimate is not None else None,
        first_turn=query.get("first") == "true",
        client_key_id=query.get("client"),
    )
    resolver = app.resolver
    expression, rule = resolver.expression(model, facts)
    out: dict[str, Any] = {"model": model, "expression": expression, "rule": rule or None}
    try:
        decision = resolver.route(model, facts, peek=True)
    except ProxyError as exc:
        out.update(
            chosen=None, error={"status": exc.status, "code": exc.code, "message": exc.message}
        )
        return out
    plan = app.plans[decision.cluster]
    out.update(
        chosen={
            "cluster": decision.cluster,
            "model": decision.model,
            "reason": decision.reason,
            "targets": [
                {
                    "instance": e.instance,
                    "model": e.model or decision.model,
                    "priority": e.priority,
                    "available": app.health.available(e.instance),
                    "why_not": app.health.why_not(e.instance) or None,
                }
                for e in plan.endpoints
            ],
        },
        candidates=[c.as_dict() for c in decision.candidates],
    )
    return out


def reactivate(app: App, instance: str) -> dict[str, Any]:
    if not app.health.reactivate(instance):
        raise NotFound(f"no backend instance {instance!r}", code="backend_not_found")
    return {
        "object": "diagnostics.reactivation",
        "instance": instance,
        **app.health.snapshot(instance),
    }


__all__ = ["diagnostics", "envoy_hosts", "explain", "preferences", "reactivate"]
