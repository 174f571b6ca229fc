"""The application: config turned into everything a request needs.

Built once at startup; processors (built per ext_proc stream by
:mod:`extproc.processing.factory`) read from it. Nothing here parses
configuration, talks gRPC or creates processors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backends import get_type
from extproc.auth.lockout import Lockout
from extproc.canonical import CanonicalRequest
from extproc.codecs import CODECS, Codec, get_codec
from extproc.codecs.base import REQUIRES_PROTOCOL, Adjust, ModelInfo
from extproc.config import Config
from extproc.errors import InvalidRequest, NotFound
from extproc.internalapi import REASONING_MODE_HEADER
from extproc.observe.telemetry import Telemetry
from extproc.pipeline.assemble import (
    build_dedup,
    build_lockout,
    build_pipeline,
    build_session_book,
)
from extproc.processing.admin import AdminEndpoints
from extproc.processing.attempts import AttemptLog
from extproc.routing import Resolver, apply_params, plan_clusters
from extproc.routing.diagnostics import diagnostics, reactivate
from extproc.routing.health import HealthBoard
from extproc.sessions.dedup import DedupTable
from extproc.sessions.diagnostics import sessions_report
from extproc.sessions.ids import CLIENT_SESSION_HEADERS, SESSION_ECHO_HEADERS
from extproc.sessions.session import SessionBook
from extproc.state import StateBus, build_bus, share
from extproc.state.redis_bus import RedisBus


def client_only_headers(config: Config) -> frozenset[str]:
    """Client headers no provider sees: proxy controls, and (B2BUA) session ids."""
    names = {REASONING_MODE_HEADER}
    if config.sessions.enabled:
        names.update(CLIENT_SESSION_HEADERS, SESSION_ECHO_HEADERS)
        if config.sessions.header:
            names.add(config.sessions.header)
    return frozenset(names)


@dataclass(frozen=True)
class BackendRuntime:
    """What the UPSTREAM role needs to address one backend instance."""

    instance: str
    codec: Codec
    base_path: str
    #: Credential and configured headers, set on every upstream request.
    headers: dict[str, str]
    max_tokens_field: str
    #: The provider's quirks, applied to every body encoded for it (None: none).
    adjust: Adjust | None = None

    def __repr__(self) -> str:  # never print credentials
        return f"BackendRuntime({self.instance!r}, schema={self.codec.name!r})"

    def encode(
        self, request: CanonicalRequest, model: str, params: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, str], bytes]:
        """The path and content headers, and the body, of ``request`` for this backend."""
        required = request.hints.get(REQUIRES_PROTOCOL)
        if required is not None and required != self.codec.name:
            raise InvalidRequest(
                f"this request only works with a {required} backend; the model routes to "
                f"{self.instance} ({self.codec.name})"
            )
        if params:
            apply_params(request, params)
        encoded = self.codec.encode_request(
            request, model, max_tokens_field=self.max_tokens_field, adjust=self.adjust
        )
        headers = {
            **encoded.headers,
            ":path": self.base_path + encoded.path,
            "content-type": "application/json",
            "content-length": str(len(encoded.body)),
        }
        return headers, encoded.body

    def host_headers(self) -> dict[str, str]:
        """What this host needs whatever the body: credential and configured headers."""
        # Answers are translated, so they must not come back compressed.
        return {"accept-encoding": "identity", **self.headers}

    def prepare(
        self, request: CanonicalRequest, model: str, params: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Everything to send ``request`` to this backend: headers to set, body."""
        headers, body = self.encode(request, model, params)
        headers.update(self.host_headers())
        return headers, body


def _auth_headers(style: str, key: str | None) -> dict[str, str]:
    if not key:
        return {}
    if style == "bearer":
        return {"authorization": f"Bearer {key}"}
    if style in ("x-api-key", "x-goog-api-key"):
        return {style: key}
    return {}


def build_backends(config: Config) -> dict[str, BackendRuntime]:
    out = {}
    for instance, backend in config.backends.items():
        btype = get_type(config.backend_type(instance))
        path = config.base_url(instance).split("://", 1)[1]
        base_path = "/" + path.split("/", 1)[1] if "/" in path else ""
        key = backend.api_key.get_secret_value() if backend.api_key else None
        headers = {
            **{k.lower(): v for k, v in btype.default_headers.items()},
            **{
                header: value
                for option, value in backend.options.items()
                for header in btype.options[option]
            },
            **{k.lower(): v for k, v in backend.headers.items()},
            **_auth_headers(backend.auth or btype.auth, key),
        }
        out[instance] = BackendRuntime(
            instance=instance,
            codec=get_codec(config.backend_schema(instance)),
            base_path=base_path.rstrip("/"),
            headers=headers,
            max_tokens_field=btype.max_tokens_field,
            adjust=btype.quirks.apply if btype.quirks else None,
        )
    return out


class App:
    """Everything a request needs, built from one config.

    ``carry``: the application this one replaces on a config reload. What must
    outlive a reload comes from it: the shared-state bus, the health board
    (what it learnt is kept for instances still configured), the sessions,
    lockouts and dedup windows (each kept while its config section is unchanged).
    """

    def __init__(
        self, config: Config, telemetry: Telemetry | None = None, *, carry: App | None = None
    ) -> None:
        self.config = config
        #: Metrics, spans and usage records (without a usage writer unless given).
        self.telemetry = telemetry or Telemetry.from_config(config, with_usage=False)
        self.plans = plan_clusters(config)
        #: State shared with other replicas (``state.backend``): local until
        #: ``await state_bus.start()``, which the server calls (tests need not).
        #: A reload keeps the running bus (``state`` changes need a restart).
        self.state_bus: StateBus
        if carry is not None:
            self.state_bus = carry.state_bus
        else:
            self.state_bus = build_bus(config.state)
            if isinstance(self.state_bus, RedisBus):
                bus = self.state_bus
                metrics = self.telemetry.metrics
                metrics.watch_shared_state(up=lambda: bus.up, errors=lambda: bus.errors)
                metrics.watch_queue(
                    "shared_state", depth=lambda: bus.queue_depth, dropped=lambda: bus.dropped
                )
        #: The proxy's own view of each instance's health (shared by all requests).
        self.health: HealthBoard
        if carry is not None:
            self.health = carry.health
            self.health.reconfigure(config.backends, config.routing.health)
        else:
            self.health = HealthBoard(
                config.backends, config.routing.health, redact=self.telemetry.redact
            )
            share(self.state_bus, "health", self.health)
        self.resolver = Resolver(config, self.plans, self.health)
        #: Sessions (None when off): the stages' shared memory of conversations.
        self.sessions: SessionBook | None = (
            carry.sessions
            if carry is not None
            and carry.config.sessions == config.sessions
            and carry.config.state == config.state
            else build_session_book(config, self.state_bus)
        )
        #: Proxy-key lockouts and the dedup window, kept by a reload when unchanged.
        self.lockout: Lockout | None = (
            carry.lockout
            if carry is not None
            and carry.config.auth.lockout == config.auth.lockout
            and carry.config.multi_user_mode == config.multi_user_mode
            else build_lockout(config)
        )
        self.dedup: DedupTable = (
            carry.dedup
            if carry is not None and carry.config.dedup == config.dedup
            else build_dedup(config)
        )
        if self.lockout is not None and (carry is None or self.lockout is not carry.lockout):
            share(self.state_bus, "lockout", self.lockout)
        if carry is None or self.dedup is not carry.dedup:
            share(self.state_bus, "dedup", self.dedup)
        self.pipeline = build_pipeline(
            config,
            self.resolver,
            self.telemetry,
            self.sessions,
            self.state_bus,
            lockout=self.lockout,
            dedup=self.dedup,
        )
        #: Client headers for the proxy only (session ids, proxy controls): removed
        #: before providers.
        self.client_only_headers = client_only_headers(config)
        #: The proxy's own endpoints (diagnostics, reactivation, usage).
        self.admin = AdminEndpoints(
            admin_keys=tuple(k.get_secret_value().encode() for k in config.admin_keys),
            multi_user=config.multi_user_mode,
            diagnostics=lambda query: diagnostics(self, query),
            reactivate=lambda instance: reactivate(self, instance),
            usage=self.telemetry.usage,
            sessions=self._sessions_report if self.sessions is not None else None,
        )
        #: Usage goes to Envoy's dynamic metadata (``llm``) for access logs.
        self.emit_metadata = config.usage.enabled or config.envoy.access_log
        self.backends = build_backends(config)
        #: Every header name any backend sets: Envoy shares one header map
        #: between the attempts of a request, so the UPSTREAM role removes
        #: what an earlier attempt (another account) set before adding its own.
        self.backend_header_names = frozenset(
            name for backend in self.backends.values() for name in backend.headers
        )
        #: Failover clusters whose hosts all get the same request, headers included
        #: (one credential: replicas, regions of one account): the ROUTER role sets
        #: the host headers and the first attempt needs no UPSTREAM stream.
        self.alike_hosts: dict[str, dict[str, str]] = {}
        for name, plan in self.plans.items():
            if plan.encoding != "shared":
                continue
            headers = [self.backends[e.instance].host_headers() for e in plan.endpoints]
            if all(h == headers[0] for h in headers):
                self.alike_hosts[name] = headers[0]
        self.models = self._model_list()
        #: Protocols with a codec: the frontends the proxy answers.
        self.protocols = frozenset(CODECS)
        #: The instances each request's attempts went to (UPSTREAM role -> metrics).
        self.attempt_log = AttemptLog()
        #: Capture from the roles' own messages (the default capture mode).
        self.capture_roles = config.capture.enabled and not config.capture.observers

    async def _sessions_report(self, query: dict[str, str]) -> dict[str, Any]:
        assert self.sessions is not None
        return await sessions_report(self.sessions, self.config.sessions.store, query)

    @property
    def needs_answer(self) -> bool:
        """Every answer is read (no unseen pass-through): accounting or capture needs it.

        Stages decide per request (``Pipeline.answer``).
        """
        return self.telemetry.needs_answer or self.capture_roles

    def model_info(self, model: str) -> ModelInfo:
        for entry in self.models:
            if entry.id == model:
                return entry
        raise NotFound(f"the model {model!r} does not exist", code="model_not_found", param="model")

    def _model_list(self) -> list[ModelInfo]:
        seen: dict[str, ModelInfo] = {}

        def add(model_id: str, owner: str) -> None:
            seen.setdefault(model_id, ModelInfo(id=model_id, owned_by=owner))

        for name in self.config.models:
            add(name, "llm-proxy")
        for instance, backend in self.config.backends.items():
            for model in backend.models:
                add(model, instance)
                add(f"{instance}:{model}", instance)
        if self.resolver.default_model and self.config.default_backend:
            add(self.resolver.default_model, self.config.default_backend.partition(":")[0])
        return list(seen.values())
