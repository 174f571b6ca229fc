"""The default capture mode's path to disk: the roles' records go through a
:class:`CaptureFeed` (bounded, never blocking) and a pipe to the capture child
process, which writes them; the parent restarts the child when it dies."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import pytest

from extproc.config.model import Config
from extproc.observe.capture import RECORD_FIELDS, iter_records
from extproc.observe.capture_feed import CaptureFeed
from extproc.server.capture_process import CaptureProcess


def record(request_id: str, index: int) -> tuple[Any, ...]:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "leg": "client_request",
        "attempt": 0,
        "kind": "body",
        "mono_ns": index,
        "wall_ns": time.time_ns(),
        "headers": None,
        "body": f"chunk {index}".encode(),
        "end_of_stream": False,
        "session_id": "s-1",
        "client_key_id": None,
        "annotations": None,
    }
    return tuple(fields[name] for name in RECORD_FIELDS)


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


class BlockedSender:
    """A pipe end whose writes wait until released (a capture process that is behind)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent: list[bytes] = []

    def send_bytes(self, buf: bytes, /) -> None:
        self.release.wait(10)
        self.sent.append(buf)

    def close(self) -> None:
        self.release.set()


# -- the feed ----------------------------------------------------------------------


def test_batches_cross_the_pipe_in_order_and_close_ends_it() -> None:
    receiver, sender = Pipe(duplex=False)
    feed = CaptureFeed(queue_size=1000)
    feed.attach(sender)
    for batch in range(5):
        assert feed.submit_batch([record("r", batch * 3 + i) for i in range(3)])
    feed.close()
    received: list[tuple[Any, ...]] = []
    with pytest.raises(EOFError):  # close sent what was pending, then closed the pipe
        while True:
            received.extend(pickle.loads(receiver.recv_bytes()))
    assert [r[RECORD_FIELDS.index("mono_ns")] for r in received] == list(range(15))
    assert feed.sent == 15 and feed.dropped == 0


def test_without_a_capture_process_records_are_dropped_and_counted() -> None:
    feed = CaptureFeed(queue_size=1000)
    try:
        assert not feed.submit_batch([record("r", 0), record("r", 1)])
        assert feed.dropped == 2 and feed.sent == 0
    finally:
        feed.close()


def test_a_slow_capture_process_never_blocks_the_request_path() -> None:
    sender = BlockedSender()
    feed = CaptureFeed(queue_size=10)
    feed.attach(sender)
    try:
        started = time.monotonic()
        accepted = [feed.submit_batch([record("r", i)]) for i in range(40)]
        assert time.monotonic() - started < 0.5  # the sender is stuck; submits are not
        # At most queue_size records wait (one more batch may sit in the stuck send).
        assert accepted.count(True) <= 11
        assert feed.dropped == accepted.count(False) >= 29
        assert feed.queue_depth <= 10
    finally:
        sender.release.set()
        feed.close()
    assert feed.sent == accepted.count(True)


def test_a_dead_pipe_drops_and_counts() -> None:
    receiver, sender = Pipe(duplex=False)
    receiver.close()
    feed = CaptureFeed(queue_size=100)
    feed.attach(sender)
    try:
        assert feed.submit_batch([record("r", 0)])
        wait_for(lambda: feed.dropped == 1)
    finally:
        feed.close()


# -- the capture process -----------------------------------------------------------


def capture_config(directory: Path) -> Config:
    return Config.model_validate(
        {"capture": {"enabled": True, "directory": str(directory), "queue_size": 1000}}
    )


def bodies(directory: Path) -> list[bytes]:
    return [r.body or b"" for r in iter_records(directory, problems=[])]


def test_the_child_writes_what_the_feed_sends_and_is_restarted_after_kill_9(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        feed = CaptureFeed(queue_size=1000)
        capture = CaptureProcess(capture_config(tmp_path), feed)
        await capture.start()
        supervisor = asyncio.create_task(capture.supervise())
        try:
            first_pid = capture.pid
            assert first_pid is not None and first_pid != os.getpid()
            feed.submit_batch([record("a", i) for i in range(3)])
            await asyncio.to_thread(wait_for, lambda: len(bodies(tmp_path)) == 3)
            await asyncio.to_thread(wait_for, lambda: capture.written == 3)  # published 4/s

            os.kill(first_pid, signal.SIGKILL)
            await asyncio.to_thread(
                wait_for, lambda: capture.pid not in (None, first_pid) and feed.sent >= 3
            )
            # The new child takes records once attached.
            await asyncio.to_thread(
                wait_for,
                lambda: feed.submit_batch([record("b", 100)]) and len(bodies(tmp_path)) >= 4,
            )
        finally:
            supervisor.cancel()
            await capture.stop()
        assert capture.pid is not None
        found = bodies(tmp_path)
        assert found[:3] == [b"chunk 0", b"chunk 1", b"chunk 2"]
        assert b"chunk 100" in found
        assert capture.written >= 4  # counts survive the restart

    asyncio.run(scenario())


def test_stop_writes_everything_sent_before_it(tmp_path: Path) -> None:
    async def scenario() -> CaptureProcess:
        feed = CaptureFeed(queue_size=10_000)
        capture = CaptureProcess(capture_config(tmp_path), feed)
        await capture.start()
        for batch in range(50):
            assert feed.submit_batch([record("r", batch * 10 + i) for i in range(10)])
        await capture.stop()
        return capture

    capture = asyncio.run(scenario())
    assert len(bodies(tmp_path)) == 500
    assert capture.dropped == 0


@pytest.mark.parametrize("low_priority", [True, False])
def test_the_capture_process_yields_the_cpu_to_requests(tmp_path: Path, low_priority: bool) -> None:
    config = Config.model_validate(
        {
            "capture": {
                "enabled": True,
                "directory": str(tmp_path),
                "low_priority": low_priority,
            }
        }
    )

    async def scenario() -> int:
        capture = CaptureProcess(config, CaptureFeed(queue_size=10))
        await capture.start()
        try:
            assert capture.pid is not None
            return os.sched_getscheduler(capture.pid)
        finally:
            await capture.stop()

    policy = asyncio.run(scenario())
    assert policy == (os.SCHED_IDLE if low_priority else os.SCHED_OTHER)
