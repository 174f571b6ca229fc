"""Processors per ext_proc stream: the servicer asks, this module builds.

Built once by the composition root (the server's startup) from the
application and the capture sink; it decides, per stream, which processor
serves it: the ROUTER role (wrapped by the capture tap when the roles
record), the UPSTREAM role (likewise), or an observer (``capture.observers``).
The application itself creates no processors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from extproc.processing.app import App
from extproc.processing.observer import (
    AttemptCounter,
    CaptureSink,
    NullCaptureSink,
    ObserverProcessor,
    Side,
)
from extproc.processing.router import RouterProcessor
from extproc.processing.tap import TappedRouter, TappedUpstream
from extproc.processing.upstream import UpstreamProcessor

__all__ = ["Processors", "RouterRole", "UpstreamRole"]

RouterRole = RouterProcessor | TappedRouter
UpstreamRole = UpstreamProcessor | TappedUpstream


class Processors:
    def __init__(self, app: App, capture_sink: CaptureSink | None = None) -> None:
        self.app = app
        #: Where capture records go (the default mode's feed, or the observers' writer).
        self.capture_sink: CaptureSink = capture_sink or NullCaptureSink()
        self._attempts = AttemptCounter()

    def router(self, carrier: Iterable[tuple[str, str | bytes]] | None = None) -> RouterRole:
        """A ROUTER-role processor; ``carrier``: the stream's gRPC metadata (trace context)."""
        router = RouterProcessor(self.app, carrier)
        if self.app.capture_roles:
            return TappedRouter(router, self.capture_sink)
        return router

    def upstream(self, host: dict[str, Any]) -> UpstreamRole:
        upstream = UpstreamProcessor(self.app, host)
        if self.app.capture_roles:
            return TappedUpstream(upstream, self.capture_sink, self._attempts)
        return upstream

    def observer(self, side: Side, host: dict[str, Any] | None) -> ObserverProcessor:
        return ObserverProcessor(self.capture_sink, side, self._attempts, host)
