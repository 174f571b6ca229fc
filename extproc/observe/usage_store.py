"""Usage records and where they are kept: SQLite (one file) or PostgreSQL (shared).

One row per finished request in one table, ``usage_records``; the same schema in both
databases (``usage_schema_version`` holds its version). Both stores are safe to use from
several threads: writes (the recorder's writer thread) and reads (queries from worker
threads) use separate connections, each behind its own lock. Several processes (extproc
replicas) may write to the same database: inserts are plain appends.

Aggregates, including the p50/p95 of ``duration_ms`` and ``ttft_ms``, are computed by the
database in one statement: PostgreSQL's ``percentile_cont``; on SQLite, which has no
percentile function, the same definition (linear interpolation between the two nearest
ranks) is computed with window functions. Nothing is loaded row by row into Python.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeVar, runtime_checkable

import psycopg

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
TABLE: Final = "usage_records"
VERSION_TABLE: Final = "usage_schema_version"

#: ``stats`` may group by any of these (zero or more; none = totals).
GROUP_BY_FIELDS: Final[tuple[str, ...]] = (
    "client_key_id",
    "session_id",
    "backend_instance",
    "model",
    "frontend",
)

_STATUS_CLASS_RE = re.compile(r"^([1-5])xx$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One finished request, as accounted.

    ``input_tokens`` includes ``cached_input_tokens``; ``output_tokens`` includes
    ``reasoning_tokens`` (the canonical ``Usage`` convention).
    """

    request_id: str
    #: Wall-clock time of the request, epoch seconds (UTC).
    time: float
    #: A non-reversible identifier of the client's proxy key (never the key itself).
    client_key_id: str | None = None
    session_id: str | None = None
    #: The client's protocol (``openai-chat``, ``anthropic``, ...).
    frontend: str = ""
    backend_instance: str | None = None
    backend_schema: str | None = None
    #: What the client asked for.
    requested_model: str | None = None
    #: What the backend was asked for (or answered with).
    model: str | None = None
    status: int = 200
    streamed: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    #: Time to first token (streams), milliseconds.
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    #: Filled in by the recorder from the price table; None when no price is known.
    cost_usd: float | None = None
    error_code: str | None = None


#: Record fields in column order (the column for ``time`` is ``ts``).
RECORD_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in fields(UsageRecord))
_COLUMN_OF: Final[dict[str, str]] = {
    name: ("ts" if name == "time" else name) for name in RECORD_FIELDS
}
_COLUMNS: Final[tuple[str, ...]] = tuple(_COLUMN_OF[name] for name in RECORD_FIELDS)


@dataclass(frozen=True, slots=True)
class UsageFilters:
    """Which records a query looks at; every field set narrows the selection (AND)."""

    #: Epoch seconds, inclusive.
    since: float | None = None
    #: Epoch seconds, exclusive.
    until: float | None = None
    backend_instance: str | None = None
    #: Matches the requested model or the model the backend was asked for.
    model: str | None = None
    client_key_id: str | None = None
    frontend: str | None = None
    #: An exact status (``429``) or a class (``"4xx"``).
    status: int | str | None = None
    session_id: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.status, str) and not _STATUS_CLASS_RE.match(self.status):
            raise ValueError(f"status class must look like '4xx', not {self.status!r}")
        if isinstance(self.status, bool):
            raise ValueError("status must be an integer or a class like '4xx'")

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@runtime_checkable
class UsageQueries(Protocol):
    """What the HTTP endpoints need: a store, or a recorder in front of one."""

    def stats(
        self, filters: UsageFilters, group_by: Sequence[str] = (), *, limit: int | None = None
    ) -> list[dict[str, Any]]: ...

    def recent(self, filters: UsageFilters, limit: int = 50) -> list[dict[str, Any]]: ...


@runtime_checkable
class UsageStore(UsageQueries, Protocol):
    """Storage of usage records."""

    def add_many(self, records: Sequence[UsageRecord]) -> None:
        """Append the records in one transaction; raises when they could not be written."""
        ...

    def close(self) -> None: ...


class UsageStoreError(RuntimeError):
    """The store cannot be used (e.g. its schema is newer than this code)."""


# --------------------------------------------------------------------------- SQL


@dataclass(frozen=True, slots=True)
class _Dialect:
    name: Literal["sqlite", "postgresql"]
    #: Parameter placeholder.
    ph: str
    #: Column types, by column.
    ddl_columns: str
    ddl_id: str


_COMMON_COLUMNS = """
    request_id TEXT NOT NULL,
    ts {float} NOT NULL,
    client_key_id TEXT,
    session_id TEXT,
    frontend TEXT NOT NULL,
    backend_instance TEXT,
    backend_schema TEXT,
    requested_model TEXT,
    model TEXT,
    status INTEGER NOT NULL,
    streamed {bool} NOT NULL,
    input_tokens {int} NOT NULL,
    output_tokens {int} NOT NULL,
    cached_input_tokens {int} NOT NULL,
    reasoning_tokens {int} NOT NULL,
    ttft_ms {float},
    duration_ms {float} NOT NULL,
    cost_usd {float},
    error_code TEXT
"""

_SQLITE = _Dialect(
    name="sqlite",
    ph="?",
    ddl_id="id INTEGER PRIMARY KEY AUTOINCREMENT",
    ddl_columns=_COMMON_COLUMNS.format(float="REAL", bool="INTEGER", int="INTEGER"),
)
_POSTGRES = _Dialect(
    name="postgresql",
    ph="%s",
    ddl_id="id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ddl_columns=_COMMON_COLUMNS.format(float="DOUBLE PRECISION", bool="BOOLEAN", int="BIGINT"),
)

_INDEXED = (
    "ts",
    "client_key_id",
    "backend_instance",
    "model",
    "requested_model",
    "frontend",
    "status",
    "session_id",
)


def _schema_statements(d: _Dialect) -> list[str]:
    statements = [
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER PRIMARY KEY, "
        f"applied_at {'REAL' if d.name == 'sqlite' else 'DOUBLE PRECISION'} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {TABLE} ({d.ddl_id},{d.ddl_columns})",
    ]
    statements += [
        f"CREATE INDEX IF NOT EXISTS {TABLE}_{column}_idx ON {TABLE} ({column})"
        for column in _INDEXED
    ]
    return statements


def _insert_sql(d: _Dialect) -> str:
    placeholders = ", ".join([d.ph] * len(_COLUMNS))
    return f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES ({placeholders})"


def _row(record: UsageRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in RECORD_FIELDS)


def _where(filters: UsageFilters, ph: str) -> tuple[str, list[Any]]:
    """A WHERE clause (or "") and its parameters; column names come from this code only."""
    clauses: list[str] = []
    params: list[Any] = []
    if filters.since is not None:
        clauses.append(f"ts >= {ph}")
        params.append(float(filters.since))
    if filters.until is not None:
        clauses.append(f"ts < {ph}")
        params.append(float(filters.until))
    for column in ("backend_instance", "client_key_id", "frontend", "session_id"):
        value = getattr(filters, column)
        if value is not None:
            clauses.append(f"{column} = {ph}")
            params.append(value)
    if filters.model is not None:
        clauses.append(f"(model = {ph} OR requested_model = {ph})")
        params += [filters.model, filters.model]
    if isinstance(filters.status, int):
        clauses.append(f"status = {ph}")
        params.append(filters.status)
    elif isinstance(filters.status, str):
        match = _STATUS_CLASS_RE.match(filters.status)
        assert match is not None  # checked by UsageFilters
        low = int(match.group(1)) * 100
        clauses.append(f"status >= {ph} AND status < {ph}")
        params += [low, low + 100]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def check_group_by(group_by: Iterable[str]) -> tuple[str, ...]:
    """The validated, de-duplicated grouping fields (ValueError on an unknown one)."""
    result: list[str] = []
    for name in group_by:
        if name not in GROUP_BY_FIELDS:
            raise ValueError(f"cannot group by {name!r} (one of: {', '.join(GROUP_BY_FIELDS)})")
        if name not in result:
            result.append(name)
    return tuple(result)


_STAT_NAMES: Final = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_requests",
    "duration_ms_avg",
    "duration_ms_p50",
    "duration_ms_p95",
    "ttft_ms_avg",
    "ttft_ms_p50",
    "ttft_ms_p95",
    "first_time",
    "last_time",
)
_INT_STATS: Final = frozenset(
    {
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
        "unpriced_requests",
    }
)


def _common_aggregates() -> list[str]:
    return [
        "COUNT(*)",
        # A stream that failed after its 200 (error event, cut) is an error too.
        "SUM(CASE WHEN status >= 400 OR error_code IS NOT NULL THEN 1 ELSE 0 END)",
        "SUM(input_tokens)",
        "SUM(output_tokens)",
        "SUM(cached_input_tokens)",
        "SUM(reasoning_tokens)",
        "SUM(cost_usd)",
        "COUNT(*) - COUNT(cost_usd)",
    ]


def _stats_sql(d: _Dialect, group: Sequence[str], where: str, limit: bool) -> str:
    """One statement computing every aggregate of ``stats`` per group."""
    cols = ", ".join(group)
    tail = ""
    if group:
        order = ", ".join(f"{c} ASC NULLS FIRST" for c in group)
        tail = f" GROUP BY {cols} ORDER BY COUNT(*) DESC, {order}"
    if limit:
        tail += f" LIMIT {d.ph}"
    select_group = f"{cols}, " if group else ""
    aggregates = _common_aggregates()
    if d.name == "postgresql":
        for column in ("duration_ms", "ttft_ms"):
            aggregates += [
                f"AVG({column})",
                f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {column})",
                f"percentile_cont(0.95) WITHIN GROUP (ORDER BY {column})",
            ]
        aggregates += ["MIN(ts)", "MAX(ts)"]
        return f"SELECT {select_group}{', '.join(aggregates)} FROM {TABLE}{where}{tail}"

    # SQLite: rank each row within its group by duration and by ttft (NULLs last), then
    # interpolate between ranks floor(p*(n-1)) and floor(p*(n-1)) + 1 like percentile_cont.
    partition = f"PARTITION BY {cols} " if group else ""

    def pct(value: str, rank: str, count: str, p: float) -> str:
        h = f"({p} * ({count} - 1))"
        lo = f"CAST({h} AS INTEGER)"
        return (
            f"SUM(CASE WHEN {rank} = {lo} THEN {value} * (1 - ({h} - {lo})) "
            f"WHEN {rank} = {lo} + 1 THEN {value} * ({h} - {lo}) END)"
        )

    for column, rank, count in (("duration_ms", "d_i", "d_n"), ("ttft_ms", "t_i", "t_n")):
        aggregates += [
            f"AVG({column})",
            pct(column, rank, count, 0.5),
            pct(column, rank, count, 0.95),
        ]
    aggregates += ["MIN(ts)", "MAX(ts)"]
    ranked = (
        f"SELECT *, "
        f"ROW_NUMBER() OVER ({partition}ORDER BY duration_ms) - 1 AS d_i, "
        f"COUNT(duration_ms) OVER ({partition.strip()}) AS d_n, "
        f"ROW_NUMBER() OVER ({partition}ORDER BY ttft_ms NULLS LAST) - 1 AS t_i, "
        f"COUNT(ttft_ms) OVER ({partition.strip()}) AS t_n "
        f"FROM {TABLE}{where}"
    )
    return f"WITH f AS ({ranked}) SELECT {select_group}{', '.join(aggregates)} FROM f{tail}"


def _stats_rows(group: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for row in rows:
        item: dict[str, Any] = dict(zip(group, row[: len(group)], strict=True))
        for name, value in zip(_STAT_NAMES, row[len(group) :], strict=True):
            if name in _INT_STATS:
                item[name] = int(value or 0)
            elif name == "cost_usd":
                item[name] = float(value or 0.0)
            else:
                item[name] = None if value is None else float(value)
        result.append(item)
    return result


def _recent_sql(d: _Dialect, where: str) -> str:
    return (
        f"SELECT {', '.join(_COLUMNS)} FROM {TABLE}{where} ORDER BY ts DESC, id DESC LIMIT {d.ph}"
    )


def _recent_rows(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    result = []
    for row in rows:
        item = dict(zip(RECORD_FIELDS, row, strict=True))
        item["streamed"] = bool(item["streamed"])
        result.append(item)
    return result


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")


def _check_version(found: int | None) -> None:
    if found is not None and found > SCHEMA_VERSION:
        raise UsageStoreError(
            f"the usage database has schema version {found}, newer than this proxy's "
            f"({SCHEMA_VERSION}); upgrade the proxy or use another database"
        )


# --------------------------------------------------------------------------- SQLite


class SQLiteUsageStore:
    """Usage records in one SQLite file (WAL mode), created with its schema if missing."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        if str(path) == ":memory:":
            raise ValueError("the SQLite usage store needs a file (readers and writer share it)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout = busy_timeout
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False
        self._writer = self._connect()
        try:
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._writer.execute("PRAGMA synchronous=NORMAL")
            self._create_schema()
            self._reader = self._connect()
        except BaseException:
            self._writer.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode; transactions are explicit. check_same_thread=False: each
        # connection is used under its own lock, from whichever thread holds it.
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        return conn

    def _create_schema(self) -> None:
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _schema_statements(_SQLITE):
                    conn.execute(statement)
                (found,) = conn.execute(f"SELECT MAX(version) FROM {VERSION_TABLE}").fetchone()
                _check_version(found)
                if found is None:
                    conn.execute(
                        f"INSERT INTO {VERSION_TABLE} (version, applied_at) VALUES (?, ?)",
                        (SCHEMA_VERSION, time.time()),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def add_many(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        rows = [_row(r) for r in records]
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_insert_sql(_SQLITE), rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._read_lock:
            return self._reader.execute(sql, params).fetchall()

    def stats(
        self, filters: UsageFilters, group_by: Sequence[str] = (), *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        group = check_group_by(group_by)
        _check_limit(limit)
        where, params = _where(filters, _SQLITE.ph)
        use_limit = limit is not None and bool(group)
        sql = _stats_sql(_SQLITE, group, where, use_limit)
        rows = self._query(sql, [*params, limit] if use_limit else params)
        return _stats_rows(group, rows)

    def recent(self, filters: UsageFilters, limit: int = 50) -> list[dict[str, Any]]:
        _check_limit(limit)
        where, params = _where(filters, _SQLITE.ph)
        return _recent_rows(self._query(_recent_sql(_SQLITE, where), [*params, limit]))

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            self._reader.close()
            self._writer.close()


# --------------------------------------------------------------------------- PostgreSQL

#: Serialises schema creation between replicas starting at once (pg_advisory_xact_lock).
_SCHEMA_LOCK_KEY: Final = 0x75736167  # "usag"

_T = TypeVar("_T")


class PostgresUsageStore:
    """Usage records in PostgreSQL (psycopg 3), shared by any number of extproc replicas.

    Two connections (autocommit; explicit transactions per batch): one for writes, one for
    queries, each behind a lock. A connection that failed is discarded and reopened on the
    next call; a failed write raises (the recorder retries the batch), a query whose
    connection broke is retried once on a fresh connection.

    The schema is created (if missing) on the first connection. When the database cannot
    be reached at construction, the store still opens (the proxy starts; the recorder
    retries) and creates the schema once it can connect; a schema newer than this code
    always raises :class:`UsageStoreError`.
    """

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self._connect_timeout = connect_timeout
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._writer: psycopg.Connection[tuple[Any, ...]] | None = None
        self._reader: psycopg.Connection[tuple[Any, ...]] | None = None
        self._closed = False
        self._schema_ready = False
        try:
            self._ensure_schema()
        except psycopg.OperationalError as exc:
            log.warning("usage database unreachable for now (will retry): %s", exc)
        except BaseException:
            self.close()
            raise

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            with self._write_lock:
                self._with_writer(lambda conn: None)

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=max(1, round(self._connect_timeout)),
            application_name="llm-proxy-usage",
        )

    @staticmethod
    def _create_schema(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            for statement in _schema_statements(_POSTGRES):
                conn.execute(statement)
            row = conn.execute(f"SELECT MAX(version) FROM {VERSION_TABLE}").fetchone()
            found = None if row is None else row[0]
            _check_version(found)
            if found is None:
                conn.execute(
                    f"INSERT INTO {VERSION_TABLE} (version, applied_at) VALUES (%s, %s)",
                    (SCHEMA_VERSION, time.time()),
                )

    def _with_writer(self, action: Callable[[psycopg.Connection[tuple[Any, ...]]], _T]) -> _T:
        """Run ``action`` on the write connection (lock held by the caller)."""
        if self._closed:
            raise UsageStoreError("the usage store is closed")
        if self._writer is None or self._writer.closed or self._writer.broken:
            self._discard("_writer")
            self._writer = self._connect()
        try:
            if not self._schema_ready:
                self._create_schema(self._writer)
                self._schema_ready = True
            return action(self._writer)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            self._discard("_writer")
            raise

    def _discard(self, attribute: Literal["_writer", "_reader"]) -> None:
        conn = getattr(self, attribute)
        setattr(self, attribute, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # pragma: no cover - closing a broken connection
                log.debug("closing a broken usage database connection failed", exc_info=True)

    def add_many(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        rows = [_row(r) for r in records]
        sql = _insert_sql(_POSTGRES)

        def insert(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(sql, rows)

        with self._write_lock:
            self._with_writer(insert)

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        self._ensure_schema()  # before the read lock: close() takes write, then read
        with self._read_lock:
            for attempt in (1, 2):
                if self._closed:
                    raise UsageStoreError("the usage store is closed")
                fresh = self._reader is None or self._reader.closed or self._reader.broken
                if fresh:
                    self._discard("_reader")
                    self._reader = self._connect()
                assert self._reader is not None
                try:
                    return self._reader.execute(sql, params).fetchall()
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    self._discard("_reader")
                    # A connection that had been idle may have died with the server or a
                    # proxy in between: try once more on a fresh one.
                    if fresh or attempt == 2:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stats(
        self, filters: UsageFilters, group_by: Sequence[str] = (), *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        group = check_group_by(group_by)
        _check_limit(limit)
        where, params = _where(filters, _POSTGRES.ph)
        use_limit = limit is not None and bool(group)
        sql = _stats_sql(_POSTGRES, group, where, use_limit)
        rows = self._query(sql, [*params, limit] if use_limit else params)
        return _stats_rows(group, rows)

    def recent(self, filters: UsageFilters, limit: int = 50) -> list[dict[str, Any]]:
        _check_limit(limit)
        where, params = _where(filters, _POSTGRES.ph)
        return _recent_rows(self._query(_recent_sql(_POSTGRES, where), [*params, limit]))

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._closed = True
            self._discard("_writer")
            self._discard("_reader")


# --------------------------------------------------------------------------- factory


def open_store(url: str) -> SQLiteUsageStore | PostgresUsageStore:
    """A store from ``sqlite:///relative/path``, ``sqlite:////absolute/path`` or
    ``postgresql://user:pass@host:port/db`` (also ``postgres://``)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresUsageStore(url)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            raise ValueError(f"the SQLite usage URL needs a file path: {url!r}")
        return SQLiteUsageStore(path)
    raise ValueError("usage database must be a sqlite:///path or postgresql:// URL")


def parse_status(value: int | str) -> int | str:
    """``429`` or ``"429"`` -> 429; ``"4xx"`` -> ``"4xx"``; ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        status = value
    elif isinstance(value, str) and _STATUS_CLASS_RE.match(value.strip()):
        return value.strip().lower()
    elif isinstance(value, str) and value.strip().isdigit():
        status = int(value.strip())
    else:
        raise ValueError(f"status must be an HTTP status or a class like '4xx', not {value!r}")
    if not 100 <= status <= 599:
        raise ValueError(f"status must be between 100 and 599, not {status}")
    return status


__all__ = [
    "GROUP_BY_FIELDS",
    "RECORD_FIELDS",
    "SCHEMA_VERSION",
    "PostgresUsageStore",
    "SQLiteUsageStore",
    "UsageFilters",
    "UsageQueries",
    "UsageRecord",
    "UsageStore",
    "UsageStoreError",
    "check_group_by",
    "open_store",
    "parse_status",
]
