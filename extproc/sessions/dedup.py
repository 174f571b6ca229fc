"""Duplicate-request windows: a zombie client retry must not burn quota twice.

A request is keyed by its session and a digest of what it asks. The same key
again within the window is refused while the first is in flight, or right
after it failed with 429 or a 5xx; a success (or any other answer, 401 and
403 included) clears the key, so a deliberate resend after an answer goes
through. Bounded: the oldest entries go first beyond ``max_entries``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

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

    def admit(self, key: str) -> float | None:
        """None: go ahead (now in flight); else the seconds to wait before retrying."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            started, finished = entry
            since = now - (started if finished is None else finished)
            if since < self.window:
                return self.window - since
        self._entries[key] = (now, None)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return None

    def done(self, key: str, status: int) -> None:
        """The request ended with ``status`` (0: no answer, counted as a failure)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if status == 0 or _retryable_failure(status):
            self._entries[key] = (entry[0], self._clock())
        else:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
