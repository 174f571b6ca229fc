"""The wire contract shared with Envoy: names both sides must spell the same.

The bootstrap generator (:mod:`extproc.envoy_config.bootstrap`) writes these
names into Envoy's configuration; the servicer and the roles read them back
from what Envoy sends. Defined once here, imported everywhere else.
"""

from __future__ import annotations

__all__ = [
    "CLUSTER_HEADER",
    "EXT_PROC_FILTER",
    "GENERATION_METADATA",
    "HEALTH_PATH",
    "HOSTS_ALIKE_HEADER",
    "HOST_METADATA_ATTRIBUTE",
    "INTERNAL_PREFIX",
    "METADATA_NAMESPACE",
    "OBSERVE_CLIENT_ROLE",
    "OBSERVE_PROVIDER_ROLE",
    "READY_PATH",
    "REASONING_MODE_HEADER",
    "ROLE_METADATA",
    "ROUTE_HEADER",
    "SESSION_ECHO_HEADER",
    "TOKENS_SAVED_HEADER",
    "UPSTREAM_SESSION_HEADER",
]

#: Internal headers between Envoy and the two roles; never trusted from a
#: client (removed on arrival) and never sent to a provider or a client.
INTERNAL_PREFIX = "x-llm-"
#: The cluster the ROUTER role chose; Envoy's routes match on it.
CLUSTER_HEADER = "x-llm-cluster"
#: Set by the ROUTER role on a request to a failover cluster whose hosts all get
#: the same request (one credential, e.g. replicas): it has set the host headers
#: itself, and Envoy skips the UPSTREAM role's stream for the first attempt.
HOSTS_ALIKE_HEADER = "x-llm-hosts-alike"
#: Dynamic and host metadata namespace: host metadata (which backend
#: instance, schema and model an endpoint is) and the usage fields the ROUTER
#: role hands Envoy's access log.
METADATA_NAMESPACE = "llm"
#: The request attribute that carries the chosen upstream host's metadata
#: (configured on the UPSTREAM role's filter only: it tells the roles apart).
HOST_METADATA_ATTRIBUTE = "xds.upstream_host_metadata"
#: The client's one-off routing header (a routing expression for one request,
#: honoured only where ``routing.route_header`` allows it; never forwarded).
ROUTE_HEADER = "x-llm-route"
#: The ext_proc filter's name, under which Envoy groups attributes.
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
#: gRPC metadata naming the role of an ext_proc filter (set in the bootstrap).
ROLE_METADATA = "x-llm-role"
#: gRPC metadata: the generation of the Envoy bootstrap a stream comes from (a
#: hash of it), so an extproc serves each Envoy with the config it was built from.
GENERATION_METADATA = "x-llm-generation"
#: Roles of the observability-mode filters (wire capture with ``capture.observers``).
OBSERVE_CLIENT_ROLE = "observe-client"
OBSERVE_PROVIDER_ROLE = "observe-provider"
#: The session id header providers see: ``leg-<request id>-<attempt>``, set per
#: attempt by Envoy's upstream filters (never the client's id).
UPSTREAM_SESSION_HEADER = "x-session-id"
#: The A-leg session id echoed to clients on every answer.
SESSION_ECHO_HEADER = "x-b2bua-session-id"
#: Input tokens context compression saved on this request (on the answer).
TOKENS_SAVED_HEADER = "x-llmproxy-tokens-saved"
#: The client's choice of what happens to reasoning (a proxy control, never forwarded).
REASONING_MODE_HEADER = "x-llmproxy-reasoning-mode"

#: Probes on the client listeners, never forwarded upstream. Liveness: Envoy
#: answers ``/health`` itself. Readiness: Envoy's health-check filter answers
#: ``/ready`` with 503 while Envoy drains or is failed; otherwise the ROUTER role
#: answers it (no healthy replica: the ext_proc failure is a 503 too).
HEALTH_PATH = "/health"
READY_PATH = "/ready"
