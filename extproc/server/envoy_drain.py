"""Drain a running Envoy through its admin port before it is stopped.

Stopping Envoy cuts every request it carries. A graceful stop first makes it
stop accepting (admin ``POST /drain_listeners``: new connections are refused,
and the graceful drain sequence asks clients on open connections to go away,
``Connection: close`` and HTTP/2 GOAWAY), then waits until no downstream
request is active (the ``http.<prefix>.downstream_rq_active`` gauges), bounded
by ``shutdown.drain_timeout``.
"""

from __future__ import annotations

import asyncio
import json
import logging

from extproc.server.envoy_admin import admin_request

__all__ = ["active_requests", "drain_envoy"]

log = logging.getLogger(__name__)

#: How often the active-request gauges are read while draining (seconds).
_POLL = 0.1


async def active_requests(admin_port: int) -> int | None:
    """Downstream requests Envoy is serving now (admin excluded); None if unknown."""
    try:
        status, body = await admin_request(
            admin_port, "GET", "/stats?filter=downstream_rq_active&format=json"
        )
        if status != 200:
            return None
        stats = json.loads(body).get("stats", [])
    except (OSError, TimeoutError, ValueError):
        return None
    total = 0
    for stat in stats:
        name = stat.get("name", "")
        if name.startswith("http.") and not name.startswith("http.admin."):
            total += int(stat.get("value", 0))
    return total


async def drain_envoy(admin_port: int, timeout: float) -> bool:
    """Stop Envoy's listeners and wait for its requests in flight, at most ``timeout`` s.

    True when nothing was left in flight; False on timeout or if the admin
    port does not answer (the caller stops Envoy either way).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, 0.0)
    try:
        # The drain sequence: responses carry "Connection: close", HTTP/2 gets GOAWAY.
        await admin_request(admin_port, "POST", "/drain_listeners?graceful")
        # And no new connection from now on (the graceful sequence alone would
        # keep accepting for Envoy's whole --drain-time-s).
        await admin_request(admin_port, "POST", "/drain_listeners")
    except (OSError, TimeoutError) as exc:
        log.warning("cannot drain Envoy through its admin port: %s", exc)
        return False
    active = await active_requests(admin_port)
    if active:
        log.info("waiting for %d request(s) in flight (up to %.0f s)", active, timeout)
    while True:
        if active == 0:
            return True
        if loop.time() >= deadline:
            log.warning(
                "%s request(s) still in flight after %.0f s; stopping anyway",
                "some" if active is None else active,
                timeout,
            )
            return False
        await asyncio.sleep(_POLL)
        active = await active_requests(admin_port)
