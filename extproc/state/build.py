"""The state bus the config names: local (one replica) or Redis (shared)."""

from __future__ import annotations

from extproc.config.state import StateConfig
from extproc.state.bus import LocalBus, StateBus

__all__ = ["build_bus"]


def build_bus(config: StateConfig) -> StateBus:
    """A bus for ``config`` (not started: a Redis bus connects in ``start()``)."""
    if config.backend == "memory":
        return LocalBus()
    from extproc.state.redis_bus import RedisBus

    return RedisBus(
        config.redis_url,
        prefix=config.key_prefix,
        queue_size=config.queue_size,
        snapshot_limit=config.snapshot_limit,
        reconnect_max=config.reconnect_max,
        timeout=config.timeout,
    )
