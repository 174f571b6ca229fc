"""Several extproc workers behind one Envoy: crashes, restarts, graceful drain, crash safety.

Real processes throughout: ``python -m extproc --workers N`` (a supervisor with
Envoy and N worker processes), a fake provider, ``kill -9`` by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
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
from tests.harness import CLIENT_KEY, ProxyProcess, start_proxy, wait_for
from tests.redis_server import RedisServer

USER = [{"role": "user", "content": "hi"}]
HEADERS = {"authorization": f"Bearer {CLIENT_KEY}"}
_WORKER_RE = re.compile(r"worker (\d+) started \(pid (\d+), gRPC port (\d+)\)")


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def worker_pids(proxy: ProxyProcess) -> dict[int, list[int]]:
    """Worker index -> the pids it had, in start order (restarts append)."""
    out: dict[int, list[int]] = {}
    for match in _WORKER_RE.finditer(proxy.log()):
        out.setdefault(int(match.group(1)), []).append(int(match.group(2)))
    return out


def children_of(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def chat(base_url: str, *, timeout: float = 10.0) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": USER},
        headers=HEADERS,
        timeout=timeout,
    )


def gemini(base_url: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1beta/models/gpt-4o-mini:generateContent",
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        headers={"x-goog-api-key": CLIENT_KEY},
        timeout=10,
    )


def is_unavailable(response: httpx.Response) -> bool:
    """The proxy's fail-closed answer in the OpenAI dialect."""
    if response.status_code != 503:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return bool(body.get("error", {}).get("code") == "proxy_unavailable")


def extproc_rq_total(proxy: ProxyProcess, port: int) -> int:
    """Streams Envoy opened to the extproc worker on ``port``."""
    for line in proxy.admin("/clusters").splitlines():
        if line.startswith(f"extproc::127.0.0.1:{port}::rq_total::"):
            return int(line.rsplit("::", 1)[1])
    return 0


async def _load(
    base_url: str, total: int, concurrency: int, on_done: Any
) -> list[tuple[int, bytes]]:
    """``total`` chat requests, ``concurrency`` at a time: (status, body) of each."""
    results: list[tuple[int, bytes]] = []
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < total:
                next_index += 1
                try:
                    response = await client.post(
                        "/v1/chat/completions",
                        json={"model": "gpt-4o-mini", "messages": USER},
                        headers=HEADERS,
                    )
                    results.append((response.status_code, response.content))
                except httpx.HTTPError as exc:
                    results.append((0, repr(exc).encode()))
                on_done(len(results))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def _kill_worker_under_load(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI, redis_url: str
) -> None:
    # As deployed: the two replicas share their state through a real Redis.
    state = {"backend": "redis", "redis_url": redis_url}
    proxy = start_proxy(tmp_path, two_backends(fake_a, fake_b, state=state), "--workers", "2")
    try:
        [first] = worker_pids(proxy)[0]
        port0 = proxy.grpc_port
        killed = threading.Event()

        def on_done(count: int) -> None:
            if count >= 1000 and not killed.is_set():
                killed.set()
                os.kill(first, signal.SIGKILL)

        started = time.monotonic()
        results = asyncio.run(_load(proxy.base_url, 5000, 16, on_done))
        elapsed = time.monotonic() - started
        statuses = Counter(status for status, _ in results)
        failed = [(s, b) for s, b in results if s != 200]
        print(f"5000 requests in {elapsed:.1f} s; statuses {dict(statuses)}")
        assert killed.is_set()
        assert len(results) == 5000
        # Only what was on the dead worker fails (in flight, or sent to it before
        # Envoy noticed), each with the proxy's 503 in the client's dialect.
        for status, body in failed:
            assert status == 503, (status, body[:300])
            error = json.loads(body)["error"]
            assert error["code"] == "proxy_unavailable" and error["type"] == "service_unavailable"
        assert len(failed) <= 16 * 2, statuses
        # The supervisor restarted it, and Envoy sends it work again.
        wait_for(lambda: len(worker_pids(proxy).get(0, [])) == 2, 15, what="worker 0 restarted")
        assert "worker 0 (pid" in proxy.log() and "died with exit code -9" in proxy.log()
        wait_for(
            lambda: set(proxy.host_health("extproc").values()) == {"healthy"},
            15,
            what="both workers healthy",
        )
        before = extproc_rq_total(proxy, port0)
        for _ in range(20):
            assert chat(proxy.base_url).status_code == 200
        assert extproc_rq_total(proxy, port0) > before
        assert proxy.stop() == 0
    finally:
        proxy.stop(signal.SIGKILL)


def test_kill_one_worker_under_load(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI, redis_server: RedisServer
) -> None:
    _kill_worker_under_load(tmp_path, fake_a, fake_b, redis_server.url)


def test_all_workers_down_fails_closed_then_recovers(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    proxy = start_proxy(tmp_path, two_backends(fake_a, fake_b), "--workers", "2")
    try:
        assert chat(proxy.base_url).status_code == 200
        pids = [pids[0] for pids in worker_pids(proxy).values()]
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # Fails closed in the client's dialect while no worker is there...
        down: list[httpx.Response] = []

        def fails_closed() -> bool:
            response = chat(proxy.base_url)
            if is_unavailable(response):
                down.append(response)
                return True
            return False

        wait_for(fails_closed, 10, interval=0.01, what="a 503 while no worker runs")
        assert down[0].headers["content-type"].startswith("application/json")
        # ...and recovers by itself once the supervisor has restarted them.
        wait_for(lambda: chat(proxy.base_url).status_code == 200, 20, what="recovery")
        assert all(len(p) == 2 for p in worker_pids(proxy).values())
        assert proxy.stop() == 0
    finally:
        proxy.stop(signal.SIGKILL)


def test_gemini_dialect_when_no_worker(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """The fail-closed answer in another dialect: Gemini's 503 UNAVAILABLE."""
    proxy = start_proxy(tmp_path, two_backends(fake_a, fake_b), "--workers", "2")
    try:
        # Stop the workers' restarts from racing the check: SIGSTOP the supervisor.
        os.kill(proxy.proc.pid, signal.SIGSTOP)
        try:
            for pids in worker_pids(proxy).values():
                os.kill(pids[0], signal.SIGKILL)
            response = gemini(proxy.base_url)
            assert response.status_code == 503
            assert response.json()["error"]["status"] == "UNAVAILABLE"
        finally:
            os.kill(proxy.proc.pid, signal.SIGCONT)
        wait_for(lambda: chat(proxy.base_url).status_code == 200, 20, what="recovery")
    finally:
        proxy.stop(signal.SIGKILL)


def _stream(base_url: str, out: list[bytes], started: threading.Event) -> None:
    with httpx.stream(
        "POST",
        f"{base_url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": USER, "stream": True},
        headers=HEADERS,
        timeout=30,
    ) as response:
        assert response.status_code == 200
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            started.set()
        out.append(body)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_lets_open_streams_finish(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI, workers: str
) -> None:
    proxy = start_proxy(
        tmp_path, two_backends(fake_a, fake_b), "--workers", workers, "--drain-timeout", "15"
    )
    try:
        # About ten events each, 0.3 s apart: every stream is open ~3 s.
        fake_a.set_fault(chunk_delay=0.3)
        bodies: list[bytes] = []
        started = [threading.Event() for _ in range(10)]
        threads = [
            threading.Thread(target=_stream, args=(proxy.base_url, bodies, event), daemon=True)
            for event in started
        ]
        for thread in threads:
            thread.start()
        for event in started:
            assert event.wait(10), "a stream did not start"
        stopping = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        # New connections are refused while the streams finish.
        wait_for(
            lambda: _refused(proxy.base_url) or proxy.proc.poll() is not None,
            5,
            what="the listener to stop accepting",
        )
        assert proxy.proc.wait(25) == 0
        took = time.monotonic() - stopping
        for thread in threads:
            thread.join(5)
        assert len(bodies) == 10
        for body in bodies:
            assert body.rstrip().endswith(b"data: [DONE]"), body[-200:]
        assert took < 15 + 5
        print(f"workers={workers}: stopped {took:.1f} s after SIGTERM with 10 streams open")
    finally:
        fake_a.clear_faults()
        proxy.stop(signal.SIGKILL)


def _refused(base_url: str) -> bool:
    try:
        chat(base_url, timeout=2)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def test_kill_9_of_the_supervisor_leaves_nothing_behind(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    config = two_backends(fake_a, fake_b)
    proxy = start_proxy(tmp_path, config, "--workers", "2")
    try:
        assert chat(proxy.base_url).status_code == 200
        descendants = children_of(proxy.proc.pid)
        expected = {proxy.envoy_pid(), *(p[0] for p in worker_pids(proxy).values())}
        assert expected <= descendants, (expected, descendants)
        proxy.proc.kill()
        proxy.proc.wait(5)
        wait_for(
            lambda: not any(alive(pid) for pid in descendants),
            10,
            what=f"no child left of {sorted(descendants)}",
        )
        again = start_proxy(tmp_path, config, "--workers", "2", name="again")
        try:
            assert chat(again.base_url).status_code == 200
        finally:
            assert again.stop() == 0
    finally:
        proxy.stop(signal.SIGKILL)


def test_reload_reaches_every_worker(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    import httpx

    from tests.harness import write_config

    config = two_backends(fake_a, fake_b)
    proxy = start_proxy(tmp_path, config, "--workers", "2")
    try:
        # SIGHUP to the supervisor: Envoy (unchanged here) and each worker reload.
        write_config(
            proxy.config_path, {**config, "routing": {"aliases": {"nick": "openai:gpt-4o"}}}
        )
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: proxy.log().count("config reloaded") == 3,
            20,
            what="the supervisor and both workers to reload",
        )
        assert "reload: telling the workers" in proxy.log()
        for _ in range(6):  # whichever worker answers knows the alias
            answer = httpx.post(
                f"{proxy.base_url}/v1/chat/completions",
                json={"model": "nick", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
        # The admin endpoint on a worker checks the config, then asks the supervisor.
        write_config(proxy.config_path, {**config, "port": "not-a-port"})
        refused = httpx.post(f"{proxy.base_url}/v1/admin/reload", timeout=30)
        assert refused.status_code == 400, refused.text
        write_config(proxy.config_path, config)
        accepted = httpx.post(f"{proxy.base_url}/v1/admin/reload", timeout=30)
        assert accepted.status_code == 202, accepted.text
        wait_for(lambda: proxy.log().count("config reloaded") == 6, 20, what="a second reload")
        assert chat(proxy.base_url).status_code == 200
        assert proxy.stop() == 0
    finally:
        proxy.stop(signal.SIGKILL)


def test_bootstrap_lists_every_worker_and_is_valid(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    import subprocess
    import sys

    import yaml

    from tests.harness import REPO, envoy_binary, write_config

    config = two_backends(fake_a, fake_b, capture={"enabled": True, "observers": True})
    path = tmp_path / "config.yaml"
    write_config(path, config)
    out = subprocess.run(
        [sys.executable, "-m", "extproc", "envoy-config", "--config", str(path), "--workers", "3"],
        cwd=REPO,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    clusters = {c["name"]: c for c in yaml.safe_load(out)["static_resources"]["clusters"]}
    extproc = clusters["extproc"]
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in extproc["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    base = int(str(config["grpc_port"]))
    assert ports == [base + i for i in range(3)]
    assert extproc["health_checks"][0]["grpc_health_check"] == {}
    assert extproc["outlier_detection"]["split_external_local_origin_errors"] is True
    capture = clusters["extproc_capture"]
    assert len(capture["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 1
    assert "health_checks" not in capture
    (tmp_path / "envoy.yaml").write_text(out)
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(tmp_path / "envoy.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
