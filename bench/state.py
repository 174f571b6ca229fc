"""The cost of shared state (``state.backend: redis``): hot-path enqueue and replication delay.

    python -m bench.state            # about 10 seconds
    python -m bench.state --quick    # about 3 seconds

Starts its own ``redis-server`` (Debian's, from ``PATH``) on a free loopback
port, with no persistence, and stops it by PID at the end. Two figures:

* **hot path**: what a change costs the request that makes it, in µs: a bare
  ``RedisBus.publish`` (the enqueue), and the per-request dedup bookkeeping
  (``admit`` + ``done``) and a health cool-down (``observe(429)``) with and
  without a started Redis bus attached. The publisher does not run while
  these loops run (they never yield to the event loop), so this is the
  enqueue alone, which is all the request ever pays.
* **replication**: replica A publishes a change every ``--gap`` ms; replica B's
  handler notes how long after A's ``time.time()`` it arrived, on loopback
  (ms p50 / p99 / max), through the real publisher batching, pipeline,
  ``PUBLISH`` and subscriber.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

from extproc.config.model import HealthPolicyConfig
from extproc.routing.health import HealthBoard
from extproc.sessions.dedup import DedupTable
from extproc.state import share
from extproc.state.redis_bus import RedisBus


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH (deploy/install.sh installs it)")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("redis-server did not start")


def _per_call_us(work: Callable[[int], None], n: int, repeat: int = 5) -> float:
    """Best of ``repeat`` runs of ``work(n)``, in µs per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        work(n)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


async def _hot_path(url: str, n: int) -> dict[str, float]:
    bus = RedisBus(url, prefix="bench-hot:", queue_size=10 * n)
    await bus.start()
    try:
        record = {"started": 1.0, "finished": None, "at": 1.0, "expires": 2.0}

        # The publisher drains the queue as it fills; these loops never yield to
        # it, so they empty it themselves every 1024 changes (a queue that grows
        # to 100k entries would measure the garbage collector instead).
        queue = bus._queue

        def enqueue(count: int) -> None:
            for i in range(count):
                bus.publish("dedup", "k", record)
                if not i & 1023:
                    queue.clear()

        def dedup(table: DedupTable) -> Callable[[int], None]:
            def run(count: int) -> None:
                for i in range(count):
                    key = f"sess-1:{i}"
                    table.admit(key)
                    table.done(key, 200)
                    if not i & 1023:
                        queue.clear()

            return run

        def cooldown(board: HealthBoard) -> Callable[[int], None]:
            def run(count: int) -> None:
                for i in range(count):
                    board.observe("x", 429, retry_after="1")
                    if not i & 1023:
                        queue.clear()

            return run

        local_table, shared_table = DedupTable(), DedupTable()
        share(bus, "dedup", shared_table)
        local_board = HealthBoard(["x"], HealthPolicyConfig())
        shared_board = HealthBoard(["x"], HealthPolicyConfig())
        share(bus, "health", shared_board)
        return {
            "publish_us": _per_call_us(enqueue, n),
            "dedup_local_us": _per_call_us(dedup(local_table), n),
            "dedup_shared_us": _per_call_us(dedup(shared_table), n),
            "cooldown_local_us": _per_call_us(cooldown(local_board), n),
            "cooldown_shared_us": _per_call_us(cooldown(shared_board), n),
        }
    finally:
        await bus.close()


async def _replication(url: str, n: int, gap: float) -> list[float]:
    a = RedisBus(url, prefix="bench-repl:")
    b = RedisBus(url, prefix="bench-repl:", snapshot_limit=0)
    delays: list[float] = []

    def arrived(key: str, record: dict[str, Any]) -> None:
        delays.append((time.time() - float(record["at"])) * 1000)

    b.subscribe("probe", arrived)
    await asyncio.gather(a.start(), b.start())
    try:
        for i in range(n):
            now = time.time()
            a.publish("probe", str(i % 64), {"at": now, "expires": now + 5})
            await asyncio.sleep(gap)
        deadline = time.monotonic() + 5
        while len(delays) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await asyncio.gather(a.close(), b.close())
    return delays


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--gap", type=float, default=1.0, help="ms between replicated changes")
    args = parser.parse_args()
    n_hot, n_repl = (20_000, 500) if args.quick else (100_000, 3000)
    proc, url = _start_redis()
    try:
        hot = asyncio.run(_hot_path(url, n_hot))
        delays = asyncio.run(_replication(url, n_repl, args.gap / 1000))
    finally:
        proc.kill()
        proc.wait()
    print("hot path (µs per call, best of 5):")
    print(f"  RedisBus.publish (enqueue)          {hot['publish_us']:.3f}")
    print(
        f"  dedup admit+done   local {hot['dedup_local_us']:.3f}  shared "
        f"{hot['dedup_shared_us']:.3f}  (+{hot['dedup_shared_us'] - hot['dedup_local_us']:.3f})"
    )
    print(
        f"  health 429         local {hot['cooldown_local_us']:.3f}  shared "
        f"{hot['cooldown_shared_us']:.3f}  "
        f"(+{hot['cooldown_shared_us'] - hot['cooldown_local_us']:.3f})"
    )
    print(
        f"replication A -> B on loopback, {len(delays)}/{n_repl} changes, one per {args.gap} ms: "
        f"p50 {statistics.median(delays):.3f} ms, p99 {_quantile(delays, 0.99):.3f} ms, "
        f"max {max(delays):.3f} ms"
    )


if __name__ == "__main__":
    main()
