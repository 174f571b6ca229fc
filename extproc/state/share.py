"""Connects a replicated object to a state bus: its changes out, others' in.

The objects (:class:`~extproc.routing.health.HealthBoard`,
:class:`~extproc.auth.lockout.Lockout`, :class:`~extproc.sessions.dedup.DedupTable`)
know nothing of buses or Redis: each has an ``on_change`` hook it calls after
a change of its own, with a serialisable record, and an ``apply_remote``
method that merges another replica's record without lifting a newer local
state. This module joins the two ends; on a :class:`~extproc.state.bus.LocalBus`
it does nothing, so a single replica pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from extproc.state.bus import StateBus

__all__ = ["Replicated", "share"]

OnChange = Callable[[str, dict[str, Any]], None]


class Replicated(Protocol):
    """What an object offers to be shared between replicas."""

    on_change: OnChange | None

    def apply_remote(self, key: str, record: dict[str, Any]) -> None:
        """Merge another replica's change of ``key`` (never lifting a newer local state)."""
        ...


def share(bus: StateBus, kind: str, obj: Replicated) -> None:
    """Publish ``obj``'s changes as ``kind`` and apply the other replicas' changes of it."""
    if not bus.shared:
        return
    obj.on_change = partial(bus.publish, kind)
    bus.subscribe(kind, obj.apply_remote)
