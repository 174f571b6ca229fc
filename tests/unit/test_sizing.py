"""The embedded Envoy's worker count when the config does not set one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from extproc.server.sizing import available_cpus, envoy_concurrency


@pytest.mark.parametrize(
    ("configured", "workers", "cpus", "expected"),
    [
        (None, 1, 2, 1),  # this repo's CI machine: Envoy and the extproc a CPU each
        (None, 1, 8, 7),
        (None, 2, 2, 1),  # never below one
        (None, 4, 16, 12),
        (3, 1, 2, 3),  # the config wins
    ],
)
def test_envoy_gets_the_cpus_the_extproc_workers_leave(
    configured: int | None, workers: int, cpus: int, expected: int
) -> None:
    assert envoy_concurrency(configured, workers, cpus) == expected


def test_a_cgroup_quota_caps_the_cpus(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: rounded up
    assert available_cpus(cpu_max) == min(affinity, 2)
    cpu_max.write_text("max 100000\n")
    assert available_cpus(cpu_max) == affinity
    cpu_max.write_text("garbage\n")
    assert available_cpus(cpu_max) == affinity
    assert available_cpus(tmp_path / "absent") == affinity
