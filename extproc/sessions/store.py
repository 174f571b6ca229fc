"""The async session store interface, CAS read-modify-write, and the in-memory store."""

from __future__ import annotations

import builtins
import heapq
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from extproc.sessions.state import (
    SessionState,
    SessionStoreError,
    VersionConflict,
    copy_state,
    decode_state,
    encode_state,
)

__all__ = [
    "ImmediateReads",
    "MemorySessionStore",
    "SessionStore",
    "SessionStoreError",
    "VersionConflict",
    "update",
    "update_now",
]


@runtime_checkable
class SessionStore(Protocol):
    """Sessions by id with a sliding TTL, compare-and-set writes and an alias index.

    Every returned state is the caller's own copy: mutating it never changes
    the stored state, and a stored state never aliases an argument.
    """

    async def get(self, session_id: str) -> SessionState | None:
        """The live state, or ``None``; a hit slides the TTL."""
        ...

    async def put(self, state: SessionState, *, expected_version: int | None) -> SessionState:
        """Compare-and-set write; the stored copy (``version`` bumped, ``updated`` now).

        ``expected_version=None`` creates only if no live state has this id;
        otherwise the stored version must equal it. Else :class:`VersionConflict`.
        """
        ...

    async def delete(self, session_id: str) -> bool:
        """Forget a session; whether a live one existed."""
        ...

    async def list(self, limit: int = 100) -> builtins.list[SessionState]:
        """Live states, most recently updated first."""
        ...

    async def link(self, alias: str, session_id: str) -> None:
        """Map ``alias`` (e.g. a provider response id) to a session id, with the TTL."""
        ...

    async def resolve(self, alias: str) -> str | None:
        """The session id a live alias maps to (the session may be gone); slides its TTL."""
        ...

    async def close(self) -> None:
        """Release resources; the store is unusable afterwards."""
        ...


@runtime_checkable
class ImmediateReads(Protocol):
    """Optional capability: reads and writes that never wait (an in-process store).

    Stages use such a store synchronously, so a request costs no event-loop
    hop and no background task; stores that do I/O (SQLite, Redis) are awaited.
    """

    def get_now(self, session_id: str) -> SessionState | None: ...

    def resolve_now(self, alias: str) -> str | None: ...

    def put_now(self, state: SessionState, *, expected_version: int | None) -> SessionState: ...

    def link_now(self, alias: str, session_id: str) -> None: ...


def update_now(
    store: ImmediateReads,
    session_id: str,
    mutate: Callable[[SessionState], None],
    *,
    create: Callable[[], SessionState],
) -> SessionState:
    """:func:`update` on an :class:`ImmediateReads` store (no await: nothing interleaves)."""
    current = store.get_now(session_id)
    if current is None:
        state = create()
        mutate(state)
        return store.put_now(state, expected_version=None)
    mutate(current)
    return store.put_now(current, expected_version=current.version)


async def update(
    store: SessionStore,
    session_id: str,
    mutate: Callable[[SessionState], None],
    *,
    create: Callable[[], SessionState] | None = None,
    attempts: int = 5,
) -> SessionState | None:
    """Read-modify-write with CAS retries; the stored state.

    ``None`` if the session is missing and ``create`` is not given. ``mutate``
    may run more than once (once per attempt, on a fresh copy each time).
    Raises the last :class:`VersionConflict` when every attempt conflicted.
    """
    conflict: VersionConflict | None = None
    for _ in range(max(1, attempts)):
        state = await store.get(session_id)
        expected: int | None
        if state is None:
            if create is None:
                return None
            state = create()
            if state.id != session_id:
                raise ValueError(f"create() made session {state.id!r}, not {session_id!r}")
            expected = None
        else:
            expected = state.version
        mutate(state)
        try:
            return await store.put(state, expected_version=expected)
        except VersionConflict as exc:
            conflict = exc
    assert conflict is not None
    raise conflict


class _Entry:
    """One stored session: its CAS version, update time, expiry and encoded state."""

    __slots__ = ("data", "expires", "updated", "version")

    def __init__(self, version: int, updated: float, expires: float, data: bytes) -> None:
        self.version = version
        self.updated = updated
        self.expires = expires
        self.data = data


class MemorySessionStore:
    """Sessions in a dict, stored encoded (so copies never alias), LRU-bounded.

    Both maps are kept in last-touch order; with one TTL for all, that is also
    expiry order, so expired entries are purged from the front in O(1) each.
    """

    def __init__(
        self,
        *,
        ttl_seconds: float = 3600.0,
        max_sessions: int = 10000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_seconds <= 0 or max_sessions <= 0:
            raise ValueError("ttl_seconds and max_sessions must be positive")
        self._ttl = ttl_seconds
        self._max = max_sessions
        self._max_aliases = 4 * max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, _Entry] = OrderedDict()
        self._aliases: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        """Stored sessions, expired ones not yet purged included."""
        return len(self._sessions)

    def _live(self, session_id: str, now: float) -> _Entry | None:
        entry = self._sessions.get(session_id)
        if entry is not None and entry.expires <= now:
            del self._sessions[session_id]
            return None
        return entry

    def _purge_sessions(self, now: float) -> None:
        sessions = self._sessions
        while sessions:
            oldest = next(iter(sessions.values()))
            if oldest.expires > now and len(sessions) <= self._max:
                return
            sessions.popitem(last=False)

    def _purge_aliases(self, now: float) -> None:
        aliases = self._aliases
        while aliases:
            _, expires = next(iter(aliases.values()))
            if expires > now and len(aliases) <= self._max_aliases:
                return
            aliases.popitem(last=False)

    async def get(self, session_id: str) -> SessionState | None:
        return self.get_now(session_id)

    def get_now(self, session_id: str) -> SessionState | None:
        """:class:`ImmediateReads`: the same as :meth:`get`, without an await."""
        now = self._clock()
        entry = self._live(session_id, now)
        if entry is None:
            return None
        entry.expires = now + self._ttl
        self._sessions.move_to_end(session_id)
        return decode_state(entry.data)

    async def put(self, state: SessionState, *, expected_version: int | None) -> SessionState:
        return self.put_now(state, expected_version=expected_version)

    def put_now(self, state: SessionState, *, expected_version: int | None) -> SessionState:
        """:class:`ImmediateReads`: the same as :meth:`put`, without an await."""
        now = self._clock()
        entry = self._live(state.id, now)
        if expected_version is None:
            if entry is not None:
                raise VersionConflict(f"session {state.id!r} already exists")
            version = state.version + 1
        else:
            if entry is None:
                raise VersionConflict(f"session {state.id!r} does not exist")
            if entry.version != expected_version:
                raise VersionConflict(
                    f"session {state.id!r} is at version {entry.version}, not {expected_version}"
                )
            version = expected_version + 1
        stored = copy_state(state, version=version, updated=now)
        data = encode_state(stored)
        if entry is None:
            self._sessions[state.id] = _Entry(version, now, now + self._ttl, data)
            self._purge_sessions(now)
        else:
            entry.version, entry.updated, entry.expires, entry.data = (
                version,
                now,
                now + self._ttl,
                data,
            )
            self._sessions.move_to_end(state.id)
        return stored

    async def delete(self, session_id: str) -> bool:
        if self._live(session_id, self._clock()) is None:
            return False
        del self._sessions[session_id]
        return True

    async def list(self, limit: int = 100) -> builtins.list[SessionState]:
        now = self._clock()
        live = (e for e in self._sessions.values() if e.expires > now)
        newest = heapq.nlargest(max(0, limit), live, key=lambda e: e.updated)
        return [decode_state(e.data) for e in newest]

    async def link(self, alias: str, session_id: str) -> None:
        self.link_now(alias, session_id)

    def link_now(self, alias: str, session_id: str) -> None:
        """:class:`ImmediateReads`: the same as :meth:`link`, without an await."""
        now = self._clock()
        self._aliases[alias] = (session_id, now + self._ttl)
        self._aliases.move_to_end(alias)
        self._purge_aliases(now)

    async def resolve(self, alias: str) -> str | None:
        return self.resolve_now(alias)

    def resolve_now(self, alias: str) -> str | None:
        """:class:`ImmediateReads`: the same as :meth:`resolve`, without an await."""
        now = self._clock()
        hit = self._aliases.get(alias)
        if hit is None:
            return None
        session_id, expires = hit
        if expires <= now:
            del self._aliases[alias]
            return None
        self._aliases[alias] = (session_id, now + self._ttl)
        self._aliases.move_to_end(alias)
        return session_id

    async def close(self) -> None:
        self._sessions.clear()
        self._aliases.clear()


_PROTOCOL_CHECK: type[SessionStore] = MemorySessionStore
