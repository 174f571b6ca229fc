"""A persistent session store over stdlib sqlite3 (one connection, one worker thread)."""

from __future__ import annotations

import asyncio
import builtins
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from extproc.sessions.state import (
    SessionState,
    SessionStoreError,
    VersionConflict,
    copy_state,
    decode_state,
    encode_state,
)
from extproc.sessions.store import SessionStore

__all__ = ["SQLiteSessionStore"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, owner TEXT, version INTEGER, updated REAL, expires REAL, data BLOB
);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions(expires);
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, session_id TEXT, expires REAL);
CREATE INDEX IF NOT EXISTS aliases_expires ON aliases(expires);
"""


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


class SQLiteSessionStore:
    """Sessions in an SQLite file (or ``":memory:"``) that survive a restart.

    All SQL runs on one dedicated thread that owns the connection; a write is
    one ``BEGIN IMMEDIATE`` transaction. Sessions are bounded by evicting the
    least recently used (smallest ``expires``: the TTL slides on every touch);
    expired rows are purged every ``purge_every`` writes and on open.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ttl_seconds: float = 3600.0,
        max_sessions: int = 10000,
        clock: Callable[[], float] = time.time,
        purge_every: int = 500,
    ) -> None:
        if ttl_seconds <= 0 or max_sessions <= 0 or purge_every <= 0:
            raise ValueError("ttl_seconds, max_sessions and purge_every must be positive")
        self._ttl = ttl_seconds
        self._max = max_sessions
        self._max_aliases = 4 * max_sessions
        self._clock = clock
        self._purge_every = purge_every
        self._writes = 0
        self._sessions = 0  # row counts, kept by the worker, resynced on every purge
        self._aliases = 0
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session-sqlite")
        try:
            self._conn = self._executor.submit(_connect, os.fspath(path)).result()
            self._executor.submit(self._maintain, clock()).result()
        except BaseException as exc:
            self._executor.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error):
                raise SessionStoreError(f"cannot open session store {path!s}: {exc}") from exc
            raise

    async def _call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._closed:
            raise SessionStoreError("session store is closed")
        loop = asyncio.get_running_loop()
        try:
            call = functools.partial(fn, *args, **kwargs)
            return await loop.run_in_executor(self._executor, call)
        except sqlite3.Error as exc:
            raise SessionStoreError(f"session store failed: {exc}") from exc

    # -- worker-thread side ------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _evict(self, conn: sqlite3.Connection, table: str, key: str, excess: int) -> int:
        if excess <= 0:
            return 0
        cur = conn.execute(
            f"DELETE FROM {table} WHERE {key} IN "
            f"(SELECT {key} FROM {table} ORDER BY expires LIMIT ?)",
            (excess,),
        )
        return cur.rowcount

    def _maintain(self, now: float) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            conn.execute("DELETE FROM aliases WHERE expires <= ?", (now,))
            sessions = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
            aliases = conn.execute("SELECT COUNT(*) FROM aliases").fetchone()[0]
            sessions -= self._evict(conn, "sessions", "id", sessions - self._max)
            aliases -= self._evict(conn, "aliases", "alias", aliases - self._max_aliases)
        self._sessions, self._aliases = sessions, aliases

    def _wrote(self, now: float) -> None:
        self._writes += 1
        if self._writes >= self._purge_every:
            self._writes = 0
            self._maintain(now)

    def _get(self, session_id: str, now: float) -> bytes | None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT data FROM sessions WHERE id = ? AND expires > ?", (session_id, now)
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE sessions SET expires = ? WHERE id = ?", (now + self._ttl, session_id)
            )
        data: bytes = row[0]
        return data

    def _put(self, state: SessionState, expected: int | None, now: float, data: bytes) -> None:
        args = (state.owner, state.version, now, now + self._ttl, data, state.id)
        added = 0
        with self._transaction() as conn:
            if expected is None:
                purged = conn.execute(
                    "DELETE FROM sessions WHERE id = ? AND expires <= ?", (state.id, now)
                ).rowcount
                cur = conn.execute(
                    "INSERT OR IGNORE INTO sessions (owner, version, updated, expires, data, id)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    args,
                )
                if cur.rowcount == 0:
                    raise VersionConflict(f"session {state.id!r} already exists")
                added = 1 - purged
                added -= self._evict(conn, "sessions", "id", self._sessions + added - self._max)
            else:
                cur = conn.execute(
                    "UPDATE sessions SET owner = ?, version = ?, updated = ?, expires = ?,"
                    " data = ? WHERE id = ? AND version = ? AND expires > ?",
                    (*args, expected, now),
                )
                if cur.rowcount == 0:
                    raise VersionConflict(
                        f"session {state.id!r} is missing or not at version {expected}"
                    )
        self._sessions += added
        self._wrote(now)

    def _delete(self, session_id: str, now: float) -> bool:
        with self._transaction() as conn:
            live = conn.execute(
                "DELETE FROM sessions WHERE id = ? AND expires > ?", (session_id, now)
            ).rowcount
            expired = conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount
        self._sessions -= live + expired
        self._wrote(now)
        return live > 0

    def _list(self, limit: int, now: float) -> builtins.list[SessionState]:
        rows = self._conn.execute(
            "SELECT data FROM sessions WHERE expires > ? ORDER BY updated DESC LIMIT ?",
            (now, max(0, limit)),
        ).fetchall()
        return [decode_state(row[0]) for row in rows]

    def _link(self, alias: str, session_id: str, now: float) -> None:
        expires = now + self._ttl
        added = 0
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE aliases SET session_id = ?, expires = ? WHERE alias = ?",
                (session_id, expires, alias),
            )
            if cur.rowcount == 0:
                conn.execute(
                    "INSERT INTO aliases (alias, session_id, expires) VALUES (?, ?, ?)",
                    (alias, session_id, expires),
                )
                added = 1 - self._evict(
                    conn, "aliases", "alias", self._aliases + 1 - self._max_aliases
                )
        self._aliases += added
        self._wrote(now)

    def _resolve(self, alias: str, now: float) -> str | None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT session_id FROM aliases WHERE alias = ? AND expires > ?", (alias, now)
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE aliases SET expires = ? WHERE alias = ?", (now + self._ttl, alias))
        session_id: str = row[0]
        return session_id

    # -- the SessionStore protocol -----------------------------------------------------

    async def get(self, session_id: str) -> SessionState | None:
        data = await self._call(self._get, session_id, self._clock())
        return None if data is None else decode_state(data)

    async def put(self, state: SessionState, *, expected_version: int | None) -> SessionState:
        now = self._clock()
        version = state.version + 1 if expected_version is None else expected_version + 1
        stored = copy_state(state, version=version, updated=now)
        await self._call(self._put, stored, expected_version, now, encode_state(stored))
        return stored

    async def delete(self, session_id: str) -> bool:
        return await self._call(self._delete, session_id, self._clock())

    async def list(self, limit: int = 100) -> builtins.list[SessionState]:
        return await self._call(self._list, limit, self._clock())

    async def link(self, alias: str, session_id: str) -> None:
        await self._call(self._link, alias, session_id, self._clock())

    async def resolve(self, alias: str) -> str | None:
        return await self._call(self._resolve, alias, self._clock())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=True)


_PROTOCOL_CHECK: type[SessionStore] = SQLiteSessionStore
