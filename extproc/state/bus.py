"""The state bus: how replicated objects hand their changes on and hear others'.

An object that is shared between replicas (the health board, key lockouts,
dedup windows, sessions) calls :meth:`StateBus.publish` after each change
it makes, synchronously and without waiting for anything, and receives the
other replicas' changes through the handler it gave :meth:`StateBus.subscribe`.
A record is a JSON object (see :mod:`extproc.state.codec`).

:class:`LocalBus` is the one-replica bus: it sends nothing and hears nothing,
so every object keeps purely local state. :class:`~extproc.state.redis_bus.RedisBus`
replicates through Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Apply", "LocalBus", "StateBus"]

#: Receives another replica's change: (key, record). It may return an
#: awaitable, which the bus awaits before the next change.
Apply = Callable[[str, dict[str, Any]], Awaitable[None] | None]


@runtime_checkable
class StateBus(Protocol):
    """Publishes local changes and delivers remote ones."""

    @property
    def shared(self) -> bool:
        """Whether changes leave this process at all."""
        ...

    def publish(self, kind: str, key: str, record: dict[str, Any]) -> None:
        """Hand a change on; never blocks, never raises (the hot path calls it)."""
        ...

    def subscribe(self, kind: str, apply: Apply) -> None:
        """Deliver the other replicas' changes of ``kind`` to ``apply`` (one per kind)."""
        ...

    async def start(self) -> None:
        """Begin replicating (needs a running event loop); idempotent."""
        ...

    async def close(self) -> None:
        """Send what is queued (best effort, bounded), then stop; idempotent."""
        ...


class LocalBus:
    """One replica: nothing leaves the process."""

    shared = False

    def publish(self, kind: str, key: str, record: dict[str, Any]) -> None:
        return None

    def subscribe(self, kind: str, apply: Apply) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


_PROTOCOL_CHECK: type[StateBus] = LocalBus
