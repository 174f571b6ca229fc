"""The Envoy cluster plan, derived from config once and shared.

Both the Envoy bootstrap generator and the request router read this plan, so
the cluster a request is sent to always exists with the endpoints the router
expects:

* ``instance/<name>``: one backend instance (``openai.1``), one endpoint.
* ``family/<family>``: the instances of a family that has no bare instance
  of its own name (``openai.1``, ``openai.2`` asked for as ``openai:``), in
  order, as failover priorities.
* ``pool/<model>``: a configured model route's ordered ``instance:model``
  targets, as failover priorities; endpoints carry their model.

Each cluster also fixes where the provider request is encoded, so each
request costs as few gRPC messages as its cluster allows:

* ``router``: one endpoint; the ROUTER role encodes everything (body, path,
  credential) and the cluster has no UPSTREAM role.
* ``shared``: several endpoints that would get the same path and body (same
  backend type, model, parameters and base path, e.g. accounts of one
  provider); the ROUTER role encodes once, the UPSTREAM role sets only the
  chosen host's credential, from request headers alone.
* ``per-attempt``: endpoints that need different bodies (another model or
  schema); the ROUTER role sends the canonical envelope and the UPSTREAM
  role encodes it for each attempt's host.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit

from extproc.canonical import CanonicalRequest
from extproc.config import Config
from extproc.errors import ConfigError, ProxyError
from extproc.routing.params import apply_params
from extproc.routing.selector import Route, parse_route, parse_selector

ClusterKind = Literal["instance", "family", "pool"]
Encoding = Literal["router", "shared", "per-attempt"]


@dataclass(frozen=True)
class Endpoint:
    """One upstream target: a backend instance (and, in pools, a model)."""

    instance: str
    priority: int
    scheme: str
    host: str
    port: int
    base_path: str
    #: The backend type (catalog name) and the wire schema it speaks.
    backend_type: str = "openai"
    schema: str = "openai-chat"
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        default = 443 if self.tls else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ClusterPlan:
    name: str
    kind: ClusterKind
    endpoints: tuple[Endpoint, ...]

    @property
    def is_failover(self) -> bool:
        return len(self.endpoints) > 1

    @property
    def encoding(self) -> Encoding:
        """Where the provider request body is encoded (see module docs)."""
        if len(self.endpoints) == 1:
            return "router"
        first = self.endpoints[0]

        def key(e: Endpoint) -> tuple[object, ...]:
            return (e.backend_type, e.schema, e.model, e.params, e.base_path)

        if all(key(e) == key(first) for e in self.endpoints):
            return "shared"
        return "per-attempt"


def instance_cluster(instance: str) -> str:
    return f"instance/{instance}"


def family_cluster(family: str) -> str:
    return f"family/{family}"


def pool_cluster(model: str) -> str:
    return f"pool/{model}"


def _endpoint(
    config: Config, instance: str, priority: int, model: str | None, params: dict[str, Any]
) -> Endpoint:
    url = urlsplit(config.base_url(instance))
    scheme = url.scheme
    port = url.port or (443 if scheme == "https" else 80)
    return Endpoint(
        instance=instance,
        priority=priority,
        scheme=scheme,
        host=url.hostname or "",
        port=port,
        base_path=url.path.rstrip("/"),
        backend_type=config.backend_type(instance),
        schema=config.backend_schema(instance),
        model=model,
        params=params,
    )


#: Marks a suffix cluster: ``pool/smart~1`` is ``pool/smart`` without its first target.
SUFFIX = "~"


def suffix_cluster(name: str, start: int) -> str:
    return name if start == 0 else f"{name}{SUFFIX}{start}"


def plan_clusters(config: Config) -> dict[str, ClusterPlan]:
    plans: dict[str, ClusterPlan] = {}
    for instance in config.backends:
        name = instance_cluster(instance)
        plans[name] = ClusterPlan(name, "instance", (_endpoint(config, instance, 0, None, {}),))
    ordered: dict[str, tuple[ClusterKind, list[Endpoint]]] = {}
    for family, instances in config.families().items():
        if len(instances) > 1 and family not in config.backends:
            ordered[family_cluster(family)] = (
                "family",
                [_endpoint(config, inst, i, None, {}) for i, inst in enumerate(instances)],
            )
    for model, route in config.models.items():
        ordered[pool_cluster(model)] = ("pool", _targets(config, f"models.{model}", route.failover))
    for alias, expression in config.routing.aliases.items():
        route_expr = _parse(f"routing.aliases.{alias}", expression)
        if route_expr.kind in ("failover", "race"):
            legs = [str(leg.selector) for leg in route_expr.legs]
            targets = _targets(config, f"routing.aliases.{alias}", legs)
            if route_expr.kind == "failover":
                ordered[pool_cluster(alias)] = ("pool", targets)
            else:
                # All legs at one priority: hedged attempts go to other legs.
                legs_at_once = [replace(e, priority=0) for e in targets]
                ordered[race_cluster(alias)] = ("pool", legs_at_once)
                # Non-streaming requests are not raced: they fail over in order.
                ordered[pool_cluster(alias)] = ("pool", targets)
    routing = config.routing
    if routing.static_route:
        _parse("routing.static_route", routing.static_route)
    for index, rule in enumerate(routing.rewrites):
        _parse(f"routing.rewrites[{index}].to", rule.to)
    for name, (kind, endpoints) in ordered.items():
        plans[name] = ClusterPlan(name, kind, tuple(endpoints))
        if name.startswith(RACE_PREFIX):
            continue  # a race has no order to skip ahead in
        # Suffixes: when the first targets are disabled (health.py), routing
        # starts further down the list and keeps the rest as failover.
        for start in range(1, len(endpoints) - 1):
            rest = tuple(replace(e, priority=i) for i, e in enumerate(endpoints[start:]))
            suffix = suffix_cluster(name, start)
            plans[suffix] = ClusterPlan(suffix, kind, rest)
    return plans


RACE_PREFIX = "race/"


def race_cluster(alias: str) -> str:
    return f"{RACE_PREFIX}{alias}"


def _parse(where: str, expression: str) -> Route:
    try:
        return parse_route(expression)
    except ProxyError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def _targets(config: Config, where: str, targets: list[str]) -> list[Endpoint]:
    """Ordered ``backend:model`` targets (a family stands for its instances, in order)."""
    out: list[Endpoint] = []
    families = config.families()
    owners = config.model_owners()
    for target in targets:
        try:
            selector = parse_selector(target)
            # Fail at startup, not per request, on parameters that cannot apply.
            apply_params(CanonicalRequest(protocol="", model=""), selector.params)
        except ProxyError as exc:
            raise ConfigError(f"{where}: target {target!r}: {exc.message}") from None
        if selector.backend is None:
            owner = owners.get(selector.model)
            if owner is None:
                raise ConfigError(
                    f"{where}: target {target!r} names no backend and no backend lists "
                    "that model; write it as 'backend:model'"
                )
            instances = [owner]
        elif selector.backend in config.backends:
            instances = [selector.backend]
        elif selector.backend in families:
            instances = families[selector.backend]
        else:
            raise ConfigError(f"{where}: target {target!r} names an unknown backend")
        for instance in instances:
            out.append(_endpoint(config, instance, len(out), selector.model, selector.params))
    return out
