"""How each object merges another replica's record (no Redis: records passed by hand)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from extproc.auth.lockout import Lockout
from extproc.config import build_config
from extproc.config.model import HealthPolicyConfig
from extproc.errors import ConfigError
from extproc.processing import App
from extproc.routing.health import HealthBoard
from extproc.sessions.dedup import DedupTable
from extproc.sessions.redis_store import RedisSessionStore
from extproc.sessions.state import SessionState
from extproc.state import LocalBus, share
from extproc.state.bus import Apply
from extproc.state.redis_bus import RedisBus


class Recorder:
    """A bus that keeps what is published and lets the test deliver records."""

    shared = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.handlers: dict[str, Apply] = {}

    def publish(self, kind: str, key: str, record: dict[str, Any]) -> None:
        self.sent.append((kind, key, record))

    def subscribe(self, kind: str, apply: Apply) -> None:
        self.handlers[kind] = apply

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _pair() -> tuple[HealthBoard, HealthBoard, Recorder]:
    """Board A publishes into a recorder; board B receives by hand."""
    bus = Recorder()
    a = HealthBoard(["x"], HealthPolicyConfig())
    share(bus, "health", a)
    return a, HealthBoard(["x"], HealthPolicyConfig()), bus


def test_health_records_carry_wall_clock_times() -> None:
    a, _, bus = _pair()
    a.observe("x", 429, retry_after="10")
    kind, key, record = bus.sent[-1]
    assert (kind, key, record["state"]) == ("health", "x", "cooling")
    assert abs(record["until"] - (time.time() + 10)) < 1
    assert record["expires"] == record["until"]
    a.observe("x", 200)  # a success changes no state: nothing is published
    assert len(bus.sent) == 1


def test_a_disable_is_not_lifted_by_a_cooldown_or_a_stale_reactivation() -> None:
    a, b, bus = _pair()
    b.observe("x", 401)  # B's own disable, 10 min
    stale_reactivation = {"at": time.time() - 5, "gone": True}
    b.apply_remote("x", stale_reactivation)
    assert b.state("x") == "disabled"
    a.observe("x", 429, retry_after="5")
    b.apply_remote("x", bus.sent[-1][2])
    assert b.state("x") == "disabled"
    b.apply_remote("x", {"at": time.time() + 1, "gone": True})  # a newer reactivation
    assert b.state("x") == "ok"


def test_the_longer_of_two_cooldowns_wins_and_expired_records_are_ignored() -> None:
    a, b, bus = _pair()
    b.observe("x", 429, retry_after="60")
    a.observe("x", 429, retry_after="5")
    b.apply_remote("x", bus.sent[-1][2])
    left = b.seconds_left(["x"])
    assert left is not None and left > 55
    over = {"state": "cooling", "until": time.time() - 1, "reason": "old", "at": time.time() - 9}
    fresh = HealthBoard(["x"], HealthPolicyConfig())
    fresh.apply_remote("x", over)
    assert fresh.available("x")
    fresh.apply_remote("unknown", bus.sent[-1][2])  # an instance this replica lacks


def test_lockout_merge_keeps_the_larger_count_and_the_later_end() -> None:
    bus = Recorder()
    a, b = Lockout(threshold=3, base_seconds=30), Lockout(threshold=3, base_seconds=30)
    share(bus, "lockout", a)
    a.failure("10.1.1.1", None)
    a.failure("10.1.1.1", None)
    b.apply_remote(*bus.sent[-1][1:])
    assert b.failure("10.1.1.1", None) == 30  # 2 remote + 1 local: the threshold
    # A success older than B's lockout does not lift it.
    b.apply_remote("address:10.1.1.1", {"at": time.time() - 1, "gone": True})
    assert b.retry_after("10.1.1.1", None) is not None
    b.apply_remote("bogus", {"at": 0, "gone": True})  # unknown dimension: ignored


def test_dedup_merge_newest_wins() -> None:
    bus = Recorder()
    a, b = DedupTable(window=10), DedupTable(window=10)
    share(bus, "dedup", a)
    assert a.admit("k") is None
    b.apply_remote("k", bus.sent[-1][2])
    assert b.admit("k") is not None
    a.done("k", 503)  # a failure keeps the window open from its end
    assert bus.sent[-1][2]["finished"] is not None
    b.apply_remote("k", {"at": time.time() - 60, "gone": True})  # stale clear: kept
    assert b.admit("k") is not None


def test_session_merge_ignores_older_versions() -> None:
    async def scenario() -> None:
        bus = Recorder()
        store = RedisSessionStore(bus)
        state = store.put_now(SessionState.new("s", "local"), expected_version=None)
        state = store.put_now(state, expected_version=1)
        assert [key for _, key, _ in bus.sent] == ["s", "s"]
        older: dict[str, Any] = bus.sent[0][2]
        await bus.handlers["session"]("s", older)  # type: ignore[misc]
        mine = store.get_now("s")
        assert mine is not None and mine.version == 2
        newer = SessionState.new("s", "local")
        newer.version, newer.settings = 5, {"model": "m"}
        import msgspec

        await bus.handlers["session"](  # type: ignore[misc]
            "s", {"state": msgspec.to_builtins(newer), "at": time.time()}
        )
        mine = store.get_now("s")
        assert mine is not None and (mine.version, mine.settings) == (5, {"model": "m"})
        assert store.put_now(mine, expected_version=5).version == 6

    asyncio.run(scenario())


BACKENDS = {"openai": {"base_url": "http://127.0.0.1:9001/v1", "api_key": "sk-fake"}}


def test_app_is_local_by_default_and_shares_with_a_redis_backend() -> None:
    local = App(build_config({"backends": BACKENDS}))
    assert isinstance(local.state_bus, LocalBus)
    assert local.health.on_change is None
    shared = App(
        build_config(
            {"backends": BACKENDS, "state": {"backend": "redis", "redis_url": "redis://x:1/0"}}
        )
    )
    assert isinstance(shared.state_bus, RedisBus)
    assert shared.health.on_change is not None
    assert shared.sessions is not None
    assert isinstance(shared.sessions.store, RedisSessionStore)  # sessions follow state
    assert shared.sessions.immediate
    explicit = App(
        build_config(
            {
                "backends": BACKENDS,
                "state": {"backend": "redis"},
                "sessions": {"store": "memory"},
            }
        )
    )
    assert explicit.sessions is not None
    assert not isinstance(explicit.sessions.store, RedisSessionStore)
    # Never started: publishing only queues (bounded), nothing fails.
    shared.health.observe("openai", 401)
    assert shared.state_bus.queue_depth == 1


def test_sessions_in_redis_need_a_redis_state_backend() -> None:
    with pytest.raises(ConfigError, match=r"state\.backend: redis"):
        App(build_config({"backends": BACKENDS, "sessions": {"store": "redis"}}))


def test_the_queue_drops_the_oldest_change_when_full() -> None:
    bus = RedisBus("redis://127.0.0.1:1/0", queue_size=2)
    for n in range(5):
        bus.publish("dedup", f"k{n}", {"at": n})
    assert (bus.queue_depth, bus.dropped) == (2, 3)
