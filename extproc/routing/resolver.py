"""Resolve a model selector to a cluster of the plan, and explain why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from extproc.config import Config
from extproc.errors import NotFound
from extproc.routing.selector import Selector
from extproc.routing.topology import (
    ClusterPlan,
    family_cluster,
    instance_cluster,
    plan_clusters,
    pool_cluster,
)


@dataclass(frozen=True)
class RouteDecision:
    cluster: str
    #: Model to request; ``None`` when the cluster's endpoints name their own.
    model: str | None
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


class Resolver:
    """Turns selectors into :class:`RouteDecision` using the cluster plan."""

    def __init__(self, config: Config, plans: dict[str, ClusterPlan] | None = None) -> None:
        self._config = config
        self.plans = plans if plans is not None else plan_clusters(config)
        self._families = config.families()
        self._model_owner: dict[str, str] = {}
        for instance, backend in config.backends.items():
            for model in backend.models:
                self._model_owner.setdefault(model, instance)
        default = config.default_backend
        self._default_backend, _, default_model = (default or "").partition(":")
        self.default_model = default_model or None

    def resolve(self, selector: Selector) -> RouteDecision:
        if selector.backend is not None:
            cluster = self._backend_cluster(selector.backend)
            if cluster is None:
                raise NotFound(
                    f"unknown backend {selector.backend!r} in model {str(selector)!r}; "
                    f"configured: {', '.join(self._known_backends()) or 'none'}",
                    param="model",
                    code="backend_not_found",
                )
            return RouteDecision(
                cluster, selector.model, selector.params, f"backend {selector.backend!r}"
            )
        model = selector.model
        if model == "default" and self.default_model is not None:
            model = self.default_model
        if model in self._config.models:
            return RouteDecision(
                pool_cluster(model), None, selector.params, f"model route {model!r}"
            )
        if model in self._model_owner:
            instance = self._model_owner[model]
            return RouteDecision(
                instance_cluster(instance),
                model,
                selector.params,
                f"model {model!r} is listed by backend {instance!r}",
            )
        if self._default_backend:
            cluster = self._backend_cluster(self._default_backend)
            assert cluster is not None  # validated by Config
            return RouteDecision(
                cluster, model, selector.params, f"default backend {self._default_backend!r}"
            )
        raise NotFound(
            f"the model {model!r} does not exist: no model route or backend serves it and no "
            "default_backend is configured",
            param="model",
            code="model_not_found",
        )

    def _backend_cluster(self, backend: str) -> str | None:
        """An instance by exact name; else a family (several accounts fail over)."""
        if backend in self._config.backends:
            return instance_cluster(backend)
        instances = self._families.get(backend)
        if not instances:
            return None
        return instance_cluster(instances[0]) if len(instances) == 1 else family_cluster(backend)

    def _known_backends(self) -> list[str]:
        return sorted(set(self._config.backends) | set(self._families))
