"""Brute-force lockout: schedule, expiry, forgetting, dimensions, memory bound."""

from __future__ import annotations

import pytest

from extproc.auth import Lockout

ADDR = "203.0.113.7"
OTHER = "198.51.100.9"
KEY = "key-0123456789ab"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def fail_until_unlocked(lockout: Lockout, clock: FakeClock, address: str) -> float | None:
    """One failure after waiting out any lockout; the lockout it started."""
    wait = lockout.retry_after(address, None)
    if wait:
        clock.advance(wait)
    return lockout.failure(address, None)


def test_threshold_then_doubling_up_to_the_cap(clock: FakeClock) -> None:
    lockout = Lockout(clock=clock)
    started = [fail_until_unlocked(lockout, clock, ADDR) for _ in range(20)]
    assert started[:4] == [None] * 4
    assert started[4:16] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert started[16:] == [3600] * 4


def test_small_custom_schedule(clock: FakeClock) -> None:
    lockout = Lockout(threshold=2, base_seconds=10, max_seconds=25, clock=clock)
    started = [fail_until_unlocked(lockout, clock, ADDR) for _ in range(5)]
    assert started == [None, 10, 20, 25, 25]


def test_retry_after_counts_down_and_expires(clock: FakeClock) -> None:
    lockout = Lockout(threshold=1, base_seconds=10, clock=clock)
    assert lockout.retry_after(ADDR, None) is None
    assert lockout.failure(ADDR, None) == 10
    assert lockout.retry_after(ADDR, None) == 10
    clock.advance(4)
    assert lockout.retry_after(ADDR, None) == pytest.approx(6)
    clock.advance(6)
    assert lockout.retry_after(ADDR, None) is None


def test_failures_during_a_lockout_neither_count_nor_extend(clock: FakeClock) -> None:
    lockout = Lockout(threshold=1, base_seconds=10, clock=clock)
    assert lockout.failure(ADDR, None) == 10
    clock.advance(1)
    assert lockout.failure(ADDR, None) is None  # raced the lockout
    assert lockout.retry_after(ADDR, None) == pytest.approx(9)
    clock.advance(9)
    assert lockout.failure(ADDR, None) == 20  # the next real failure doubles once


def test_counters_are_forgotten_after_a_quiet_max_seconds(clock: FakeClock) -> None:
    lockout = Lockout(threshold=3, base_seconds=1, max_seconds=100, clock=clock)
    lockout.failure(ADDR, None)
    lockout.failure(ADDR, None)
    clock.advance(99)
    assert lockout.failure(ADDR, None) == 1  # not forgotten yet: third failure locks
    clock.advance(1 + 100)  # lockout over, then a quiet max_seconds
    assert lockout.failure(ADDR, None) is None  # back to the first failure
    assert lockout.failure(ADDR, None) is None
    assert lockout.failure(ADDR, None) == 1  # and the schedule starts over


def test_quiet_window_starts_when_the_lockout_ends(clock: FakeClock) -> None:
    lockout = Lockout(threshold=1, base_seconds=100, max_seconds=100, clock=clock)
    assert lockout.failure(ADDR, None) == 100
    clock.advance(150)  # 150 s after the failure, but only 50 s after the lockout
    assert lockout.failure(ADDR, None) == 100  # still escalating (capped)
    clock.advance(100 + 100)
    assert lockout.failure(ADDR, None) == 100  # forgotten: a first lockout again


def test_success_clears_only_that_address(clock: FakeClock) -> None:
    lockout = Lockout(threshold=3, clock=clock)
    for _ in range(2):
        lockout.failure(ADDR, None)
        lockout.failure(OTHER, None)
    lockout.success(ADDR, None)
    assert lockout.failure(ADDR, None) is None  # counter was reset
    assert lockout.failure(OTHER, None) == 1  # the other address kept its two


def test_success_on_one_address_does_not_unlock_another(clock: FakeClock) -> None:
    lockout = Lockout(threshold=1, base_seconds=30, clock=clock)
    lockout.failure(OTHER, None)
    lockout.success(ADDR, None)
    assert lockout.retry_after(OTHER, None) == 30


def test_addresses_are_independent(clock: FakeClock) -> None:
    lockout = Lockout(threshold=2, clock=clock)
    lockout.failure(ADDR, None)
    lockout.failure(ADDR, None)
    assert lockout.retry_after(ADDR, None) == 1
    assert lockout.retry_after(OTHER, None) is None


def test_a_key_retried_from_many_addresses_is_locked(clock: FakeClock) -> None:
    lockout = Lockout(threshold=3, base_seconds=5, clock=clock)
    addresses = [f"192.0.2.{n}" for n in range(3)]
    started = [lockout.failure(address, KEY) for address in addresses]
    assert started == [None, None, 5]
    # every address, even a new one, is refused with that key ...
    assert lockout.retry_after("192.0.2.200", KEY) == 5
    # ... but not with another key or none: no single address reached the threshold
    assert lockout.retry_after("192.0.2.200", "key-ffffffffffff") is None
    assert lockout.retry_after(addresses[0], None) is None


def test_retry_after_is_the_longer_of_the_two_lockouts(clock: FakeClock) -> None:
    lockout = Lockout(threshold=1, base_seconds=10, clock=clock)
    lockout.failure(ADDR, None)  # the address: 10 s
    clock.advance(10)
    lockout.failure(ADDR, None)  # the address: 20 s
    lockout.failure(OTHER, KEY)  # the key: 10 s (the address is locked too)
    assert lockout.retry_after(OTHER, KEY) == 10
    assert lockout.retry_after(ADDR, KEY) == 20


def test_failure_reports_the_longer_lockout_it_started(clock: FakeClock) -> None:
    lockout = Lockout(threshold=1, base_seconds=10, clock=clock)
    lockout.failure(ADDR, None)
    clock.advance(10)
    assert lockout.failure(ADDR, KEY) == 20  # address escalates, the key starts at 10


def test_success_clears_the_key_id_too(clock: FakeClock) -> None:
    lockout = Lockout(threshold=2, clock=clock)
    lockout.failure(ADDR, KEY)
    lockout.success(OTHER, KEY)
    assert lockout.failure("192.0.2.1", KEY) is None


def test_memory_is_bounded_and_oldest_subjects_go_first(clock: FakeClock) -> None:
    lockout = Lockout(threshold=1, base_seconds=60, max_entries=3, clock=clock)
    for n in range(10):
        lockout.failure(f"192.0.2.{n}", None)
        clock.advance(1)
        assert len(lockout) <= 3
    assert len(lockout) == 3
    assert lockout.retry_after("192.0.2.0", None) is None  # evicted
    assert lockout.retry_after("192.0.2.9", None) is not None
    # a new failure of an old subject makes it the newest
    lockout.failure("192.0.2.7", None)
    lockout.failure("192.0.2.100", None)
    assert lockout.retry_after("192.0.2.7", None) is not None
    assert lockout.retry_after("192.0.2.8", None) is None


def test_both_dimensions_share_the_bound(clock: FakeClock) -> None:
    lockout = Lockout(max_entries=4, clock=clock)
    for n in range(10):
        lockout.failure(f"192.0.2.{n}", f"key-{n:012x}")
    assert len(lockout) == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0},
        {"base_seconds": 0},
        {"base_seconds": 10, "max_seconds": 5},
        {"max_entries": 0},
    ],
)
def test_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="lockout"):
        Lockout(**kwargs)  # type: ignore[arg-type]
