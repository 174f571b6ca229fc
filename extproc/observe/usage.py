"""Usage and cost accounting: one record per finished request, written off the request path.

- :class:`PriceTable` prices a record from ``usage.prices`` (USD per million tokens).
- :class:`UsageRecorder` takes records with :meth:`UsageRecorder.submit` (never blocks: a
  bounded queue, drops counted when full) and writes them in batches from a daemon thread
  into a :class:`~extproc.observe.usage_store.UsageStore` (SQLite or PostgreSQL), retrying
  with backoff while the store fails.
- :func:`handle_usage_query` answers ``GET /v1/usage/stats`` and ``GET /v1/usage/recent``.
  It blocks on the database: call it from a worker thread.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from extproc.config.model import PriceConfig, UsageConfig
from extproc.observe.usage_store import (
    GROUP_BY_FIELDS,
    SCHEMA_VERSION,
    PostgresUsageStore,
    SQLiteUsageStore,
    UsageFilters,
    UsageQueries,
    UsageRecord,
    UsageStore,
    UsageStoreError,
    check_group_by,
    open_store,
    parse_status,
)

log = logging.getLogger(__name__)

__all__ = [
    "GROUP_BY_FIELDS",
    "SCHEMA_VERSION",
    "PostgresUsageStore",
    "PriceTable",
    "SQLiteUsageStore",
    "TokenCounts",
    "UsageFilters",
    "UsageQueries",
    "UsageRecord",
    "UsageRecorder",
    "UsageStore",
    "UsageStoreError",
    "handle_usage_query",
    "open_store",
    "parse_time",
]

_PER_MILLION: Final = 1_000_000.0


# --------------------------------------------------------------------------- prices


class TokenCounts(Protocol):
    """What a price applies to: the canonical ``Usage`` and ``UsageRecord`` both have it."""

    @property
    def input_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...

    @property
    def cached_input_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class _Pattern:
    prefix: str
    #: Written as ``instance:model*``: also tried against ``instance:model``.
    qualified: bool
    price: PriceConfig


class PriceTable:
    """Prices by model, most specific match first.

    For a record with backend instance ``I`` and model ``M`` (the model the backend was
    asked for, else the requested one): the key ``"I:M"``, then ``"M"``, then the longest
    matching prefix pattern (``"gpt-4o*"``, ``"openai.1:gpt-4o*"``, ``"*"``; a pattern with
    a ``:`` is matched against ``"I:M"`` as well as ``M``; on equal lengths an
    instance-qualified pattern wins). No match: the cost is unknown (None).
    """

    def __init__(self, prices: Mapping[str, PriceConfig] | None = None) -> None:
        self._exact: dict[str, PriceConfig] = {}
        patterns: list[_Pattern] = []
        for key, price in (prices or {}).items():
            if key.endswith("*"):
                prefix = key[:-1]
                patterns.append(_Pattern(prefix, ":" in prefix, price))
            else:
                self._exact[key] = price
        # Longest first; instance-qualified first among equals.
        patterns.sort(key=lambda p: (-len(p.prefix), not p.qualified))
        self._patterns = tuple(patterns)
        self._cache: dict[tuple[str | None, str], PriceConfig | None] = {}

    def __bool__(self) -> bool:
        return bool(self._exact or self._patterns)

    def lookup(self, instance: str | None, model: str | None) -> PriceConfig | None:
        """The price that applies to ``model`` served by ``instance``, if any."""
        if not model:
            return None
        cache_key = (instance, model)
        try:
            return self._cache[cache_key]
        except KeyError:
            pass
        price = self._find(instance, model)
        if len(self._cache) >= 4096:  # model names can come from clients: stay bounded
            self._cache.clear()
        self._cache[cache_key] = price
        return price

    def _find(self, instance: str | None, model: str) -> PriceConfig | None:
        qualified = f"{instance}:{model}" if instance else None
        if qualified is not None and qualified in self._exact:
            return self._exact[qualified]
        if model in self._exact:
            return self._exact[model]
        for pattern in self._patterns:
            if model.startswith(pattern.prefix) or (
                pattern.qualified and qualified is not None and qualified.startswith(pattern.prefix)
            ):
                return pattern.price
        return None

    def cost(self, record: UsageRecord) -> float | None:
        """USD for the record's tokens, or None when no price is known for its model.

        ``(input - cached) * input + cached * cached_input (default: input) + output *
        output``, per million tokens.
        """
        return self.cost_of(record.backend_instance, record.model or record.requested_model, record)

    def cost_of(self, instance: str | None, model: str | None, tokens: TokenCounts) -> float | None:
        """USD for ``tokens`` (a canonical ``Usage`` or a record) of ``model`` on
        ``instance``; None when no price is known."""
        price = self.lookup(instance, model)
        if price is None:
            return None
        input_tokens = max(tokens.input_tokens, 0)
        cached = min(max(tokens.cached_input_tokens, 0), input_tokens)
        cached_price = price.input if price.cached_input is None else price.cached_input
        return (
            (input_tokens - cached) * price.input
            + cached * cached_price
            + max(tokens.output_tokens, 0) * price.output
        ) / _PER_MILLION


# --------------------------------------------------------------------------- recorder

_TEXT_FIELDS: Final = (
    "request_id",
    "client_key_id",
    "session_id",
    "frontend",
    "backend_instance",
    "backend_schema",
    "requested_model",
    "model",
    "error_code",
)
_TOKEN_FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
)
_MAX_TEXT: Final = 512
_MAX_TOKENS: Final = 2**53


def _sanitize(record: UsageRecord) -> UsageRecord:
    """Bound what a client or provider controls, so one odd record cannot block the queue
    (PostgreSQL rejects NUL characters; absurd token counts overflow BIGINT)."""
    changes: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        value = getattr(record, name)
        if value is not None and (len(value) > _MAX_TEXT or "\x00" in value):
            changes[name] = value[:_MAX_TEXT].replace("\x00", "\ufffd")
    for name in _TOKEN_FIELDS:
        value = getattr(record, name)
        if not 0 <= value <= _MAX_TOKENS:
            changes[name] = min(max(int(value), 0), _MAX_TOKENS)
    return replace(record, **changes) if changes else record


class UsageRecorder:
    """Non-blocking front of a usage store; owns the store (``close`` closes it).

    ``submit`` appends to a bounded queue and never waits: when the queue is full the
    record is dropped, counted in ``dropped``, and a warning is logged at most every
    ``warn_interval`` seconds. A daemon thread takes up to ``batch_size`` records (waiting
    at most ``batch_interval`` seconds after the first for more), prices those without a
    cost, and writes them with ``store.add_many``. When that fails, the same batch is
    retried with exponential backoff (``retry_initial`` doubling up to ``retry_max``) and
    nothing more is taken from the queue meanwhile: memory stays within ``queue_size`` +
    ``batch_size`` records, and new records are dropped while the queue is full.

    ``stats`` and ``recent`` query the store synchronously (call them from a worker
    thread); the stores use a separate connection for queries.
    """

    def __init__(
        self,
        store: UsageStore,
        prices: PriceTable | Mapping[str, PriceConfig] | None = None,
        queue_size: int = 10_000,
        *,
        batch_size: int = 200,
        batch_interval: float = 0.2,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        warn_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be >= 1")
        self.store = store
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.warn_interval = warn_interval
        self._clock = clock

        self._queue: collections.deque[UsageRecord] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._inflight = 0
        self._flushers = 0
        self._closed = False  # no more submits
        self._stopping = False  # writer: drain and exit
        self._abandon = False  # writer: stop retrying, drop what is left
        self._dropped = 0
        self._dropped_warned = 0
        self._last_warning: float | None = None
        self._written = 0
        self._lost = 0
        self._write_failures = 0
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: UsageConfig) -> UsageRecorder:
        """Open ``config.database`` and start a recorder with ``config.prices``."""
        return cls(open_store(config.database), config.prices, config.queue_size)

    # -- counters ------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Records waiting in the queue (not counting a batch being written)."""
        return len(self._queue)

    @property
    def dropped(self) -> int:
        """Records refused by ``submit`` because the queue was full."""
        return self._dropped

    @property
    def written(self) -> int:
        """Records the store accepted."""
        return self._written

    @property
    def lost(self) -> int:
        """Records given up at ``close`` because the store kept failing."""
        return self._lost

    @property
    def write_failures(self) -> int:
        """Failed ``add_many`` attempts (each retried)."""
        return self._write_failures

    # -- producer side ---------------------------------------------------------------

    def submit(self, record: UsageRecord) -> bool:
        """Queue a record for writing; False (and counted in ``dropped`` when the queue
        is full) if it was not accepted. Never blocks on I/O."""
        warning: tuple[int, int] | None = None
        with self._cond:
            if self._closed:
                return False
            depth = len(self._queue)
            if depth >= self.queue_size:
                self._dropped += 1
                now = self._clock()
                if self._last_warning is None or now - self._last_warning >= self.warn_interval:
                    self._last_warning = now
                    warning = (self._dropped - self._dropped_warned, self._dropped)
                    self._dropped_warned = self._dropped
            else:
                self._queue.append(record)
                # Wake the writer when it may be idle, or when its batch is full.
                if depth == 0 or depth + 1 == self.batch_size:
                    self._cond.notify_all()
                return True
        if warning is not None:
            log.warning(
                "usage queue full (%d records): dropped %d usage records (%d in total)",
                self.queue_size,
                warning[0],
                warning[1],
            )
        return False

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every accepted record has been written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushers += 1
            self._cond.notify_all()
            try:
                while self._queue or self._inflight:
                    if not self._thread.is_alive():
                        return False
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flushers -= 1

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting records, write what is queued (for up to ``timeout`` seconds,
        then give up on what is left), stop the writer and close the store."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                self._abandon = True
                self._cond.notify_all()
            self._thread.join(1.0)
        if self._thread.is_alive():
            log.error("usage writer still busy in the store after close; not closing the store")
            return
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
            self._lost += left
        if self._lost:
            log.error("usage store unavailable: %d usage records were not written", self._lost)
        self.store.close()

    # -- queries -----------------------------------------------------------------------

    def stats(
        self, filters: UsageFilters, group_by: Sequence[str] = (), *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        return self.store.stats(filters, group_by, limit=limit)

    def recent(self, filters: UsageFilters, limit: int = 50) -> list[dict[str, Any]]:
        return self.store.recent(filters, limit)

    # -- writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return  # stopping and drained
                deadline = time.monotonic() + self.batch_interval
                while (
                    len(self._queue) < self.batch_size and not self._stopping and not self._flushers
                ):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                count = min(self.batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(count)]
                self._inflight = count
            try:
                written = self._write(self._prepare(batch))
            except Exception:  # pragma: no cover - a bug; keep the writer alive
                log.exception("usage writer: %d records lost", count)
                written = False
            with self._cond:
                self._inflight = 0
                if written:
                    self._written += count
                else:
                    self._lost += count
                self._cond.notify_all()

    def _prepare(self, batch: list[UsageRecord]) -> list[UsageRecord]:
        prepared = []
        for record in batch:
            try:
                record = _sanitize(record)
                if record.cost_usd is None and self.prices:
                    cost = self.prices.cost(record)
                    if cost is not None:
                        record = replace(record, cost_usd=cost)
            except Exception:  # never lose a record to pricing
                log.exception("usage: could not price record %r", record.request_id)
            prepared.append(record)
        return prepared

    def _write(self, batch: list[UsageRecord]) -> bool:
        """Write the batch, retrying with backoff; False only when abandoned at close."""
        delay = self.retry_initial
        attempt = 0
        while True:
            try:
                self.store.add_many(batch)
            except Exception as exc:
                attempt += 1
                with self._cond:
                    self._write_failures += 1
                    abandon = self._abandon
                if abandon:
                    return False
                log.warning(
                    "usage store write failed (attempt %d; %d records held, %d queued); "
                    "retrying in %.1fs: %s: %s",
                    attempt,
                    len(batch),
                    len(self._queue),
                    delay,
                    type(exc).__name__,
                    exc,
                )
                with self._cond:
                    if self._cond.wait_for(lambda: self._abandon, timeout=delay):
                        return False
                delay = min(delay * 2, self.retry_max)
            else:
                if attempt:
                    log.info("usage store write succeeded after %d failed attempts", attempt)
                return True


# --------------------------------------------------------------------------- HTTP queries

_RELATIVE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$", re.IGNORECASE)
_UNIT_SECONDS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
#: Epoch seconds beyond this are more likely milliseconds (year 5138).
_MAX_EPOCH: Final = 1e11

#: HTTP parameter -> UsageFilters field (aliases: the field names themselves).
_FILTER_PARAMS: Final = {
    "since": "since",
    "until": "until",
    "backend": "backend_instance",
    "model": "model",
    "client_key": "client_key_id",
    "frontend": "frontend",
    "status": "status",
    "session": "session_id",
}
_ALIASES: Final = {
    "backend_instance": "backend",
    "client_key_id": "client_key",
    "session_id": "session",
}
#: group_by names accepted in URLs -> store names.
_GROUP_PARAMS: Final = {
    "client_key": "client_key_id",
    "session": "session_id",
    "backend": "backend_instance",
    **{name: name for name in GROUP_BY_FIELDS},
}
_RECENT_LIMIT: Final = (50, 1000)  # default, maximum
_STATS_LIMIT: Final = (1000, 10_000)


class _BadParam(ValueError):
    def __init__(self, param: str, message: str, code: str = "invalid_parameter") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def parse_time(value: str, now: float | None = None) -> float:
    """Epoch seconds from ``1718000000``, ISO-8601 (``2024-06-10T12:00:00Z``; no zone:
    UTC), ``now``, or a time ago: ``30s``, ``15m``, ``2h``, ``7d``, ``1w``."""
    text = value.strip()
    current = time.time() if now is None else now
    if text.lower() == "now":
        return current
    if match := _RELATIVE_RE.match(text):
        return current - float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"not a valid time: {value!r}")
        if number > _MAX_EPOCH:
            raise ValueError(f"{value!r} looks like milliseconds: use epoch seconds")
        return number
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a time: {value!r} (use epoch seconds, ISO-8601, or a duration ago "
            "like '15m', '2h', '7d')"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _error(message: str, *, err_type: str, param: str | None, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def _parse_limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    text = raw.strip()
    if not text.isdigit():
        raise _BadParam("limit", f"limit must be an integer between 1 and {maximum}")
    limit = int(text)
    if not 1 <= limit <= maximum:
        raise _BadParam("limit", f"limit must be between 1 and {maximum}")
    return limit


def _parse_query(
    kind: str, query: Mapping[str, str], now: float | None
) -> tuple[UsageFilters, dict[str, Any], tuple[str, ...], int]:
    allowed = {*_FILTER_PARAMS, *_ALIASES, "limit"} | ({"group_by"} if kind == "stats" else set())
    values: dict[str, str] = {}
    for raw_name, raw_value in query.items():
        if raw_name not in allowed:
            raise _BadParam(
                raw_name,
                f"unknown parameter {raw_name!r} (known: {', '.join(sorted(allowed))})",
                "unknown_parameter",
            )
        name = _ALIASES.get(raw_name, raw_name)
        if name in values:
            raise _BadParam(raw_name, f"parameter {name!r} given twice", "duplicate_parameter")
        if not isinstance(raw_value, str):
            raise _BadParam(raw_name, f"parameter {raw_name!r} must be a single string")
        if raw_value.strip():  # an empty field means "not set" (HTML forms)
            values[name] = raw_value.strip()

    current = time.time() if now is None else now
    fields: dict[str, Any] = {}
    for param in ("since", "until"):
        if param in values:
            try:
                fields[param] = parse_time(values[param], current)
            except ValueError as exc:
                raise _BadParam(param, str(exc)) from None
    if "since" in fields and "until" in fields and fields["since"] > fields["until"]:
        raise _BadParam("since", "since must not be after until")
    if "status" in values:
        try:
            fields["status"] = parse_status(values["status"])
        except ValueError as exc:
            raise _BadParam("status", str(exc)) from None
    for param in ("backend", "model", "client_key", "frontend", "session"):
        if param in values:
            fields[_FILTER_PARAMS[param]] = values[param]
    filters = UsageFilters(**fields)

    group: tuple[str, ...] = ()
    if "group_by" in values:
        names = [n.strip() for n in values["group_by"].split(",") if n.strip()]
        unknown = [n for n in names if n not in _GROUP_PARAMS]
        if unknown:
            known = "model, backend, client_key, frontend, session"
            raise _BadParam("group_by", f"cannot group by {unknown[0]!r} (one of: {known})")
        group = check_group_by(_GROUP_PARAMS[n] for n in names)
    default, maximum = _STATS_LIMIT if kind == "stats" else _RECENT_LIMIT
    limit = _parse_limit(values.get("limit"), default, maximum)
    echo = {param: getattr(filters, field) for param, field in _FILTER_PARAMS.items()}
    return filters, echo, group, limit


def handle_usage_query(
    target: UsageQueries,
    path: str,
    query: Mapping[str, str],
    *,
    now: float | None = None,
) -> tuple[int, dict[str, Any]]:
    """Answer ``GET /v1/usage/stats`` or ``GET /v1/usage/recent``: (status, JSON body).

    Parameters: ``since``/``until`` (epoch seconds, ISO-8601, or ``15m``/``2h``/``7d``
    ago; since inclusive, until exclusive), ``backend``, ``model`` (requested or actual),
    ``client_key`` (the key id), ``frontend``, ``status`` (``429`` or ``4xx``),
    ``session``, ``limit``; for stats also ``group_by`` (comma-separated: ``model``,
    ``backend``, ``client_key``, ``frontend``, ``session``). Blocks on the database.
    """
    route = path.split("?", 1)[0].rstrip("/")
    if route.endswith("/v1/usage/stats"):
        kind = "stats"
    elif route.endswith("/v1/usage/recent"):
        kind = "recent"
    else:
        return 404, _error(
            f"no usage endpoint at {route or '/'!r} (use /v1/usage/stats or /v1/usage/recent)",
            err_type="invalid_request_error",
            param=None,
            code="not_found",
        )
    try:
        filters, echo, group, limit = _parse_query(kind, query, now)
    except _BadParam as exc:
        return 400, _error(
            str(exc), err_type="invalid_request_error", param=exc.param, code=exc.code
        )
    try:
        if kind == "stats":
            data = target.stats(filters, group, limit=limit if group else None)
            return 200, {
                "object": "usage.stats",
                "filters": echo,
                "group_by": list(group),
                "data": data,
            }
        rows = target.recent(filters, limit)
        return 200, {"object": "usage.recent", "filters": echo, "limit": limit, "data": rows}
    except Exception:
        log.exception("usage query failed")
        return 503, _error(
            "the usage database is unavailable; try again later",
            err_type="server_error",
            param=None,
            code="usage_store_unavailable",
        )
