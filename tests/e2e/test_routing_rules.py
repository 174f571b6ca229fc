"""Routing rules and health-aware routing, end to end (real Envoy + extproc, fake providers).

Every scenario checks three things: where requests went (what each fake received), that
no request was lost (each got a correct answer or a clear error in its dialect), and what
``GET /v1/diagnostics`` reports.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import reactivate_all
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import (
    CLIENT_KEY,
    PROVIDER_KEY,
    ProxyProcess,
    fast_health,
    proxy_config,
    running_proxy,
    wait_for,
)

ALPHA, BETA, CLAUDE = f"{PROVIDER_KEY}-ra", f"{PROVIDER_KEY}-rb", f"{PROVIDER_KEY}-rc"


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    started = {
        "alpha": FakeOpenAI(name="alpha", expected_api_key=ALPHA).start(),
        "beta": FakeOpenAI(name="beta", expected_api_key=BETA).start(),
        "claude": FakeAnthropic(name="claude", expected_api_key=CLAUDE).start(),
    }
    try:
        yield started
    finally:
        for fake in started.values():
            fake.stop()


def rules_config(fakes: dict[str, Any]) -> dict[str, Any]:
    backends = {
        "openai": {"base_url": fakes["alpha"].base_url, "api_key": ALPHA, **fast_health()},
        "openai.1": {"base_url": fakes["beta"].base_url, "api_key": BETA, **fast_health()},
        "claude": {
            "type": "anthropic",
            "base_url": fakes["claude"].base_url,
            "api_key": CLAUDE,
            **fast_health(),
        },
    }
    return proxy_config(
        backends,
        default_backend="openai:gpt-4o",
        models={"pool3": {"failover": ["openai:gpt-4o", "openai.1:gpt-4o", "claude:claude-x"]}},
        routing={
            "aliases": {
                # Cross-provider failover: an OpenAI-compatible account, then Anthropic.
                "mixed": "openai:gpt-4o|claude:claude-x",
                "chain": "openai:gpt-4o|openai.1:gpt-4o",
                "split": "openai:gpt-4o[weight=3]^openai.1:gpt-4o[weight=1]",
                "starter": "openai:gpt-4o[first]^openai.1:gpt-4o",
                "roomy": "openai:gpt-4o[max_context=40]^openai.1:gpt-4o",
                "nested": "chain^claude:claude-x[weight=0]",
                "racer": "openai:gpt-4o!openai.1:gpt-4o",
            },
            "rewrites": [{"model": "legacy-model", "to": "openai.1:gpt-4o"}],
        },
        # A slow provider: a pool moves on after 1 s; a single instance gives up after 2 s.
        timeouts={"attempt": "1s", "stream_idle": "2s"},
    )


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, fakes: dict[str, Any]
) -> Iterator[ProxyProcess]:
    with running_proxy(tmp_path_factory.mktemp("rules"), rules_config(fakes)) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(fakes: dict[str, Any], proxy: ProxyProcess) -> Iterator[None]:
    # Each test starts with every provider healthy in Envoy's eyes too.
    wait_for(
        lambda: all(i["envoy"].get("healthy") for i in diagnostics(proxy)["instances"].values()),
        15,
        what="every instance healthy in Envoy",
    )
    for fake in fakes.values():
        fake.clear_requests()
    yield
    for fake in fakes.values():
        fake.clear_faults()
        fake.clear_responses()
    reactivate_all(proxy)


def chat(
    client: httpx.Client, proxy: ProxyProcess, model: str, text: str = "hi", **extra: Any
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return client.post(
        f"{proxy.openai_base_url}/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )


def counts(fakes: dict[str, Any]) -> dict[str, int]:
    return {name: len(fake.chat_requests()) for name, fake in fakes.items()}


def diagnostics(proxy: ProxyProcess, **query: str) -> dict[str, Any]:
    response = httpx.get(f"{proxy.openai_base_url}/diagnostics", params=query, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_state(proxy: ProxyProcess, instance: str, state: str) -> dict[str, Any]:
    """Envoy's attempt log reaches the health board within milliseconds, not at once."""
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(diagnostics(proxy)["instances"][instance]["proxy"])
        return found["state"] == state

    wait_for(reached, 5, what=f"{instance} {state}")
    return found


# -- rules -----------------------------------------------------------------------------


def test_cross_provider_failover_gives_one_clean_answer(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    fakes["alpha"].set_fault(status=503, count=1, chat_only=True)
    fakes["claude"].queue_response("answered by claude")
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
    completion = client.chat.completions.create(
        model="mixed", messages=[{"role": "user", "content": "hello"}]
    )
    assert completion.choices[0].message.content == "answered by claude"
    assert completion.object == "chat.completion"  # the client's dialect
    assert counts(fakes) == {"alpha": 1, "beta": 0, "claude": 1}
    [asked] = fakes["claude"].chat_requests()
    assert asked.path == "/v1/messages" and asked.json["model"] == "claude-x"
    assert asked.headers["x-api-key"] == CLAUDE


def test_cross_provider_failover_streams_in_the_clients_dialect(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    fakes["alpha"].set_fault(status=500, count=1, chat_only=True)
    fakes["claude"].queue_response("streamed by claude")
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="mixed", messages=[{"role": "user", "content": "hello"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed by claude"
    assert counts(fakes)["claude"] == 1


def test_weighted_split_follows_the_weights_over_1000_requests(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    with httpx.Client(timeout=30) as client:
        for _ in range(1000):
            assert chat(client, proxy, "split").status_code == 200
    seen = counts(fakes)
    assert seen["alpha"] + seen["beta"] == 1000
    assert abs(seen["alpha"] - 750) <= 75 and abs(seen["beta"] - 250) <= 25, seen


def test_first_leg_takes_first_requests_only(proxy: ProxyProcess, fakes: dict[str, Any]) -> None:
    later = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and now?"},
    ]
    with httpx.Client(timeout=30) as client:
        for _ in range(6):
            assert chat(client, proxy, "starter").status_code == 200
        assert counts(fakes) == {"alpha": 6, "beta": 0, "claude": 0}
        for _ in range(6):
            response = client.post(
                f"{proxy.openai_base_url}/chat/completions",
                json={"model": "starter", "messages": later},
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
            )
            assert response.status_code == 200
    assert counts(fakes) == {"alpha": 9, "beta": 3, "claude": 0}  # 1:1 after the first turn


def test_max_context_skips_a_leg_the_request_would_overflow(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    with httpx.Client(timeout=30) as client:
        for _ in range(4):
            assert chat(client, proxy, "roomy", "word " * 200).status_code == 200
    assert counts(fakes) == {"alpha": 0, "beta": 4, "claude": 0}
    decision = diagnostics(proxy, model="roomy", tokens="500")["decision"]
    [alpha, beta] = decision["candidates"]
    assert not alpha["eligible"] and "max_context 40" in alpha["why"]
    assert beta["chosen"]


def test_rewrite_and_alias_of_aliases(proxy: ProxyProcess, fakes: dict[str, Any]) -> None:
    with httpx.Client(timeout=30) as client:
        assert chat(client, proxy, "legacy-model").status_code == 200
        assert counts(fakes) == {"alpha": 0, "beta": 1, "claude": 0}
        # "nested" picks "chain" (weight 1) over claude (weight 0): the chain's pool.
        fakes["alpha"].set_fault(status=503, count=1, chat_only=True)
        assert chat(client, proxy, "nested").status_code == 200
    assert counts(fakes) == {"alpha": 1, "beta": 2, "claude": 0}


def test_one_off_route_header(proxy: ProxyProcess, fakes: dict[str, Any]) -> None:
    with httpx.Client(timeout=30) as client:
        response = client.post(
            f"{proxy.openai_base_url}/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {CLIENT_KEY}", "x-llm-route": "claude:claude-x"},
        )
    assert response.status_code == 200, response.text
    assert counts(fakes) == {"alpha": 0, "beta": 0, "claude": 1}
    # The header is the proxy's: it never reaches the provider.
    assert "x-llm-route" not in fakes["claude"].chat_requests()[0].headers


def test_racing_streams_take_the_leg_that_answers_first(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    fakes["alpha"].set_fault(delay=2.5, chat_only=True)
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
    # The race cluster alternates which leg goes first, per Envoy worker thread (each
    # keeps its own rotation): ask until alpha was first once.
    tries = 0
    while tries < 8:
        tries += 1
        started = time.monotonic()
        chunks = list(
            client.chat.completions.create(
                model="racer", messages=[{"role": "user", "content": "go"}], stream=True
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("beta says hello")
        assert time.monotonic() - started < 1.5  # not the slow leg's 2.5 s
        if counts(fakes)["alpha"] >= 1:
            break
    fakes["alpha"].clear_faults()
    seen = counts(fakes)
    assert seen["beta"] == tries  # beta answered every time
    assert seen["alpha"] >= 1  # alpha went first at least once, and beta was sent beside it


def test_racing_aliases_fail_over_for_non_streaming_requests(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    fakes["alpha"].set_fault(status=503, count=1, chat_only=True)
    with httpx.Client(timeout=30) as client:
        response = chat(client, proxy, "racer")
    assert response.status_code == 200
    assert counts(fakes) == {"alpha": 1, "beta": 1, "claude": 0}  # in order, no hedging


def test_bad_expressions_get_clear_errors(proxy: ProxyProcess) -> None:
    with httpx.Client(timeout=30) as client:
        mixed = chat(client, proxy, "a|b^c")
        weight = chat(client, proxy, "openai:gpt-4o[weight=2]")
        race = chat(client, proxy, "openai:gpt-4o!claude:claude-x")
    for response in (mixed, weight, race):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_model"
    assert "mixes the routing operators" in mixed.json()["error"]["message"]


# -- health ----------------------------------------------------------------------------


def test_revoked_key_disables_the_instance_until_reactivated(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    alpha = fakes["alpha"]
    alpha.set_fault(status=401, chat_only=True)  # every request: the key is revoked
    with httpx.Client(timeout=30) as client:
        first = chat(client, proxy, "chain")  # 401 from alpha, retried on beta
        state = wait_state(proxy, "openai", "disabled")
        answers = [first] + [chat(client, proxy, "chain") for _ in range(4)]
    assert [r.status_code for r in answers] == [200] * 5  # none lost
    # The first request found out; the rest skip alpha.
    assert counts(fakes) == {"alpha": 1, "beta": 5, "claude": 0}
    assert "401" in state["reason"]
    report = diagnostics(proxy, model="chain")
    assert state["last_errors"][-1]["status"] == 401
    assert report["decision"]["chosen"]["targets"][0]["instance"] == "openai.1"

    # Single-instance requests get a clear error in their dialect, not a provider 401.
    with httpx.Client(timeout=30) as client:
        direct = chat(client, proxy, "openai:gpt-4o")
    assert direct.status_code == 503
    assert direct.json()["error"]["code"] == "backend_unavailable"
    assert "disabled" in direct.json()["error"]["message"]

    alpha.clear_faults()
    reactivated = httpx.post(
        f"{proxy.openai_base_url}/diagnostics/backends/openai/reactivate", timeout=10
    )
    assert reactivated.status_code == 200 and reactivated.json()["state"] == "ok"
    with httpx.Client(timeout=30) as client:
        assert chat(client, proxy, "chain").status_code == 200
    assert counts(fakes)["alpha"] == 2


def test_quota_exhausted_disables_like_a_revoked_key(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    fakes["alpha"].set_fault(status=429, quota=True, chat_only=True)
    with httpx.Client(timeout=30) as client:
        # The answer read by the proxy (the last attempt) says "quota", not "slow down".
        refused = chat(client, proxy, "openai:gpt-4o")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "insufficient_quota"
        state = wait_state(proxy, "openai", "disabled")
        assert state["reason"].startswith("quota")
        answers = [chat(client, proxy, "pool3") for _ in range(4)]
    assert all(r.status_code == 200 for r in answers)
    assert counts(fakes) == {"alpha": 1, "beta": 4, "claude": 0}


def test_repeated_429s_without_retry_after_back_off_exponentially(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    """A quota 429 retried inside a pool reaches the proxy as a status only."""
    fakes["alpha"].set_fault(status=429, quota=True, chat_only=True)
    waits = []
    with httpx.Client(timeout=30) as client:
        for _ in range(2):
            assert chat(client, proxy, "pool3").status_code == 200  # beta answers
            state = wait_state(proxy, "openai", "cooling")
            waits.append(state["seconds_left"])
            time.sleep(state["seconds_left"] + 0.2)  # cooled down: alpha is tried again
    # rate_limit_cooldown (2 s), then twice that while no success comes in between.
    assert waits[0] <= 2.0 < waits[1] <= 4.0


def test_429_storm_with_retry_after_cools_down_for_that_long(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    fakes["alpha"].set_fault(status=429, retry_after=2, chat_only=True)
    with httpx.Client(timeout=30) as client:
        first = chat(client, proxy, "chain")
        state = wait_state(proxy, "openai", "cooling")
        assert 0 < state["seconds_left"] <= 2
        answers = [first] + [chat(client, proxy, "chain") for _ in range(19)]
        assert all(r.status_code == 200 for r in answers)
        assert counts(fakes)["alpha"] == 1  # then skipped while cooling
        fakes["alpha"].clear_faults()
        time.sleep(2.2)
        assert chat(client, proxy, "chain").status_code == 200
    assert counts(fakes)["alpha"] == 2  # back after the retry-after


def test_every_instance_cooling_tells_the_client_to_slow_down(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    fakes["alpha"].set_fault(status=429, retry_after=30, chat_only=True)
    with httpx.Client(timeout=30) as client:
        first = chat(client, proxy, "openai:gpt-4o")
        wait_state(proxy, "openai", "cooling")
        second = chat(client, proxy, "openai:gpt-4o")
    assert first.status_code == 429  # the provider's own answer
    assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(second.headers["retry-after"]) <= 30
    assert counts(fakes)["alpha"] == 1


def test_a_slow_provider_is_left_for_the_next_target_or_times_out_clearly(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    fakes["alpha"].set_fault(delay=4, chat_only=True)
    with httpx.Client(timeout=30) as client:
        started = time.monotonic()
        pooled = chat(client, proxy, "chain")
        pooled_seconds = time.monotonic() - started
        started = time.monotonic()
        alone = chat(client, proxy, "openai:gpt-4o")
        alone_seconds = time.monotonic() - started
    assert pooled.status_code == 200 and 0.9 < pooled_seconds < 3  # timeouts.attempt: 1 s
    assert counts(fakes)["beta"] == 1
    assert alone.status_code == 504 and alone_seconds < 3.5  # nothing else to try
    assert alone.json()["error"]["code"] == "upstream_timeout"


def test_diagnostics_lists_every_instance_and_preference(proxy: ProxyProcess) -> None:
    report = diagnostics(proxy, model="split")
    assert set(report["instances"]) == {"openai", "openai.1", "claude"}
    claude = report["instances"]["claude"]
    assert claude["type"] == "anthropic" and claude["schema"] == "anthropic"
    assert claude["envoy"]["healthy"] is True
    assert all(key not in str(report) for key in (ALPHA, BETA, CLAUDE))
    assert report["preferences"]["pool3"]["targets"][2] == "claude:claude-x"
    assert report["preferences"]["mixed"]["expression"] == "openai:gpt-4o|claude:claude-x"
    decision = report["decision"]
    assert [c["weight"] for c in decision["candidates"]] == [3, 1]
    assert sum(c["chosen"] for c in decision["candidates"]) == 1


def test_diagnostics_need_an_admin_key_in_multi_user_mode(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    config = rules_config(fakes)
    config.update(multi_user_mode=True, api_keys=[CLIENT_KEY], admin_keys=["sk-fake-admin-9999"])
    with running_proxy(tmp_path, config) as multi:
        url = f"{multi.openai_base_url}/diagnostics"
        denied = httpx.get(url, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10)
        allowed = httpx.get(url, headers={"authorization": "Bearer sk-fake-admin-9999"}, timeout=10)
        reactivate = httpx.post(
            f"{url}/backends/openai/reactivate",
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            timeout=10,
        )
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_admin_key"
    assert allowed.status_code == 200
    assert reactivate.status_code == 401


def test_diagnostics_fail_closed_in_multi_user_mode_without_admin_keys(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    config = rules_config(fakes)
    config.update(multi_user_mode=True, api_keys=[CLIENT_KEY])
    with running_proxy(tmp_path, config) as multi:
        refused = httpx.get(
            f"{multi.openai_base_url}/diagnostics",
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            timeout=10,
        )
    assert refused.status_code == 401
    assert "admin_keys" in refused.json()["error"]["message"]


# Last: the refused listener leaves Envoy connections to re-establish.
def test_a_provider_dying_mid_run_loses_no_request(
    proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    statuses: list[int] = []
    with httpx.Client(timeout=30) as client:
        for index in range(60):
            if index == 20:
                fakes["alpha"].set_fault(refuse=True)  # the listener closes
            statuses.append(chat(client, proxy, "chain").status_code)
    assert statuses == [200] * 60
    seen = counts(fakes)
    assert seen["alpha"] == 20 and seen["beta"] == 40
    # Envoy's health checks see it too.
    wait_for(
        lambda: not diagnostics(proxy)["instances"]["openai"]["envoy"]["healthy"],
        10,
        what="Envoy to mark the dead provider unhealthy",
    )
    fakes["alpha"].clear_faults()
