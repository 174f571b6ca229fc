"""Resolve what a request asks for to a cluster of the plan, and explain why.

Order of rules (docs/routing.md): a static route replaces every request's
model; else the session's route (in-chat commands: a one-off, the session's
failover list, backend or model); else the one-off ``x-llm-route`` header
(when allowed); else the
request's ``model`` after the first matching rewrite rule. Aliases expand to
their expressions; routing expressions choose a leg (``^``: weighted, with
``[first]`` and ``[max_context]``), or go to the Envoy cluster planned for
them (``|`` and ``!`` aliases: failover and racing happen in Envoy, within
the request). Instances the :class:`~extproc.routing.health.HealthBoard`
has disabled or cooled down are skipped everywhere: a pool whose first
targets are out starts further down its list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from extproc.config import Config
from extproc.errors import (
    BackendRateLimited,
    BackendUnavailable,
    InvalidRequest,
    NotFound,
    ProxyError,
)
from extproc.routing.health import HealthBoard
from extproc.routing.selector import Leg, Route, Selector, parse_route
from extproc.routing.topology import (
    ClusterPlan,
    family_cluster,
    instance_cluster,
    plan_clusters,
    pool_cluster,
    race_cluster,
    suffix_cluster,
)

#: How deep aliases may refer to aliases.
MAX_ALIAS_DEPTH = 4


@dataclass(frozen=True)
class Candidate:
    """One leg considered by a routing decision (for diagnostics and traces)."""

    leg: str
    eligible: bool
    why: str = ""
    cluster: str | None = None
    weight: int = 1
    chosen: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "leg": self.leg,
            "eligible": self.eligible,
            "why": self.why or None,
            "cluster": self.cluster,
            "weight": self.weight,
            "chosen": self.chosen,
        }


@dataclass(frozen=True)
class RouteDecision:
    cluster: str
    #: Model to request; ``None`` when the cluster's endpoints name their own.
    model: str | None
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    #: The legs considered, when the request named a routing expression.
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class RequestFacts:
    """What routing rules may look at, besides the model."""

    #: Estimated input tokens (called only when a leg has ``max_context``).
    input_tokens: Callable[[], int] | None = None
    #: The conversation has no assistant turn yet (``[first]`` legs).
    first_turn: bool = False
    client_key_id: str | None = None
    #: The one-off ``x-llm-route`` header, when allowed.
    header_route: str | None = None
    #: The session's routing expression (in-chat commands) and why.
    session_route: str | None = None
    session_why: str = "session"
    #: A streaming request (racing aliases race only streams).
    streaming: bool = False


_NO_FACTS = RequestFacts()


class Resolver:
    """Turns what a request asks for into a :class:`RouteDecision` using the cluster plan."""

    def __init__(
        self,
        config: Config,
        plans: dict[str, ClusterPlan] | None = None,
        health: HealthBoard | None = None,
    ) -> None:
        self._config = config
        self.plans = plans if plans is not None else plan_clusters(config)
        self.health = health or HealthBoard(config.backends, config.routing.health)
        self._families = config.families()
        self._model_owner = config.model_owners()
        default = config.default_backend
        self._default_backend, _, default_model = (default or "").partition(":")
        self.default_model = default_model or None
        self._aliases = dict(config.routing.aliases)
        #: Normalized ``|`` / ``!`` alias expressions -> their planned cluster.
        self._planned: dict[str, str] = {}
        #: Each alias's kind, parsed once.
        self._alias_kinds: dict[str, str] = {}
        for name, expression in self._aliases.items():
            parsed = parse_route(expression)
            self._alias_kinds[name] = parsed.kind
            if parsed.kind == "failover":
                self._planned.setdefault(str(parsed), pool_cluster(name))
            elif parsed.kind == "race":
                self._planned.setdefault(str(parsed), race_cluster(name))
        #: Smooth weighted round robin state, per (expression, eligible legs).
        self._wrr: dict[tuple[str, tuple[int, ...]], list[int]] = {}

    # -- the request's whole model ---------------------------------------------------

    def route(
        self, model: str, facts: RequestFacts = _NO_FACTS, *, peek: bool = False
    ) -> RouteDecision:
        """The decision for a request that asked for ``model``.

        ``peek``: decide without moving weighted rotations on (diagnostics).
        """
        expression, why = self.expression(model, facts)
        decision = self._expression(expression, facts, 0, peek)
        return replace(decision, reason=f"{why}; {decision.reason}" if why else decision.reason)

    def expression(self, model: str, facts: RequestFacts = _NO_FACTS) -> tuple[str, str]:
        """The routing expression the rules give, and which rule gave it."""
        routing = self._config.routing
        if routing.static_route:
            return routing.static_route, "static route"
        if facts.session_route:
            return facts.session_route, facts.session_why
        if facts.header_route:
            return facts.header_route, "x-llm-route header"
        for rule in routing.rewrites:
            if rule.model == model.strip() and (
                not rule.clients or facts.client_key_id in rule.clients
            ):
                return rule.to, f"rewrite {rule.model!r} -> {rule.to!r}"
        return model, ""

    def _expression(self, text: str, facts: RequestFacts, depth: int, peek: bool) -> RouteDecision:
        route = parse_route(text)
        if route.kind == "single":
            selector = route.legs[0].selector
            if selector.backend is None and selector.model in self._aliases:
                return self._alias(selector, facts, depth, peek)
            return self.resolve(selector)
        if route.kind == "weighted":
            return self._weighted(route, facts, depth, peek)
        planned = self._planned.get(str(route))
        if planned is not None:
            # The same expression as an alias: its Envoy cluster.
            alias = planned.split("/", 1)[1]
            return self._alias(Selector(model=alias), facts, depth, peek)
        if route.kind == "race":
            raise InvalidRequest(
                f"model {text!r}: racing happens in Envoy on a cluster planned at startup; "
                "name the expression in routing.aliases and ask for the alias",
                param="model",
                code="invalid_model",
            )
        return self._first_available(route, facts, depth, peek)

    def _first_available(
        self, route: Route, facts: RequestFacts, depth: int, peek: bool
    ) -> RouteDecision:
        """An ad-hoc ``a|b`` (no cluster planned for it): the first leg that can take it."""
        candidates: list[Candidate] = []
        for index, leg in enumerate(route.legs):
            decision, why = self._leg(leg, facts, depth, peek)
            candidates.append(
                Candidate(
                    leg=str(leg),
                    eligible=decision is not None,
                    why=why,
                    cluster=decision.cluster if decision else None,
                    chosen=decision is not None,
                )
            )
            if decision is not None:
                rest = [
                    Candidate(str(later), eligible=False, why="not needed")
                    for later in route.legs[index + 1 :]
                ]
                return replace(
                    decision,
                    reason=f"first available leg of {str(route)!r}: {leg} ({decision.reason}); "
                    "declare the expression in routing.aliases for failover within a request",
                    candidates=tuple(candidates + rest),
                )
        raise self._none_left(str(route), candidates)

    def _alias(
        self, selector: Selector, facts: RequestFacts, depth: int, peek: bool
    ) -> RouteDecision:
        name = selector.model
        if depth >= MAX_ALIAS_DEPTH:
            raise InvalidRequest(
                f"alias {name!r} refers to aliases more than {MAX_ALIAS_DEPTH} deep",
                param="model",
                code="invalid_model",
            )
        expression = self._aliases[name]
        kind = self._alias_kinds[name]
        if kind == "race" and facts.streaming:
            decision = self._available(race_cluster(name), None, {}, f"alias {name!r} (race)")
        elif kind in ("failover", "race"):
            # A race alias serves non-streaming requests as a failover pool.
            decision = self._available(
                pool_cluster(name), None, {}, f"alias {name!r} (failover pool)"
            )
        else:
            inner = self._expression(expression, facts, depth + 1, peek)
            decision = replace(inner, reason=f"alias {name!r}: {inner.reason}")
        if selector.params:
            # The request's own ?params win over the alias's.
            decision = replace(decision, params={**decision.params, **selector.params})
        return decision

    def _weighted(self, route: Route, facts: RequestFacts, depth: int, peek: bool) -> RouteDecision:
        decisions: list[RouteDecision | None] = []
        candidates: list[Candidate] = []
        for leg in route.legs:
            decision, why = self._leg(leg, facts, depth, peek)
            decisions.append(decision)
            candidates.append(
                Candidate(
                    leg=str(leg),
                    eligible=decision is not None,
                    why=why,
                    cluster=decision.cluster if decision else None,
                    weight=leg.weight,
                )
            )
        eligible = [i for i, d in enumerate(decisions) if d is not None]
        if facts.first_turn and any(route.legs[i].first for i in eligible):
            eligible = [i for i in eligible if route.legs[i].first]
            rule = "first request of the conversation"
        else:
            eligible = [i for i in eligible if route.legs[i].weight > 0] or eligible
            rule = "weighted choice"
        if not eligible:
            raise self._none_left(str(route), candidates)
        chosen = self._pick(str(route), route.legs, eligible, peek)
        decision = decisions[chosen]
        assert decision is not None
        candidates[chosen] = replace(candidates[chosen], chosen=True)
        return replace(
            decision,
            reason=f"{rule} among {len(eligible)} of {len(route.legs)} legs: "
            f"{route.legs[chosen]} ({decision.reason})",
            candidates=tuple(candidates),
        )

    def _leg(
        self, leg: Leg, facts: RequestFacts, depth: int, peek: bool
    ) -> tuple[RouteDecision | None, str]:
        if leg.max_context is not None and facts.input_tokens is not None:
            needed = facts.input_tokens()
            if needed > leg.max_context:
                return None, f"needs about {needed} input tokens > max_context {leg.max_context}"
        try:
            decision = self._expression(str(leg.selector), facts, depth + 1, peek)
        except ProxyError as exc:
            return None, exc.message
        return decision, ""

    def _pick(self, key: str, legs: tuple[Leg, ...], eligible: list[int], peek: bool) -> int:
        """Smooth weighted round robin (nginx's): exact shares, no streaks."""
        if len(eligible) == 1:
            return eligible[0]
        weights = [max(legs[i].weight, 0) for i in eligible]
        if not any(weights):
            weights = [1] * len(eligible)
        state_key = (key, tuple(eligible))
        current = self._wrr.get(state_key) or [0] * len(eligible)
        current = [c + w for c, w in zip(current, weights, strict=True)]
        best = max(range(len(eligible)), key=lambda i: current[i])
        current[best] -= sum(weights)
        if not peek:
            if len(self._wrr) > 10_000:
                self._wrr.clear()  # bounded (expressions come from requests)
            self._wrr[state_key] = current
        return eligible[best]

    def _none_left(self, expression: str, candidates: list[Candidate]) -> ProxyError:
        reasons = "; ".join(f"{c.leg}: {c.why}" for c in candidates)
        unavailable = all("disabled" in c.why or "cooling" in c.why for c in candidates)
        if unavailable:
            return BackendUnavailable(
                f"no leg of {expression!r} can take the request now ({reasons})",
                code="backend_unavailable",
            )
        return NotFound(
            f"no leg of {expression!r} can take the request ({reasons})",
            param="model",
            code="model_not_found",
        )

    # -- one selector ----------------------------------------------------------------

    def resolve(self, selector: Selector) -> RouteDecision:
        """One selector (no operators) to a cluster, skipping unavailable instances."""
        if selector.backend is not None:
            cluster = self._backend_cluster(selector.backend)
            if cluster is None:
                raise NotFound(
                    f"unknown backend {selector.backend!r} in model {str(selector)!r}; "
                    f"configured: {', '.join(self._known_backends()) or 'none'}",
                    param="model",
                    code="backend_not_found",
                )
            return self._available(
                cluster, selector.model, selector.params, f"backend {selector.backend!r}"
            )
        model = selector.model
        if model == "default" and self.default_model is not None:
            model = self.default_model
        if model in self._config.models:
            return self._available(
                pool_cluster(model), None, selector.params, f"model route {model!r}"
            )
        if model in self._aliases:
            return self._alias(replace(selector, model=model), _NO_FACTS, 0, False)
        if model in self._model_owner:
            instance = self._model_owner[model]
            return self._available(
                instance_cluster(instance),
                model,
                selector.params,
                f"model {model!r} is listed by backend {instance!r}",
            )
        if self._default_backend:
            cluster = self._backend_cluster(self._default_backend)
            assert cluster is not None  # validated by Config
            return self._available(
                cluster, model, selector.params, f"default backend {self._default_backend!r}"
            )
        raise NotFound(
            f"the model {model!r} does not exist: no model route or backend serves it and no "
            "default_backend is configured",
            param="model",
            code="model_not_found",
        )

    def _available(
        self, cluster: str, model: str | None, params: dict[str, Any], reason: str
    ) -> RouteDecision:
        """``cluster``, or what is left of it once unavailable instances are skipped."""
        plan = self.plans[cluster]
        health = self.health
        endpoints = plan.endpoints
        start = next((i for i, e in enumerate(endpoints) if health.available(e.instance)), None)
        if start == 0:
            return RouteDecision(cluster, model, params, reason)
        if start is None:
            names = sorted({e.instance for e in endpoints})
            why = "; ".join(f"{n}: {health.why_not(n)}" for n in names)
            wait = health.seconds_left(names)
            headers = {"retry-after": str(max(1, round(wait)))} if wait is not None else {}
            message = (
                f"every backend instance for this request is unavailable ({why}); "
                "see GET /v1/diagnostics"
            )
            if all(health.state(n) == "cooling" for n in names):
                # Only rate limits: tell the client to slow down, like the provider did.
                raise BackendRateLimited(message, headers=headers)
            raise BackendUnavailable(message, headers=headers)
        skipped = ", ".join(e.instance for e in endpoints[:start])
        reason = f"{reason}; skipped unavailable {skipped}"
        suffix = suffix_cluster(cluster, start)
        if suffix in self.plans:
            return RouteDecision(suffix, model, params, reason)
        endpoint = endpoints[start]  # the last one: its own instance cluster
        return RouteDecision(
            instance_cluster(endpoint.instance),
            endpoint.model or model,
            {**endpoint.params, **params},
            reason,
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
