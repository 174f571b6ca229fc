"""Several extproc replicas as child processes of one supervisor (``workers > 1``).

Python serves one request at a time per interpreter, so a second core needs a
second process. Worker ``i`` is the same command line again
(``python -m extproc serve ... --no-envoy --workers 1 --grpc-port BASE+i``)
with ``LLM_PROXY_WORKER_INDEX=i`` and ``LLM_PROXY_SUPERVISOR_PID`` in its
environment: it re-reads the same config file and flags, and serves a full
extproc (both roles, attempt log, health) on a port of its own. Envoy's
``extproc`` cluster lists the N ports and health-checks each one.

The pool:

* starts the workers and waits until each one answers SERVING on gRPC health;
* restarts a worker that dies, after a backoff that doubles from
  :data:`FIRST_BACKOFF` to :data:`MAX_BACKOFF` (reset once a worker has lived
  :data:`STABLE_AFTER` seconds), and gives up on one that died
  :data:`MAX_QUICK_DEATHS` times in a row without living that long;
* forwards signals (SIGHUP: reload) and stops them: SIGTERM, then SIGKILL
  after a bound.

Workers are spawned with :func:`~extproc.server.children.child_kwargs`: they
die with the supervisor however it dies, and sit in their own session so a
terminal's Ctrl-C reaches only the supervisor, which stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from extproc.config import Config
from extproc.server.children import child_kwargs, linked

__all__ = [
    "FIRST_BACKOFF",
    "MAX_BACKOFF",
    "MAX_QUICK_DEATHS",
    "STABLE_AFTER",
    "SUPERVISOR_PID_ENV",
    "WORKER_INDEX_ENV",
    "WorkerError",
    "WorkerPool",
    "worker_argv",
    "worker_index",
    "worker_ports",
]

log = logging.getLogger(__name__)

#: Environment of a worker: its index (0..N-1) and its supervisor's pid.
WORKER_INDEX_ENV = "LLM_PROXY_WORKER_INDEX"
SUPERVISOR_PID_ENV = "LLM_PROXY_SUPERVISOR_PID"

#: Restart backoff (seconds): doubles from the first to the max.
FIRST_BACKOFF = 0.2
MAX_BACKOFF = 10.0
#: A worker that lived this long (seconds) died of something new: backoff resets.
STABLE_AFTER = 30.0
#: Deaths in a row, each before STABLE_AFTER, after which a worker is given up.
MAX_QUICK_DEATHS = 8


class WorkerError(RuntimeError):
    """A worker could not start."""


def worker_index() -> int | None:
    """This process's worker index when a supervisor started it, else None."""
    value = os.environ.get(WORKER_INDEX_ENV)
    return int(value) if value and value.isdigit() else None


def worker_ports(config: Config) -> list[int]:
    """The gRPC ports of the workers: ``grpc_port`` .. ``grpc_port + workers - 1``."""
    return [config.grpc_port + i for i in range(config.workers)]


def worker_argv(argv: Sequence[str], index: int, port: int) -> list[str]:
    """The command line of worker ``index``: this one's, serving ext_proc only on ``port``."""
    args = list(argv)
    if args and args[0] == "serve":
        args = args[1:]
    return [
        sys.executable,
        "-m",
        "extproc",
        "serve",
        *args,
        # Later flags win: the worker's own settings override the supervisor's.
        "--no-envoy",
        "--workers",
        "1",
        "--grpc-port",
        str(port),
    ]


def _dial_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


async def serving(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether the extproc on ``host:port`` answers SERVING on gRPC health."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

    async with grpc.aio.insecure_channel(f"{_dial_host(host)}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class _Slot:
    index: int
    port: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restarts: int = 0
    given_up: bool = False


class WorkerPool:
    """N extproc worker processes, started, restarted and stopped by this process."""

    def __init__(self, config: Config, argv: Sequence[str], *, start_timeout: float = 60.0) -> None:
        self.config = config
        self.argv = list(argv)
        self.start_timeout = start_timeout
        self._slots = [_Slot(i, port) for i, port in enumerate(worker_ports(config))]
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        #: Set when every worker has been given up: the supervisor should exit.
        self.all_failed = asyncio.Event()

    @property
    def pids(self) -> list[int | None]:
        """Current pid of each worker (None while one is being restarted)."""
        return [
            slot.proc.pid if slot.proc is not None and slot.proc.returncode is None else None
            for slot in self._slots
        ]

    @property
    def restarts(self) -> int:
        return sum(slot.restarts for slot in self._slots)

    async def _spawn(self, slot: _Slot) -> None:
        env = {
            **os.environ,
            WORKER_INDEX_ENV: str(slot.index),
            SUPERVISOR_PID_ENV: str(os.getpid()),
        }
        slot.proc = await asyncio.create_subprocess_exec(
            *linked(worker_argv(self.argv, slot.index, slot.port)),
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            **child_kwargs(new_session=True),
        )
        slot.started = time.monotonic()
        log.info("worker %d started (pid %d, gRPC port %d)", slot.index, slot.proc.pid, slot.port)

    async def start(self) -> None:
        """Start every worker; return once all answer SERVING, raise WorkerError if not."""
        for slot in self._slots:
            await self._spawn(slot)
        deadline = time.monotonic() + self.start_timeout
        for slot in self._slots:
            while not await serving(self.config.grpc_host, slot.port):
                proc = slot.proc
                assert proc is not None
                if proc.returncode is not None:
                    raise WorkerError(
                        f"worker {slot.index} exited with code {proc.returncode} while starting "
                        f"(is gRPC port {slot.port} free?)"
                    )
                if time.monotonic() > deadline:
                    raise WorkerError(
                        f"worker {slot.index} did not serve on port {slot.port} "
                        f"after {self.start_timeout:.0f}s"
                    )
                await asyncio.sleep(0.1)
        self._tasks = [asyncio.ensure_future(self._watch(slot)) for slot in self._slots]

    async def _watch(self, slot: _Slot) -> None:
        """Restart this worker whenever it dies, until the pool stops or gives up on it."""
        while True:
            proc = slot.proc
            assert proc is not None
            code = await proc.wait()
            if self._stopping:
                return
            lived = time.monotonic() - slot.started
            slot.quick_deaths = 0 if lived >= STABLE_AFTER else slot.quick_deaths + 1
            if slot.quick_deaths >= MAX_QUICK_DEATHS:
                slot.given_up = True
                log.error(
                    "worker %d died %d times in a row (last exit code %s); not restarting it",
                    slot.index,
                    slot.quick_deaths,
                    code,
                )
                if all(s.given_up for s in self._slots):
                    log.error("every worker was given up")
                    self.all_failed.set()
                return
            delay = (
                0.0
                if slot.quick_deaths == 0
                else min(FIRST_BACKOFF * 2 ** (slot.quick_deaths - 1), MAX_BACKOFF)
            )
            log.error(
                "worker %d (pid %d) died with exit code %s after %.1f s; restarting it in %.1f s",
                slot.index,
                proc.pid,
                code,
                lived,
                delay,
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn(slot)
            except OSError as exc:
                log.error("cannot restart worker %d: %s", slot.index, exc)
                slot.proc = proc  # waits again at once (returncode is set): counts a death
                await asyncio.sleep(MAX_BACKOFF)
                continue
            slot.restarts += 1

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to every running worker (SIGHUP: reload)."""
        for slot in self._slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(sig)

    async def stop(self, timeout: float) -> None:
        """SIGTERM every worker (each drains its streams); SIGKILL after ``timeout``."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.send_signal(signal.SIGTERM)
        running = [s.proc for s in self._slots if s.proc is not None and s.proc.returncode is None]
        if not running:
            return
        _done, pending = await asyncio.wait(
            [asyncio.ensure_future(p.wait()) for p in running], timeout=max(timeout, 0.1)
        )
        if pending:
            log.warning("%d worker(s) did not stop in %.0f s; killing them", len(pending), timeout)
            for proc in running:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.wait(pending)
        for slot in self._slots:
            if slot.proc is not None and slot.proc.returncode not in (None, 0):
                log.warning("worker %d exited with code %s", slot.index, slot.proc.returncode)
