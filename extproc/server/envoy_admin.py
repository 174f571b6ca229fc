"""One HTTP request to Envoy's admin port on loopback, without a client library.

Envoy's admin speaks HTTP/1.1 only (HTTP/1.0 gets 426) and answers large pages
chunked; this reads the whole answer and undoes the chunking. Used to tell when
Envoy is ready, which process answers after a hot restart, and to drain it.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["AdminUnreachable", "admin_request"]


class AdminUnreachable(OSError):
    """Envoy's admin port did not answer (not started yet, or gone)."""


async def admin_request(
    port: int, method: str, path: str, timeout: float = 2.0
) -> tuple[int, bytes]:
    """``(status, body)``; raises :class:`AdminUnreachable` when nothing answers in time."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, TimeoutError) as exc:
        raise AdminUnreachable(f"Envoy admin on 127.0.0.1:{port}: {exc}") from None
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, TimeoutError) as exc:
        raise AdminUnreachable(f"Envoy admin on 127.0.0.1:{port}: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise AdminUnreachable(f"Envoy admin on 127.0.0.1:{port}: not an HTTP answer")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return int(parts[1]), body


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
