"""The generated Envoy bootstrap: its shape, and real Envoy accepting it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from extproc.config import build_config
from extproc.envoy_config import build_bootstrap, render
from extproc.internalapi import HOSTS_ALIKE_HEADER
from tests.harness import envoy_binary

CONFIGS: dict[str, dict[str, Any]] = {
    "empty": {},
    "local-pool": {
        "backends": {
            "openai": {"base_url": "http://127.0.0.1:9001/v1", "api_key": "sk-fake-a"},
            "openai.1": {"base_url": "http://127.0.0.1:9002/v1", "api_key": "sk-fake-b"},
        },
        "models": {"smart": {"failover": ["openai:gpt-4o", "openai.1:gpt-4o-mini"]}},
    },
    "mixed-tls": {
        "backends": {
            "openai": {"api_key": "sk-fake-a"},
            "local": {"type": "openai-compatible", "base_url": "http://localhost:8080/v1"},
            "corp.1": {
                "type": "openai-compatible",
                "base_url": "https://llm.corp.example:8443/api/v1",
                "tls": {"sni": "gateway.corp.example"},
            },
            "corp.2": {
                "type": "openai-compatible",
                "base_url": "https://llm2.corp.example/api/v1",
                "health_check": {"enabled": False},
                "outlier_detection": {"enabled": False},
            },
        },
        "models": {"any": {"failover": ["openai:gpt-4o", "local:llama", "corp.1:llama"]}},
        "retry": {"retry_on_429": False, "retry_on_auth_failure": False, "pool_retries": 5},
        "envoy": {"access_log": True},
        "limits": {"max_request_bytes": "1MiB"},
        "timeouts": {"request": "600s", "stream_idle": "120s"},
    },
    "routing": {
        "backends": {
            "openai": {"api_key": "sk-fake-a"},
            "openai.1": {"api_key": "sk-fake-b"},
            "claude": {"type": "anthropic", "api_key": "sk-fake-c"},
        },
        "routing": {
            "aliases": {
                "chain": "openai:gpt-4o|openai.1:gpt-4o|claude:claude-sonnet-4",
                "racer": "openai:gpt-4o!claude:claude-sonnet-4",
                "mix": "openai:gpt-4o[weight=2]^claude:claude-sonnet-4",
            },
            "race_delay": "80ms",
        },
        "timeouts": {"attempt": "30s"},
    },
}


def bootstrap(name: str) -> dict[str, Any]:
    return build_bootstrap(build_config(CONFIGS[name]), ca_file="/etc/ssl/certs/ca.pem")


def clusters(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in boot["static_resources"]["clusters"]}


def hcm(boot: dict[str, Any]) -> dict[str, Any]:
    listener = boot["static_resources"]["listeners"][0]
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_envoy_validates_generated_bootstrap(tmp_path: Path, name: str) -> None:
    path = tmp_path / "envoy.yaml"
    boot = bootstrap(name)
    # Envoy opens CA files while validating: point them at a real bundle.
    from extproc.envoy_config import default_ca_file

    text = render(boot).replace("/etc/ssl/certs/ca.pem", default_ca_file())
    path.write_text(text)
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pool_cluster_priorities_metadata_and_upstream_filter() -> None:
    pool = clusters(bootstrap("local-pool"))["pool/smart"]
    endpoints = pool["load_assignment"]["endpoints"]
    assert [e["priority"] for e in endpoints] == [0, 1]
    first = endpoints[0]["lb_endpoints"][0]
    assert first["metadata"]["filter_metadata"]["llm"] == {
        "instance": "openai",
        "schema": "openai-chat",
        "model": "gpt-4o",
    }
    assert first["endpoint"]["hostname"] == "127.0.0.1:9001"
    assert pool["type"] == "STATIC"
    assert pool["health_checks"][0]["http_health_check"]["path"] == "/v1/models"
    assert pool["health_checks"][0]["http_health_check"]["expected_statuses"] == [
        {"start": 200, "end": 500}
    ]
    assert pool["outlier_detection"]["max_ejection_percent"] == 100
    options = pool["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    b_leg, ext_proc, codec = options["http_filters"]
    # Sessions (on by default): each attempt sends x-session-id: <b-leg>-<attempt>.
    assert b_leg["name"] == "envoy.filters.http.header_mutation"
    mutations = b_leg["typed_config"]["mutations"]["request_mutations"]
    assert mutations == [
        {
            "append": {
                "header": {
                    "key": "x-session-id",
                    "value": "leg-%REQ(x-request-id)%-%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                },
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        }
    ]
    assert ext_proc["typed_config"]["request_attributes"] == ["xds.upstream_host_metadata"]
    assert ext_proc["typed_config"]["failure_mode_allow"] is False
    assert codec["name"] == "envoy.filters.http.upstream_codec"


def test_no_secret_in_bootstrap() -> None:
    for name in CONFIGS:
        text = render(bootstrap(name))
        assert "sk-fake" not in text


def test_routes_retries_and_timeouts() -> None:
    manager = hcm(bootstrap("local-pool"))
    routes = {r["name"]: r for r in manager["route_config"]["virtual_hosts"][0]["routes"]}
    pool = routes["pool/smart"]
    assert pool["match"]["headers"] == [
        {"name": "x-llm-cluster", "string_match": {"exact": "pool/smart"}}
    ]
    action = pool["route"]
    assert action["timeout"] == "0s"  # not Envoy's 15 s default
    assert action["idle_timeout"] == "300s"
    policy = action["retry_policy"]
    assert policy["retry_on"] == "connect-failure,refused-stream,reset,5xx,retriable-status-codes"
    assert policy["retriable_status_codes"] == [429, 401, 403]
    assert policy["num_retries"] == 1
    assert policy["retry_priority"]["name"] == "envoy.retry_priorities.previous_priorities"
    single = routes["instance/openai"]["route"]["retry_policy"]
    assert single == {"retry_on": "connect-failure,refused-stream", "num_retries": 1}
    assert manager["route_config"]["request_headers_to_remove"] == ["x-llm-cluster"]
    assert routes["unrouted"]["direct_response"]["status"] == 404


def test_router_ext_proc_settings() -> None:
    boot = bootstrap("local-pool")
    filters = hcm(boot)["http_filters"]
    # The readiness filter first (it answers /ready while Envoy drains), then the ROUTER role.
    assert filters[0]["name"] == "envoy.filters.http.health_check"
    router = filters[1]["typed_config"]
    assert router["failure_mode_allow"] is False
    assert router["allow_mode_override"] is True
    assert router["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert router["message_timeout"] == "10s"
    assert router["response_attributes"] == ["xds.upstream_host_metadata"]
    listener = boot["static_resources"]["listeners"][0]
    assert listener["per_connection_buffer_limit_bytes"] == 32 * 1024 * 1024
    assert listener["address"]["socket_address"]["address"] == "127.0.0.1"
    extproc = clusters(boot)["extproc"]
    grpc_limit = router["grpc_service"]["envoy_grpc"]["max_receive_message_length"]
    assert grpc_limit > 2 * 32 * 1024 * 1024
    assert (
        extproc["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
            "socket_address"
        ]["port_value"]
        == 50051
    )


def test_tls_per_instance_with_sni_and_mixed_plain_http() -> None:
    boot = bootstrap("mixed-tls")
    pool = clusters(boot)["pool/any"]
    assert pool["type"] == "STRICT_DNS"
    matches = {m["name"]: m for m in pool["transport_socket_matches"]}
    assert set(matches) == {"tls/openai", "tls/corp.1"}
    corp = matches["tls/corp.1"]["transport_socket"]["typed_config"]
    assert corp["sni"] == "gateway.corp.example"
    openai_tls = matches["tls/openai"]["transport_socket"]["typed_config"]
    assert openai_tls["sni"] == "api.openai.com"
    validation = openai_tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": "/etc/ssl/certs/ca.pem"}
    by_instance = {
        e["metadata"]["filter_metadata"]["llm"]["instance"]: e
        for p in pool["load_assignment"]["endpoints"]
        for e in p["lb_endpoints"]
    }
    assert "envoy.transport_socket_match" not in by_instance["local"]["metadata"]["filter_metadata"]
    assert by_instance["corp.1"]["endpoint"]["hostname"] == "llm.corp.example:8443"
    # Base paths differ inside the pool: a liveness check on "/" instead.
    assert pool["health_checks"][0]["http_health_check"]["path"] == "/"
    corp2 = clusters(boot)["instance/corp.2"]
    assert "health_checks" not in corp2 and "outlier_detection" not in corp2
    routes = {r["name"]: r for r in hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]}
    policy = routes["pool/any"]["route"]["retry_policy"]
    assert "retriable-status-codes" not in policy["retry_on"]
    assert policy["num_retries"] == 5
    assert hcm(boot)["access_log"][0]["name"] == "envoy.access_loggers.stdout"


def test_baseline_variant_has_no_ext_proc(tmp_path: Path) -> None:
    from extproc.envoy_config import default_ca_file

    config = build_config(CONFIGS["local-pool"])
    boot = build_bootstrap(config, baseline_cluster="instance/openai")
    text = render(boot)
    assert "ext_proc" not in text and "extproc" not in text
    routes = hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["route"]["cluster"] for r in routes] == ["instance/openai"]
    assert routes[0]["match"] == {"prefix": "/"}
    path = tmp_path / "baseline.yaml"
    path.write_text(
        render(build_bootstrap(config, ca_file=default_ca_file(), baseline_cluster="pool/smart"))
    )
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.raises(ValueError):
        build_bootstrap(config, baseline_cluster="pool/none")


def test_upstream_role_only_where_envoy_chooses_the_host() -> None:
    config = build_config(
        {
            **CONFIGS["local-pool"],
            "models": {
                "smart": {"failover": ["openai:gpt-4o", "openai.1:gpt-4o-mini"]},
                "twin": {"failover": ["openai:gpt-4o", "openai.1:gpt-4o"]},
            },
        }
    )
    by_name = clusters(build_bootstrap(config, ca_file="/etc/ssl/certs/ca.pem"))

    def upstream_filters(name: str) -> list[dict[str, Any]]:
        options = by_name[name]["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        filters: list[dict[str, Any]] = options["http_filters"]
        return filters

    assert [f["name"] for f in upstream_filters("instance/openai")] == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.upstream_codec",
    ]
    per_attempt = upstream_filters("pool/smart")[1]["typed_config"]["processing_mode"]
    assert per_attempt["request_body_mode"] == "BUFFERED"
    twin = upstream_filters("pool/twin")
    assert [f["name"] for f in twin] == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.match_delegate",  # skips the role when the ROUTER marked it
        "envoy.filters.http.header_mutation",  # the mark never reaches a provider
        "envoy.filters.http.upstream_codec",
    ]
    delegate = twin[1]["typed_config"]
    shared = delegate["extension_config"]["typed_config"]["processing_mode"]
    assert shared["request_body_mode"] == "NONE"
    (matcher,) = delegate["xds_matcher"]["matcher_list"]["matchers"]
    predicate = matcher["predicate"]["single_predicate"]
    assert predicate["input"]["typed_config"]["header_name"] == HOSTS_ALIKE_HEADER
    assert matcher["on_match"]["action"]["typed_config"]["@type"].endswith("SkipFilter")
    assert twin[2]["typed_config"]["mutations"]["request_mutations"] == [
        {"remove": HOSTS_ALIKE_HEADER}
    ]


def test_routing_aliases_plan_pools_suffixes_and_a_hedged_race() -> None:
    boot = bootstrap("routing")
    planned = clusters(boot)
    # Failover aliases: a pool, and suffixes to start past disabled targets.
    assert {"pool/chain", "pool/chain~1", "race/racer", "pool/racer"} <= set(planned)
    assert "pool/mix" not in planned  # weighted choice happens in the ROUTER role
    suffix = planned["pool/chain~1"]["load_assignment"]["endpoints"]
    assert [p.get("priority", 0) for p in suffix] == [0, 1]
    race = planned["race/racer"]["load_assignment"]["endpoints"]
    assert len(race) == 1 and len(race[0]["lb_endpoints"]) == 2  # both legs at priority 0
    virtual_host = hcm(boot)["route_config"]["virtual_hosts"][0]
    routes = {r["name"]: r["route"] for r in virtual_host["routes"] if "route" in r}
    assert routes["race/racer"]["hedge_policy"] == {"hedge_on_per_try_timeout": True}
    assert routes["race/racer"]["retry_policy"]["per_try_timeout"] == "0.08s"
    assert "retry_priority" not in routes["race/racer"]["retry_policy"]
    assert routes["pool/chain"]["retry_policy"]["per_try_timeout"] == "30s"
    assert routes["pool/chain"]["retry_policy"]["retriable_status_codes"] == [429, 401, 403]


def test_every_attempt_is_logged_to_the_health_board() -> None:
    boot = bootstrap("routing")
    [router] = [f for f in hcm(boot)["http_filters"] if f["name"] == "envoy.filters.http.router"]
    [attempts] = router["typed_config"]["upstream_log"]
    typed = attempts["typed_config"]
    assert typed["common_config"]["grpc_service"] == {"envoy_grpc": {"cluster_name": "extproc"}}
    fields = {kv["key"]: kv["value"]["string_value"] for kv in typed["attributes"]["values"]}
    assert fields["instance"] == "%UPSTREAM_METADATA(llm:instance)%"
    assert fields["retry_after"] == "%RESP(retry-after)%"


def test_probes_are_answered_on_the_client_listener() -> None:
    boot = bootstrap("local-pool")
    manager = hcm(boot)
    readiness = manager["http_filters"][0]["typed_config"]
    assert readiness["pass_through_mode"] is True
    assert readiness["headers"] == [{"name": ":path", "string_match": {"exact": "/ready"}}]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    # /health is Envoy's own answer, before any cluster route, with no ext_proc message.
    assert routes[0]["match"]["path"] == "/health"
    assert routes[0]["direct_response"]["status"] == 200
    per_filter = routes[0]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
    assert per_filter["disabled"] is True


def test_every_ext_proc_stream_names_the_bootstrap_generation() -> None:
    from extproc.envoy_config import bootstrap_generation
    from extproc.internalapi import GENERATION_METADATA

    boot = bootstrap("local-pool")
    text = json.dumps(boot)
    generation = bootstrap_generation(build_config(CONFIGS["local-pool"]))
    assert text.count(f'"key": "{GENERATION_METADATA}", "value": "{generation}"') >= 2


def test_the_generation_does_not_depend_on_where_the_ca_bundle_lives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CI found this: certifi's bundle is under the virtualenv, so a generation
    # hashed with its path differed per checkout and the committed bootstraps
    # went stale on every other machine.
    from extproc.envoy_config import bootstrap as module
    from extproc.envoy_config import bootstrap_generation

    config = build_config(CONFIGS["mixed-tls"])
    before = bootstrap_generation(config)
    monkeypatch.setattr(module, "default_ca_file", lambda: "/elsewhere/cacert.pem")
    assert bootstrap_generation(config) == before
    stamped = json.dumps(module.build_bootstrap(config, ca_file="/some/ca.pem"))
    assert f'"value": "{before}"' in stamped
    assert "/some/ca.pem" in stamped
