"""The proxy's own view of each backend instance's health, beside Envoy's.

Envoy's active health checks and outlier detection see dead and failing
hosts. What they cannot see is an account problem on a live host: a revoked
key (401/403), an exhausted quota, a rate limit with ``retry-after``. Each
such answer, from any attempt of any request, lands here (the UPSTREAM role
for attempts in failover clusters, the ROUTER role for the final answer), and
routing decisions skip instances that are disabled or cooling down until
their time is up or an admin reactivates them (``POST
/v1/diagnostics/backends/{instance}/reactivate``).

State is per extproc process, shared by all its requests. Between replicas
it can be shared (``state.backend: redis``, :mod:`extproc.state`): the board
reports each disable, cool-down and reactivation to its ``on_change`` hook as
a record with wall-clock times, and :meth:`HealthBoard.apply_remote` merges
another replica's record (the longer of two cool-downs; a disable beats a
cool-down; a reactivation lifts only what was set before it). Counts and
last errors stay per replica.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from extproc.config.model import HealthPolicyConfig

__all__ = [
    "HealthBoard",
    "InstanceHealth",
    "State",
    "is_quota_error",
    "parse_retry_after",
]

State = Literal["ok", "cooling", "disabled"]

#: Error codes and message fragments that mean "out of quota / credit", not "slow down".
_QUOTA_CODES = frozenset(
    {"insufficient_quota", "billing_hard_limit_reached", "quota_exceeded", "billing_not_active"}
)
_QUOTA_WORDS = ("insufficient_quota", "exceeded your current quota", "credit balance", "billing")
LAST_ERRORS = 10


@dataclass
class InstanceHealth:
    """What the proxy knows about one instance."""

    state: State = "ok"
    #: Monotonic time the state ends (None: until reactivated, or not set).
    until: float | None = None
    reason: str = ""
    since: float | None = None
    successes: int = 0
    failures: int = 0
    #: 429s without retry-after since the last success (each doubles the cool-down).
    rate_limits: int = 0
    last_errors: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LAST_ERRORS))
    #: Wall-clock time (epoch seconds) of the last change of ``state`` (0: never).
    changed: float = 0.0


def is_quota_error(status: int, code: str | None, message: str | None) -> bool:
    """An answer that says the account is out of quota or credit."""
    if code and code.lower() in _QUOTA_CODES:
        return True
    if status not in (400, 402, 403, 429):
        return False
    text = (message or "").lower()
    return status == 402 or any(word in text for word in _QUOTA_WORDS)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``retry-after`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if seconds == seconds else None  # NaN guard


class HealthBoard:
    """Per-instance state: thread-safe (the capture and gRPC threads may read it)."""

    def __init__(
        self,
        instances: Iterable[str],
        policy: HealthPolicyConfig,
        clock: Callable[[], float] = time.monotonic,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.policy = policy
        self._clock = clock
        #: Provider error messages can quote a (masked) key: they are redacted
        #: before anyone (diagnostics) can read them.
        self._redact = redact
        self._lock = threading.Lock()
        self._health = {name: InstanceHealth() for name in instances}
        #: Called (outside the lock) with ``(instance, record)`` after each disable,
        #: cool-down or reactivation made here (shared state; None: not shared).
        self.on_change: Callable[[str, dict[str, Any]], None] | None = None

    def reconfigure(self, instances: Iterable[str], policy: HealthPolicyConfig) -> None:
        """A config reload: new instances start ok, removed ones are forgotten, the
        others keep what was learnt (a revoked key stays out)."""
        names = list(instances)
        with self._lock:
            self._health = {name: self._health.get(name) or InstanceHealth() for name in names}
            self.policy = policy

    # -- what routing asks -------------------------------------------------------------

    def available(self, instance: str) -> bool:
        health = self._health.get(instance)
        if health is None or health.state == "ok":
            return True
        with self._lock:
            return self._expire(health)

    def state(self, instance: str) -> State:
        health = self._health.get(instance)
        if health is None:
            return "ok"
        with self._lock:
            self._expire(health)
            return health.state

    def why_not(self, instance: str) -> str:
        """Why an instance is skipped ('' when it is available)."""
        health = self._health.get(instance)
        if health is None:
            return ""
        with self._lock:
            self._expire(health)
            if health.state == "ok":
                return ""
            left = "" if health.until is None else f" for {health.until - self._clock():.0f} s"
            return f"{health.state}{left}: {health.reason}"

    def seconds_left(self, instances: Iterable[str]) -> float | None:
        """The soonest any of ``instances`` becomes available again (None: unknown)."""
        now = self._clock()
        times = [
            h.until - now
            for name in instances
            if (h := self._health.get(name)) is not None and h.until is not None
        ]
        return max(0.0, min(times)) if times else None

    # -- what answers report ---------------------------------------------------------

    def observe(
        self,
        instance: str,
        status: int,
        *,
        retry_after: str | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        """One answer from ``instance`` (any attempt)."""
        health = self._health.get(instance)
        if health is None:
            return
        policy = self.policy
        now = self._clock()
        changed = False
        with self._lock:
            if 200 <= status < 400:
                health.successes += 1
                health.rate_limits = 0
                return
            health.failures += 1
            health.last_errors.append(
                {
                    "at": time.time(),
                    "status": status,
                    "code": code,
                    "message": self._redact(message or "")[:300],
                }
            )
            if is_quota_error(status, code, message):
                changed = self._set(
                    health,
                    "disabled",
                    now,
                    policy.quota_cooldown,
                    f"quota: {status} {code or ''}".strip(),
                )
            elif status in (401, 403):
                changed = self._set(
                    health,
                    "disabled",
                    now,
                    policy.auth_failure_cooldown,
                    f"the provider refused the key ({status})",
                )
            elif status == 429:
                wait = parse_retry_after(retry_after)
                if wait is None:
                    # No hint: back off exponentially while the 429s keep coming
                    # (an exhausted quota seen only as a status looks like this).
                    health.rate_limits += 1
                    wait = min(
                        policy.rate_limit_cooldown * 2 ** min(health.rate_limits - 1, 20),
                        policy.max_retry_after,
                    )
                    why = f"rate limited (429 #{health.rate_limits} without retry-after)"
                else:
                    wait = min(wait, policy.max_retry_after)
                    why = f"rate limited (429, retry-after {retry_after})"
                if wait > 0:
                    changed = self._set(health, "cooling", now, wait, why)
            record = self._record(health, now) if changed else None
        if record is not None and self.on_change is not None:
            self.on_change(instance, record)

    def reactivate(self, instance: str) -> bool:
        health = self._health.get(instance)
        if health is None:
            return False
        wall = time.time()
        with self._lock:
            health.state, health.until, health.reason, health.since = "ok", None, "", None
            health.rate_limits = 0  # a fresh start
            health.changed = wall
        if self.on_change is not None:
            self.on_change(instance, {"at": wall, "gone": True})
        return True

    def apply_remote(self, instance: str, record: dict[str, Any]) -> None:
        """Merge another replica's change of ``instance`` (a record from ``on_change``).

        A disable beats a cool-down, two of the same kind keep the later end,
        and a reactivation lifts only a state set before it: a stale record
        never lifts a newer local disable.
        """
        health = self._health.get(instance)
        if health is None:
            return
        now, wall = self._clock(), time.time()
        at = float(record.get("at", 0.0))
        with self._lock:
            if record.get("gone"):
                if health.changed <= at:
                    health.state, health.until, health.reason, health.since = "ok", None, "", None
                    health.rate_limits = 0
                    health.changed = at
                return
            state = record.get("state")
            if state not in ("cooling", "disabled"):
                return
            end = record.get("until")
            until = None if end is None else now + (float(end) - wall)
            if until is not None and until <= now:
                return  # over already
            self._expire(health)
            if health.state == "disabled" and state == "cooling":
                return
            if health.state == state:
                longest = health.until is None or until is None
                until = None if longest else max(until or 0.0, health.until or 0.0)
                if until == health.until:
                    return  # nothing new
            health.state, health.until = state, until
            health.reason = str(record.get("reason") or "")
            health.since = health.since if health.since is not None else now
            health.changed = max(health.changed, at)

    def snapshot(self, instance: str) -> dict[str, Any]:
        health = self._health[instance]
        now = self._clock()
        with self._lock:
            self._expire(health)
            return {
                "state": health.state,
                "reason": health.reason or None,
                "seconds_left": None
                if health.until is None
                else round(max(0.0, health.until - now), 1),
                "successes": health.successes,
                "failures": health.failures,
                "last_errors": list(health.last_errors),
            }

    # -- helpers -----------------------------------------------------------------------

    def _set(
        self, health: InstanceHealth, state: State, now: float, seconds: float, why: str
    ) -> bool:
        """Disable or cool down; whether anything changed."""
        until = now + seconds if seconds > 0 else None
        if health.state == "disabled" and state == "cooling":
            return False  # a shorter cool-down does not lift a disable
        if health.until is not None and until is not None and health.state == state:
            until = max(until, health.until)
        if (health.state, health.until, health.reason) == (state, until, why):
            return False
        health.state, health.until, health.reason = state, until, why
        health.since = health.since if health.since is not None else now
        health.changed = time.time()
        return True

    def _record(self, health: InstanceHealth, now: float) -> dict[str, Any]:
        """The shared-state record of ``health`` (wall-clock times: they cross processes)."""
        wall = time.time()
        end = None if health.until is None else wall + (health.until - now)
        return {
            "state": health.state,
            "until": end,
            "reason": health.reason,
            "at": wall,
            "expires": end,
        }

    def _expire(self, health: InstanceHealth) -> bool:
        """End a state whose time is up; whether the instance is available."""
        if health.state != "ok" and health.until is not None and self._clock() >= health.until:
            health.state, health.until, health.reason, health.since = "ok", None, "", None
        return health.state == "ok"
