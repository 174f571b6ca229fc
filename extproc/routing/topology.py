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

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from extproc.canonical import CanonicalRequest
from extproc.config import Config
from extproc.errors import ConfigError, ProxyError
from extproc.routing.params import apply_params
from extproc.routing.selector import parse_selector

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


def plan_clusters(config: Config) -> dict[str, ClusterPlan]:
    plans: dict[str, ClusterPlan] = {}
    for instance in config.backends:
        name = instance_cluster(instance)
        plans[name] = ClusterPlan(name, "instance", (_endpoint(config, instance, 0, None, {}),))
    for family, instances in config.families().items():
        if len(instances) > 1 and family not in config.backends:
            name = family_cluster(family)
            endpoints = tuple(
                _endpoint(config, inst, i, None, {}) for i, inst in enumerate(instances)
            )
            plans[name] = ClusterPlan(name, "family", endpoints)
    for model, route in config.models.items():
        targets: list[Endpoint] = []
        for priority, target in enumerate(route.failover):
            try:
                selector = parse_selector(target)
                # Fail at startup, not per request, on parameters that cannot apply.
                apply_params(CanonicalRequest(protocol="", model=""), selector.params)
            except ProxyError as exc:
                raise ConfigError(f"models.{model}: target {target!r}: {exc.message}") from None
            assert selector.backend is not None  # validated by Config
            targets.append(
                _endpoint(config, selector.backend, priority, selector.model, selector.params)
            )
        name = pool_cluster(model)
        plans[name] = ClusterPlan(name, "pool", tuple(targets))
    return plans
