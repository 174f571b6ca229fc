"""Duplicate-request windows: a zombie client retry must not burn quota twice.

A request is keyed by its session and a digest of what it asks. The same key
again within the window is refused while the first is in flight, or right
after it failed with 429 or a 5xx; a success (or any other answer, 401 and
403 included) clears the key, so a deliberate resend after an answer goes
through. Bounded: the oldest entries go first beyond ``max_entries``.

With shared state (``state.backend: redis``) each admitted request, each
failure and each clearing is reported to the ``on_change`` hook as a record
with wall-clock times, and :meth:`DedupTable.apply_remote` merges another
replica's record (the newer of two entries wins), so a duplicate that lands on
another replica is refused too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["DedupTable"]


def _retryable_failure(status: int) -> bool:
    return status == 429 or status >= 500


class DedupTable:
    def __init__(
        self,
        *,
        window: float = 3.0,
        max_entries: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self._max = max_entries
        self._clock = clock
        #: key -> (started, finished or None while in flight)
        self._entries: OrderedDict[str, tuple[float, float | None]] = OrderedDict()
        #: Called with ``(key, record)`` after each change made here (shared
        #: state; None: not shared).
        self.on_change: Callable[[str, dict[str, Any]], None] | None = None

    def admit(self, key: str) -> float | None:
        """None: go ahead (now in flight); else the seconds to wait before retrying."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            started, finished = entry
            since = now - (started if finished is None else finished)
            if since < self.window:
                return self.window - since
        self._store(key, (now, None))
        if self.on_change is not None:
            wall = time.time()
            self.on_change(
                key, {"started": wall, "finished": None, "at": wall, "expires": wall + self.window}
            )
        return None

    def done(self, key: str, status: int) -> None:
        """The request ended with ``status`` (0: no answer, counted as a failure)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        now = self._clock()
        if status == 0 or _retryable_failure(status):
            self._entries[key] = (entry[0], now)
            record: dict[str, Any] | None = None
            if self.on_change is not None:
                wall = time.time()
                record = {
                    "started": wall + (entry[0] - now),
                    "finished": wall,
                    "at": wall,
                    "expires": wall + self.window,
                }
        else:
            del self._entries[key]
            record = {"at": time.time(), "gone": True} if self.on_change is not None else None
        if record is not None and self.on_change is not None:
            self.on_change(key, record)

    def apply_remote(self, key: str, record: dict[str, Any]) -> None:
        """Merge another replica's record of ``key``: the newer entry wins."""
        now, wall = self._clock(), time.time()
        entry = self._entries.get(key)
        if record.get("gone"):
            if entry is not None and _latest(entry) <= now + (float(record["at"]) - wall):
                del self._entries[key]
            return
        started = now + (float(record["started"]) - wall)
        end = record.get("finished")
        finished = None if end is None else now + (float(end) - wall)
        theirs = (started, finished)
        if now - _latest(theirs) >= self.window:
            return  # over already
        if entry is None or _latest(theirs) >= _latest(entry):
            self._store(key, theirs)

    def _store(self, key: str, entry: tuple[float, float | None]) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _latest(entry: tuple[float, float | None]) -> float:
    started, finished = entry
    return started if finished is None else finished
