"""Two replicas in one process share health, lockouts, dedup and sessions through real Redis."""

from __future__ import annotations

import asyncio
import logging

import pytest

from extproc.auth.lockout import Lockout
from extproc.config.model import HealthPolicyConfig
from extproc.observe.metrics import Metrics
from extproc.routing.health import HealthBoard
from extproc.sessions.dedup import DedupTable
from extproc.sessions.redis_store import RedisSessionStore
from extproc.sessions.state import SessionState
from extproc.sessions.store import update_now
from extproc.state import share
from extproc.state.redis_bus import RedisBus
from tests.redis_server import RedisServer
from tests.state.replicas import eventually, new_bus, prefix

INSTANCES = ("openai", "anthropic")


def _board(bus: RedisBus) -> HealthBoard:
    board = HealthBoard(INSTANCES, HealthPolicyConfig())
    share(bus, "health", board)
    return board


async def _started(*buses: RedisBus) -> None:
    await asyncio.gather(*(bus.start() for bus in buses))


async def _closed(*buses: RedisBus) -> None:
    await asyncio.gather(*(bus.close() for bus in buses))


def test_a_cooldown_learnt_by_one_replica_is_honoured_by_the_other(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        keys = prefix()
        bus_a, bus_b = new_bus(redis_server.url, keys), new_bus(redis_server.url, keys)
        board_a, board_b = _board(bus_a), _board(bus_b)
        await _started(bus_a, bus_b)
        try:
            assert bus_a.up and bus_b.up
            board_a.observe("openai", 429, retry_after="30")
            await eventually(lambda: not board_b.available("openai"), what="B honours the 429")
            assert board_b.state("openai") == "cooling"
            left = board_b.seconds_left(["openai"])
            assert left is not None and 28 < left <= 30
            assert board_b.available("anthropic")
            # A disable learnt by B reaches A and outranks A's cool-down.
            board_b.observe("openai", 401)
            await eventually(lambda: board_a.state("openai") == "disabled", what="A disables")
            # An admin reactivation on either replica lifts it on both.
            board_a.reactivate("openai")
            await eventually(lambda: board_b.available("openai"), what="B reactivates")
            assert board_a.available("openai")
        finally:
            await _closed(bus_a, bus_b)

    asyncio.run(scenario())


def test_lockouts_are_counted_across_replicas(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        keys = prefix()
        bus_a, bus_b = new_bus(redis_server.url, keys), new_bus(redis_server.url, keys)
        lock_a = Lockout(threshold=2, base_seconds=60, max_seconds=600)
        lock_b = Lockout(threshold=2, base_seconds=60, max_seconds=600)
        share(bus_a, "lockout", lock_a)
        share(bus_b, "lockout", lock_b)
        await _started(bus_a, bus_b)
        try:
            assert lock_a.failure("10.0.0.7", "key-000000000001") is None
            await eventually(lambda: len(lock_b) == 2, what="B knows the first failure")
            # The second failure, on the other replica, is the threshold.
            assert lock_b.failure("10.0.0.7", None) == 60
            await eventually(
                lambda: lock_a.retry_after("10.0.0.7", None) is not None, what="A locks"
            )
            wait = lock_a.retry_after("10.0.0.7", None)
            assert wait is not None and 55 < wait <= 60
            # The key id counted once only (A's failure): not locked anywhere.
            assert lock_a.retry_after("10.0.0.8", "key-000000000001") is None
            # A success elsewhere forgets a subject that was not failed after it.
            received = bus_a.received
            lock_b.success("10.0.0.9", "key-000000000001")
            await eventually(lambda: bus_a.received > received, what="A hears the success")
            await eventually(lambda: len(lock_a) == 1, what="A forgets the key id")
        finally:
            await _closed(bus_a, bus_b)

    asyncio.run(scenario())


def test_a_dedup_window_is_shared(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        keys = prefix()
        bus_a, bus_b = new_bus(redis_server.url, keys), new_bus(redis_server.url, keys)
        table_a, table_b = DedupTable(window=30), DedupTable(window=30)
        share(bus_a, "dedup", table_a)
        share(bus_b, "dedup", table_b)
        await _started(bus_a, bus_b)
        try:
            assert table_a.admit("sess-1:digest") is None
            await eventually(lambda: len(table_b) == 1, what="B learns the request in flight")
            wait = table_b.admit("sess-1:digest")
            assert wait is not None and 25 < wait <= 30
            assert table_b.admit("sess-1:other") is None  # another request goes through
            # A success on A clears the key on B: a deliberate resend goes through there.
            table_a.done("sess-1:digest", 200)
            await eventually(lambda: len(table_b) == 1, what="B clears the key")
            assert table_b.admit("sess-1:digest") is None
        finally:
            await _closed(bus_a, bus_b)

    asyncio.run(scenario())


def test_a_session_written_on_one_replica_is_read_on_the_other(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        keys = prefix()
        bus_a, bus_b = new_bus(redis_server.url, keys), new_bus(redis_server.url, keys)
        store_a, store_b = RedisSessionStore(bus_a), RedisSessionStore(bus_b)
        await _started(bus_a, bus_b)
        try:
            state = SessionState.new("sess-42", "local", client_session="demo")
            state.settings["model"] = "gpt-4o"
            stored = store_a.put_now(state, expected_version=None)
            assert stored.version == 1
            await eventually(lambda: store_b.get_now("sess-42") is not None, what="B reads it")
            seen = store_b.get_now("sess-42")
            assert seen is not None
            assert (seen.version, seen.settings, seen.client_session) == (1, state.settings, "demo")
            # B's change (compare-and-set on B's copy) goes back to A, version 2.
            update_now(
                store_b,
                "sess-42",
                lambda s: s.settings.update(temperature=0.2),
                create=lambda: SessionState.new("sess-42", "local"),
            )

            def a_has_v2() -> bool:
                mine = store_a.get_now("sess-42")
                return mine is not None and mine.version == 2

            await eventually(a_has_v2, what="A reads version 2")
            mine = store_a.get_now("sess-42")
            assert mine is not None and mine.settings == {"model": "gpt-4o", "temperature": 0.2}
            # Response-id links (previous_response_id) travel too.
            store_a.link_now("answer:resp_1", "sess-42")
            await eventually(lambda: store_b.resolve_now("answer:resp_1") == "sess-42")
            assert await store_a.delete("sess-42")
            await eventually(lambda: store_b.get_now("sess-42") is None, what="B forgets it")
        finally:
            await _closed(bus_a, bus_b)

    asyncio.run(scenario())


def test_a_new_replica_loads_the_snapshot(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        keys = prefix()
        bus_a = new_bus(redis_server.url, keys)
        board_a = _board(bus_a)
        lock_a = Lockout(threshold=1, base_seconds=120, max_seconds=600)
        share(bus_a, "lockout", lock_a)
        store_a = RedisSessionStore(bus_a)
        await bus_a.start()
        bus_c = new_bus(redis_server.url, keys)
        try:
            board_a.observe("anthropic", 403)
            lock_a.failure("192.0.2.1", None)
            store_a.put_now(SessionState.new("sess-7", "local"), expected_version=None)
            await eventually(
                lambda: bus_a.queue_depth == 0 and not bus_a._sending, what="A sent it all"
            )
            # C starts later: start() returns once the snapshot is loaded.
            board_c = _board(bus_c)
            lock_c = Lockout(threshold=1, base_seconds=120, max_seconds=600)
            share(bus_c, "lockout", lock_c)
            store_c = RedisSessionStore(bus_c)
            await bus_c.start()
            assert bus_c.up
            assert board_c.state("anthropic") == "disabled"
            assert "refused the key" in board_c.why_not("anthropic")
            wait = lock_c.retry_after("192.0.2.1", None)
            assert wait is not None and 115 < wait <= 120
            stored = store_c.get_now("sess-7")
            assert stored is not None and stored.version == 1
        finally:
            await _closed(bus_a, bus_c)

    asyncio.run(scenario())


def test_redis_down_degrades_to_local_state_and_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="extproc.state.redis_bus")

    async def scenario() -> None:
        keys = prefix()
        bus_a, bus_b = new_bus(redis_server.url, keys), new_bus(redis_server.url, keys)
        board_a, board_b = _board(bus_a), _board(bus_b)
        metrics = Metrics(runtime_collectors=False)
        metrics.watch_shared_state(up=lambda: bus_a.up, errors=lambda: bus_a.errors)
        await _started(bus_a, bus_b)
        try:
            assert b"llm_proxy_shared_state_up 1.0" in metrics.exposition()
            redis_server.stop()
            await eventually(lambda: not bus_a.up and not bus_b.up, what="both see the outage")
            # Requests keep working on local state.
            board_a.observe("openai", 429, retry_after="60")
            assert not board_a.available("openai")
            assert board_b.available("openai")
            await eventually(lambda: bus_a.errors >= 3, what="several failed reconnects")
            scrape = metrics.exposition()
            assert b"llm_proxy_shared_state_up 0.0" in scrape
            assert b"llm_proxy_shared_state_errors_total" in scrape
            outage = [r for r in caplog.records if "unavailable" in r.getMessage()]
            assert len(outage) == 2  # one per replica, not one per failure

            redis_server.start()
            await eventually(lambda: bus_a.up and bus_b.up, what="both reconnect")
            # The cool-down A learnt during the outage was queued, and reaches B now.
            await eventually(lambda: not board_b.available("openai"), what="B learns it late")
            board_b.observe("anthropic", 401)
            await eventually(lambda: board_a.state("anthropic") == "disabled", what="resumed")
            assert b"llm_proxy_shared_state_up 1.0" in metrics.exposition()
            back = [r for r in caplog.records if "answers again" in r.getMessage()]
            assert len(back) == 2
        finally:
            await _closed(bus_a, bus_b)

    asyncio.run(scenario())


def test_a_replica_starts_while_redis_is_down(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        keys = prefix()
        redis_server.stop()
        bus = new_bus(redis_server.url, keys)
        board = _board(bus)
        await bus.start()  # returns: the replica serves on local state
        try:
            assert not bus.up and bus.errors >= 1
            board.observe("openai", 401)
            assert board.state("openai") == "disabled"
            redis_server.start()
            await eventually(lambda: bus.up, what="the replica connects later")
            later = new_bus(redis_server.url, keys)
            board_later = _board(later)
            await later.start()
            try:
                await eventually(
                    lambda: board_later.state("openai") == "disabled", what="queued change sent"
                )
            finally:
                await later.close()
        finally:
            await bus.close()

    asyncio.run(scenario())


def test_two_apps_share_through_their_state_bus(redis_server: RedisServer) -> None:
    """The composition root wires the board and the sessions to the bus (serve() starts it)."""
    from extproc.config import build_config
    from extproc.processing import App

    config = build_config(
        {
            "backends": {"openai": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}},
            "state": {"backend": "redis", "redis_url": redis_server.url, "key_prefix": prefix()},
        }
    )

    async def scenario() -> None:
        app_a, app_b = App(config), App(config)
        await asyncio.gather(app_a.state_bus.start(), app_b.state_bus.start())
        try:
            app_a.health.observe("openai", 403)
            await eventually(lambda: app_b.health.state("openai") == "disabled")
            assert app_a.sessions is not None and app_b.sessions is not None
            await app_b.sessions.store.put(SessionState.new("s-1", "local"), expected_version=None)
            store_a = app_a.sessions.store
            assert isinstance(store_a, RedisSessionStore)
            await eventually(lambda: store_a.get_now("s-1") is not None)
            scrape = app_a.telemetry.metrics.exposition()
            assert b"llm_proxy_shared_state_up 1.0" in scrape
            assert b"llm_proxy_shared_state_queue_depth" in scrape
        finally:
            await asyncio.gather(app_a.state_bus.close(), app_b.state_bus.close())

    asyncio.run(scenario())
