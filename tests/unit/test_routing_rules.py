"""Routing expressions, rules and the health board, without Envoy (end to end:
tests/e2e/test_routing_rules.py)."""

from __future__ import annotations

import email.utils
import itertools
import time
from typing import Any

import pytest

from extproc.config import build_config
from extproc.config.model import HealthPolicyConfig
from extproc.errors import BackendRateLimited, BackendUnavailable, InvalidRequest, NotFound
from extproc.routing import Resolver, parse_route
from extproc.routing.health import HealthBoard, is_quota_error, parse_retry_after
from extproc.routing.resolver import RequestFacts

# -- expressions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "legs"),
    [
        ("openai:gpt-4o", "single", ["openai:gpt-4o"]),
        ("a:x|b:y|c", "failover", ["a:x", "b:y", "c"]),
        ("a[weight=3]^b[weight=1,first]", "weighted", ["a[weight=3]", "b[first]"]),
        ("a[weight=2][max_context=8000]^b", "weighted", ["a[weight=2,max_context=8000]", "b"]),
        (
            "a:m?temperature=0.2[max_context=99]|b:m",
            "failover",
            ["a:m?temperature=0.2[max_context=99]", "b:m"],
        ),
        ("a!b", "race", ["a", "b"]),
        ("gpt-4o?tag=x%21y", "single", ["gpt-4o?tag=x!y"]),
    ],
)
def test_parse_route(text: str, kind: str, legs: list[str]) -> None:
    route = parse_route(text)
    assert route.kind == kind
    assert [str(leg) for leg in route.legs] == legs


def test_leg_annotations_are_parsed() -> None:
    route = parse_route("a[weight=3,max_context=100]^b[first]^c[weight=0]")
    assert [(leg.weight, leg.max_context, leg.first) for leg in route.legs] == [
        (3, 100, False),
        (1, None, True),
        (0, None, False),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a|b^c", "mixes the routing operators"),
        ("a[weight=2]", "does not apply to a single model"),
        ("a[first]|b", "does not apply to a failover route"),
        ("a[weight=1]!b", "does not apply to a race"),
        ("a||b", "empty leg"),
        ("a[weight=x]^b", "whole number"),
        ("a[max_context=0]^b", "of 1 or more"),
        ("a[first=1]^b", "takes no value"),
        ("a[wat]^b", "'wat'"),
        ("a[weight=2]b^c", "at the end of a leg"),
        ("|".join(["m"] * 17), "at most 16"),
    ],
)
def test_parse_route_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as exc:
        parse_route(text)
    assert exc.value.status == 400 and exc.value.code == "invalid_model"


# -- the resolver ----------------------------------------------------------------------

KEY_ID = "key-0123456789ab"


def config(**routing: Any) -> Any:
    return build_config(
        {
            "backends": {
                "openai": {"api_key": "sk-fake-a", "models": ["gpt-4o"]},
                "openai.1": {"api_key": "sk-fake-b"},
                "openai.2": {"api_key": "sk-fake-c"},
                "claude": {"type": "anthropic", "api_key": "sk-fake-d"},
            },
            "default_backend": "openai:gpt-4o",
            "routing": {
                "aliases": {
                    "chain": "openai:gpt-4o|openai.1:gpt-4o|claude:claude-x",
                    "split": "openai:gpt-4o[weight=3]^openai.1:gpt-4o",
                    "starter": "claude:claude-x[first]^openai:gpt-4o",
                    "roomy": "openai:gpt-4o[max_context=100]^claude:claude-x",
                    "outer": "inner",
                    "inner": "split",
                    "loop": "loop",
                    "racer": "openai:gpt-4o!claude:claude-x",
                },
                "rewrites": [
                    {"model": "legacy", "to": "claude:claude-x", "clients": [KEY_ID]},
                    {"model": "legacy", "to": "openai.1:gpt-4o"},
                ],
                **routing,
            },
        }
    )


@pytest.fixture
def resolver() -> Resolver:
    return Resolver(config())


def test_weighted_choice_is_exact_and_spread(resolver: Resolver) -> None:
    picks = [resolver.route("split").cluster for _ in range(8)]
    assert picks.count("instance/openai") == 6 and picks.count("instance/openai.1") == 2
    # Smooth: never the minority leg twice in a row.
    assert all(not (a == b == "instance/openai.1") for a, b in itertools.pairwise(picks))


def test_peek_does_not_move_the_rotation(resolver: Resolver) -> None:
    first = resolver.route("split", peek=True).cluster
    assert all(resolver.route("split", peek=True).cluster == first for _ in range(5))
    assert resolver.route("split").cluster == first


def test_first_turn_and_max_context(resolver: Resolver) -> None:
    first = RequestFacts(first_turn=True)
    assert {resolver.route("starter", first).cluster for _ in range(4)} == {"instance/claude"}
    later = {resolver.route("starter").cluster for _ in range(4)}
    assert later == {"instance/claude", "instance/openai"}
    big = RequestFacts(input_tokens=lambda: 500)
    decision = resolver.route("roomy", big)
    assert decision.cluster == "instance/claude"
    assert "max_context 100" in decision.candidates[0].why


def test_rewrites_per_client_then_for_everyone(resolver: Resolver) -> None:
    mine = RequestFacts(client_key_id=KEY_ID)
    assert resolver.route("legacy", mine).cluster == "instance/claude"
    assert resolver.route("legacy").cluster == "instance/openai.1"
    assert "rewrite" in resolver.route("legacy").reason


def test_static_route_beats_header_beats_model() -> None:
    plain = Resolver(config())
    header = RequestFacts(header_route="claude:claude-x")
    assert plain.route("gpt-4o", header).cluster == "instance/claude"
    static = Resolver(config(static_route="openai.1:gpt-4o"))
    assert static.route("gpt-4o", header).cluster == "instance/openai.1"
    assert static.route("gpt-4o").reason.startswith("static route")


def test_aliases_nest_but_not_forever(resolver: Resolver) -> None:
    assert resolver.route("outer").cluster in {"instance/openai", "instance/openai.1"}
    with pytest.raises(InvalidRequest, match="more than 4 deep"):
        resolver.route("loop")


def test_racing_aliases_race_streams_only(resolver: Resolver) -> None:
    assert resolver.route("racer", RequestFacts(streaming=True)).cluster == "race/racer"
    assert resolver.route("racer").cluster == "pool/racer"
    with pytest.raises(InvalidRequest, match=r"routing\.aliases"):
        resolver.route("openai:gpt-4o!openai.1:gpt-4o")


def test_ad_hoc_failover_uses_the_planned_pool_or_the_first_available_leg(
    resolver: Resolver,
) -> None:
    # The same expression as an alias: its Envoy pool.
    same = resolver.route("openai:gpt-4o|openai.1:gpt-4o|claude:claude-x")
    assert same.cluster == "pool/chain"
    resolver.health.observe("openai.1", 401)
    ad_hoc = resolver.route("openai.1:gpt-4o|claude:claude-x")
    assert ad_hoc.cluster == "instance/claude"
    assert [c.eligible for c in ad_hoc.candidates] == [False, True]
    with pytest.raises(NotFound):
        resolver.route("nobody:x|ghost:y")


def test_disabled_heads_of_a_pool_are_skipped(resolver: Resolver) -> None:
    health = resolver.health
    health.observe("openai", 401)
    decision = resolver.route("chain")
    assert decision.cluster == "pool/chain~1" and "skipped unavailable openai" in decision.reason
    health.observe("openai.1", 403)
    last = resolver.route("chain")  # only the last target left: its own instance cluster
    assert (last.cluster, last.model) == ("instance/claude", "claude-x")
    health.observe("claude", 429, retry_after="30")
    with pytest.raises(BackendUnavailable) as exc:
        resolver.route("chain")
    assert exc.value.status == 503 and "GET /v1/diagnostics" in exc.value.message
    health.reactivate("openai")
    assert resolver.route("chain").cluster == "pool/chain"


def test_only_rate_limits_left_means_429_with_retry_after(resolver: Resolver) -> None:
    resolver.health.observe("claude", 429, retry_after="20")
    with pytest.raises(BackendRateLimited) as exc:
        resolver.route("claude:claude-x")
    assert exc.value.status == 429 and 1 <= int(exc.value.headers["retry-after"]) <= 20


def test_a_family_skips_its_disabled_accounts() -> None:
    resolver = Resolver(
        build_config(
            {
                "backends": {
                    "vllm.1": {"type": "openai-compatible", "base_url": "http://10.0.0.1/v1"},
                    "vllm.2": {"type": "openai-compatible", "base_url": "http://10.0.0.2/v1"},
                    "vllm.3": {"type": "openai-compatible", "base_url": "http://10.0.0.3/v1"},
                }
            }
        )
    )
    resolver.health.observe("vllm.1", 401)
    assert resolver.route("vllm:llama").cluster == "family/vllm~1"


# -- the health board ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def board(**policy: Any) -> tuple[HealthBoard, Clock]:
    clock = Clock()
    return HealthBoard(["a", "b"], HealthPolicyConfig(**policy), clock), clock


def test_auth_failures_disable_for_the_cooldown() -> None:
    health, clock = board(auth_failure_cooldown=60)
    health.observe("a", 401, code="invalid_api_key", message="Incorrect API key")
    assert not health.available("a") and health.state("a") == "disabled"
    assert "refused the key (401)" in health.why_not("a")
    clock.now += 59
    assert not health.available("a")
    clock.now += 2
    assert health.available("a") and health.why_not("a") == ""


def test_zero_cooldown_means_until_reactivated() -> None:
    health, clock = board(auth_failure_cooldown=0)
    health.observe("a", 403)
    clock.now += 10**6
    assert not health.available("a")
    assert health.reactivate("a") and health.available("a")
    assert not health.reactivate("unknown")


def test_quota_is_told_apart_from_rate_limits() -> None:
    health, _ = board(quota_cooldown=3600)
    health.observe("a", 429, code="insufficient_quota", message="You exceeded your current quota")
    assert health.state("a") == "disabled" and health.snapshot("a")["reason"].startswith("quota")
    health.observe("b", 429, code="rate_limit_exceeded", message="Rate limit reached")
    assert health.state("b") == "cooling"


@pytest.mark.parametrize(
    ("status", "code", "message", "quota"),
    [
        (429, "insufficient_quota", None, True),
        (400, None, "Your credit balance is too low to access the Anthropic API.", True),
        (402, None, "Payment required", True),
        (429, "rate_limit_exceeded", "Rate limit reached for requests", False),
        (500, None, "billing service down", False),
    ],
)
def test_is_quota_error(status: int, code: str | None, message: str | None, quota: bool) -> None:
    assert is_quota_error(status, code, message) is quota


def test_retry_after_is_honoured_and_capped() -> None:
    health, clock = board(max_retry_after=10, rate_limit_cooldown=2)
    health.observe("a", 429, retry_after="5")
    assert health.snapshot("a")["seconds_left"] == 5.0
    health.observe("b", 429, retry_after="3600")
    assert health.snapshot("b")["seconds_left"] == 10.0
    clock.now += 6
    assert health.available("a") and not health.available("b")
    health.observe("a", 429)  # no retry-after: the configured cool-down
    assert health.snapshot("a")["seconds_left"] == 2.0


def test_a_cool_down_never_lifts_a_disable() -> None:
    health, _ = board(auth_failure_cooldown=600)
    health.observe("a", 401)
    health.observe("a", 429, retry_after="1")
    assert health.state("a") == "disabled" and health.snapshot("a")["seconds_left"] == 600.0


def test_successes_and_last_errors_are_counted_and_bounded() -> None:
    health, _ = board()
    for _ in range(3):
        health.observe("a", 200)
    for status in range(500, 515):
        health.observe("a", status, message="x" * 1000)
    snapshot = health.snapshot("a")
    assert snapshot["successes"] == 3 and snapshot["failures"] == 15
    assert len(snapshot["last_errors"]) == 10 and snapshot["last_errors"][-1]["status"] == 514
    assert len(snapshot["last_errors"][0]["message"]) == 300
    assert snapshot["state"] == "ok"  # 5xx is Envoy's outlier detection's business


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (parse_retry_after(later) or 0) <= 31
    assert parse_retry_after("-5") == 0.0


def test_key_id_command_reads_keys_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from extproc.cli import main
    from extproc.pipeline.context import key_id

    monkeypatch.setattr("sys.stdin", io.StringIO("sk-fake-one\n\nsk-fake-two\n"))
    assert main(["key-id"]) == 0
    assert capsys.readouterr().out.split() == [key_id("sk-fake-one"), key_id("sk-fake-two")]
    assert main(["key-id", "sk-fake-on-the-command-line"]) == 2


def test_429s_without_retry_after_back_off_until_a_success() -> None:
    health, clock = board(rate_limit_cooldown=2, max_retry_after=10)
    waits = []
    for _ in range(5):
        health.observe("a", 429)
        waits.append(health.snapshot("a")["seconds_left"])
        clock.now += 100
    assert waits == [2.0, 4.0, 8.0, 10.0, 10.0]
    health.observe("a", 200)
    health.observe("a", 429)
    assert health.snapshot("a")["seconds_left"] == 2.0


def test_attempt_log_records_feed_the_board() -> None:
    import asyncio

    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2

    from extproc.server.attempt_log import AttemptLogService

    def record(**fields: str) -> Any:
        return logs_pb2.LogRecord(
            attributes=[
                common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))
                for k, v in fields.items()
            ]
        )

    health, _ = board()
    service = AttemptLogService(health)
    request = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                scope_logs=[
                    logs_pb2.ScopeLogs(
                        log_records=[
                            record(instance="a", status="401", retry_after="-"),
                            record(instance="b", status="429", retry_after="7"),
                            record(instance="-", status="503"),  # no host chosen
                            record(instance="b", status="0"),  # reset: no answer
                            record(instance="unknown", status="401"),
                            record(instance="a", status="x"),
                        ]
                    )
                ]
            )
        ]
    )
    asyncio.run(service.Export(request, None))
    assert service.records == 6
    assert health.state("a") == "disabled"
    assert health.state("b") == "cooling" and health.snapshot("b")["seconds_left"] == 7.0
    assert health.snapshot("b")["failures"] == 1


def test_error_messages_are_redacted_before_diagnostics_see_them() -> None:
    from extproc.observe.redact import Redactor

    secret = "sk-fake-provider-secret-0000"
    health = HealthBoard(["a"], HealthPolicyConfig(), redact=Redactor([secret]))
    health.observe("a", 401, message=f"Incorrect API key provided: {secret}.")
    [error] = health.snapshot("a")["last_errors"]
    assert secret not in error["message"] and "[REDACTED" in error["message"]
