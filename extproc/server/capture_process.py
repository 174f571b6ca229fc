"""The capture process: the observer roles, served beside the request path.

Wire capture receives every header and body chunk of both legs of every
request. Handling those ext_proc streams in the process that serves the ROUTER
role would put their CPU time on the request path (one interpreter, one
GIL); the bench measured it at most of a millisecond per request. So capture
runs in a child process of its own, with its own gRPC server on
``capture.grpc_port`` and the :class:`~extproc.observe.capture.CaptureWriter`;
Envoy's observer filters (observability mode, ``failure_mode_allow``) send
there and never wait for it.

The parent supervises the child: it waits until the child serves, restarts it
if it dies (traffic goes on meanwhile, uncaptured, and the gap is logged), and
stops it after Envoy so the last records are flushed. The child exits on its
own when the parent disappears (even after ``kill -9``). Queue depth and drop
counts reach the parent's metrics through shared memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event as EventType

    from extproc.config import Config

log = logging.getLogger(__name__)

#: Indexes into the shared counters.
_DEPTH, _DROPPED, _WRITTEN = 0, 1, 2
#: How often the child publishes its counters and checks on its parent (seconds).
_TICK = 0.25
#: Restarts allowed within a minute before the parent gives up on capture.
MAX_RESTARTS_PER_MINUTE = 5


class CaptureProcessError(RuntimeError):
    """The capture process could not start."""


class CaptureProcess:
    """Starts, supervises and stops the capture child process."""

    def __init__(self, config: Config, *, start_timeout: float = 20.0) -> None:
        self.config = config
        self.start_timeout = start_timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._counters: Any = self._ctx.Array("q", 3, lock=False)
        self._process: Any = None
        #: Counts of children that died, so the totals survive a restart.
        self._dropped_before = 0
        self._written_before = 0
        self._restarts: list[float] = []
        self._stopping = False

    # -- what the parent's metrics read -------------------------------------------

    @property
    def queue_depth(self) -> int:
        return int(self._counters[_DEPTH])

    @property
    def dropped(self) -> int:
        return self._dropped_before + int(self._counters[_DROPPED])

    @property
    def written(self) -> int:
        return self._written_before + int(self._counters[_WRITTEN])

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the child and wait until it serves; raise CaptureProcessError if it cannot."""
        ready = self._ctx.Event()
        for index in range(3):
            self._counters[index] = 0
        process = self._ctx.Process(
            target=child_main,
            args=(self.config, self._counters, os.getpid(), ready),
            name="llm-proxy-capture",
            daemon=False,
        )
        process.start()
        self._process = process
        deadline = time.monotonic() + self.start_timeout
        while not ready.is_set():
            if process.exitcode is not None:
                raise CaptureProcessError(
                    f"the capture process exited with code {process.exitcode} while starting "
                    f"(is capture.grpc_port {self.config.capture.grpc_port} free? is "
                    f"{self.config.capture.directory!r} writable?)"
                )
            if time.monotonic() > deadline:
                process.kill()
                raise CaptureProcessError("the capture process did not start in time")
            await asyncio.sleep(0.05)
        log.info(
            "capture process %d serving observer roles on %s:%d",
            process.pid,
            self.config.grpc_host,
            self.config.capture.grpc_port,
        )

    async def supervise(self) -> None:
        """Restart the child when it dies; return only if it keeps dying."""
        while True:
            await asyncio.sleep(0.5)
            process = self._process
            if self._stopping or process is None or process.exitcode is None:
                continue
            self._dropped_before += int(self._counters[_DROPPED]) + int(self._counters[_DEPTH])
            self._written_before += int(self._counters[_WRITTEN])
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < 60] + [now]
            if len(self._restarts) > MAX_RESTARTS_PER_MINUTE:
                log.error(
                    "the capture process keeps dying (exit code %s); capture is OFF until "
                    "the proxy restarts (traffic is not affected)",
                    process.exitcode,
                )
                return
            log.error(
                "the capture process died (exit code %s); restarting it: requests in the "
                "meantime are not captured",
                process.exitcode,
            )
            try:
                await self.start()
            except CaptureProcessError as exc:
                log.error("%s", exc)

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop the child (after Envoy): it flushes what it has and exits."""
        self._stopping = True
        process = self._process
        if process is None or process.exitcode is not None:
            return
        process.terminate()
        deadline = time.monotonic() + timeout
        while process.exitcode is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if process.exitcode is None:
            log.error("the capture process did not stop in %.0f s; killing it", timeout)
            process.kill()
            await asyncio.to_thread(process.join, 5)


# -- the child -------------------------------------------------------------------------


def child_main(config: Config, counters: Any, parent_pid: int, ready: EventType) -> None:
    """Entry point of the capture process."""
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[capture]: %(message)s",
    )
    # Ctrl-C reaches the whole process group: the parent decides when capture
    # stops (after Envoy, so the last exchanges are complete).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_serve(config, counters, parent_pid, ready))
    except OSError as exc:
        log.error("%s", exc)
        raise SystemExit(3) from None


async def _serve(config: Config, counters: Any, parent_pid: int, ready: EventType) -> None:
    from extproc.observe.capture import CaptureWriter
    from extproc.observe.telemetry import Telemetry
    from extproc.processing import App
    from extproc.server.grpc_server import start_grpc_server

    writer = CaptureWriter(config.capture)
    try:
        app = App(config, Telemetry())
        app.capture_sink = writer
        server = await start_grpc_server(app, config.grpc_host, config.capture.grpc_port)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ready.set()
        try:
            while not stop.is_set():
                _publish(counters, writer)
                if os.getppid() != parent_pid:
                    log.warning("the proxy process is gone; flushing captures and exiting")
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _TICK)
        finally:
            await server.stop(grace=1.0)
    finally:
        await asyncio.to_thread(writer.close)
        _publish(counters, writer)


def _publish(counters: Any, writer: Any) -> None:
    counters[_DEPTH] = writer.queue_depth
    counters[_DROPPED] = writer.dropped
    counters[_WRITTEN] = writer.written


__all__ = ["CaptureProcess", "CaptureProcessError", "child_main"]
