"""``GET /ready``: whether this proxy can take traffic, for probes and people.

Answered by the ROUTER role with no key (probes carry none). Reaching it at all
means Envoy is up and not draining (Envoy's health-check filter answers 503
first otherwise) and a healthy extproc replica took the stream (none: Envoy's
ext_proc failure, a 503 too). The body adds which replica answered and a
summary of the backends' health; instance names only outside multi-user mode.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from extproc.config import Config
from extproc.routing.health import HealthBoard

__all__ = ["readiness"]

#: Set by the supervisor for each worker process (``--workers N``).
WORKER_INDEX_ENV = "LLM_PROXY_WORKER_INDEX"


class _Ready(Protocol):
    config: Config
    health: HealthBoard


def readiness(app: _Ready) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` for ``GET /ready``."""
    counts = {"ok": 0, "cooling": 0, "disabled": 0}
    unavailable: dict[str, str] = {}
    for instance in app.config.backends:
        state = app.health.state(instance)
        counts[state] += 1
        if state != "ok":
            unavailable[instance] = app.health.why_not(instance)
    worker = os.environ.get(WORKER_INDEX_ENV)
    report: dict[str, Any] = {
        "status": "ready",
        "envoy": "live",
        "replica": {"pid": os.getpid(), "worker": int(worker) if worker else None},
        "backends": {"total": len(app.config.backends), **counts},
    }
    if unavailable and not app.config.multi_user_mode:
        report["unavailable"] = unavailable
    return 200, report
