"""Session stores: CAS, create-only, sliding TTL, LRU bound, aliases, copies, persistence."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from extproc.sessions import (
    MemorySessionStore,
    SessionState,
    SessionStore,
    SessionStoreError,
    SQLiteSessionStore,
    VersionConflict,
    decode_state,
    encode_state,
    update,
)

T = TypeVar("T")
TTL = 100.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


Factory = Callable[..., SessionStore]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[Factory]:
    """A factory of stores of one kind, on the fake clock; all closed at teardown."""
    made: list[SessionStore] = []

    def make(**kwargs: Any) -> SessionStore:
        kwargs.setdefault("ttl_seconds", TTL)
        store: SessionStore
        if request.param == "memory":
            store = MemorySessionStore(clock=clock, **kwargs)
        else:
            store = SQLiteSessionStore(tmp_path / "sessions.db", clock=clock, **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        run(store.close())


def new(session_id: str, clock: FakeClock, **fields: Any) -> SessionState:
    state = SessionState.new(session_id, "key-1", client_session=f"c-{session_id}", now=clock())
    for name, value in fields.items():
        setattr(state, name, value)
    return state


# -- state encoding ---------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    state = SessionState.new("s1", "local", now=5.0)
    state.settings = {"model": "m", "temperature": 0.5, "stream": True, "n": 2}
    state.route = ["a", "b"]
    state.counters = {"requests": 3}
    state.steering = {"rule": 7.5}
    state.marks = {"loop": {"hash": "x", "count": 2}, "seen": [1, 2]}
    state.oneoff = "fast"
    assert decode_state(encode_state(state)) == state
    assert (state.version, state.created, state.updated) == (0, 5.0, 5.0)


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[]", b'{"id": 1}', b'{"id": "s", "owner": "o"}', b"\xff\xfe"],
)
def test_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(SessionStoreError):
        decode_state(data)


def test_encode_rejects_unencodable_values() -> None:
    state = SessionState.new("s1", "local", now=1.0)
    state.marks["bad"] = object()
    with pytest.raises(SessionStoreError):
        encode_state(state)


# -- both stores ------------------------------------------------------------------------


def test_implements_protocol(make_store: Factory) -> None:
    assert isinstance(make_store(), SessionStore)


def test_put_then_get(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        assert await store.get("s1") is None
        state = new("s1", clock, settings={"model": "m"})
        clock.advance(3)
        stored = await store.put(state, expected_version=None)
        assert (stored.version, stored.updated, stored.created) == (1, clock(), clock() - 3)
        assert state.version == 0  # the caller's object is untouched
        got = await store.get("s1")
        assert got == stored
        assert got is not None and got.client_session == "c-s1"

    run(main())


def test_create_only(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        await store.put(new("s1", clock), expected_version=None)
        with pytest.raises(VersionConflict):
            await store.put(new("s1", clock, settings={"x": 1}), expected_version=None)
        got = await store.get("s1")
        assert got is not None and got.settings == {}

    run(main())


def test_cas_conflict_between_two_writers(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        await store.put(new("s1", clock), expected_version=None)
        first = await store.get("s1")
        second = await store.get("s1")
        assert first is not None and second is not None
        first.settings["a"] = 1
        second.settings["b"] = 2
        stored = await store.put(first, expected_version=first.version)
        assert stored.version == 2
        with pytest.raises(VersionConflict):
            await store.put(second, expected_version=second.version)
        got = await store.get("s1")
        assert got is not None and got.settings == {"a": 1} and got.version == 2
        # a CAS write on an absent session conflicts too
        with pytest.raises(VersionConflict):
            await store.put(new("nope", clock), expected_version=0)

    run(main())


def test_sliding_ttl(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        await store.put(new("s1", clock), expected_version=None)
        await store.put(new("s2", clock), expected_version=None)
        clock.advance(TTL * 0.6)
        assert await store.get("s1") is not None  # slides s1 only
        clock.advance(TTL * 0.6)
        assert await store.get("s2") is None
        assert await store.get("s1") is not None
        assert [s.id for s in await store.list()] == ["s1"]
        clock.advance(TTL)
        assert await store.get("s1") is None
        assert await store.list() == []
        # expired: CAS fails, delete reports nothing, create-only succeeds afresh
        with pytest.raises(VersionConflict):
            await store.put(new("s1", clock), expected_version=1)
        assert await store.delete("s1") is False
        stored = await store.put(new("s1", clock), expected_version=None)
        assert stored.version == 1

    run(main())


def test_put_slides_ttl(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        stored = await store.put(new("s1", clock), expected_version=None)
        clock.advance(TTL * 0.9)
        await store.put(stored, expected_version=stored.version)
        clock.advance(TTL * 0.9)
        assert await store.get("s1") is not None

    run(main())


def test_lru_bound(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store(max_sessions=3)
        for name in ("a", "b", "c"):
            await store.put(new(name, clock), expected_version=None)
            clock.advance(1)
        assert await store.get("a") is not None  # a is now more recent than b
        clock.advance(1)
        await store.put(new("d", clock), expected_version=None)
        assert await store.get("b") is None
        for name in ("a", "c", "d"):
            assert await store.get(name) is not None, name
        assert len(await store.list()) == 3

    run(main())


def test_list_most_recently_updated_first(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        stored = {}
        for name in ("a", "b", "c"):
            stored[name] = await store.put(new(name, clock), expected_version=None)
            clock.advance(1)
        await store.get("b")  # a read is not an update
        await store.put(stored["a"], expected_version=1)
        assert [s.id for s in await store.list()] == ["a", "c", "b"]
        assert [s.id for s in await store.list(limit=2)] == ["a", "c"]
        assert await store.list(limit=0) == []

    run(main())


def test_delete(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        await store.put(new("s1", clock), expected_version=None)
        assert await store.delete("s1") is True
        assert await store.delete("s1") is False
        assert await store.get("s1") is None
        assert (await store.put(new("s1", clock), expected_version=None)).version == 1

    run(main())


def test_aliases(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        assert await store.resolve("resp_1") is None
        await store.link("resp_1", "s1")
        await store.link("resp_2", "s1")
        assert await store.resolve("resp_1") == "s1"
        await store.link("resp_1", "s2")  # relinking moves the alias
        assert await store.resolve("resp_1") == "s2"
        clock.advance(TTL * 0.6)
        assert await store.resolve("resp_1") == "s2"  # slides resp_1 only
        clock.advance(TTL * 0.6)
        assert await store.resolve("resp_2") is None
        assert await store.resolve("resp_1") == "s2"
        clock.advance(TTL)
        assert await store.resolve("resp_1") is None

    run(main())


def test_aliases_are_bounded(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store(max_sessions=2)  # 8 aliases
        for i in range(10):
            await store.link(f"r{i}", "s1")
            clock.advance(1)
        assert [await store.resolve(f"r{i}") for i in range(10)] == [None] * 2 + ["s1"] * 8

    run(main())


def test_copies_do_not_alias(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        state = new("s1", clock, marks={"loop": {"hashes": ["h1"]}}, route=["a"])
        stored = await store.put(state, expected_version=None)
        state.marks["loop"]["hashes"].append("caller")
        state.route.append("caller")
        stored.marks["loop"]["hashes"].append("returned")
        stored.counters["requests"] = 99
        got = await store.get("s1")
        assert got is not None
        assert got.marks == {"loop": {"hashes": ["h1"]}}
        assert got.route == ["a"] and got.counters == {}
        got.settings["x"] = 1
        got.marks["loop"]["hashes"].clear()
        again = await store.get("s1")
        assert (
            again is not None and again.settings == {} and again.marks["loop"]["hashes"] == ["h1"]
        )
        listed = (await store.list())[0]
        listed.route.clear()
        again = await store.get("s1")
        assert again is not None and again.route == ["a"]

    run(main())


def test_unencodable_state_is_refused(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        with pytest.raises(SessionStoreError):
            await store.put(new("s1", clock, marks={"bad": object()}), expected_version=None)
        assert await store.get("s1") is None

    run(main())


# -- update() ---------------------------------------------------------------------------


class RacingStore:
    """Delegates to a store; a rival writer bumps the session right after each get."""

    def __init__(self, inner: SessionStore, races: int) -> None:
        self.inner = inner
        self.races = races

    async def get(self, session_id: str) -> SessionState | None:
        state = await self.inner.get(session_id)
        if state is not None and self.races > 0:
            self.races -= 1
            rival = await self.inner.get(session_id)
            assert rival is not None
            rival.counters["rival"] = rival.counters.get("rival", 0) + 1
            await self.inner.put(rival, expected_version=rival.version)
        return state

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def bump(state: SessionState) -> None:
    state.counters["requests"] = state.counters.get("requests", 0) + 1


def test_update_creates_and_mutates(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        assert await update(store, "s1", bump) is None
        assert await store.get("s1") is None
        created = await update(store, "s1", bump, create=lambda: new("s1", clock))
        assert created is not None and created.version == 1
        assert created.counters == {"requests": 1}
        again = await update(store, "s1", bump, create=lambda: new("s1", clock))
        assert again is not None and again.version == 2 and again.counters == {"requests": 2}
        with pytest.raises(ValueError):
            await update(store, "s9", bump, create=lambda: new("other", clock))

    run(main())


def test_update_retries_on_conflict(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        await store.put(new("s1", clock), expected_version=None)
        racing = RacingStore(store, races=2)
        calls: list[int] = []

        def mutate(state: SessionState) -> None:
            calls.append(state.version)
            bump(state)

        result = await update(racing, "s1", mutate)
        assert calls == [1, 2, 3]  # two conflicts, each retry saw the rival's write
        assert result is not None and result.version == 4
        assert result.counters == {"rival": 2, "requests": 1}
        assert await store.get("s1") == result

    run(main())


def test_update_gives_up_after_attempts(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        await store.put(new("s1", clock), expected_version=None)
        racing = RacingStore(store, races=100)
        with pytest.raises(VersionConflict):
            await update(racing, "s1", bump, attempts=3)
        got = await store.get("s1")
        assert got is not None and got.counters == {"rival": 3}

    run(main())


def test_concurrent_updates_all_land(make_store: Factory, clock: FakeClock) -> None:
    async def main() -> None:
        store = make_store()
        results = await asyncio.gather(
            *(
                update(store, "s1", bump, create=lambda: new("s1", clock), attempts=50)
                for _ in range(10)
            )
        )
        got = await store.get("s1")
        assert got is not None and got.counters == {"requests": 10} and got.version == 10
        assert sorted(r.version for r in results if r is not None) == list(range(1, 11))

    run(main())


# -- SQLite only ------------------------------------------------------------------------


def test_sqlite_survives_close_and_reopen(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "sessions.db"

    async def first() -> None:
        store = SQLiteSessionStore(path, clock=clock, ttl_seconds=TTL)
        await store.put(new("s1", clock, settings={"model": "m"}), expected_version=None)
        await store.link("resp_1", "s1")
        await store.close()
        await store.close()  # idempotent
        with pytest.raises(SessionStoreError):
            await store.get("s1")

    async def second() -> None:
        store = SQLiteSessionStore(path, clock=clock, ttl_seconds=TTL)
        try:
            got = await store.get("s1")
            assert got is not None and got.settings == {"model": "m"} and got.version == 1
            assert await store.resolve("resp_1") == "s1"
            stored = await store.put(got, expected_version=1)
            assert stored.version == 2
        finally:
            await store.close()

    run(first())
    clock.advance(TTL / 2)
    run(second())


def test_sqlite_purges_expired_rows(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "sessions.db"

    def rows() -> tuple[int, int]:
        with sqlite3.connect(path) as conn:
            sessions = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
            aliases = conn.execute("SELECT COUNT(*) FROM aliases").fetchone()[0]
        return sessions, aliases

    async def main() -> None:
        store = SQLiteSessionStore(path, clock=clock, ttl_seconds=TTL, purge_every=4)
        try:
            await store.put(new("old", clock), expected_version=None)
            await store.link("r-old", "old")
            clock.advance(TTL + 1)
            await store.put(new("s1", clock), expected_version=None)
            assert rows() == (2, 1)  # expired but not yet purged
            await store.link("r1", "s1")  # the fourth write purges
            assert rows() == (1, 1)
        finally:
            await store.close()

    run(main())


def test_sqlite_corrupt_row_is_a_store_error(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "sessions.db"

    async def main() -> None:
        store = SQLiteSessionStore(path, clock=clock, ttl_seconds=TTL)
        try:
            await store.put(new("s1", clock), expected_version=None)
            with sqlite3.connect(path) as conn:
                conn.execute("UPDATE sessions SET data = ? WHERE id = 's1'", (b"garbage",))
            with pytest.raises(SessionStoreError):
                await store.get("s1")
        finally:
            await store.close()

    run(main())


def test_sqlite_in_memory(clock: FakeClock) -> None:
    async def main() -> None:
        store = SQLiteSessionStore(":memory:", clock=clock)
        try:
            await store.put(new("s1", clock), expected_version=None)
            assert (await store.get("s1")) is not None
        finally:
            await store.close()

    run(main())


def test_sqlite_bad_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(SessionStoreError):
        SQLiteSessionStore(tmp_path / "missing-dir" / "sessions.db")
