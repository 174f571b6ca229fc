"""Processors per ext_proc stream: the servicer asks, this module builds.

Built once by the composition root (the server's startup) from the
application and the capture sink; it decides, per stream, which processor
serves it: the ROUTER role (wrapped by the capture tap when the roles
record), the UPSTREAM role (likewise), or an observer (``capture.observers``).
The application itself creates no processors.

After a config reload there may be two applications for a while: each ext_proc
stream names the generation of the Envoy bootstrap it comes from, and gets the
application built from the same config (an old Envoy still draining keeps the
routes and clusters it knows). Streams with no known generation get the newest.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from extproc.internalapi import GENERATION_METADATA
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


#: Applications kept for older generations (an old Envoy drains for seconds).
KEPT_GENERATIONS = 3

Metadata = Iterable[tuple[str, str | bytes]]


class Processors:
    def __init__(
        self, app: App, capture_sink: CaptureSink | None = None, generation: str = ""
    ) -> None:
        #: The newest application: streams of an unknown generation get it.
        self.app = app
        self._by_generation: OrderedDict[str, App] = OrderedDict({generation: app})
        #: Where capture records go (the default mode's feed, or the observers' writer).
        self.capture_sink: CaptureSink = capture_sink or NullCaptureSink()
        self._attempts = AttemptCounter()

    def install(self, app: App, generation: str) -> None:
        """A reloaded application: the newest, and the one for ``generation``'s streams."""
        self._by_generation[generation] = app
        self._by_generation.move_to_end(generation)
        while len(self._by_generation) > KEPT_GENERATIONS:
            self._by_generation.popitem(last=False)
        self.app = app

    def app_for(self, metadata: Metadata | None) -> App:
        """The application for a stream from its gRPC metadata (its Envoy's generation)."""
        if metadata is not None and len(self._by_generation) > 1:
            for key, value in metadata:
                if key == GENERATION_METADATA:
                    name = value.decode() if isinstance(value, bytes) else value
                    return self._by_generation.get(name, self.app)
        return self.app

    def router(self, carrier: Metadata | None = None) -> RouterRole:
        """A ROUTER-role processor; ``carrier``: the stream's gRPC metadata (trace context)."""
        app = self.app_for(carrier)
        router = RouterProcessor(app, carrier)
        if app.capture_roles:
            return TappedRouter(router, self.capture_sink)
        return router

    def upstream(self, host: dict[str, Any], metadata: Metadata | None = None) -> UpstreamRole:
        app = self.app_for(metadata)
        upstream = UpstreamProcessor(app, host)
        if app.capture_roles:
            return TappedUpstream(upstream, self.capture_sink, self._attempts)
        return upstream

    def observer(self, side: Side, host: dict[str, Any] | None) -> ObserverProcessor:
        return ObserverProcessor(self.capture_sink, side, self._attempts, host)
