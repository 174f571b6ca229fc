"""Whether one extproc server takes work, and how much it has in flight.

Two facts Envoy and the shutdown path need from an extproc process:

* its health, served as the standard ``grpc.health.v1.Health`` service:
  SERVING once it listens, NOT_SERVING from the moment it drains (Envoy's
  gRPC health check then sends new streams to the other replicas);
* the number of ext_proc ``Process`` streams open right now, so a stopping
  process can wait until they are finished (bounded by
  ``shutdown.drain_timeout``).
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2  # type: ignore[import-untyped]

__all__ = ["EXTPROC_SERVICE", "ServingState"]

#: The ext_proc service's full name: its own health entry beside the server's ("").
EXTPROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


class ServingState:
    """Health status and open-stream count of one extproc gRPC server."""

    def __init__(self) -> None:
        self.health = health.aio.HealthServicer()
        self.draining = False
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def active_streams(self) -> int:
        return self._active

    # -- health ------------------------------------------------------------------

    async def mark_serving(self) -> None:
        for service in ("", EXTPROC_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def mark_draining(self) -> None:
        """NOT_SERVING for good: later ``mark_serving`` calls are ignored."""
        self.draining = True
        await self.health.enter_graceful_shutdown()

    # -- streams -----------------------------------------------------------------

    def stream_started(self) -> None:
        self._active += 1
        self._idle.clear()

    def stream_ended(self) -> None:
        self._active -= 1
        if self._active <= 0:
            self._active = 0
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no stream is open; False if some still are after ``timeout``."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(timeout, 0.0))
        except TimeoutError:
            return False
        return True
