"""Probes and zero-downtime config reload, on a real Envoy + extproc.

``GET /health`` (Envoy's own answer) and ``GET /ready`` (the ROUTER role's) on
both client listeners, never forwarded upstream; ``POST /v1/admin/reload`` and
``SIGHUP`` re-read the config: a new backend (an Envoy hot restart) or a new
alias (the extproc alone) take effect while requests and a stream in flight
finish; an invalid config is refused with its reason and the old one kept.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import two_backends
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import (
    CLIENT_KEY,
    ProxyProcess,
    running_proxy,
    wait_for,
    write_config,
)
from tests.redis_server import RedisServer

USER = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


def chat(client: httpx.Client, base: str, model: str = "gpt-4o-mini") -> httpx.Response:
    return client.post(
        f"{base}/v1/chat/completions", json={"model": model, "messages": USER}, headers=AUTH
    )


def reload(proxy: ProxyProcess) -> httpx.Response:
    return httpx.post(f"{proxy.base_url}/v1/admin/reload", headers=AUTH, timeout=60)


def test_probes_on_both_listeners_are_not_forwarded(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with running_proxy(tmp_path, two_backends(fake_a, fake_b)) as proxy:
        for base in (proxy.base_url, proxy.anthropic_base_url):
            health = httpx.get(f"{base}/health", timeout=5)
            assert health.status_code == 200, health.text
            assert health.json() == {"status": "ok"}
            ready = httpx.get(f"{base}/ready", timeout=5)
            assert ready.status_code == 200, ready.text
            report = ready.json()
            assert report["status"] == "ready"
            assert report["backends"] == {"total": 2, "ok": 2, "cooling": 0, "disabled": 0}
            assert report["replica"]["pid"] > 0
        # The log says what runs (a bug once also claimed "--no-envoy" here).
        assert "proxy ready" in proxy.log() and "serving ext_proc only" not in proxy.log()
        seen = [r.path for fake in (fake_a, fake_b) for r in fake.requests]
        assert not [path for path in seen if path.endswith(("/health", "/ready"))], seen
        # A POST is not a probe: /health only answers GET.
        assert httpx.post(f"{proxy.base_url}/health", timeout=5).status_code == 404
        # Envoy failed or draining (what a preStop hook does): not ready, still alive.
        httpx.post(f"http://127.0.0.1:{proxy.admin_port}/healthcheck/fail", timeout=5)
        assert httpx.get(f"{proxy.base_url}/ready", timeout=5).status_code == 503
        assert httpx.get(f"{proxy.base_url}/health", timeout=5).status_code == 200
        httpx.post(f"http://127.0.0.1:{proxy.admin_port}/healthcheck/ok", timeout=5)
        assert httpx.get(f"{proxy.base_url}/ready", timeout=5).status_code == 200


def test_probes_need_no_key_in_multi_user_mode(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    config = two_backends(fake_a, fake_b, multi_user_mode=True, api_keys=[CLIENT_KEY])
    with running_proxy(tmp_path, config) as proxy:
        assert httpx.get(f"{proxy.base_url}/health", timeout=5).status_code == 200
        ready = httpx.get(f"{proxy.base_url}/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        # Counts only: instance names are not for anonymous callers.
        assert "unavailable" not in ready.json()
        # Everything else still needs a key.
        refused = httpx.post(
            f"{proxy.base_url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": USER},
            timeout=5,
        )
        assert refused.status_code == 401


class _Load:
    """Requests back to back from a few threads until stopped; every status kept."""

    def __init__(self, base: str, threads: int = 6) -> None:
        self.base = base
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = chat(client, self.base)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.statuses[response.status_code] += 1
                if response.status_code != 200:
                    self.failures.append(response.text[:300])

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def _slow_stream(base: str, out: dict[str, Any]) -> None:
    body = {"model": "gpt-4o-mini", "messages": USER, "stream": True}
    chunks = 0
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", f"{base}/v1/chat/completions", json=body, headers=AUTH) as response,
    ):
        out["status"] = response.status_code
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks += 1
            if line == "data: [DONE]":
                out["done"] = True
    out["chunks"] = chunks


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_under_load_fails_no_request(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI, workers: int, request: Any
) -> None:
    config = two_backends(fake_a, fake_b, shutdown={"drain_timeout": 20})
    if workers > 1:
        # As deployed: replicas sharing their state through a real Redis.
        redis: RedisServer = request.getfixturevalue("redis_server")
        config["state"] = {"backend": "redis", "redis_url": redis.url}
    with running_proxy(tmp_path, config, "--workers", str(workers)) as proxy:
        # Streams from the first backend crawl: one stays open across the hot restart.
        fake_a.set_fault(chunk_delay=0.25)
        stream: dict[str, Any] = {}
        streamer = threading.Thread(target=_slow_stream, args=(proxy.base_url, stream))
        with _Load(proxy.base_url) as load:
            streamer.start()
            wait_for(lambda: sum(load.statuses.values()) >= 50, timeout=30)

            # 1. A new backend and a model routed to it: Envoy is hot restarted.
            fresh = json.loads(json.dumps(config))
            fresh["backends"]["extra"] = {
                **config["backends"]["openai.1"],  # type: ignore[index]
                "models": ["extra-model"],
            }
            write_config(proxy.config_path, fresh)
            answer = reload(proxy)
            if workers == 1:
                assert answer.status_code == 200, answer.text
                assert answer.json()["envoy"] == "hot restarted"
            else:
                # A worker checks the config and asks the supervisor, which tells
                # every worker and restarts Envoy.
                assert answer.status_code == 202, answer.text
                wait_for(lambda: proxy.log().count("config reloaded") == 3, timeout=30)
                assert "Envoy hot restarted" in proxy.log()
            with httpx.Client(timeout=30) as client:
                routed = [chat(client, proxy.base_url, "extra-model") for _ in range(4)]
            assert all(r.status_code == 200 for r in routed), [r.text for r in routed]
            assert all("beta says hello to extra-model" in r.text for r in routed)

            # 2. An alias only (no Envoy change), by SIGHUP.
            fresh["routing"] = {"aliases": {"nickname": "openai:gpt-4o"}}
            write_config(proxy.config_path, fresh)
            proxy.proc.send_signal(signal.SIGHUP)

            def alias_works() -> bool:
                # Every replica knows it (several requests reach each of them).
                with httpx.Client(timeout=30) as client:
                    return all(
                        chat(client, proxy.base_url, "nickname").status_code == 200
                        for _ in range(4 * workers)
                    )

            wait_for(alias_works, timeout=30)
            assert "Envoy unchanged" in proxy.log()

            # 3. An invalid config: refused with the reason, the running one kept.
            write_config(proxy.config_path, {**fresh, "port": "not-a-port"})
            refused = reload(proxy)
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["code"] == "invalid_config"
            assert "port" in error["message"] and "running config is kept" in error["message"]
            time.sleep(0.5)  # a little more load on the kept config
        streamer.join(60)
        served = sum(load.statuses.values())
        print(f"requests during the reloads: {served}, statuses {dict(load.statuses)}")
        assert served >= 100
        assert load.failures == [], load.failures[:5]
        assert load.statuses == Counter({200: served})
        # The stream opened before the hot restart finished on the old Envoy.
        assert stream.get("status") == 200 and stream.get("done") is True, stream
        with httpx.Client(timeout=30) as client:
            assert chat(client, proxy.base_url, "nickname").status_code == 200


def test_envoy_metrics_on_the_stats_port_and_nothing_else(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """``envoy.stats_port``: Prometheus scrapes Envoy without reaching its admin API."""
    from tests.harness import free_port

    port = free_port()
    config = two_backends(fake_a, fake_b, envoy={"log_level": "error", "stats_port": port})
    with running_proxy(tmp_path, config) as proxy:
        stats = httpx.get(f"http://127.0.0.1:{port}/stats/prometheus", timeout=5)
        assert stats.status_code == 200
        assert "envoy_cluster_upstream_rq_total" in stats.text
        # The rest of the admin API stays on 127.0.0.1:admin_port only.
        for method, path in (("POST", "/quitquitquit"), ("GET", "/config_dump")):
            refused = httpx.request(method, f"http://127.0.0.1:{port}{path}", timeout=5)
            assert refused.status_code == 404
        with httpx.Client(timeout=30) as client:
            assert chat(client, proxy.base_url).status_code == 200


def test_no_header_change_of_the_proxy_is_refused_by_envoy(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """Envoy's own headers on answers are removed, not refused (x-envoy-attempt-count once
    reached every client, and Envoy counted one rejected mutation per request)."""
    with (
        running_proxy(tmp_path, two_backends(fake_a, fake_b)) as proxy,
        httpx.Client(timeout=30) as client,
    ):
        for body in ({}, {"stream": True}):
            answer = client.post(
                f"{proxy.base_url}/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": USER, **body},
                headers=AUTH,
            )
            assert answer.status_code == 200
            assert "x-envoy-attempt-count" not in answer.headers
        rejected = [
            line
            for line in proxy.admin("/stats").splitlines()
            if "rejected_header_mutations" in line
        ]
        assert rejected and all(line.endswith(": 0") for line in rejected), rejected
