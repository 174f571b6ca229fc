"""Sessions shared by extproc replicas: a local in-memory store, replicated through Redis.

Reads and writes are those of a :class:`~extproc.sessions.store.MemorySessionStore`
(:class:`~extproc.sessions.store.ImmediateReads`: no await, no Redis round
trip on the request path); every write is also handed to the state bus
(:mod:`extproc.state`), which stores it in Redis with the session TTL and
tells the other replicas. A replica applies another's session when its
version is newer (equal versions: the later ``updated`` wins), and loads the
stored sessions when it starts.

Compare-and-set is local: two replicas that change one session at the same
moment both succeed, and the later write wins everywhere. Commands are rare
and one client's requests are sequential, so this loses at most a counter
increment, never a setting typed a moment before on another replica.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from typing import Any

import msgspec

from extproc.sessions.state import SessionState, SessionStoreError, copy_state
from extproc.sessions.store import ImmediateReads, MemorySessionStore, SessionStore
from extproc.state.bus import StateBus

__all__ = ["ALIAS_KIND", "SESSION_KIND", "RedisSessionStore"]

#: Bus kinds: a session's state, and an alias (response id) -> session id link.
SESSION_KIND = "session"
ALIAS_KIND = "alias"


class RedisSessionStore:
    """:class:`SessionStore` and :class:`ImmediateReads` over a replicated local cache."""

    def __init__(
        self,
        bus: StateBus,
        *,
        ttl_seconds: float = 3600.0,
        max_sessions: int = 10000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._local = MemorySessionStore(
            ttl_seconds=ttl_seconds, max_sessions=max_sessions, clock=clock
        )
        self._bus = bus
        self._ttl = ttl_seconds
        self._clock = clock
        bus.subscribe(SESSION_KIND, self._apply_session)
        bus.subscribe(ALIAS_KIND, self._apply_alias)

    def __len__(self) -> int:
        return len(self._local)

    # -- ImmediateReads ---------------------------------------------------------

    def get_now(self, session_id: str) -> SessionState | None:
        return self._local.get_now(session_id)

    def resolve_now(self, alias: str) -> str | None:
        return self._local.resolve_now(alias)

    def put_now(self, state: SessionState, *, expected_version: int | None) -> SessionState:
        stored = self._local.put_now(state, expected_version=expected_version)
        wall = time.time()
        self._bus.publish(
            SESSION_KIND,
            stored.id,
            {"state": msgspec.to_builtins(stored), "at": wall, "expires": wall + self._ttl},
        )
        return stored

    def link_now(self, alias: str, session_id: str) -> None:
        self._local.link_now(alias, session_id)
        wall = time.time()
        self._bus.publish(
            ALIAS_KIND, alias, {"session": session_id, "at": wall, "expires": wall + self._ttl}
        )

    # -- SessionStore -------------------------------------------------------------

    async def get(self, session_id: str) -> SessionState | None:
        return self.get_now(session_id)

    async def put(self, state: SessionState, *, expected_version: int | None) -> SessionState:
        return self.put_now(state, expected_version=expected_version)

    async def delete(self, session_id: str) -> bool:
        existed = await self._local.delete(session_id)
        if existed:
            self._bus.publish(SESSION_KIND, session_id, {"at": time.time(), "gone": True})
        return existed

    async def list(self, limit: int = 100) -> builtins.list[SessionState]:
        return await self._local.list(limit)

    async def link(self, alias: str, session_id: str) -> None:
        self.link_now(alias, session_id)

    async def resolve(self, alias: str) -> str | None:
        return self.resolve_now(alias)

    async def close(self) -> None:
        """Forget the local cache (the bus is closed by whoever started it)."""
        await self._local.close()

    # -- what other replicas changed ------------------------------------------------

    async def _apply_session(self, session_id: str, record: dict[str, Any]) -> None:
        mine = self._local.get_now(session_id)
        if record.get("gone"):
            if mine is not None and mine.updated <= float(record["at"]):
                await self._local.delete(session_id)
            return
        try:
            theirs = msgspec.convert(record["state"], SessionState)
        except (msgspec.ValidationError, KeyError) as exc:
            raise SessionStoreError(f"invalid shared session {session_id!r}: {exc}") from exc
        if theirs.id != session_id:
            raise SessionStoreError(f"shared session {session_id!r} holds {theirs.id!r}")
        if mine is not None:
            if (theirs.version, theirs.updated) <= (mine.version, mine.updated):
                return  # ours is as new or newer
            # Nothing interleaves (the memory store never suspends): replace it
            # with exactly their version, so later versions compare right.
            await self._local.delete(session_id)
        self._local.put_now(copy_state(theirs, version=theirs.version - 1), expected_version=None)

    def _apply_alias(self, alias: str, record: dict[str, Any]) -> None:
        session_id = record.get("session")
        if isinstance(session_id, str):
            self._local.link_now(alias, session_id)


_PROTOCOL_CHECK: type[SessionStore] = RedisSessionStore
_IMMEDIATE_CHECK: type[ImmediateReads] = RedisSessionStore
