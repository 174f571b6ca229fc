"""Throughput with 1 and 2 extproc workers (``--workers``), and Envoy alone, in one run.

``python -m bench.replicas [--concurrency 32] [--seconds 5] [--rounds 3]``

Starts the fake upstream (its own process), Envoy alone (no ext_proc), and two
proxies: ``--workers 1`` (extproc in the supervisor's process) and
``--workers 2`` (two worker processes behind Envoy's health-checked
``extproc`` cluster). Then closed-loop rounds at concurrency C, interleaved
(envoy, w1, w2, envoy, w1, w2, ...) so that drift of the machine hits all
alike, and prints req/s, p50 and p99 (medians over rounds) and the busy cores
measured from /proc. The load generator is :mod:`bench.load` (raw asyncio
HTTP/1.1, one connection per client); ``wrk`` is used nowhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.load import PhaseResult, Target, chat_body, run_closed_loop
from bench.procs import (
    MACHINE,
    CpuSampler,
    find_envoy_binary,
    proxy_config,
    start_baseline_envoy,
    start_fake,
    start_proxy,
)
from bench.stats import median, percentile

__all__ = ["main"]

MODEL = "gpt-4o-mini"
CHAT_PATH = "/v1/chat/completions"
PROVIDER_KEY = "sk-fake-bench"
CLIENT_KEY = "sk-bench-client"
_WORKER_PID_RE = re.compile(r"worker \d+ started \(pid (\d+)")


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--answer-chars", type=int, default=200)
    return parser.parse_args(argv)


def _row(name: str, results: list[PhaseResult], pids: Sequence[str]) -> dict[str, Any]:
    rps = median([r.rps for r in results])
    p50 = median([percentile(sorted(r.latencies_ns), 50) / 1e6 for r in results])
    p99 = median([percentile(sorted(r.latencies_ns), 99) / 1e6 for r in results])
    wall = sum(r.wall_ns for r in results) / 1e9
    mine = sum(r.cpu_s.get(pid, 0.0) for r in results for pid in pids)
    machine = sum(r.cpu_s.get(MACHINE, 0.0) for r in results)
    errors = sum(r.errors for r in results)
    return {
        "target": name,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "target_cores": mine / wall if wall else 0.0,
        "cpu_ms_per_request": (mine / wall * 1000 / rps) if wall and rps else 0.0,
        "machine_cores": machine / wall if wall else 0.0,
        "errors": errors,
        "rounds": [round(r.rps) for r in results],
    }


async def _measure(
    targets: dict[str, Target],
    sampler: CpuSampler,
    expected: str,
    concurrency: int,
    seconds: float,
    rounds: int,
) -> dict[str, list[PhaseResult]]:
    body = chat_body(MODEL, stream=False)
    out: dict[str, list[PhaseResult]] = {name: [] for name in targets}
    for target in targets.values():  # warm-up: connections, caches
        await run_closed_loop(
            target,
            target.request(body, stream=False),
            concurrency,
            1.0,
            phase="warmup",
            sampler=None,
            expected_text=expected,
        )
    for index in range(rounds):
        for name, target in targets.items():
            result = await run_closed_loop(
                target,
                target.request(body, stream=False),
                concurrency,
                seconds,
                phase=f"round {index + 1}",
                sampler=sampler,
                expected_text=expected,
            )
            out[name].append(result)
            print(
                f"  round {index + 1} {name:>7}: {result.rps:7.0f} req/s ({result.errors} errors)",
                flush=True,
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    from tests.fakes.openai_upstream import default_answer

    expected = default_answer("bench", MODEL, args.answer_chars)
    with (
        tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        logs = Path(tmp)
        fake, fake_port, _control = start_fake(
            stack, logs, api_key=PROVIDER_KEY, answer_chars=args.answer_chars, chunk_chars=16
        )
        baseline = proxy_config(fake_port, PROVIDER_KEY)
        envoy = start_baseline_envoy(stack, logs, baseline, find_envoy_binary())
        pids: dict[str, int] = {"fake": fake.pid, "loadgen": os.getpid(), "envoy-alone": envoy.pid}
        targets = {"envoy": Target("envoy", "127.0.0.1", baseline["port"], CHAT_PATH, PROVIDER_KEY)}
        groups: dict[str, list[str]] = {"envoy": ["envoy-alone"]}
        for workers in (1, 2):
            config = proxy_config(fake_port, PROVIDER_KEY)
            config["workers"] = workers
            name = f"w{workers}"
            proxy, envoy_pid = start_proxy(stack, logs, config, name=f"proxy-{name}")
            members = {f"{name}-envoy": envoy_pid, f"{name}-supervisor": proxy.pid}
            for i, match in enumerate(_WORKER_PID_RE.finditer(proxy.log())):
                members[f"{name}-worker{i}"] = int(match.group(1))
            pids.update(members)
            groups[name] = list(members)
            targets[name] = Target(name, "127.0.0.1", config["port"], CHAT_PATH, CLIENT_KEY)
        print(
            f"{os.cpu_count()} CPUs; concurrency {args.concurrency}, {args.rounds} rounds of "
            f"{args.seconds:.0f} s, interleaved; pids {pids}",
            flush=True,
        )
        results = asyncio.run(
            _measure(
                targets,
                CpuSampler(pids),
                expected,
                args.concurrency,
                args.seconds,
                args.rounds,
            )
        )
    rows = [_row(name, results[name], groups[name]) for name in targets]
    print()
    print(
        f"{'target':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'its cores':>10} "
        f"{'CPU ms/req':>10} {'machine':>8} {'errors':>7}  rounds"
    )
    for row in rows:
        print(
            f"{row['target']:<8} {row['rps']:8.0f} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} "
            f"{row['target_cores']:10.2f} {row['cpu_ms_per_request']:10.2f} "
            f"{row['machine_cores']:8.2f} {row['errors']:7d}  "
            f"{row['rounds']}"
        )
    w1 = next(r for r in rows if r["target"] == "w1")
    w2 = next(r for r in rows if r["target"] == "w2")
    print(f"\n2 workers / 1 worker: {w2['rps'] / w1['rps']:.2f}x req/s" if w1["rps"] else "")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
