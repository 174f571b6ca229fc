"""Throughput with 1 and 2 extproc workers (``--workers``), and Envoy alone, in one run.

``python -m bench.replicas [--concurrency 32] [--seconds 5] [--rounds 3]``

Starts the direct_response upstream of :mod:`bench.floor` (an Envoy answering a fixed chat
completion: an upstream that costs almost nothing), Envoy alone (no ext_proc), and two
proxies: ``--workers 1`` (extproc in the supervisor's process) and ``--workers 2`` (two
worker processes behind Envoy's health-checked ``extproc`` cluster). Then closed-loop rounds
of ``wrk -t1 -cC`` (:mod:`bench.wrk`), interleaved (envoy, w1, w2, envoy, w1, w2, ...) so
that drift of the machine hits all alike, and prints req/s, p50 and p99 (medians over
rounds), the CPU per request of each target's processes and the busy cores measured from
/proc. One request per target is validated before the rounds; wrk counts non-2xx answers
and socket errors during them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.floor import (
    JSON_MODEL,
    backend_config,
    check_answer,
    request_headers,
    start_upstream,
)
from bench.load import chat_body
from bench.procs import (
    MACHINE,
    CpuSampler,
    find_envoy_binary,
    free_port,
    start_baseline_envoy,
    start_proxy,
)
from bench.stats import median
from bench.wrk import WrkResult, find_wrk, run_wrk, write_script

__all__ = ["main"]

CHAT_PATH = "/v1/chat/completions"
_WORKER_PID_RE = re.compile(r"worker \d+ started \(pid (\d+)")


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args(argv)


def _port_pair(taken: set[int]) -> int:
    """A free port P with P + 1 free too (worker N listens on grpc_port + N)."""
    while True:
        port = free_port()
        if port in taken or port + 1 in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def _row(name: str, results: list[WrkResult], pids: Sequence[str]) -> dict[str, Any]:
    wall = sum(r.seconds for r in results)
    requests = sum(r.requests for r in results)
    mine = sum(r.cpu_s.get(pid, 0.0) for r in results for pid in pids)
    machine = sum(r.cpu_s.get(MACHINE, 0.0) for r in results)
    return {
        "target": name,
        "rps": median([r.rps for r in results]),
        "p50_ms": median([r.p50_ms for r in results]),
        "p99_ms": median([r.p99_ms for r in results]),
        "target_cores": mine / wall if wall else 0.0,
        "cpu_ms_per_request": mine * 1000 / requests if requests else 0.0,
        "machine_cores": machine / wall if wall else 0.0,
        "errors": sum(r.errors for r in results),
        "rounds": [round(r.rps) for r in results],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    find_wrk()
    envoy_binary = find_envoy_binary()
    body = chat_body(JSON_MODEL, stream=False)
    with (
        tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        logs = Path(tmp)
        upstream, ports = start_upstream(stack, logs, envoy_binary)
        baseline = backend_config(ports)
        envoy = start_baseline_envoy(stack, logs, baseline, envoy_binary)
        pids: dict[str, int] = {"upstream": upstream.pid, "envoy-alone": envoy.pid}
        targets = {"envoy": baseline["port"]}
        groups: dict[str, list[str]] = {"envoy": ["envoy-alone"]}
        for workers in (1, 2):
            config = backend_config(ports)
            config["workers"] = workers
            config["grpc_port"] = _port_pair({config["port"], config["admin_port"]})
            name = f"w{workers}"
            proxy, envoy_pid = start_proxy(stack, logs, config, name=f"proxy-{name}")
            members = {f"{name}-envoy": envoy_pid, f"{name}-supervisor": proxy.pid}
            for i, match in enumerate(_WORKER_PID_RE.finditer(proxy.log())):
                members[f"{name}-worker{i}"] = int(match.group(1))
            pids.update(members)
            groups[name] = list(members)
            targets[name] = config["port"]
        script = write_script(logs, "chat", body, request_headers("json"))
        for name, port in targets.items():
            problem = check_answer(port, CHAT_PATH, "json", body)
            if problem:
                print(f"VALIDATION FAILED: {name}: {problem}", file=sys.stderr)
                return 2
        print(
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; wrk -t1 "
            f"-c{args.concurrency}, {args.rounds} rounds of {args.seconds:.0f} s, interleaved; "
            f"pids {pids}",
            flush=True,
        )
        sampler = CpuSampler(pids)
        for port in targets.values():  # warm-up: connections, caches
            run_wrk(f"http://127.0.0.1:{port}{CHAT_PATH}", script, connections=2, seconds=1)
        results: dict[str, list[WrkResult]] = {name: [] for name in targets}
        for index in range(args.rounds):
            for name, port in targets.items():
                result = run_wrk(
                    f"http://127.0.0.1:{port}{CHAT_PATH}",
                    script,
                    connections=args.concurrency,
                    seconds=args.seconds,
                    sampler=sampler,
                )
                results[name].append(result)
                print(
                    f"  round {index + 1} {name:>7}: {result.rps:7.0f} req/s "
                    f"({result.errors} errors)",
                    flush=True,
                )
    rows = [_row(name, results[name], groups[name]) for name in targets]
    print()
    print(
        f"{'target':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'its cores':>10} "
        f"{'CPU ms/req':>10} {'machine':>8} {'errors':>7}  rounds"
    )
    for row in rows:
        print(
            f"{row['target']:<8} {row['rps']:8.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
            f"{row['target_cores']:10.2f} {row['cpu_ms_per_request']:10.2f} "
            f"{row['machine_cores']:8.2f} {row['errors']:7d}  "
            f"{row['rounds']}"
        )
    w1 = next(r for r in rows if r["target"] == "w1")
    w2 = next(r for r in rows if r["target"] == "w2")
    if w1["rps"]:
        print(f"\n2 workers / 1 worker: {w2['rps'] / w1['rps']:.2f}x req/s")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
