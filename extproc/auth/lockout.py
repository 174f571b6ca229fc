"""Brute-force lockout: failed key checks lock the client out for a while.

Two independent dimensions ("subjects") are counted:

* the client **address** (:func:`extproc.auth.client_address.client_address`):
  one client guessing many keys;
* the **presented key id** (``extproc.pipeline.context.key_id`` of the key the
  client sent, which was wrong): many clients, from many addresses, retrying
  one leaked, revoked or mistyped key. A wrong key's id never names a valid
  key, so this dimension cannot lock out a key that works.

A request is refused while *either* of its subjects is locked
(:meth:`Lockout.retry_after`). The caller checks ``retry_after`` before
checking the key, refuses without checking it while locked (whether the key is
right or wrong, or a guess would be confirmed), then reports the outcome with
:meth:`Lockout.failure` or :meth:`Lockout.success`.

Schedule (per subject; ``n`` counts its consecutive failures)
    * ``n < threshold``: no lockout;
    * ``n == threshold``: locked for ``base_seconds`` from that failure;
    * each further failure (necessarily after the previous lockout expired)
      locks for twice the previous lockout, capped at ``max_seconds``:
      ``min(max_seconds, base_seconds * 2 ** (n - threshold))``.

    With the defaults (5, 1 s, 1 h): failures 1-4 are free; the 5th locks for
    1 s, the 6th for 2 s, the 7th 4 s, the 8th 8 s ... the 16th 2048 s, and the
    17th and every later one 3600 s.

    A failure reported while its subject is already locked (a race: the
    request passed ``retry_after`` before the lockout began) is ignored: it
    neither counts nor extends the lockout.

Forgetting
    A subject is forgotten (counter back to zero) once ``max_seconds`` have
    passed with no failure and no lockout: at ``max(last failure, end of the
    last lockout) + max_seconds``. :meth:`Lockout.success` forgets the
    address and the (then valid) key id at once; other addresses keep theirs.

Memory
    At most ``max_entries`` subjects are kept (both dimensions together);
    beyond that the subject whose last reported failure is oldest (ignored
    ones included) is dropped first, even if it is still locked.

Replicas
    With shared state (``state.backend: redis``) each counted failure and
    each forgotten subject is reported to the ``on_change`` hook as a record
    keyed ``address:<address>`` or ``key:<key id>`` (wall-clock times), and
    :meth:`Lockout.apply_remote` merges another replica's record: the larger
    count, the later lockout end. A success elsewhere forgets a subject here
    only if it was neither failed nor locked after that success.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Lockout"]

_ADDRESS = "address"
_KEY = "key"


@dataclass
class _Subject:
    failures: int = 0
    last_failure: float = 0.0
    #: Clock time the current (or last) lockout ends; 0: never locked.
    locked_until: float = 0.0
    #: Length of the last lockout (0: never locked).
    lock: float = 0.0

    def quiet_since(self) -> float:
        return max(self.last_failure, self.locked_until)


class Lockout:
    """Failure counters per client address and per presented key id, with back-off."""

    def __init__(
        self,
        threshold: int = 5,
        base_seconds: float = 1.0,
        max_seconds: float = 3600.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"lockout threshold must be at least 1, not {threshold}")
        if not base_seconds > 0:
            raise ValueError(f"lockout base_seconds must be positive, not {base_seconds}")
        if not max_seconds >= base_seconds:
            raise ValueError(
                f"lockout max_seconds ({max_seconds}) must be at least base_seconds "
                f"({base_seconds})"
            )
        if max_entries < 1:
            raise ValueError(f"lockout max_entries must be at least 1, not {max_entries}")
        self.threshold = threshold
        self.base_seconds = float(base_seconds)
        self.max_seconds = float(max_seconds)
        self.max_entries = max_entries
        self._clock = clock
        self._subjects: OrderedDict[tuple[str, str], _Subject] = OrderedDict()
        self._lock = threading.Lock()
        #: Called (outside the lock) with ``(subject, record)`` after each counted
        #: failure and each forgotten subject (shared state; None: not shared).
        self.on_change: Callable[[str, dict[str, Any]], None] | None = None

    def __len__(self) -> int:
        """Subjects currently remembered (both dimensions)."""
        return len(self._subjects)

    @staticmethod
    def _keys(address: str, key_id: str | None) -> list[tuple[str, str]]:
        keys = [(_ADDRESS, address)]
        if key_id is not None:
            keys.append((_KEY, key_id))
        return keys

    def retry_after(self, address: str, key_id: str | None) -> float | None:
        """Seconds the client must still wait (the longer of its two lockouts), or None."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in self._keys(address, key_id):
                subject = self._subjects.get(key)
                if subject is not None and subject.locked_until > now:
                    wait = max(wait, subject.locked_until - now)
        return wait or None

    def failure(self, address: str, key_id: str | None) -> float | None:
        """Count a failed key check; the lockout (seconds) it started, if it started one.

        With two subjects locked at once, the longer of the two lockouts.
        """
        now = self._clock()
        started: float | None = None
        changed: list[tuple[tuple[str, str], _Subject]] = []
        with self._lock:
            for key in self._keys(address, key_id):
                subject = self._subjects.get(key)
                if subject is None or now >= subject.quiet_since() + self.max_seconds:
                    subject = _Subject()
                elif subject.locked_until > now:
                    # Already locked (this attempt raced the lockout): not counted,
                    # but the subject is active, so it is kept as recent.
                    self._subjects.move_to_end(key)
                    continue
                subject.failures += 1
                subject.last_failure = now
                if subject.failures >= self.threshold:
                    if subject.lock:
                        subject.lock = min(self.max_seconds, subject.lock * 2)
                    else:
                        subject.lock = self.base_seconds
                    subject.locked_until = now + subject.lock
                    started = max(started or 0.0, subject.lock)
                self._subjects[key] = subject
                self._subjects.move_to_end(key)
                if self.on_change is not None:
                    changed.append((key, _Subject(**vars(subject))))
            while len(self._subjects) > self.max_entries:
                self._subjects.popitem(last=False)
        if changed and self.on_change is not None:
            wall = time.time()
            for (dimension, value), subject in changed:
                self.on_change(f"{dimension}:{value}", self._record(subject, now, wall))
        return started

    def success(self, address: str, key_id: str | None) -> None:
        """A key check passed: forget this address's failures (and the key id's)."""
        with self._lock:
            gone = [key for key in self._keys(address, key_id) if self._subjects.pop(key, None)]
        if gone and self.on_change is not None:
            record = {"at": time.time(), "gone": True}
            for dimension, value in gone:
                self.on_change(f"{dimension}:{value}", record)

    def apply_remote(self, subject: str, record: dict[str, Any]) -> None:
        """Merge another replica's record of ``subject`` (``address:...`` / ``key:...``)."""
        dimension, _, value = subject.partition(":")
        if dimension not in (_ADDRESS, _KEY) or not value:
            return
        key = (dimension, value)
        now, wall = self._clock(), time.time()

        def local(epoch: float) -> float:
            return now + (epoch - wall)

        with self._lock:
            mine = self._subjects.get(key)
            if record.get("gone"):
                at = local(float(record["at"]))
                if mine is not None and mine.last_failure <= at and mine.locked_until <= at:
                    del self._subjects[key]
                return
            locked = float(record["locked_until"])
            theirs = _Subject(
                failures=int(record["failures"]),
                last_failure=local(float(record["last_failure"])),
                locked_until=local(locked) if locked else 0.0,
                lock=float(record["lock"]),
            )
            if now >= theirs.quiet_since() + self.max_seconds:
                return  # forgotten already
            if mine is None or now >= mine.quiet_since() + self.max_seconds:
                mine = theirs
            else:
                mine.failures = max(mine.failures, theirs.failures)
                mine.last_failure = max(mine.last_failure, theirs.last_failure)
                mine.locked_until = max(mine.locked_until, theirs.locked_until)
                mine.lock = max(mine.lock, theirs.lock)
            self._subjects[key] = mine
            self._subjects.move_to_end(key)
            while len(self._subjects) > self.max_entries:
                self._subjects.popitem(last=False)

    def _record(self, subject: _Subject, now: float, wall: float) -> dict[str, Any]:
        """The shared-state record of ``subject`` (wall-clock times: they cross processes)."""

        def epoch(t: float) -> float:
            return wall + (t - now)

        return {
            "failures": subject.failures,
            "last_failure": epoch(subject.last_failure),
            "locked_until": epoch(subject.locked_until) if subject.locked_until else 0.0,
            "lock": subject.lock,
            "at": wall,
            "expires": epoch(subject.quiet_since() + self.max_seconds),
        }
