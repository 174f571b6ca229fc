"""``python -m extproc`` with its ROUTER role replaced by the no-op server's replies.

``python -m bench.proxy_noop_router --config FILE`` (the proxy's own arguments)

The whole proxy process as it runs (its gRPC server and servicer, metrics, attempt log,
health, stream bookkeeping) with no exchange: every request gets the cluster header of the
JSON instance (``instance/openai``) and every other message the minimal reply, as
:mod:`bench.noop_extproc` answers. :mod:`bench.floor` runs it as the ``proxy-noop`` target:
proxy - proxy-noop is the exchange's cost in the server, proxy-noop - floor the server's own.
"""

from __future__ import annotations

from typing import Any

from extproc.internalapi import CLUSTER_HEADER
from extproc.processing import factory
from extproc.processing.actions import Action, Continue

__all__ = ["NoopRouter", "main"]

#: The cluster every request goes to (bench.floor's JSON instance).
CLUSTER = "instance/openai"


class NoopRouter:
    """The ROUTER role's surface, answering like the no-op server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def request_headers(self, headers: dict[str, str], end_of_stream: bool) -> Action:
        return Continue(set_headers={CLUSTER_HEADER: CLUSTER}, clear_route_cache=True)

    def request_body(self, body: bytes, end_of_stream: bool) -> Action:
        return Continue()

    def response_headers(
        self, headers: dict[str, str], end_of_stream: bool, host: dict[str, Any] | None
    ) -> Action:
        return Continue()

    def response_body(self, body: bytes, end_of_stream: bool) -> Action:
        return Continue()

    def close(self) -> None:
        pass

    def internal_error(self, kind: str, exc: Exception) -> Action:
        return Continue()


def main() -> int:
    # The one place processors are made (Processors.router) builds this instead.
    setattr(factory, "RouterProcessor", NoopRouter)  # noqa: B010
    from extproc.cli import main as proxy_main

    return proxy_main()


if __name__ == "__main__":
    raise SystemExit(main())
