"""How many worker threads the embedded Envoy gets when the config does not say.

Envoy's default is a worker per CPU. The embedded Envoy shares the machine with the
extproc workers, each a Python process that keeps about one CPU busy under load (it is
the bottleneck: about 2 ms of CPU per request against Envoy's 0.3 ms). Envoy workers
beyond the CPUs the extproc leaves free only preempt it, so the default here is the
CPUs this process may use less the extproc workers, at least one
(docs/performance.md has the measurement).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["available_cpus", "envoy_concurrency"]

#: cgroup v2's CPU quota of this container ("max 100000" or "150000 100000").
_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = _CPU_MAX) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def envoy_concurrency(configured: int | None, extproc_workers: int, cpus: int | None = None) -> int:
    """``--concurrency`` for the embedded Envoy: ``configured``, else the CPUs left over."""
    if configured:
        return configured
    total = available_cpus() if cpus is None else cpus
    return max(1, total - max(1, extproc_workers))
