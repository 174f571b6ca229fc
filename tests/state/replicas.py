"""Helpers for the shared-state tests: replicas in one process, polling with a deadline."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from extproc.state.redis_bus import RedisBus

__all__ = ["eventually", "new_bus", "prefix"]


def prefix() -> str:
    """A key prefix of its own per test (one Redis may serve several tests)."""
    return f"test-{uuid.uuid4().hex[:8]}:"


def new_bus(url: str, key_prefix: str, **options: float | int) -> RedisBus:
    """A replica's bus with a fast reconnect and short timeouts (not started)."""
    settings: dict[str, float | int] = {"reconnect_max": 0.2, "timeout": 1.0}
    settings.update(options)
    return RedisBus(url, prefix=key_prefix, **settings)  # type: ignore[arg-type]


async def eventually(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "the condition"
) -> None:
    """Poll ``predicate`` on the event loop until it holds, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
