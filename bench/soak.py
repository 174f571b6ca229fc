"""Soak: many requests over a failover pool whose providers fail in every way, and not one lost.

    python -m bench.soak                      # 10,000 requests, 16 at a time
    python -m bench.soak --requests 2000 --concurrency 8

Three fake OpenAI accounts (``alpha``, ``beta``, ``gamma``, each a process of its own) behind
the alias ``soak = openai:gpt-4o|openai.1:gpt-4o|openai.2:gpt-4o``. While the requests run, a
schedule breaks them: 503 bursts, a 429 storm with ``retry-after``, a revoked key (401), an
exhausted quota, connection resets, a slow provider (past ``timeouts.attempt``), a provider that
dies and comes back, and a short total outage.

A request is *answered* when it gets a 200 whose text is one of the fakes' answers (JSON or a
complete stream), *refused clearly* when it gets an error status with an OpenAI-shaped error body
(only expected during the total outage), and *lost* otherwise: a connection error, a timeout, a
malformed or truncated body, a 200 with the wrong text. The exit code is 0 only when none is
lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.procs import _spawn, fake_control, free_port, start_proxy
from bench.stats import percentile

DEFAULT_LOGS = Path("bench/results/soak")
CLIENT_KEY = "sk-fake-soak-client"
NAMES = ("alpha", "beta", "gamma")
INSTANCES = {"alpha": "openai", "beta": "openai.1", "gamma": "openai.2"}


@dataclass
class Tally:
    answered: Counter[str] = field(default_factory=Counter)  # by fake
    refused: Counter[int] = field(default_factory=Counter)  # by status
    lost: list[str] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)
    done: int = 0


#: (fraction of the run, fake, fault knobs or None to clear it)
SCHEDULE: list[tuple[float, str, dict[str, Any] | None]] = [
    (0.05, "alpha", {"status": 503, "count": 300, "chat_only": True}),
    (0.15, "alpha", {"status": 429, "retry_after": 1, "count": 200, "chat_only": True}),
    (0.25, "alpha", {"status": 401, "count": 100, "chat_only": True}),
    (0.35, "beta", {"refuse": True}),  # dies...
    (0.50, "beta", None),  # ...and comes back
    (0.55, "alpha", {"status": 429, "quota": True, "count": 50, "chat_only": True}),
    (0.65, "alpha", {"reset": True, "count": 100, "chat_only": True}),
    (0.75, "alpha", {"delay": 3, "count": 10, "chat_only": True}),
    (0.85, "alpha", {"status": 503, "count": 15, "chat_only": True}),  # a short outage of all
    (0.85, "beta", {"status": 503, "count": 15, "chat_only": True}),
    (0.85, "gamma", {"status": 503, "count": 15, "chat_only": True}),
]


def start_fakes(stack: contextlib.ExitStack, logs: Path) -> dict[str, tuple[int, int]]:
    ports: dict[str, tuple[int, int]] = {}
    for name in NAMES:
        port, control = free_port(), free_port()
        args = [sys.executable, "-m", "tests.fakes.openai_upstream", "--port", str(port)]
        args += ["--control-port", str(control), "--name", name, "--api-key", f"sk-fake-{name}"]
        args += ["--models", "gpt-4o", "--answer-chars", "64", "--chunk-chars", "8"]
        fake = _spawn(stack, name, args, logs / f"{name}.log")
        fake.wait_for(lambda f=fake, p=port: f"listening on {p}" in f.log(), "'listening on'")
        ports[name] = (port, control)
    return ports


def soak_config(ports: dict[str, tuple[int, int]]) -> dict[str, Any]:
    health = {
        "health_check": {"interval": "0.5s", "no_traffic_interval": "0.5s", "timeout": "0.5s"},
        "outlier_detection": {"consecutive_5xx": 20, "interval": "1s", "base_ejection_time": "2s"},
        "connect_timeout": "0.5s",
        "models": ["gpt-4o"],
    }
    backends = {
        INSTANCES[name]: {
            "type": "openai-compatible",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "api_key": f"sk-fake-{name}",
            **health,
        }
        for name, (port, _) in ports.items()
    }
    return {
        "host": "127.0.0.1",
        "port": free_port(),
        "grpc_port": free_port(),
        "admin_port": free_port(),
        "anthropic_port": 0,
        "backends": backends,
        "routing": {
            "aliases": {"soak": "|".join(f"{i}:gpt-4o" for i in INSTANCES.values())},
            "health": {"auth_failure_cooldown": "3s", "quota_cooldown": "3s"},
        },
        "timeouts": {"attempt": "1s", "stream_idle": "10s"},
        "envoy": {"log_level": "error"},
        "metrics": {"port": 0},
    }


def check(response: httpx.Response, body: bytes, stream: bool) -> tuple[str, str | int]:
    """("answered", fake) | ("refused", status) | ("lost", why)."""
    if response.status_code == 200:
        text = stream_text(body) if stream else json.loads(body)["choices"][0]["message"]["content"]
        for name in NAMES:
            if text.startswith(f"{name} says hello"):
                return "answered", name
        return "lost", f"200 with unexpected text {text[:60]!r}"
    try:
        error = json.loads(body)["error"]
        assert isinstance(error["message"], str) and error["message"]
    except (ValueError, KeyError, TypeError, AssertionError):
        return "lost", f"{response.status_code} without an OpenAI error body: {body[:80]!r}"
    return "refused", response.status_code


def stream_text(body: bytes) -> str:
    events = [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        raise ValueError("a stream without its [DONE]")
    parts = []
    for event in events[:-1]:
        chunk = json.loads(event)
        if "error" in chunk:
            raise ValueError(f"an error event: {chunk['error']}")
        for choice in chunk.get("choices", []):
            parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


async def one(client: httpx.AsyncClient, url: str, stream: bool, tally: Tally) -> None:
    body = {"model": "soak", "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        body["stream"] = True
    started = time.perf_counter_ns()
    try:
        response = await client.post(url, json=body)
        raw = response.content
        outcome, detail = check(response, raw, stream)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        outcome, detail = "lost", f"{type(exc).__name__}: {exc}"
    tally.latencies_ns.append(time.perf_counter_ns() - started)
    if outcome == "answered":
        tally.answered[str(detail)] += 1
    elif outcome == "refused":
        tally.refused[int(detail)] += 1
    else:
        tally.lost.append(str(detail))
    tally.done += 1


async def chaos(total: int, tally: Tally, ports: dict[str, tuple[int, int]]) -> list[str]:
    log = []
    for fraction, name, knobs in SCHEDULE:
        while tally.done < fraction * total:
            await asyncio.sleep(0.01)
        control = ports[name][1]
        if knobs is None:
            await asyncio.to_thread(fake_control, control, "DELETE", "/faults")
        else:
            await asyncio.to_thread(fake_control, control, "POST", "/faults", knobs)
        log.append(f"at {tally.done:>6}: {name} {knobs or 'recovered'}")
    return log


async def run(total: int, concurrency: int, proxy_port: int, ports: dict[str, Any]) -> Tally:
    tally = Tally()
    url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
    rng = random.Random(7)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as client:
        queue: asyncio.Queue[bool] = asyncio.Queue()
        for _ in range(total):
            queue.put_nowait(rng.random() < 0.2)  # a fifth of them streams

        async def worker() -> None:
            while not queue.empty():
                stream = queue.get_nowait()
                await one(client, url, stream, tally)

        schedule = asyncio.create_task(chaos(total, tally, ports))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        for line in await schedule:
            print("  ..", line)
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--logs", type=Path, default=DEFAULT_LOGS)
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        ports = start_fakes(stack, args.logs)
        config = soak_config(ports)
        start_proxy(stack, args.logs, config)
        started = time.monotonic()
        tally = asyncio.run(run(args.requests, args.concurrency, config["port"], ports))
        elapsed = time.monotonic() - started
    latencies = sorted(tally.latencies_ns)
    answered = sum(tally.answered.values())
    refused = sum(tally.refused.values())
    print(
        f"requests {tally.done} in {elapsed:.1f} s ({tally.done / elapsed:.0f}/s), "
        f"concurrency {args.concurrency}"
    )
    print(f"answered {answered}  by provider {dict(sorted(tally.answered.items()))}")
    print(f"refused clearly {refused}  by status {dict(sorted(tally.refused.items()))}")
    p50, p99 = percentile(latencies, 50) / 1e6, percentile(latencies, 99) / 1e6
    print(f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {latencies[-1] / 1e6:.0f} ms")
    print(f"LOST {len(tally.lost)}" if tally.lost else "lost 0")
    for why in tally.lost[:10]:
        print("  lost:", why)
    return 1 if tally.lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
