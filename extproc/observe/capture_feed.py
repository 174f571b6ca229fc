"""Hand capture records to the capture process, off the request path.

Encoding and writing capture records is Python work; done on a thread of the
process that serves requests it holds the interpreter (the GIL) for
milliseconds at a time, which showed in the proxy's latency (bench/ section
8). So the ROUTER and UPSTREAM roles only pickle each burst of records (C
code, microseconds) into this feed; a mover thread sends the bytes through a
pipe (the write releases the interpreter) to the capture process
(:mod:`extproc.server.capture_process`), which encodes and writes them with a
:class:`~extproc.observe.capture.CaptureWriter` of its own.

Never blocking: records wait in a bounded buffer (``capture.queue_size``
records); beyond it, and while no capture process is attached (starting,
restarting), they are dropped and counted.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections import deque
from typing import Any, Protocol

log = logging.getLogger(__name__)

__all__ = ["CaptureFeed", "Sender"]

#: Seconds the mover waits after waking before it sends what gathered.
LINGER = 0.05
#: How often drops are logged at most (seconds).
WARN_INTERVAL = 10.0


class Sender(Protocol):
    """The sending end of the pipe (``multiprocessing.connection.Connection``)."""

    def send_bytes(self, buf: bytes, /) -> None: ...

    def close(self) -> None: ...


class CaptureFeed:
    """The capture sink of the default capture mode: records go to the capture process."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._pending: deque[tuple[bytes, int]] = deque()
        self._pending_records = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._sender: Sender | None = None
        self._closed = False
        self._dropped = 0
        self._sent = 0
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="capture-feed", daemon=True)
        self._thread.start()

    # -- the request path's side (never blocks) -------------------------------------

    def submit_batch(self, records: list[tuple[Any, ...]]) -> bool:
        """Queue records (tuples of ``RECORD_FIELDS`` values) for the capture process."""
        count = len(records)
        if self._closed or self._sender is None:
            self._drop(count, "no capture process" if not self._closed else "capture closed")
            return False
        data = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self._pending_records + count > self.queue_size:
                full = True
            else:
                full = False
                self._pending.append((data, count))
                self._pending_records += count
        if full:
            self._drop(count, "queue full")
            return False
        self._wake.set()
        return True

    def event(self, **fields: Any) -> None:
        """One record (the ``CaptureSink`` protocol)."""
        from extproc.observe.capture import RECORD_FIELDS

        self.submit_batch([tuple(fields.get(name) for name in RECORD_FIELDS)])

    # -- wiring ------------------------------------------------------------------------

    def attach(self, sender: Sender | None) -> None:
        """Send to this pipe from now on (a new capture process), or to none."""
        with self._lock:
            old, self._sender = self._sender, sender
        if old is not None and old is not sender:
            old.close()

    @property
    def queue_depth(self) -> int:
        return self._pending_records

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def sent(self) -> int:
        return self._sent

    def close(self, timeout: float = 10.0) -> None:
        """Send what is pending, then close the pipe (the capture process then finishes)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        self.attach(None)

    # -- the mover thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if not self._closed:
                time.sleep(LINGER)  # let bursts gather: one send per interval
            self._wake.clear()
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
                self._pending_records = 0
                sender = self._sender
            if batch:
                self._send(sender, batch)
            if self._closed and not self._pending:
                return

    def _send(self, sender: Sender | None, batch: list[tuple[bytes, int]]) -> None:
        count = sum(n for _, n in batch)
        if sender is None:
            self._drop(count, "no capture process")
            return
        try:
            for data, n in batch:
                sender.send_bytes(data)
                self._sent += n
                count -= n
        except (OSError, ValueError) as exc:  # the capture process is gone
            self._drop(count, f"capture process unreachable ({exc.__class__.__name__})")

    def _drop(self, count: int, why: str) -> None:
        with self._lock:
            self._dropped += count
            total = self._dropped
            now = time.monotonic()
            warn = now - self._last_warning >= WARN_INTERVAL
            if warn:
                self._last_warning = now
        if warn:
            log.warning("capture: %s, records dropped (%d so far)", why, total)
