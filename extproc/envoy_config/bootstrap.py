"""Config -> Envoy bootstrap. The only module that writes Envoy configuration.

The bootstrap is plain data (dicts in Envoy's v3 JSON/YAML shape) and is
checked by the real Envoy (``envoy --mode validate``) in the tests.
(envoy-data-plane's betterproto2 messages were tried as a typed builder and
rejected: their field-name mangling breaks real Envoy field names such as
``consecutive_5xx``, and every ``Any`` payload needs manual registration.)

Shape (see docs/architecture.md):

* listener ``main`` -> HTTP connection manager -> ext_proc (ROUTER role) ->
  router. One route per cluster of the plan, matched on ``x-llm-cluster``
  (set by the ROUTER role, stripped before upstream); no route timeout, an
  idle timeout instead; retries that move to the next priority.
* one cluster per plan entry with endpoints by priority, each tagged with
  ``llm`` metadata (instance, model, params); active health checks, outlier
  detection, TLS with SNI per endpoint; its upstream filter chain runs
  ext_proc (UPSTREAM role) before the codec.
* cluster ``extproc`` (HTTP/2) for the gRPC service.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from backends import get_type
from extproc.config import Config
from extproc.internalapi import (
    CLUSTER_HEADER,
    GENERATION_METADATA,
    HEALTH_PATH,
    HOST_METADATA_ATTRIBUTE,
    HOSTS_ALIKE_HEADER,
    METADATA_NAMESPACE,
    OBSERVE_CLIENT_ROLE,
    OBSERVE_PROVIDER_ROLE,
    READY_PATH,
    ROLE_METADATA,
    UPSTREAM_SESSION_HEADER,
)
from extproc.routing import ClusterPlan, Endpoint, plan_clusters
from extproc.routing.topology import RACE_PREFIX

EXTPROC_CLUSTER = "extproc"
#: The capture process's gRPC service (observer roles), when capture is on.
CAPTURE_CLUSTER = "extproc_capture"

_T = "type.googleapis.com/"
_HCM = _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_OTEL_ACCESS_LOG = (
    _T + "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig"
)
_EXT_PROC = _T + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_EXT_PROC_PER_ROUTE = _T + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
_HEALTH_CHECK_FILTER = _T + "envoy.extensions.filters.http.health_check.v3.HealthCheck"
_ROUTER = _T + "envoy.extensions.filters.http.router.v3.Router"
_UPSTREAM_CODEC = _T + "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
_HEADER_MUTATION = _T + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"


def _b_leg_mutation() -> dict[str, Any]:
    """Per attempt: the provider sees ``x-session-id: leg-<request id>-<attempt>`` (B2BUA).

    Upstream filters run once per attempt (retries and failover hops), so each
    attempt gets its own id. It is built from Envoy's own request id (which
    providers receive anyway) and never from the client's session id. Envoy
    shares one request header map between attempts: overwrite, and remove
    nothing a later attempt needs.
    """
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": _HEADER_MUTATION,
            "mutations": {
                "request_mutations": [
                    {
                        "append": {
                            "header": {
                                "key": UPSTREAM_SESSION_HEADER,
                                "value": "leg-%REQ(x-request-id)%-%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                            },
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                        }
                    }
                ]
            },
        },
    }


_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS = _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_CEL_FILTER = _T + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
_STDOUT_LOG = _T + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
_REQ_WITHOUT_QUERY = "envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"
_PREVIOUS_PRIORITIES = (
    _T + "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"
)
_PREVIOUS_HOSTS = _T + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
_DOWNSTREAM_CONNECTIONS = (
    _T + "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)

#: Room for headers on top of the body limits in Envoy's buffers.
_BUFFER_SLACK = 1024 * 1024


def _duration(seconds: float) -> str:
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# Stands for the CA bundle's path while a generation is computed.
_ANY_CA = "ca-bundle"


def default_ca_file() -> str:
    """The CA bundle Envoy uses to verify providers (certifi's, portable)."""
    import certifi

    return str(certifi.where())


def build_bootstrap(
    config: Config, *, ca_file: str | None = None, baseline_cluster: str | None = None
) -> dict[str, Any]:
    """The whole Envoy bootstrap for ``config`` as plain data.

    ``baseline_cluster`` builds the benchmark's "Envoy alone" variant: the
    same listener and clusters without any ext_proc filter, every request
    routed statically to that cluster.

    Every ext_proc stream carries the bootstrap's generation (a hash of the
    rest of it) as gRPC metadata: after a reload, an extproc serves each
    Envoy with the config that Envoy was built from while the old one drains.
    """
    bootstrap = _build(config, ca_file, baseline_cluster)
    # The generation does not depend on where the CA bundle lives (certifi's
    # path is the virtualenv's): the extproc computes it from the config alone.
    _stamp_generation(bootstrap, generation_of(_build(config, _ANY_CA, baseline_cluster)))
    return bootstrap


def generation_of(bootstrap: dict[str, Any]) -> str:
    """The generation of a bootstrap built without one: a short hash of its text."""
    return hashlib.sha256(render(bootstrap).encode()).hexdigest()[:16]


def bootstrap_generation(config: Config) -> str:
    """The generation Envoy's ext_proc streams carry for ``config`` (see build_bootstrap)."""
    return generation_of(_build(config, _ANY_CA, None))


def _stamp_generation(node: Any, generation: str) -> None:
    if isinstance(node, dict):
        metadata = node.get("initial_metadata")
        if isinstance(metadata, list) and any(m.get("key") == ROLE_METADATA for m in metadata):
            metadata.append({"key": GENERATION_METADATA, "value": generation})
        for value in node.values():
            _stamp_generation(value, generation)
    elif isinstance(node, list):
        for value in node:
            _stamp_generation(value, generation)


def _build(config: Config, ca_file: str | None, baseline_cluster: str | None) -> dict[str, Any]:
    plans = plan_clusters(config)
    if baseline_cluster is not None and baseline_cluster not in plans:
        raise ValueError(f"no cluster {baseline_cluster!r} in the plan")
    grpc_limit = max(config.limits.max_request_bytes, config.limits.max_response_bytes) * 2
    grpc_limit += _BUFFER_SLACK
    with_ext_proc = baseline_cluster is None
    clusters = [_extproc_cluster(config, grpc_limit)] if with_ext_proc else []
    if with_ext_proc and _observers(config):
        clusters.append(
            _extproc_cluster(config, grpc_limit, CAPTURE_CLUSTER, config.capture.grpc_port)
        )
    if with_ext_proc and _envoy_traces(config):
        clusters.append(_collector_cluster(config))
    listeners = _listeners(config, plans, grpc_limit, baseline_cluster)
    if config.envoy.stats_port and baseline_cluster is None:
        listeners.append(_stats_listener(config))
        clusters.append(_admin_cluster(config))
    clusters += [
        _llm_cluster(config, plan, ca_file, grpc_limit, with_ext_proc) for plan in plans.values()
    ]
    return {
        "node": {"id": "llm-proxy", "cluster": "llm-proxy"},
        "admin": {"address": _address("127.0.0.1", config.admin_port)},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": _DOWNSTREAM_CONNECTIONS,
                        "max_active_downstream_connections": config.limits.max_connections,
                    },
                }
            ]
        },
        "static_resources": {
            "listeners": listeners,
            "clusters": clusters,
        },
    }


def render(bootstrap: dict[str, Any]) -> str:
    """YAML text for humans and Envoy (JSON is valid YAML; this is stable)."""
    import yaml

    return yaml.safe_dump(bootstrap, sort_keys=False, default_flow_style=False, width=100)


# -- listener ----------------------------------------------------------------


def _observers(config: Config) -> bool:
    """Capture from Envoy's side: the observer filters and the capture process."""
    return config.capture.enabled and config.capture.observers


def _grpc_service(
    config: Config, grpc_limit: int, role: str, cluster: str = EXTPROC_CLUSTER
) -> dict[str, Any]:
    return {
        "envoy_grpc": {
            "cluster_name": cluster,
            "max_receive_message_length": grpc_limit,
        },
        "timeout": _duration(max(config.timeouts.extproc_message, 1.0)),
        "initial_metadata": [{"key": ROLE_METADATA, "value": role}],
    }


def _observer(config: Config, grpc_limit: int, role: str) -> dict[str, Any]:
    """An ext_proc filter in observability mode: it sees bytes, never delays them.

    Envoy sends headers and body chunks without waiting for answers, so wire
    capture adds no round trip to any request.
    """
    typed: dict[str, Any] = {
        "@type": _EXT_PROC,
        # A process of its own (extproc/server/capture_process.py): capture
        # work never competes with the ROUTER role for the interpreter.
        "grpc_service": _grpc_service(config, grpc_limit, role, CAPTURE_CLUSTER),
        "observability_mode": True,
        # Capture never breaks traffic: without the capture service requests
        # go on (the gap shows in the capture process's log and metrics).
        "failure_mode_allow": True,
        "processing_mode": {
            "request_header_mode": "SEND",
            "response_header_mode": "SEND",
            "request_body_mode": "STREAMED",
            "response_body_mode": "STREAMED",
            "request_trailer_mode": "SKIP",
            "response_trailer_mode": "SKIP",
        },
    }
    if role == OBSERVE_PROVIDER_ROLE:
        typed["request_attributes"] = [HOST_METADATA_ATTRIBUTE]  # which backend instance
    return {"name": "envoy.filters.http.ext_proc", "typed_config": typed}


#: The attempt log: one OpenTelemetry log record per upstream attempt, streamed in
#: batches to the extproc's LogsService (extproc/server/attempt_log.py), which
#: feeds the health board. Off the request path: no ext_proc message per attempt.
ATTEMPT_LOG_NAME = "llm-attempts"
ATTEMPT_LOG_FIELDS = {
    "instance": "%UPSTREAM_METADATA(llm:instance)%",
    "status": "%RESPONSE_CODE%",
    "retry_after": "%RESP(retry-after)%",
}


def _attempt_log(config: Config) -> dict[str, Any]:
    return {
        "name": "envoy.access_loggers.open_telemetry",
        "typed_config": {
            "@type": _OTEL_ACCESS_LOG,
            "common_config": {
                "log_name": ATTEMPT_LOG_NAME,
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": EXTPROC_CLUSTER}},
                # Health news travels within this long; batches keep it cheap.
                "buffer_flush_interval": _duration(ATTEMPT_LOG_FLUSH),
                "buffer_size_bytes": 16384,
            },
            "body": {"string_value": "attempt"},
            "attributes": {
                "values": [
                    {"key": key, "value": {"string_value": value}}
                    for key, value in ATTEMPT_LOG_FIELDS.items()
                ]
            },
        },
    }


#: Seconds Envoy buffers attempt records before sending them.
ATTEMPT_LOG_FLUSH = 0.02


def _router_ext_proc(config: Config, grpc_limit: int) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": _EXT_PROC,
            "grpc_service": _grpc_service(config, grpc_limit, "router"),
            # Fail closed: without the processor nothing is forwarded.
            "failure_mode_allow": False,
            "message_timeout": _duration(config.timeouts.extproc_message),
            "processing_mode": {
                "request_header_mode": "SEND",
                "response_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "response_body_mode": "BUFFERED",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
            # Streams switch the response body to STREAMED per request.
            "allow_mode_override": True,
            # x-envoy-* headers are Envoy's: by default a processor's change to them is
            # rejected (counted in ext_proc.rejected_header_mutations), and the attempt
            # count Envoy adds to every answer reached clients. The ROUTER role removes it.
            "mutation_rules": {"allow_envoy": True},
            # Which host answered (instance, schema): read on the response side.
            "response_attributes": [HOST_METADATA_ATTRIBUTE],
            "metadata_options": {"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}},
        },
    }


def _route(config: Config, plan: ClusterPlan) -> dict[str, Any]:
    action: dict[str, Any] = {
        "cluster": plan.name,
        # Generations can be long: no total timeout unless configured; an
        # idle timeout cuts streams that stop sending.
        "timeout": _duration(config.timeouts.request),
        "idle_timeout": _duration(config.timeouts.stream_idle),
        "auto_host_rewrite": True,
        "retry_policy": _retry_policy(config, plan),
    }
    if plan.name.startswith(RACE_PREFIX):
        # Racing legs: Envoy's request hedging. When the first attempt has no
        # response headers after routing.race_delay, the next leg is sent too
        # (a different host: previous_hosts), nothing is cancelled, and the
        # first answer's headers win; the other attempts are reset.
        action["hedge_policy"] = {"hedge_on_per_try_timeout": True}
        policy = action["retry_policy"]
        policy["per_try_timeout"] = _duration(config.routing.race_delay)
        policy.pop("retry_priority", None)  # every leg at priority 0
    return {
        "name": plan.name,
        "match": {
            "prefix": "/",
            "headers": [{"name": CLUSTER_HEADER, "string_match": {"exact": plan.name}}],
        },
        "route": action,
    }


def _retry_policy(config: Config, plan: ClusterPlan) -> dict[str, Any]:
    if not plan.is_failover:
        # One target: retry only what never reached it.
        return {"retry_on": "connect-failure,refused-stream", "num_retries": 1}
    retry_on = ["connect-failure", "refused-stream", "reset", "5xx"]
    policy: dict[str, Any] = {}
    codes = [429] if config.retry.retry_on_429 else []
    if config.retry.retry_on_auth_failure:
        codes += [401, 403]
    if codes:
        retry_on.append("retriable-status-codes")
        policy["retriable_status_codes"] = codes
    retries = config.retry.pool_retries
    if retries is None:
        retries = len(plan.endpoints) - 1
    policy.update(
        {
            "retry_on": ",".join(retry_on),
            "num_retries": retries,
            # Each retry moves on to the next priority (the next target).
            "retry_priority": {
                "name": "envoy.retry_priorities.previous_priorities",
                "typed_config": {"@type": _PREVIOUS_PRIORITIES, "update_frequency": 1},
            },
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": _PREVIOUS_HOSTS},
                }
            ],
            "host_selection_retry_max_attempts": 5,
            **(
                {"per_try_timeout": _duration(config.timeouts.attempt)}
                if config.timeouts.attempt > 0
                else {}
            ),
            "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.1s"},
        }
    )
    return policy


#: CEL: the request's dialect, judged like the ROUTER role does it
#: (extproc/processing/frontends.py:dialect_for) for its own errors.
_IS_ANTHROPIC = (
    "(request.path.startsWith('/anthropic/') || request.path.startsWith('/v1/messages')"
    " || 'anthropic-version' in request.headers)"
)
_IS_GEMINI = (
    "(request.path.startsWith('/v1beta/') || request.path.matches('^/v1/models/[^/]+:')"
    " || 'x-goog-api-key' in request.headers || request.query.contains('key='))"
)
_UNAVAILABLE = (
    "the proxy's processing service is unavailable; the request was not sent to any provider"
)

#: The same error in each client dialect: (extra CEL condition, status, body).
_DIALECT_ERRORS: list[tuple[str, int, dict[str, Any]]] = [
    (
        _IS_ANTHROPIC,
        529,  # Anthropic clients retry "overloaded"
        {"type": "error", "error": {"type": "overloaded_error", "message": _UNAVAILABLE}},
    ),
    (
        _IS_GEMINI,
        503,
        {"error": {"code": 503, "message": _UNAVAILABLE, "status": "UNAVAILABLE"}},
    ),
    (
        "true",
        503,
        {
            "error": {
                "message": _UNAVAILABLE,
                "type": "service_unavailable",
                "code": "proxy_unavailable",
            }
        },
    ),
]


def _local_reply_config() -> dict[str, Any]:
    # When the ext_proc service is unreachable Envoy fails closed with a bare
    # 500; give the client a clear error in its own dialect instead. Replies
    # the proxy makes itself never match (their details start with
    # "llm_proxy"), and other local replies go through the ROUTER role.
    mappers = []
    for condition, status, body in _DIALECT_ERRORS:
        expression = f"response.code_details.startsWith('ext_proc') && {condition}"
        mappers.append(
            {
                "filter": {
                    "extension_filter": {
                        "name": "envoy.access_loggers.extension_filters.cel",
                        "typed_config": {"@type": _CEL_FILTER, "expression": expression},
                    }
                },
                "status_code": status,
                "headers_to_add": [
                    {
                        "header": {"key": "retry-after", "value": "1"},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
                "body_format_override": {
                    "json_format": body,
                    "content_type": "application/json",
                },
            }
        )
    return {"mappers": mappers}


#: Facts the ROUTER role puts in the ``llm`` dynamic metadata for access logs
#: (extproc/observe/telemetry.py).
ACCESS_LOG_FIELDS = (
    "frontend",
    "backend",
    "model",
    "session",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_usd",
    "finish_reason",
    "ttft_ms",
    "tokens_saved",
)


def _access_log() -> list[dict[str, Any]]:
    fields = {
        "time": "%START_TIME%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "method": "%REQ(:METHOD)%",
        # Without the query: a Gemini client's ?key= must never reach a log line.
        "path": "%REQ_WITHOUT_QUERY(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "flags": "%RESPONSE_FLAGS%",
        "cluster": "%UPSTREAM_CLUSTER%",
        "upstream": "%UPSTREAM_HOST%",
        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        "duration_ms": "%DURATION%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        **{name: f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{name})%" for name in ACCESS_LOG_FIELDS},
    }
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": _STDOUT_LOG,
                "log_format": {
                    "json_format": fields,
                    "formatters": [
                        {
                            "name": "envoy.formatter.req_without_query",
                            "typed_config": {"@type": _T + _REQ_WITHOUT_QUERY},
                        }
                    ],
                },
            },
        }
    ]


def _listeners(
    config: Config, plans: dict[str, ClusterPlan], grpc_limit: int, baseline: str | None
) -> list[dict[str, Any]]:
    """The main listener, and the dedicated Anthropic one (same routes and filters).

    Claude Code and other Anthropic clients append ``/v1/messages`` to their
    base URL; on their own port that URL needs no ``/anthropic`` prefix.
    """
    listeners = [_listener(config, plans, grpc_limit, baseline, "main", config.port)]
    if config.anthropic_port and baseline is None:
        listeners.append(
            _listener(config, plans, grpc_limit, baseline, "anthropic", config.anthropic_port)
        )
    return listeners


def _liveness_route() -> dict[str, Any]:
    """``GET /health``: Envoy itself answers, whatever the extproc replicas do."""
    return {
        "name": "health",
        "match": {"path": HEALTH_PATH, "headers": [_method("GET")]},
        "direct_response": {"status": 200, "body": {"inline_string": '{"status":"ok"}'}},
        "response_headers_to_add": [
            {
                "header": {"key": "content-type", "value": "application/json"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        # No ext_proc message for a probe: liveness must not depend on a replica.
        "typed_per_filter_config": {
            "envoy.filters.http.ext_proc": {"@type": _EXT_PROC_PER_ROUTE, "disabled": True}
        },
    }


def _method(name: str) -> dict[str, Any]:
    return {"name": ":method", "string_match": {"exact": name}}


def _readiness_filter() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.health_check",
        "typed_config": {
            "@type": _HEALTH_CHECK_FILTER,
            "pass_through_mode": True,
            "headers": [{"name": ":path", "string_match": {"exact": READY_PATH}}],
        },
    }


def _listener(
    config: Config,
    plans: dict[str, ClusterPlan],
    grpc_limit: int,
    baseline: str | None,
    name: str,
    port: int,
) -> dict[str, Any]:
    if baseline is not None:
        static = _route(config, plans[baseline])
        del static["match"]["headers"]
        routes = [static]
    else:
        routes = [_liveness_route(), *(_route(config, plan) for plan in plans.values())]
        routes.append(
            {
                "name": "unrouted",
                "match": {"prefix": "/"},
                "direct_response": {"status": 404, "body": {"inline_string": "no route"}},
            }
        )
    router: dict[str, Any] = {"@type": _ROUTER}
    if baseline is None:
        router["upstream_log"] = [_attempt_log(config)]
    filters = [{"name": "envoy.filters.http.router", "typed_config": router}]
    if baseline is None:
        filters.insert(0, _router_ext_proc(config, grpc_limit))
        # Readiness: a draining or failed Envoy answers 503 itself; otherwise the
        # ROUTER role answers (so no healthy extproc replica means 503 too).
        filters.insert(0, _readiness_filter())
        if _observers(config):
            # First in the chain: it sees the client's request before the ROUTER
            # role changes it, and the answer after the ROUTER translated it.
            filters.insert(0, _observer(config, grpc_limit, OBSERVE_CLIENT_ROLE))
    hcm: dict[str, Any] = {
        "@type": _HCM,
        "stat_prefix": "llm" if name == "main" else f"llm_{name}",
        "codec_type": "AUTO",
        "use_remote_address": True,
        # The client address the proxy's lockout uses is the x-forwarded-for
        # entry Envoy trusts: the same number of trusted hops on both sides.
        "xff_num_trusted_hops": config.auth.trusted_hops,
        "normalize_path": True,
        "merge_slashes": True,
        "stream_idle_timeout": _duration(config.timeouts.stream_idle),
        "request_timeout": "0s",
        "request_headers_timeout": "30s",
        # Clients and logs can correlate by the request id the proxy used.
        "always_set_request_id_in_response": True,
        "common_http_protocol_options": {"idle_timeout": "300s"},
        "route_config": {
            "name": "llm",
            "virtual_hosts": [
                {
                    "name": "llm",
                    "domains": ["*"],
                    "routes": routes,
                    # Which attempt answered (capture, attempt metrics); the
                    # ROUTER role removes it before the client.
                    "include_attempt_count_in_response": True,
                }
            ],
            "request_headers_to_remove": [CLUSTER_HEADER],
        },
        "http_filters": filters,
    }
    if baseline is None:
        hcm["local_reply_config"] = _local_reply_config()
    if config.envoy.access_log:
        hcm["access_log"] = _access_log()
    if baseline is None and _envoy_traces(config):
        hcm["tracing"] = _tracing(config)
    return {
        "name": name,
        "address": _address(config.host, port),
        # Bounds the request body (413 beyond) and every per-connection buffer.
        "per_connection_buffer_limit_bytes": config.limits.max_request_bytes,
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


# -- Envoy's own metrics --------------------------------------------------------

ADMIN_CLUSTER = "envoy_admin"


def _stats_listener(config: Config) -> dict[str, Any]:
    """``GET /stats/prometheus`` of Envoy's admin, and nothing else of it, on ``stats_port``."""
    assert config.envoy.stats_port is not None
    hcm = {
        "@type": _HCM,
        "stat_prefix": "envoy_stats",
        "codec_type": "AUTO",
        "route_config": {
            "name": "envoy_stats",
            "virtual_hosts": [
                {
                    "name": "envoy_stats",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {
                                "path": "/stats/prometheus",
                                "headers": [_method("GET")],
                            },
                            "route": {"cluster": ADMIN_CLUSTER},
                        },
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 404},
                        },
                    ],
                }
            ],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
    }
    return {
        "name": "envoy_stats",
        "address": _address(config.host, config.envoy.stats_port),
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def _admin_cluster(config: Config) -> dict[str, Any]:
    return {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _address("127.0.0.1", config.admin_port)}}
                    ]
                }
            ],
        },
    }


# -- clusters ----------------------------------------------------------------


# -- tracing -------------------------------------------------------------------

COLLECTOR_CLUSTER = "otel_collector"
_OTEL_TRACER = "envoy.config.trace.v3.OpenTelemetryConfig"


def _envoy_traces(config: Config) -> bool:
    return config.tracing.enabled and config.tracing.envoy_collector is not None


def _tracing(config: Config) -> dict[str, Any]:
    """Envoy's spans (request, each ext_proc call, each upstream attempt) go to the
    collector; the ext_proc streams carry the trace context to the proxy's spans."""
    return {
        "random_sampling": {"value": config.tracing.sample_percent},
        "spawn_upstream_span": True,
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": _T + _OTEL_TRACER,
                "grpc_service": {
                    "envoy_grpc": {"cluster_name": COLLECTOR_CLUSTER},
                    "timeout": "5s",
                },
                "service_name": f"{config.tracing.service_name}-envoy",
            },
        },
    }


def _collector_cluster(config: Config) -> dict[str, Any]:
    collector = config.tracing.envoy_collector
    assert collector is not None
    host, _, port = collector.rpartition(":")
    host = host.strip("[]")
    return {
        "name": COLLECTOR_CLUSTER,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                "@type": _T + _HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": COLLECTOR_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, int(port))}}]}],
        },
    }


def _extproc_cluster(
    config: Config, grpc_limit: int, name: str = EXTPROC_CLUSTER, port: int | None = None
) -> dict[str, Any]:
    host = config.grpc_host
    # The main cluster lists every extproc worker (grpc_port + index); the
    # capture cluster is one process.
    ports = (
        [config.grpc_port + index for index in range(config.workers)]
        if port is None and name == EXTPROC_CLUSTER
        else [port or config.grpc_port]
    )
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "per_connection_buffer_limit_bytes": grpc_limit,
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": 100_000,
                    "max_pending_requests": 100_000,
                    "max_requests": 100_000,
                }
            ]
        },
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                "@type": _T + _HTTP_OPTIONS,
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                        "initial_stream_window_size": 16 * 1024 * 1024,
                        "initial_connection_window_size": 64 * 1024 * 1024,
                    }
                },
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _address(host, each)}} for each in ports
                    ]
                }
            ],
        },
    }
    if name == EXTPROC_CLUSTER and (len(ports) > 1 or not _is_ip(host)):
        # Several workers, or a DNS name that may stand for several pods (a
        # Kubernetes Service): each replica is health-checked.
        cluster.update(_replica_health())
    return cluster


def _replica_health() -> dict[str, Any]:
    """Several extproc workers: new streams avoid a dead or draining one within a second.

    gRPC health (NOT_SERVING while a worker drains, no answer once it is gone)
    takes a replica out at the first failed check; a refused connection ejects
    it at once (local-origin outlier detection). Panic mode is off: with no
    healthy worker the proxy fails closed (the ext_proc local reply, 503) and
    recovers by itself when the supervisor has restarted them.
    """
    return {
        "health_checks": [
            {
                "timeout": "0.5s",
                "interval": "0.5s",
                "no_traffic_interval": "0.5s",
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                "reuse_connection": True,
                "grpc_health_check": {},
            }
        ],
        "outlier_detection": {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 1,
            "enforcing_consecutive_local_origin_failure": 100,
            "interval": "0.5s",
            "base_ejection_time": "1s",
            "max_ejection_percent": 100,
            # Envoy-side 5xx counting is for HTTP upstreams, not these streams.
            "enforcing_consecutive_5xx": 0,
            "enforcing_success_rate": 0,
        },
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
    }


def _upstream_roles(config: Config, grpc_limit: int, plan: ClusterPlan) -> list[dict[str, Any]]:
    """The UPSTREAM role's filter; in ``shared`` clusters skipped when the ROUTER role
    marked the request (its hosts all get the same headers: it set them already)."""
    if plan.encoding == "per-attempt":
        return [_upstream_ext_proc(config, grpc_limit, True)]
    skip_when_alike = {
        "name": "envoy.filters.http.match_delegate",
        "typed_config": {
            "@type": _T + "envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": _upstream_ext_proc(config, grpc_limit, False),
            "xds_matcher": {
                "matcher_list": {
                    "matchers": [
                        {
                            "predicate": {
                                "single_predicate": {
                                    "input": {
                                        "name": "hosts-alike",
                                        "typed_config": {
                                            "@type": _T
                                            + "envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                                            "header_name": HOSTS_ALIKE_HEADER,
                                        },
                                    },
                                    "value_match": {"exact": "1"},
                                }
                            },
                            "on_match": {
                                "action": {
                                    "name": "skip",
                                    "typed_config": {
                                        "@type": _T + "envoy.extensions.filters.common."
                                        "matcher.action.v3.SkipFilter"
                                    },
                                }
                            },
                        }
                    ]
                }
            },
        },
    }
    # The mark never reaches a provider (Envoy shares the header map between
    # attempts: a retry finds it gone and runs the UPSTREAM role, which is right).
    drop_mark = {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": _HEADER_MUTATION,
            "mutations": {"request_mutations": [{"remove": HOSTS_ALIKE_HEADER}]},
        },
    }
    return [skip_when_alike, drop_mark]


def _upstream_ext_proc(config: Config, grpc_limit: int, with_body: bool) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": _EXT_PROC,
            "grpc_service": _grpc_service(config, grpc_limit, "upstream"),
            "failure_mode_allow": False,
            "message_timeout": _duration(config.timeouts.extproc_message),
            "processing_mode": {
                "request_header_mode": "SEND",
                # Every attempt's status reaches the health board through the
                # router's upstream log instead (_attempt_log): no message here.
                "response_header_mode": "SKIP",
                # "shared" clusters get a final body from the ROUTER role.
                "request_body_mode": "BUFFERED" if with_body else "NONE",
                "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
            # The chosen host's metadata: this is how the UPSTREAM role knows
            # which backend (and model) this attempt goes to.
            "request_attributes": [HOST_METADATA_ATTRIBUTE],
        },
    }


def _endpoint_metadata(endpoint: Endpoint, schema: str) -> dict[str, Any]:
    llm: dict[str, Any] = {"instance": endpoint.instance, "schema": schema}
    if endpoint.model is not None:
        llm["model"] = endpoint.model
    if endpoint.params:
        llm["params"] = json.dumps(endpoint.params, sort_keys=True)
    metadata: dict[str, Any] = {METADATA_NAMESPACE: llm}
    if endpoint.tls:
        # Each TLS instance gets its own socket (SNI, CA): see _tls_matches.
        metadata["envoy.transport_socket_match"] = {"tls": endpoint.instance}
    return metadata


def _tls_socket(sni: str, ca_file: str) -> dict[str, Any]:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TLS,
            "sni": sni,
            "common_tls_context": {
                "validation_context": {
                    "trusted_ca": {"filename": ca_file},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": sni}}
                    ],
                }
            },
        },
    }


def _health_check(config: Config, plan: ClusterPlan) -> list[dict[str, Any]]:
    checks = [config.backends[e.instance].health_check for e in plan.endpoints]
    if not all(c.enabled for c in checks):
        return []
    paths = set()
    for endpoint, check in zip(plan.endpoints, checks, strict=True):
        health_path = check.path or get_type(config.backend_type(endpoint.instance)).health_path
        paths.add(endpoint.base_path + health_path)
    # Envoy checks one path per cluster; endpoints with different base paths
    # share a liveness check on "/" (any answer below 500 is healthy).
    path = paths.pop() if len(paths) == 1 else "/"
    first = checks[0]
    return [
        {
            "timeout": _duration(min(c.timeout for c in checks)),
            "interval": _duration(min(c.interval for c in checks)),
            "no_traffic_interval": _duration(min(c.no_traffic_interval for c in checks)),
            "unhealthy_threshold": first.unhealthy_threshold,
            "healthy_threshold": first.healthy_threshold,
            "http_health_check": {
                "path": path,
                # Health checks carry no provider key: 401/404 mean "alive".
                "expected_statuses": [{"start": 200, "end": 500}],
                "codec_client_type": "HTTP1",
            },
        }
    ]


def _outlier_detection(config: Config, plan: ClusterPlan) -> dict[str, Any] | None:
    settings = [config.backends[e.instance].outlier_detection for e in plan.endpoints]
    if not all(s.enabled for s in settings):
        return None
    consecutive = min(s.consecutive_5xx for s in settings)
    return {
        "consecutive_5xx": consecutive,
        "consecutive_gateway_failure": consecutive,
        "consecutive_local_origin_failure": consecutive,
        "interval": _duration(min(s.interval for s in settings)),
        "base_ejection_time": _duration(min(s.base_ejection_time for s in settings)),
        # With priorities, ejecting every host of one priority is failover.
        "max_ejection_percent": 100,
    }


def _llm_cluster(
    config: Config,
    plan: ClusterPlan,
    ca_file: str | None,
    grpc_limit: int,
    with_ext_proc: bool = True,
) -> dict[str, Any]:
    by_priority: dict[int, list[dict[str, Any]]] = {}
    observe = _observers(config) and with_ext_proc  # never in the baseline variant
    # The UPSTREAM role runs only where Envoy chooses among several hosts; a
    # single-endpoint cluster is encoded for by the ROUTER role already.
    with_ext_proc = with_ext_proc and plan.is_failover
    for endpoint in plan.endpoints:
        schema = config.backend_schema(endpoint.instance)
        lb_endpoint = {
            "endpoint": {
                "address": _address(endpoint.host, endpoint.port),
                "hostname": endpoint.authority,
                "health_check_config": {"hostname": endpoint.authority},
            },
            "metadata": {"filter_metadata": _endpoint_metadata(endpoint, schema)},
        }
        by_priority.setdefault(endpoint.priority, []).append(lb_endpoint)
    backends = [config.backends[e.instance] for e in plan.endpoints]
    cluster: dict[str, Any] = {
        "name": plan.name,
        "type": "STATIC" if all(_is_ip(e.host) for e in plan.endpoints) else "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": _duration(min(b.connect_timeout for b in backends)),
        "per_connection_buffer_limit_bytes": config.limits.max_response_bytes + _BUFFER_SLACK,
        "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": max(b.max_connections for b in backends),
                    "max_pending_requests": max(b.max_pending_requests for b in backends),
                    "max_requests": max(b.max_connections for b in backends),
                    "max_retries": max(b.max_connections for b in backends),
                }
            ]
        },
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                "@type": _T + _HTTP_OPTIONS,
                "explicit_http_config": {"http_protocol_options": {}},
                "common_http_protocol_options": {"idle_timeout": "60s"},
                "http_filters": [
                    *([_b_leg_mutation()] if config.sessions.enabled else []),
                    *(_upstream_roles(config, grpc_limit, plan) if with_ext_proc else []),
                    # Last before the codec: the exact bytes of each attempt, both ways.
                    *([_observer(config, grpc_limit, OBSERVE_PROVIDER_ROLE)] if observe else []),
                    {
                        "name": "envoy.filters.http.upstream_codec",
                        "typed_config": {"@type": _UPSTREAM_CODEC},
                    },
                ],
            }
        },
        "load_assignment": {
            "cluster_name": plan.name,
            "endpoints": [
                {"priority": priority, "lb_endpoints": endpoints}
                for priority, endpoints in sorted(by_priority.items())
            ],
        },
    }
    outlier = _outlier_detection(config, plan)
    if outlier:
        cluster["outlier_detection"] = outlier
    health_checks = _health_check(config, plan)
    if health_checks:
        cluster["health_checks"] = health_checks
    matches = _tls_matches(config, plan, ca_file)
    if matches:
        cluster["transport_socket_matches"] = matches
    return cluster


def _tls_matches(config: Config, plan: ClusterPlan, ca_file: str | None) -> list[dict[str, Any]]:
    """One TLS transport socket per https instance; plain http uses the default."""
    out: dict[str, dict[str, Any]] = {}
    for endpoint in plan.endpoints:
        if not endpoint.tls or endpoint.instance in out:
            continue
        tls = config.backends[endpoint.instance].tls
        sni = tls.sni or endpoint.host
        ca = tls.ca_file or ca_file or default_ca_file()
        out[endpoint.instance] = {
            "name": f"tls/{endpoint.instance}",
            "match": {"tls": endpoint.instance},
            "transport_socket": _tls_socket(sni, ca),
        }
    return list(out.values())
