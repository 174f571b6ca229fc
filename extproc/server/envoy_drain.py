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
import contextlib
import json
import logging

__all__ = ["active_requests", "drain_envoy"]

log = logging.getLogger(__name__)

#: How often the active-request gauges are read while draining (seconds).
_POLL = 0.1


async def _admin(
    admin_port: int, method: str, path: str, timeout: float = 2.0
) -> tuple[int, bytes]:
    """One request to Envoy's admin on loopback: (status, body)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", admin_port), timeout
    )
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return status, body


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


async def active_requests(admin_port: int) -> int | None:
    """Downstream requests Envoy is serving now (admin excluded); None if unknown."""
    try:
        status, body = await _admin(
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
        await _admin(admin_port, "POST", "/drain_listeners?graceful")
        # And no new connection from now on (the graceful sequence alone would
        # keep accepting for Envoy's whole --drain-time-s).
        await _admin(admin_port, "POST", "/drain_listeners")
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
