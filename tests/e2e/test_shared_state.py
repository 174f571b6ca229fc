"""Two extproc replicas behind one real Envoy, sharing state through a real Redis.

``--workers 2`` with ``state.backend: redis``: a cool-down learnt by whichever
replica saw the provider's 429 keeps the other replica off that account too,
and a session setting typed through one replica applies to the requests the
other one serves. The control (no Redis) shows the second replica forwarding.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.e2e.conftest import two_backends
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import CLIENT_KEY, ProxyProcess, start_proxy, wait_for
from tests.redis_server import RedisServer

HEADERS = {"authorization": f"Bearer {CLIENT_KEY}"}
#: Enough requests that both replicas serve some (Envoy balances streams round robin).
ROUNDS = 12


def chat(proxy: ProxyProcess, session: str | None = None, text: str = "hi") -> httpx.Response:
    headers = dict(HEADERS)
    if session is not None:
        headers["x-session-id"] = session
    return httpx.post(
        f"{proxy.base_url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
        headers=headers,
        timeout=15,
    )


def _workers(proxy: ProxyProcess) -> None:
    """Both workers up and passed Envoy's health check (until then one takes every stream)."""
    wait_for(lambda: proxy.log().count("serving ext_proc on") >= 2, 30, what="two workers")

    def both_healthy() -> bool:
        hosts = proxy.host_health("extproc")
        return len(hosts) == 2 and set(hosts.values()) == {"healthy"}

    wait_for(both_healthy, 30, what="Envoy to find both workers healthy")


def _streams_per_worker(proxy: ProxyProcess) -> list[int]:
    """ROUTER and UPSTREAM streams each worker has taken (Envoy's per-host rq_total)."""
    counts = []
    for line in proxy.admin("/clusters").splitlines():
        if line.startswith("extproc::") and "::rq_total::" in line:
            counts.append(int(line.rsplit("::", 1)[1]))
    return counts


@contextlib.contextmanager
def two_workers(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI, redis: RedisServer | None
) -> Iterator[ProxyProcess]:
    """``--workers 2`` (sharing through ``redis`` if given), both healthy; stopped cleanly."""
    state = {"state": {"backend": "redis", "redis_url": redis.url}} if redis else {}
    proxy = start_proxy(tmp_path, two_backends(fake_a, fake_b, **state), "--workers", "2")
    try:
        _workers(proxy)
        yield proxy
        assert proxy.stop() == 0
    finally:
        proxy.stop(signal.SIGKILL)


def test_a_cooldown_learnt_by_one_replica_is_honoured_by_the_other(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI, redis_server: RedisServer
) -> None:
    with two_workers(tmp_path, fake_a, fake_b, redis_server) as proxy:
        # One 429 with retry-after 60 from the provider, seen by one replica.
        fake_a.set_fault(status=429, retry_after=60, count=1, chat_only=True)
        first = chat(proxy)
        assert first.status_code == 429, first.text
        seen = len(fake_a.chat_requests())

        def both_replicas_know() -> bool:
            # Each /ready names the replica that answered and what its board holds.
            cooling = set()
            for _ in range(8):
                report = httpx.get(f"{proxy.base_url}/ready", timeout=5).json()
                if report["backends"]["cooling"] == 1:
                    cooling.add(report["replica"]["worker"])
            return cooling == {0, 1}

        # Replication takes a millisecond or so: both boards hold the cool-down.
        wait_for(both_replicas_know, 10, what="the cool-down on both replicas")
        # Every later request, whichever replica takes it, stays off the account.
        answers = [chat(proxy) for _ in range(ROUNDS)]
        assert all(a.status_code == 429 for a in answers), [a.text for a in answers]
        assert all(a.json()["error"]["code"] == "rate_limited" for a in answers)
        assert len(fake_a.chat_requests()) == seen
        # Both replicas answered some of them (else this proves nothing).
        assert all(count > 0 for count in _streams_per_worker(proxy)), proxy.admin("/clusters")


def test_without_shared_state_the_other_replica_forwards(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """The control: each replica learns alone, so the other one still asks the provider."""
    with two_workers(tmp_path, fake_a, fake_b, None) as proxy:
        fake_a.set_fault(status=429, retry_after=60, count=1, chat_only=True)
        assert chat(proxy).status_code == 429
        # The replica that did not see the 429 still asks the provider.
        answers = [chat(proxy).status_code for _ in range(ROUNDS)]
        assert 200 in answers, answers


def test_sessions_are_shared_between_replicas(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI, redis_server: RedisServer
) -> None:
    with two_workers(tmp_path, fake_a, fake_b, redis_server) as proxy:
        session = "shared-session-1"
        typed = chat(proxy, session, "!/set(temperature=0.25)")
        assert typed.status_code == 200, typed.text
        fake_a.clear_requests()

        def replicated() -> bool:
            # Replication takes about a millisecond; ask until a request carries it.
            return chat(proxy, session).status_code == 200 and any(
                r.json.get("temperature") == 0.25 for r in fake_a.chat_requests()
            )

        wait_for(replicated, 10, what="the session setting on a request")
        fake_a.clear_requests()
        for _ in range(ROUNDS):
            assert chat(proxy, session).status_code == 200
        temperatures = [r.json.get("temperature") for r in fake_a.chat_requests()]
        assert temperatures == [0.25] * ROUNDS, temperatures
        assert all(count > 0 for count in _streams_per_worker(proxy)), proxy.admin("/clusters")
