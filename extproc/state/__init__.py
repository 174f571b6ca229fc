"""State shared between extproc replicas: the bus, its Redis transport, the adapters.

One replica keeps its health board, lockouts, dedup windows and sessions in
memory (:class:`LocalBus`: nothing leaves the process). Several replicas share
them through Redis (:class:`~extproc.state.redis_bus.RedisBus`), written and
read off the request path; Redis being down degrades to local state.
"""

from extproc.state.build import build_bus
from extproc.state.bus import Apply, LocalBus, StateBus
from extproc.state.errors import RecordError, SharedStateError, SharedStateUnavailable
from extproc.state.share import Replicated, share

__all__ = [
    "Apply",
    "LocalBus",
    "RecordError",
    "Replicated",
    "SharedStateError",
    "SharedStateUnavailable",
    "StateBus",
    "build_bus",
    "share",
]
