"""The capture process: encoding and writing capture files beside the request path.

Capture records are Python work (masking, CBOR encoding, file writes). In the
process that serves the ROUTER role that work holds the interpreter (the GIL)
the request path needs; bench/ section 8 measured it. So a child process of
its own owns the :class:`~extproc.observe.capture.CaptureWriter`, fed two ways:

* default mode: the ROUTER and UPSTREAM roles pickle their records into a
  :class:`~extproc.observe.capture_feed.CaptureFeed`, which sends them
  through a pipe;
* ``capture.observers``: Envoy's observer filters (observability mode,
  ``failure_mode_allow``) stream every message to the child's own gRPC
  server on ``capture.grpc_port``.

The parent supervises the child: it waits until the child is ready, restarts
it if it dies (traffic goes on meanwhile, uncaptured, and the gap is logged
and counted), and stops it last so the final records are written. The child
exits by itself when its parent disappears (even after ``kill -9``), after
writing what it has. Queue depth and counts reach the parent's metrics through
shared memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from extproc.server.children import die_with_parent

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event as EventType

    from extproc.config import Config
    from extproc.observe.capture_feed import CaptureFeed

log = logging.getLogger(__name__)

#: Indexes into the shared counters.
_DEPTH, _DROPPED, _WRITTEN = 0, 1, 2
#: How often the child publishes its counters and checks on its parent (seconds).
_TICK = 0.25
#: Restarts allowed within a minute before the parent gives up on capture.
MAX_RESTARTS_PER_MINUTE = 5
#: How long a stopping capture process keeps reading records already sent (seconds).
DRAIN_TIMEOUT = 2.0


class CaptureProcessError(RuntimeError):
    """The capture process could not start."""


class CaptureProcess:
    """Starts, supervises and stops the capture child process."""

    def __init__(
        self, config: Config, feed: CaptureFeed | None = None, *, start_timeout: float = 20.0
    ) -> None:
        self.config = config
        #: The roles' records come through this feed (default mode); None: observers only.
        self.feed = feed
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
        waiting = self.feed.queue_depth if self.feed is not None else 0
        return waiting + int(self._counters[_DEPTH])

    @property
    def dropped(self) -> int:
        lost = self.feed.dropped if self.feed is not None else 0
        return lost + self._dropped_before + int(self._counters[_DROPPED])

    @property
    def written(self) -> int:
        return self._written_before + int(self._counters[_WRITTEN])

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the child and wait until it is ready; raise CaptureProcessError if not."""
        ready = self._ctx.Event()
        for index in range(3):
            self._counters[index] = 0
        receiver = sender = None
        if self.feed is not None:
            receiver, sender = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=child_main,
            args=(self.config, self._counters, os.getpid(), ready, receiver),
            name="llm-proxy-capture",
            daemon=False,
        )
        process.start()
        if receiver is not None:
            receiver.close()  # the child's end
        self._process = process
        deadline = time.monotonic() + self.start_timeout
        while not ready.is_set():
            if process.exitcode is not None or time.monotonic() > deadline:
                if sender is not None:
                    sender.close()
                if process.exitcode is None:
                    process.kill()
                    raise CaptureProcessError("the capture process did not start in time")
                raise CaptureProcessError(
                    f"the capture process exited with code {process.exitcode} while starting "
                    f"(is {self.config.capture.directory!r} writable?"
                    + (
                        f" is capture.grpc_port {self.config.capture.grpc_port} free?)"
                        if self.config.capture.observers
                        else ")"
                    )
                )
            await asyncio.sleep(0.05)
        if self.feed is not None:
            self.feed.attach(sender)
        what = (
            f"observer roles on {self.config.grpc_host}:{self.config.capture.grpc_port}"
            if self.config.capture.observers
            else "records from the roles"
        )
        log.info("capture process %d writing %s", process.pid, what)

    async def supervise(self) -> None:
        """Restart the child when it dies; return only if it keeps dying."""
        while True:
            await asyncio.sleep(0.5)
            process = self._process
            if self._stopping or process is None or process.exitcode is None:
                continue
            if self.feed is not None:
                self.feed.attach(None)  # records are dropped (and counted) meanwhile
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
        """Stop the child (after Envoy and the gRPC server): it writes what it has and exits."""
        self._stopping = True
        process = self._process
        deadline = time.monotonic() + timeout
        if self.feed is not None:
            # Sends what is pending, then closes the pipe: the child reads to the
            # end, writes it and exits by itself (a SIGTERM now would cut it short).
            await asyncio.to_thread(self.feed.close)
            while (
                process is not None and process.exitcode is None and time.monotonic() < deadline - 5
            ):
                await asyncio.sleep(0.05)
        if process is None or process.exitcode is not None:
            return
        process.terminate()
        while process.exitcode is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if process.exitcode is None:
            log.error("the capture process did not stop in %.0f s; killing it", timeout)
            process.kill()
            await asyncio.to_thread(process.join, 5)


# -- the child -------------------------------------------------------------------------


def child_main(
    config: Config, counters: Any, parent_pid: int, ready: EventType, receiver: Any
) -> None:
    """Entry point of the capture process."""
    # multiprocessing spawns it (no preexec_fn): link it to the proxy's life here,
    # as children.child_kwargs() does for the others. SIGTERM, not SIGKILL: it
    # still writes the records it holds.
    die_with_parent(parent_pid, signal.SIGTERM)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[capture]: %(message)s",
    )
    # Ctrl-C reaches the whole process group: the parent decides when capture
    # stops (after Envoy, so the last exchanges are complete).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if config.capture.low_priority:
        _lower_priority()
    try:
        asyncio.run(_serve(config, counters, parent_pid, ready, receiver))
    except OSError as exc:
        log.error("%s", exc)
        raise SystemExit(3) from None


def _lower_priority() -> None:
    """Capture can wait; requests cannot (bench/ section 8).

    Under SCHED_IDLE the kernel runs this process only on CPU time nothing else
    wants, and any waking request-path thread (Envoy, the serving process)
    preempts it at once; a niceness of 19 is the fallback where that policy is
    missing.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


def capture_body_filter(config: Config) -> Callable[[bytes], bytes] | None:
    """Secrets out of recorded bodies (``capture.redact_secrets``), or None."""
    if not config.capture.redact_secrets:
        return None
    from extproc.pipeline.assemble import secret_literals
    from extproc.safety.secrets import Redactor, SecretScanner

    redactor = Redactor(SecretScanner(literals=secret_literals(config)))

    def redact(body: bytes) -> bytes:
        # surrogateescape: a chunk split inside a UTF-8 character keeps its bytes.
        text = body.decode("utf-8", "surrogateescape")
        redacted, found = redactor.redact_text(text)
        return redacted.encode("utf-8", "surrogateescape") if found else body

    return redact


async def _serve(
    config: Config, counters: Any, parent_pid: int, ready: EventType, receiver: Any
) -> None:
    from extproc.observe.capture import CaptureWriter

    writer = CaptureWriter(config.capture, body_filter=capture_body_filter(config))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = None
    reader: threading.Thread | None = None
    try:
        if config.capture.observers:
            server = await _observer_server(config, writer)
        if receiver is not None:
            reader = threading.Thread(
                target=_read_feed,
                args=(receiver, writer, lambda: loop.call_soon_threadsafe(stop.set)),
                name="capture-feed-reader",
                daemon=True,
            )
            reader.start()
        ready.set()
        while not stop.is_set():
            _publish(counters, writer)
            if os.getppid() != parent_pid:
                log.warning("the proxy process is gone; writing what was received and exiting")
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _TICK)
    finally:
        if server is not None:
            await server.stop(grace=1.0)
        if reader is not None:
            # What is already in the pipe (a SIGTERM from outside while the
            # proxy still feeds it: bounded).
            await asyncio.to_thread(reader.join, DRAIN_TIMEOUT)
        await asyncio.to_thread(writer.close)
        _publish(counters, writer)


async def _observer_server(config: Config, writer: Any) -> Any:
    from extproc.observe.telemetry import Telemetry
    from extproc.processing import App
    from extproc.server.grpc_server import start_grpc_server

    app = App(config, Telemetry())
    return await start_grpc_server(app, config.grpc_host, config.capture.grpc_port, writer)


def _read_feed(receiver: Any, writer: Any, done: Any) -> None:
    """Batches from the proxy process into the writer, until the pipe closes."""
    try:
        while True:
            data = receiver.recv_bytes()
            try:
                records = pickle.loads(data)
            except Exception:  # a torn message cannot happen on a pipe; be safe anyway
                log.exception("capture: an unreadable batch from the proxy process")
                continue
            writer.submit_batch(records)
    except (EOFError, OSError):
        pass  # the proxy closed the feed (stopping) or is gone
    finally:
        done()


def _publish(counters: Any, writer: Any) -> None:
    counters[_DEPTH] = writer.queue_depth
    counters[_DROPPED] = writer.dropped
    counters[_WRITTEN] = writer.written


__all__ = ["CaptureProcess", "CaptureProcessError", "child_main"]
