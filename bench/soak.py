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

Memory (``--memory``): resident memory of the extproc process under steady load.

    python -m bench.soak --memory                     # 200,000 requests per mode
    python -m bench.soak --memory --requests 50000    # shorter
    python -m bench.soak --memory --modes json

One fake OpenAI account behind a single-instance route, every agent stage on (redaction,
dangerous commands, tool access, file sandbox, sessions, in-chat commands, dedup, steering,
rewrites, loop detection, tool-call loops, tool-call repair, compression, empty answers),
metrics on. Each mode (``json``, ``stream``) gets a fresh proxy: a warm-up (``--warmup``
requests), then ``--requests`` requests, the extproc's RSS (``VmRSS`` of
``/proc/<pid>/status``) read after the warm-up, at every tenth of the run and at the end. The
table shows the RSS after the warm-up and at the end, the delta and bytes per request; the
exit code is 1 when a mode grew by more than ``--limit-mb`` (5 MB) or a request failed.
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
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.httpclient import HttpConnection, ProtocolError, Response, build_request, connect
from bench.procs import Managed, fake_control, free_port, listen_ports, spawn, start_proxy
from bench.stats import percentile

DEFAULT_LOGS = Path("bench/results/soak")
CLIENT_KEY = "sk-fake-soak-client"
CHAT_PATH = "/v1/chat/completions"
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
        fake = spawn(stack, name, args, logs / f"{name}.log")
        fake.wait_for(partial(_listening, fake, port), "'listening on'")
        ports[name] = (port, control)
    return ports


def _listening(fake: Managed, port: int) -> bool:
    return f"listening on {port}" in fake.log()


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
        **listen_ports(),
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
    body: dict[str, Any] = {"model": "soak", "messages": [{"role": "user", "content": "hello"}]}
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


# --------------------------------------------------------------------------------------------
# Memory under steady load (--memory)

MEMORY_MODEL = "gpt-4o-mini"
MEMORY_ANSWER_CHARS = 64
MEMORY_CHUNK_CHARS = 8
MEMORY_MODES = ("json", "stream")
MiB = 1024 * 1024

#: Tools an agent declares (tool access, repair and the tool guards see them).
MEMORY_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name} tool",
            "parameters": {"type": "object", "properties": props, "required": list(props)},
        },
    }
    for name, props in (
        ("Bash", {"command": {"type": "string"}}),
        ("Read", {"file_path": {"type": "string"}}),
        ("Write", {"file_path": {"type": "string"}, "content": {"type": "string"}}),
    )
]


def start_memory_fake(stack: contextlib.ExitStack, logs: Path) -> int:
    port = free_port()
    args = [sys.executable, "-m", "tests.fakes.openai_upstream", "--port", str(port)]
    args += ["--name", "memory", "--api-key", "sk-fake-memory", "--models", MEMORY_MODEL]
    args += ["--answer-chars", str(MEMORY_ANSWER_CHARS)]
    args += ["--chunk-chars", str(MEMORY_CHUNK_CHARS)]
    fake = spawn(stack, "memory-fake", args, logs / "memory-fake.log")
    fake.wait_for(partial(_listening, fake, port), "'listening on'")
    return port


def memory_config(fake_port: int, workdir: Path) -> dict[str, Any]:
    """A single-instance route with every agent stage on (the defaults plus the opt-in ones)."""
    return {
        **listen_ports(),
        "backends": {
            "openai": {
                "type": "openai",
                "base_url": f"http://127.0.0.1:{fake_port}/v1",
                "api_key": "sk-fake-memory",
                "models": [MEMORY_MODEL],
                "health_check": {"interval": "1s"},
            }
        },
        "envoy": {"log_level": "error"},
        "metrics": {"enabled": True, "port": 0},
        "redaction": {"enabled": True},
        "commands": {"enabled": True},
        "tool_access": {"rules": [{"deny": ["Dangerous*"]}]},
        "sandbox": {"enabled": True, "roots": [str(workdir.resolve())]},
        "sessions": {"enabled": True, "store": "memory"},
        "interactive": {"enabled": True},
        "dedup": {"enabled": True},
        "steering": [
            {"id": "no-force-push", "trigger": "git push --force", "message": "Do not force-push."}
        ],
        "rewrites": [{"id": "tone", "target": "system", "action": "append", "text": " Be brief."}],
        "loop_detection": {"enabled": True},
        "tool_loops": {"enabled": True},
        "tool_repair": {"enabled": True},
        "compression": {"enabled": True, "threshold_tokens": 0},
        "empty_answers": {"enabled": True},
    }


def memory_body(stream: bool, number: int) -> bytes:
    """An agent's turn: tools, one earlier tool call and its result, a fresh user line."""
    body: dict[str, Any] = {
        "model": MEMORY_MODEL,
        "messages": [
            {"role": "system", "content": "You are a coding agent. Use the tools."},
            {"role": "user", "content": "Run the tests and tell me what fails."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "Bash",
                            "arguments": json.dumps({"command": "python -m pytest -q"}),
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "3 passed in 0.12s"},
            {"role": "user", "content": f"Good. Step {number}: what next?"},
        ],
        "tools": MEMORY_TOOLS,
        "temperature": 0.2,
        "max_tokens": 256,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (``VmRSS`` of ``/proc/<pid>/status``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def memory_ok(response: Response, stream: bool) -> str | None:
    """None when the answer is the fake's text, else what is wrong."""
    if response.status != 200:
        return f"status {response.status}: {response.full_body()[:120]!r}"
    body = response.full_body()
    try:
        text = stream_text(body) if stream else json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"{type(exc).__name__}: {exc}: {body[:120]!r}"
    if not text.startswith("memory says hello"):
        return f"unexpected text {text[:60]!r}"
    return None


@dataclass
class MemoryRow:
    mode: str
    requests: int
    rss_warm: int
    rss_end: int
    samples: list[tuple[int, int]]  # (requests done, RSS)
    failures: list[str]
    elapsed: float

    @property
    def delta(self) -> int:
        return self.rss_end - self.rss_warm


async def drive(
    port: int, stream: bool, count: int, concurrency: int, first: int, failures: list[str]
) -> None:
    """``count`` requests from ``concurrency`` keep-alive connections, each its own session."""
    todo = iter(range(first, first + count))

    async def worker(session: int) -> None:
        conn: HttpConnection | None = None
        headers = {
            "authorization": f"Bearer {CLIENT_KEY}",
            "accept": "text/event-stream" if stream else "application/json",
            "user-agent": "claude-cli/1.0.0 (bench)",
            "x-session-id": f"soak-memory-{session}",
        }
        try:
            for number in todo:
                if conn is None or conn.closed:
                    conn = await connect("127.0.0.1", port)
                request = build_request(
                    "127.0.0.1", port, CHAT_PATH, memory_body(stream, number), headers
                )
                try:
                    response = await asyncio.wait_for(conn.send(request), 30)
                except (OSError, ConnectionError, ProtocolError, TimeoutError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = None
                    continue
                problem = memory_ok(response, stream)
                if problem is not None:
                    failures.append(problem)
                if not response.keep_alive:
                    conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    await asyncio.gather(*(worker(session) for session in range(concurrency)))


async def memory_mode(
    mode: str, port: int, pid: int, total: int, warmup: int, concurrency: int
) -> MemoryRow:
    stream = mode == "stream"
    failures: list[str] = []
    await drive(port, stream, warmup, concurrency, 0, failures)
    await asyncio.sleep(1.0)  # the bookkeeping scheduled by the last requests settles
    rss_warm = rss_bytes(pid)
    samples = [(0, rss_warm)]
    started = time.monotonic()
    step = max(1, total // 10)
    done = 0
    while done < total:
        count = min(step, total - done)
        await drive(port, stream, count, concurrency, warmup + done, failures)
        done += count
        samples.append((done, rss_bytes(pid)))
        print(f"  .. {mode}: {done:>7} requests, RSS {samples[-1][1] / MiB:.1f} MiB", flush=True)
    elapsed = time.monotonic() - started
    await asyncio.sleep(1.0)
    rss_end = rss_bytes(pid)
    return MemoryRow(mode, total, rss_warm, rss_end, samples, failures, elapsed)


def memory_table(rows: Sequence[MemoryRow]) -> str:
    lines = [
        f"{'mode':<7} {'requests':>9} {'RSS warm MiB':>13} {'RSS end MiB':>12} "
        f"{'delta MiB':>10} {'bytes/req':>10} {'req/s':>7} {'failed':>7}",
    ]
    for row in rows:
        lines.append(
            f"{row.mode:<7} {row.requests:>9} {row.rss_warm / MiB:>13.1f} "
            f"{row.rss_end / MiB:>12.1f} {row.delta / MiB:>10.2f} "
            f"{row.delta / row.requests:>10.1f} {row.requests / row.elapsed:>7.0f} "
            f"{len(row.failures):>7}"
        )
    return "\n".join(lines)


def memory_main(args: argparse.Namespace) -> int:
    total = args.requests if args.requests is not None else 200_000
    warmup = args.warmup if args.warmup is not None else min(20_000, max(1000, total // 10))
    rows: list[MemoryRow] = []
    for mode in args.modes:
        with contextlib.ExitStack() as stack:
            fake_port = start_memory_fake(stack, args.logs)
            config = memory_config(fake_port, args.logs)
            proxy, _envoy = start_proxy(stack, args.logs, config, name=f"memory-{mode}")
            print(f"{mode}: warm-up {warmup}, then {total} requests, c={args.concurrency}")
            row = asyncio.run(
                memory_mode(mode, config["port"], proxy.pid, total, warmup, args.concurrency)
            )
            rows.append(row)
    print()
    print(memory_table(rows))
    limit = int(args.limit_mb * MiB)
    bad = [row for row in rows if row.delta > limit or row.failures]
    for row in rows:
        for why in row.failures[:5]:
            print(f"  {row.mode} failed: {why}")
    if bad:
        print(f"FAIL: {', '.join(r.mode for r in bad)} (limit {args.limit_mb} MB, no failures)")
        return 1
    print(f"ok: every mode within {args.limit_mb} MB")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--memory", action="store_true", help="the memory soak (see above)")
    parser.add_argument(
        "--requests", type=int, default=None, help="10,000 (failover) or 200,000 per mode (memory)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--logs", type=Path, default=DEFAULT_LOGS)
    parser.add_argument("--warmup", type=int, default=None, help="memory: warm-up requests")
    parser.add_argument("--modes", type=lambda v: v.split(","), default=list(MEMORY_MODES))
    parser.add_argument("--limit-mb", type=float, default=5.0, help="memory: allowed growth")
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    if args.memory:
        return memory_main(args)
    if args.requests is None:
        args.requests = 10_000
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
