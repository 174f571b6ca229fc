"""A real ``redis-server`` on a free loopback port for the shared-state tests.

Started with ``subprocess.Popen`` (no persistence: ``--save "" --appendonly
no``) and stopped by its PID afterwards; :meth:`RedisServer.stop` and
:meth:`RedisServer.start` let a test take Redis away and bring it back on the
same port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.harness import free_port


class RedisServer:
    """One redis-server process (restartable on the same port)."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if self._pong():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        """Kill it (an outage, not a clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def start_redis() -> RedisServer:
    """A fresh redis-server on a free port (deploy/install.sh installs Debian's)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (deploy/install.sh installs it)")
    server = RedisServer(binary, free_port())
    server.start()
    return server


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for one test, killed afterwards."""
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()
