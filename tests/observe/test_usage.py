"""Usage accounting: records, prices, the SQLite and PostgreSQL stores, the recorder and
the HTTP query handler.

Store tests run on both backends (SQLite in a temporary file, PostgreSQL from the session
fixture in conftest.py). Expected values are computed here, independently, in Python.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.config.model import PriceConfig, UsageConfig
from extproc.observe.usage import (
    GROUP_BY_FIELDS,
    SCHEMA_VERSION,
    PostgresUsageStore,
    PriceTable,
    SQLiteUsageStore,
    UsageFilters,
    UsageRecord,
    UsageRecorder,
    UsageStore,
    UsageStoreError,
    handle_usage_query,
    open_store,
    parse_time,
)

BASE = 1_700_000_000.0  # 2023-11-14T22:13:20Z
NOW = BASE + 100_000


# --------------------------------------------------------------------------- helpers


def rec(i: int | str = 0, **overrides: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "request_id": f"req-{i}",
        "time": BASE + (i if isinstance(i, int) else 0),
        "frontend": "openai-chat",
        "backend_instance": "openai",
        "backend_schema": "openai-chat",
        "requested_model": "gpt-4o",
        "model": "gpt-4o",
        "duration_ms": 100.0,
    }
    values.update(overrides)
    return UsageRecord(**values)


def dataset(n: int = 90, seed: int = 7) -> list[UsageRecord]:
    """Varied records, one minute apart, in random insertion order."""
    rng = random.Random(seed)
    models = [("gpt-4o", "gpt-4o"), ("fast", "gpt-4o-mini"), ("claude", "claude-3-5-sonnet")]
    records = []
    for i in range(n):
        requested, model = rng.choice(models)
        unrouted = rng.random() < 0.1
        input_tokens = rng.randrange(0, 5000)
        output_tokens = rng.randrange(0, 2000)
        records.append(
            UsageRecord(
                request_id=f"req-{i}",
                time=BASE + 60.0 * i,
                client_key_id=rng.choice(["key-a", "key-b", "key-c", None]),
                session_id=rng.choice(["s-1", "s-2", None]),
                frontend=rng.choice(["openai-chat", "anthropic", "gemini"]),
                backend_instance=None if unrouted else rng.choice(["openai", "openai.1", "anth"]),
                backend_schema=None if unrouted else "openai-chat",
                requested_model=requested,
                model=None if unrouted else model,
                status=rng.choice([200, 200, 200, 201, 400, 401, 429, 500, 503]),
                streamed=rng.random() < 0.5,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_input_tokens=rng.randrange(0, input_tokens + 1),
                reasoning_tokens=rng.randrange(0, output_tokens + 1),
                ttft_ms=None if rng.random() < 0.3 else round(rng.uniform(5, 900), 3),
                duration_ms=round(rng.uniform(10, 20_000), 3),
                cost_usd=None if rng.random() < 0.2 else round(rng.uniform(0, 0.5), 6),
                error_code=rng.choice([None, "rate_limited"]),
            )
        )
    rng.shuffle(records)
    return records


def percentile_cont(values: Sequence[float], p: float) -> float | None:
    """The SQL standard's continuous percentile (linear interpolation), for reference."""
    if not values:
        return None
    ordered = sorted(values)
    h = p * (len(ordered) - 1)
    lo = math.floor(h)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (h - lo)


def expected_stats(records: Sequence[UsageRecord]) -> dict[str, Any]:
    durations = [r.duration_ms for r in records]
    ttfts = [r.ttft_ms for r in records if r.ttft_ms is not None]
    return {
        "requests": len(records),
        "errors": sum(1 for r in records if r.status >= 400 or r.error_code is not None),
        "input_tokens": sum(r.input_tokens for r in records),
        "output_tokens": sum(r.output_tokens for r in records),
        "cached_input_tokens": sum(r.cached_input_tokens for r in records),
        "reasoning_tokens": sum(r.reasoning_tokens for r in records),
        "cost_usd": sum(r.cost_usd for r in records if r.cost_usd is not None),
        "unpriced_requests": sum(1 for r in records if r.cost_usd is None),
        "duration_ms_avg": sum(durations) / len(durations) if durations else None,
        "duration_ms_p50": percentile_cont(durations, 0.5),
        "duration_ms_p95": percentile_cont(durations, 0.95),
        "ttft_ms_avg": sum(ttfts) / len(ttfts) if ttfts else None,
        "ttft_ms_p50": percentile_cont(ttfts, 0.5),
        "ttft_ms_p95": percentile_cont(ttfts, 0.95),
        "first_time": min((r.time for r in records), default=None),
        "last_time": max((r.time for r in records), default=None),
    }


def assert_stats(got: dict[str, Any], want: dict[str, Any]) -> None:
    for name, value in want.items():
        if value is None or isinstance(value, int):
            assert got[name] == value, name
        else:
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name


def group_key(record: UsageRecord, group: Sequence[str]) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in group)


def matches(record: UsageRecord, f: UsageFilters) -> bool:
    """The filters' meaning, restated independently of the SQL."""
    if f.since is not None and record.time < f.since:
        return False
    if f.until is not None and record.time >= f.until:
        return False
    if f.model is not None and f.model not in (record.model, record.requested_model):
        return False
    for name in ("backend_instance", "client_key_id", "frontend", "session_id"):
        wanted = getattr(f, name)
        if wanted is not None and getattr(record, name) != wanted:
            return False
    if isinstance(f.status, int) and record.status != f.status:
        return False
    return not (isinstance(f.status, str) and str(record.status)[0] != f.status[0])


def raw_execute(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Run SQL on the store's database behind its back (schema checks, sabotage)."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            return conn.execute(sql).fetchall()
    with psycopg.connect(url, autocommit=True) as pg:
        cur = pg.execute(sql)
        return cur.fetchall() if cur.description else []


class MemoryStore:
    """A store keeping batches in memory; ``add_many`` can be gated or made to fail."""

    def __init__(self, *, gate: bool = False, failures: int = 0) -> None:
        self.batches: list[list[UsageRecord]] = []
        self.closed = False
        self.failures = failures
        self.attempts = 0
        self.entered = threading.Event()  # add_many was called
        self.release = threading.Event()  # gated add_many may proceed
        self.failed = threading.Event()
        if not gate:
            self.release.set()
        self._written = threading.Condition()

    def add_many(self, records: Sequence[UsageRecord]) -> None:
        self.attempts += 1
        self.entered.set()
        assert self.release.wait(10), "test never released the store"
        if self.failures > 0:
            self.failures -= 1
            self.failed.set()
            raise ConnectionError("database unreachable")
        with self._written:
            self.batches.append(list(records))
            self._written.notify_all()

    def wait_for_records(self, count: int, timeout: float = 10.0) -> bool:
        with self._written:
            return self._written.wait_for(lambda: len(self.records) >= count, timeout)

    @property
    def records(self) -> list[UsageRecord]:
        return [r for batch in self.batches for r in batch]

    def stats(
        self, filters: UsageFilters, group_by: Sequence[str] = (), *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        return [expected_stats([r for r in self.records if matches(r, filters)])]

    def recent(self, filters: UsageFilters, limit: int = 50) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        self.closed = True


class FlakyStore:
    """Wraps a real store; ``add_many`` raises the first ``failures`` times."""

    def __init__(self, inner: UsageStore, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def add_many(self, records: Sequence[UsageRecord]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("connection reset by peer")
        self.inner.add_many(records)

    def stats(
        self, filters: UsageFilters, group_by: Sequence[str] = (), *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        return self.inner.stats(filters, group_by, limit=limit)

    def recent(self, filters: UsageFilters, limit: int = 50) -> list[dict[str, Any]]:
        return self.inner.recent(filters, limit)

    def close(self) -> None:
        self.inner.close()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/usage.sqlite"  # sqlite:////abs/path
    dsn: str = request.getfixturevalue("usage_postgres_db")
    return dsn


@pytest.fixture
def store(store_url: str) -> Iterator[UsageStore]:
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def loaded(store: UsageStore) -> tuple[UsageStore, list[UsageRecord]]:
    records = dataset()
    store.add_many(records[:40])
    store.add_many(records[40:])
    return store, records


# --------------------------------------------------------------------------- records


def test_record_is_frozen_and_has_the_accounting_fields() -> None:
    record = rec(1, ttft_ms=12.5, error_code="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = 500  # type: ignore[misc]
    names = {f.name for f in dataclasses.fields(UsageRecord)}
    assert names == {
        "request_id",
        "time",
        "client_key_id",
        "session_id",
        "frontend",
        "backend_instance",
        "backend_schema",
        "requested_model",
        "model",
        "status",
        "streamed",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
        "ttft_ms",
        "duration_ms",
        "cost_usd",
        "error_code",
    }


def test_filters_reject_a_bad_status_class() -> None:
    with pytest.raises(ValueError):
        UsageFilters(status="4x")
    assert UsageFilters(status="4XX").status == "4XX"


# --------------------------------------------------------------------------- prices


PRICES = {
    "gpt-4o": PriceConfig(input=2.5, output=10.0, cached_input=1.25),
    "openai.1:gpt-4o": PriceConfig(input=2.0, output=8.0),
    "gpt-4o*": PriceConfig(input=5.0, output=15.0),
    "gpt-4o-mini*": PriceConfig(input=0.15, output=0.6),
    "openai.1:gpt-4o-mini*": PriceConfig(input=0.1, output=0.4),
    "claude-*": PriceConfig(input=3.0, output=15.0, cached_input=0.3),
    "qwen2.5:7b": PriceConfig(input=0.0, output=0.0),
}


@pytest.mark.parametrize(
    ("instance", "model", "expected"),
    [
        ("openai", "gpt-4o", "gpt-4o"),  # exact model
        ("openai.1", "gpt-4o", "openai.1:gpt-4o"),  # exact instance:model beats model
        ("openai", "gpt-4o-2024-08-06", "gpt-4o*"),  # prefix
        ("openai", "gpt-4o-mini-2024", "gpt-4o-mini*"),  # the longest prefix wins
        ("openai.1", "gpt-4o-mini-2024", "openai.1:gpt-4o-mini*"),  # instance prefix
        ("openai.1", "gpt-4o-audio", "gpt-4o*"),  # the instance pattern does not match
        ("anth", "claude-3-5-sonnet", "claude-*"),
        ("ollama", "qwen2.5:7b", "qwen2.5:7b"),  # a model name with a colon
        ("openai", "o3", None),  # unknown
        (None, "gpt-4o", "gpt-4o"),
        ("openai", None, None),
    ],
)
def test_price_lookup_most_specific_first(
    instance: str | None, model: str | None, expected: str | None
) -> None:
    table = PriceTable(PRICES)
    assert table.lookup(instance, model) is (None if expected is None else PRICES[expected])


def test_price_patterns_longest_first_and_catch_all() -> None:
    prices = {
        "*": PriceConfig(input=1, output=1),
        "gpt*": PriceConfig(input=2, output=2),
        "openai.1:*": PriceConfig(input=3, output=3),
        "openai.1:gpt-4*": PriceConfig(input=4, output=4),
    }
    table = PriceTable(prices)
    assert table.lookup("x", "llama") is prices["*"]
    assert table.lookup("x", "gpt-3.5") is prices["gpt*"]
    assert table.lookup("openai.1", "llama") is prices["openai.1:*"]
    assert table.lookup("openai.1", "gpt-3.5") is prices["openai.1:*"]  # longer pattern
    assert table.lookup("openai.1", "gpt-4o") is prices["openai.1:gpt-4*"]
    # a plain pattern never matches the instance name
    assert PriceTable({"o*": PriceConfig(input=1)}).lookup("openai", "gpt-4o") is None
    assert not PriceTable({})
    assert PriceTable({"*": PriceConfig()})


def test_cost_formula() -> None:
    table = PriceTable(PRICES)
    record = rec(
        model="gpt-4o", input_tokens=1_000_000, cached_input_tokens=400_000, output_tokens=50_000
    )
    # 600k uncached at 2.5 + 400k cached at 1.25 + 50k output at 10.0, per million
    assert table.cost(record) == pytest.approx(0.6 * 2.5 + 0.4 * 1.25 + 0.05 * 10.0)
    # cached price defaults to the input price
    assert table.cost(dataclasses.replace(record, backend_instance="openai.1")) == pytest.approx(
        1.0 * 2.0 + 0.05 * 8.0
    )
    # prefix, instance-specific prefix
    mini = rec(model="gpt-4o-mini", input_tokens=2_000_000, output_tokens=1_000_000)
    assert table.cost(mini) == pytest.approx(2 * 0.15 + 0.6)
    assert table.cost(dataclasses.replace(mini, backend_instance="openai.1")) == pytest.approx(
        2 * 0.1 + 0.4
    )
    # unknown model -> None; failed request with a known model -> 0.0
    assert table.cost(rec(model="mystery", input_tokens=10)) is None
    assert table.cost(rec(model="gpt-4o", status=500)) == 0.0
    # no backend model: the requested one is priced
    assert table.cost(rec(model=None, requested_model="claude-3", output_tokens=1_000_000)) == 15.0
    # cached never exceeds input
    odd = rec(model="claude-3", input_tokens=100, cached_input_tokens=1000)
    assert table.cost(odd) == pytest.approx(100 * 0.3 / 1e6)


# --------------------------------------------------------------------------- stores


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///./data/usage.sqlite")
    assert isinstance(relative, SQLiteUsageStore)
    relative.close()
    assert (tmp_path / "data" / "usage.sqlite").exists()
    absolute = open_store(f"sqlite:///{tmp_path}/abs.sqlite")
    absolute.close()
    assert (tmp_path / "abs.sqlite").exists()
    for bad in ("sqlite://", "sqlite:///", "sqlite:///:memory:", "mysql://x", "usage.sqlite"):
        with pytest.raises(ValueError):
            open_store(bad)


def test_open_store_postgres_urls(usage_postgres_db: str) -> None:
    for url in (usage_postgres_db, usage_postgres_db.replace("postgresql://", "postgres://")):
        store = open_store(url)
        assert isinstance(store, PostgresUsageStore)
        store.add_many([rec(1)])
        assert store.stats(UsageFilters())[0]["requests"] >= 1
        store.close()


def test_config_default_database_url_opens() -> None:
    url = UsageConfig().database
    assert url.startswith("sqlite:///")


def test_schema_created_with_indexes_and_version(store_url: str, store: UsageStore) -> None:
    assert raw_execute(store_url, "SELECT version FROM usage_schema_version") == [(SCHEMA_VERSION,)]
    if store_url.startswith("sqlite"):
        indexes = raw_execute(store_url, "SELECT sql FROM sqlite_master WHERE type = 'index'")
        assert raw_execute(store_url, "PRAGMA journal_mode") == [("wal",)]
    else:
        indexes = raw_execute(
            store_url, "SELECT indexdef FROM pg_indexes WHERE tablename = 'usage_records'"
        )
    text = " ".join(str(row[0]) for row in indexes)
    for column in ("ts", "client_key_id", "backend_instance", "model", "frontend", "status"):
        assert f"({column})" in text, column
    # Opening again is harmless and keeps the data.
    store.add_many([rec(1)])
    again = open_store(store_url)
    assert again.stats(UsageFilters())[0]["requests"] == 1
    again.close()
    assert raw_execute(store_url, "SELECT COUNT(*) FROM usage_schema_version") == [(1,)]


def test_newer_schema_is_refused(store_url: str, store: UsageStore) -> None:
    raw_execute(store_url, "UPDATE usage_schema_version SET version = 99")
    with pytest.raises(UsageStoreError, match="schema version 99"):
        open_store(store_url)


def test_empty_store(store: UsageStore) -> None:
    (totals,) = store.stats(UsageFilters())
    assert_stats(totals, expected_stats([]))
    assert totals["cost_usd"] == 0.0
    assert store.stats(UsageFilters(), ["model"]) == []
    assert store.recent(UsageFilters()) == []
    store.add_many([])


def test_totals(loaded: tuple[UsageStore, list[UsageRecord]]) -> None:
    store, records = loaded
    (totals,) = store.stats(UsageFilters())
    assert_stats(totals, expected_stats(records))
    assert isinstance(totals["requests"], int)
    assert isinstance(totals["input_tokens"], int)
    json.dumps(totals)


@pytest.mark.parametrize(
    "group",
    [
        *[(name,) for name in GROUP_BY_FIELDS],
        ("model", "backend_instance"),
        ("client_key_id", "session_id", "frontend"),
    ],
)
def test_group_by(loaded: tuple[UsageStore, list[UsageRecord]], group: tuple[str, ...]) -> None:
    store, records = loaded
    rows = store.stats(UsageFilters(), group)
    groups: dict[tuple[Any, ...], list[UsageRecord]] = {}
    for record in records:
        groups.setdefault(group_key(record, group), []).append(record)
    assert len(rows) == len(groups)
    got = {tuple(row[name] for name in group): row for row in rows}
    assert set(got) == set(groups)
    for key, members in groups.items():
        assert_stats(got[key], expected_stats(members))
    # ordered by request count, busiest first
    counts = [row["requests"] for row in rows]
    assert counts == sorted(counts, reverse=True)


def test_group_by_limit_and_validation(loaded: tuple[UsageStore, list[UsageRecord]]) -> None:
    store, _ = loaded
    everything = store.stats(UsageFilters(), ["client_key_id"])
    assert store.stats(UsageFilters(), ["client_key_id"], limit=2) == everything[:2]
    with pytest.raises(ValueError, match="cannot group by"):
        store.stats(UsageFilters(), ["status"])
    with pytest.raises(ValueError, match="cannot group by"):
        store.stats(UsageFilters(), ["model; DROP TABLE usage_records"])
    # duplicates collapse
    assert store.stats(UsageFilters(), ["model", "model"]) == store.stats(UsageFilters(), ["model"])


FILTERS = [
    UsageFilters(since=BASE + 60 * 30),
    UsageFilters(until=BASE + 60 * 30),
    UsageFilters(since=BASE + 60 * 10, until=BASE + 60 * 20),  # until is exclusive
    UsageFilters(since=BASE + 60 * 10 + 1, until=BASE + 60 * 10 + 2),  # nothing
    UsageFilters(backend_instance="openai.1"),
    UsageFilters(model="gpt-4o-mini"),  # the backend's model
    UsageFilters(model="fast"),  # the requested model
    UsageFilters(client_key_id="key-b"),
    UsageFilters(frontend="anthropic"),
    UsageFilters(status=429),
    UsageFilters(status="2xx"),
    UsageFilters(status="4xx"),
    UsageFilters(status="5xx"),
    UsageFilters(session_id="s-2"),
    UsageFilters(session_id="s-1", client_key_id="key-a", status="2xx", since=BASE + 600),
    UsageFilters(model="x' OR '1'='1"),  # a value, never SQL
]


@pytest.mark.parametrize(
    "filters",
    FILTERS,
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.as_dict().items() if v is not None),
)
def test_filters(loaded: tuple[UsageStore, list[UsageRecord]], filters: UsageFilters) -> None:
    store, records = loaded
    selected = [r for r in records if matches(r, filters)]
    (totals,) = store.stats(filters)
    assert_stats(totals, expected_stats(selected))
    recent = store.recent(filters, limit=1000)
    assert [row["request_id"] for row in recent] == [
        r.request_id for r in sorted(selected, key=lambda r: r.time, reverse=True)
    ]
    by_model = store.stats(filters, ["model"])
    assert sum(row["requests"] for row in by_model) == len(selected)


def test_status_class_boundaries(store: UsageStore) -> None:
    store.add_many(
        [rec(i, status=s) for i, s in enumerate([199, 200, 299, 300, 399, 400, 499, 500, 599])]
    )
    counts = {
        cls: store.stats(UsageFilters(status=cls))[0]["requests"] for cls in ("2xx", "4xx", "5xx")
    }
    assert counts == {"2xx": 2, "4xx": 2, "5xx": 2}
    assert store.stats(UsageFilters())[0]["errors"] == 4


def test_percentiles_of_a_known_distribution(store: UsageStore) -> None:
    durations = list(range(1, 101))
    random.Random(3).shuffle(durations)
    ttfts: list[float | None] = [None] * 5 + [10.0 * k for k in range(1, 11)]
    records = [
        rec(i, duration_ms=float(d), ttft_ms=ttfts[i] if i < len(ttfts) else None)
        for i, d in enumerate(durations)
    ]
    store.add_many(records)
    (totals,) = store.stats(UsageFilters())
    assert totals["duration_ms_p50"] == pytest.approx(50.5)
    assert totals["duration_ms_p95"] == pytest.approx(95.05)
    assert totals["duration_ms_avg"] == pytest.approx(50.5)
    assert totals["ttft_ms_p50"] == pytest.approx(55.0)
    assert totals["ttft_ms_p95"] == pytest.approx(95.5)
    assert totals["ttft_ms_avg"] == pytest.approx(55.0)

    # per group: [1, 2, 3, 4] and a single value; a group without any ttft
    store.add_many(
        [rec(200 + k, model="a", duration_ms=float(k), ttft_ms=float(k)) for k in (4, 1, 3, 2)]
        + [rec(300, model="b", duration_ms=10.0, ttft_ms=None)]
    )
    rows = {row["model"]: row for row in store.stats(UsageFilters(model="a"), ["model"])}
    assert rows["a"]["duration_ms_p50"] == pytest.approx(2.5)
    assert rows["a"]["duration_ms_p95"] == pytest.approx(3.85)
    assert rows["a"]["ttft_ms_p95"] == pytest.approx(3.85)
    (b,) = store.stats(UsageFilters(model="b"), ["model"])
    assert b["duration_ms_p50"] == b["duration_ms_p95"] == 10.0
    assert b["ttft_ms_p50"] is None and b["ttft_ms_avg"] is None


def test_recent_order_limit_and_round_trip(store: UsageStore) -> None:
    records = [
        rec(i, time=BASE + i // 2, streamed=bool(i % 2), ttft_ms=i or None) for i in range(7)
    ]
    store.add_many(records[:3])
    store.add_many(records[3:])
    rows = store.recent(UsageFilters(), limit=4)
    # newest first; equal times: the later insert first
    assert [row["request_id"] for row in rows] == ["req-6", "req-5", "req-4", "req-3"]
    assert rows[0] == dataclasses.asdict(records[6])
    assert rows[1]["streamed"] is True and rows[0]["streamed"] is False
    assert len(store.recent(UsageFilters(), limit=100)) == 7
    assert store.recent(UsageFilters(), limit=0) == []
    with pytest.raises(ValueError):
        store.recent(UsageFilters(), limit=-1)
    json.dumps(rows)


def test_text_values_are_parameters(store: UsageStore) -> None:
    tricky = 'it\'s "quoted" -- ; DROP TABLE usage_records; %s ?'
    store.add_many([rec(1, model=tricky, session_id=tricky, client_key_id="%(x)s")])
    assert store.recent(UsageFilters(model=tricky))[0]["model"] == tricky
    assert store.stats(UsageFilters(session_id=tricky), ["session_id"])[0]["session_id"] == tricky
    assert store.stats(UsageFilters(client_key_id="%(x)s"))[0]["requests"] == 1


def test_queries_while_writing(store: UsageStore) -> None:
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for batch in range(20):
                store.add_many([rec(f"{batch}-{k}") for k in range(50)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    seen = 0
    while writer.is_alive():
        count = store.stats(UsageFilters())[0]["requests"]
        assert count >= seen  # batches appear whole, never go away
        assert count % 50 == 0
        seen = count
        store.recent(UsageFilters(), limit=5)
    writer.join()
    assert not errors
    assert store.stats(UsageFilters())[0]["requests"] == 1000


record_strategy = st.builds(
    UsageRecord,
    request_id=st.uuids().map(str),
    time=st.floats(0, 2e9, allow_nan=False),
    client_key_id=st.sampled_from(["k1", "k2", None]),
    model=st.sampled_from(["m1", "m2", "m3", None]),
    status=st.sampled_from([200, 204, 400, 404, 429, 500, 502]),
    input_tokens=st.integers(0, 10**12),
    output_tokens=st.integers(0, 10**9),
    cached_input_tokens=st.integers(0, 10**6),
    ttft_ms=st.none() | st.floats(0, 1e6, allow_nan=False),
    duration_ms=st.floats(0, 1e7, allow_nan=False),
    cost_usd=st.none() | st.floats(0, 1e3, allow_nan=False),
)


def test_stats_property(store: UsageStore) -> None:
    """Random records: every aggregate equals the Python reference, on both databases."""

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        records=st.lists(record_strategy, max_size=30),
        group=st.sampled_from([(), ("model",), ("client_key_id", "model")]),
    )
    def check(records: list[UsageRecord], group: tuple[str, ...]) -> None:
        tag = f"fe-{uuid.uuid4()}"  # this example's rows only
        records = [dataclasses.replace(r, frontend=tag) for r in records]
        store.add_many(records)
        rows = store.stats(UsageFilters(frontend=tag), group)
        if not group:
            assert_stats(rows[0], expected_stats(records))
            return
        groups: dict[tuple[Any, ...], list[UsageRecord]] = {}
        for record in records:
            groups.setdefault(group_key(record, group), []).append(record)
        got = {tuple(row[name] for name in group): row for row in rows}
        assert set(got) == set(groups)
        for key, members in groups.items():
            assert_stats(got[key], expected_stats(members))

    check()


# --------------------------------------------------------------------------- PostgreSQL


def _terminate_store_connections(dsn: str) -> int:
    rows = raw_execute(
        dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'llm-proxy-usage' AND pid <> pg_backend_pid()",
    )
    return len(rows)


def test_postgres_reconnects_after_losing_its_connections(usage_postgres_db: str) -> None:
    store = PostgresUsageStore(usage_postgres_db)
    store.add_many([rec(1)])
    assert store.stats(UsageFilters())[0]["requests"] == 1
    assert _terminate_store_connections(usage_postgres_db) >= 2  # its writer and reader
    # a query retries once on a fresh connection
    assert store.stats(UsageFilters())[0]["requests"] == 1
    # a write fails (the recorder retries it), the next one reconnects
    with pytest.raises(psycopg.OperationalError):
        store.add_many([rec(2)])
    store.add_many([rec(3)])
    assert [r["request_id"] for r in store.recent(UsageFilters())] == ["req-3", "req-1"]
    store.close()
    with pytest.raises(UsageStoreError):
        store.add_many([rec(4)])


def test_postgres_recorder_survives_a_lost_connection(
    usage_postgres_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = UsageRecorder(
        PostgresUsageStore(usage_postgres_db), retry_initial=0.001, retry_max=0.01
    )
    recorder.submit(rec(1))
    assert recorder.flush(10)
    _terminate_store_connections(usage_postgres_db)
    with caplog.at_level(logging.WARNING, logger="extproc.observe.usage"):
        for i in range(2, 12):
            assert recorder.submit(rec(i))
        assert recorder.flush(10)
    assert recorder.written == 11
    assert recorder.write_failures == 1
    assert recorder.stats(UsageFilters())[0]["requests"] == 11
    recorder.close()


def test_postgres_store_opens_before_its_database_is_reachable(
    usage_postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"usage_late_{uuid.uuid4().hex[:8]}"
    dsn = usage_postgres_dsn.rsplit("/", 1)[0] + "/" + name
    with caplog.at_level(logging.WARNING, logger="extproc.observe.usage_store"):
        store = PostgresUsageStore(dsn)  # the proxy starts even so
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    recorder = UsageRecorder(store, retry_initial=0.001, retry_max=0.01)
    try:
        recorder.submit(rec(1))
        assert not recorder.flush(0.1)
        assert recorder.write_failures >= 1
        with pytest.raises(psycopg.OperationalError):
            store.stats(UsageFilters())
        raw_execute(usage_postgres_dsn, f"CREATE DATABASE {name}")
        assert recorder.flush(10)  # schema created on the first connection
        assert store.stats(UsageFilters())[0]["requests"] == 1
    finally:
        recorder.close()
        raw_execute(usage_postgres_dsn, f"DROP DATABASE IF EXISTS {name}")


def test_postgres_schema_created_by_replicas_at_once(usage_postgres_db: str) -> None:
    stores: list[PostgresUsageStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            barrier.wait(5)
            stores.append(PostgresUsageStore(usage_postgres_db))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert raw_execute(usage_postgres_db, "SELECT version FROM usage_schema_version") == [
        (SCHEMA_VERSION,)
    ]
    for s in stores:
        s.close()


def test_postgres_two_replicas_write_concurrently(usage_postgres_db: str) -> None:
    replicas = [
        UsageRecorder(PostgresUsageStore(usage_postgres_db), batch_size=37) for _ in range(2)
    ]
    per_thread = 400

    def produce(recorder: UsageRecorder, name: str) -> None:
        for i in range(per_thread):
            assert recorder.submit(rec(f"{name}-{i}", model=name))

    threads = [
        threading.Thread(target=produce, args=(replica, f"r{n}-t{t}"))
        for n, replica in enumerate(replicas)
        for t in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for replica in replicas:
        assert replica.flush(20)
        assert replica.written == 3 * per_thread
        assert replica.dropped == 0
    rows = raw_execute(usage_postgres_db, "SELECT request_id FROM usage_records")
    ids = [row[0] for row in rows]
    assert len(ids) == len(set(ids)) == 2 * 3 * per_thread
    by_model = replicas[0].stats(UsageFilters(), ["model"])
    assert {row["model"]: row["requests"] for row in by_model} == {
        f"r{n}-t{t}": per_thread for n in range(2) for t in range(3)
    }
    for replica in replicas:
        replica.close()


# --------------------------------------------------------------------------- recorder


def test_recorder_batches_and_flush() -> None:
    store = MemoryStore()
    recorder = UsageRecorder(store, queue_size=1000, batch_size=200, batch_interval=60)
    records = [rec(i) for i in range(450)]
    assert all(recorder.submit(r) for r in records)
    assert recorder.flush(10)  # does not wait for the 60 s batch window
    assert [len(b) for b in store.batches] == [200, 200, 50]
    assert store.records == records
    assert recorder.written == 450
    assert recorder.queue_depth == 0
    assert recorder.dropped == 0
    recorder.close()
    assert store.closed


def test_recorder_writes_a_partial_batch_after_the_interval() -> None:
    store = MemoryStore()
    recorder = UsageRecorder(store, batch_size=200, batch_interval=0.01)
    for i in range(3):
        recorder.submit(rec(i))
    assert store.wait_for_records(3)  # no flush: the batch interval elapsed
    assert recorder.queue_depth == 0
    assert all(len(b) < 200 for b in store.batches)
    recorder.close()


def test_recorder_prices_records() -> None:
    store = MemoryStore()
    recorder = UsageRecorder(store, PRICES)
    recorder.submit(rec(1, model="gpt-4o", output_tokens=1_000_000))
    recorder.submit(rec(2, model="gpt-4o", output_tokens=1_000_000, cost_usd=1.5))  # kept
    recorder.submit(rec(3, model="unknown", output_tokens=1_000_000))
    assert recorder.flush(10)
    assert [r.cost_usd for r in store.records] == [10.0, 1.5, None]
    recorder.close()


def test_recorder_bounds_what_clients_control(store: UsageStore) -> None:
    recorder = UsageRecorder(store)
    recorder.submit(rec(1, requested_model="evil\x00model" + "x" * 5000, input_tokens=-5))
    recorder.submit(rec(2, output_tokens=10**30))
    assert recorder.flush(10)
    assert recorder.write_failures == 0
    rows = {r["request_id"]: r for r in store.recent(UsageFilters())}
    assert rows["req-1"]["requested_model"].startswith("evil\ufffdmodel")
    assert len(rows["req-1"]["requested_model"]) == 512
    assert rows["req-1"]["input_tokens"] == 0
    assert rows["req-2"]["output_tokens"] == 2**53
    recorder.close()


def test_recorder_overflow_drops_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    clock = [1000.0]
    store = MemoryStore(gate=True)
    recorder = UsageRecorder(store, queue_size=5, batch_interval=0, clock=lambda: clock[0])
    assert recorder.submit(rec(0))
    assert store.entered.wait(10)  # the writer holds record 0 and is blocked in the store
    with caplog.at_level(logging.WARNING, logger="extproc.observe.usage"):
        assert all(recorder.submit(rec(i)) for i in range(1, 6))  # fills the queue
        assert recorder.queue_depth == 5
        assert [recorder.submit(rec(i)) for i in range(6, 9)] == [False, False, False]
        assert recorder.dropped == 3
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # at most one warning per 10 s
        assert "dropped 1 usage records (1 in total)" in warnings[0]
        clock[0] += 9.9
        assert not recorder.submit(rec(9))
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        clock[0] += 0.1
        assert not recorder.submit(rec(10))
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert "dropped 4 usage records (5 in total)" in warnings[1]
    store.release.set()
    assert recorder.flush(10)
    assert recorder.written == 6
    assert recorder.dropped == 5
    assert [r.request_id for r in store.records] == [f"req-{i}" for i in range(6)]
    assert recorder.submit(rec(11))  # room again
    recorder.close()


def test_recorder_retries_a_failing_store(
    store: UsageStore, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyStore(store, failures=3)
    recorder = UsageRecorder(flaky, retry_initial=0.001, retry_max=0.01)
    with caplog.at_level(logging.WARNING, logger="extproc.observe.usage"):
        for i in range(10):
            recorder.submit(rec(i))
        assert recorder.flush(10)
    assert recorder.write_failures == 3
    assert recorder.written == 10
    # each retry wrote the same batch once: no duplicates, nothing lost
    ids = sorted(r["request_id"] for r in store.recent(UsageFilters(), limit=100))
    assert ids == sorted(f"req-{i}" for i in range(10))
    failures = [r.getMessage() for r in caplog.records if "write failed" in r.getMessage()]
    assert len(failures) == 3
    assert "connection reset by peer" in failures[0]
    recorder.close()


def test_recorder_memory_is_bounded_while_the_store_is_down() -> None:
    store = MemoryStore(gate=True, failures=10**9)
    recorder = UsageRecorder(
        store, queue_size=10, batch_interval=0, retry_initial=0.001, retry_max=0.01
    )
    assert recorder.submit(rec(0))
    store.release.set()
    assert store.failed.wait(10)  # the writer holds record 0 and keeps failing
    accepted = [recorder.submit(rec(i)) for i in range(1, 16)]
    assert accepted == [True] * 10 + [False] * 5
    assert recorder.queue_depth == 10
    assert recorder.dropped == 5
    assert not recorder.flush(0.05)
    store.failures = 0  # the database is back
    assert recorder.flush(10)
    assert recorder.written == 11
    assert [r.request_id for r in store.records] == [f"req-{i}" for i in range(11)]
    recorder.close()


def test_recorder_close_writes_what_is_queued_then_refuses() -> None:
    store = MemoryStore()
    recorder = UsageRecorder(store, batch_interval=60)
    for i in range(5):
        recorder.submit(rec(i))
    recorder.close()
    assert len(store.records) == 5
    assert store.closed
    assert not recorder.submit(rec(6))
    assert recorder.dropped == 0
    recorder.close()  # idempotent


def test_recorder_close_gives_up_on_a_dead_store(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore(failures=10**9)
    recorder = UsageRecorder(
        store, batch_size=2, batch_interval=0, retry_initial=0.001, retry_max=0.01
    )
    for i in range(5):
        recorder.submit(rec(i))
    assert store.failed.wait(10)
    with caplog.at_level(logging.ERROR, logger="extproc.observe.usage"):
        recorder.close(timeout=0.05)
    assert recorder.written == 0
    assert recorder.lost == 5
    assert store.closed
    assert any("5 usage records were not written" in r.getMessage() for r in caplog.records)


def test_recorder_from_config(tmp_path: Path) -> None:
    config = UsageConfig(
        enabled=True,
        database=f"sqlite:///{tmp_path}/u.sqlite",
        prices={"gpt-4o": PriceConfig(input=1, output=2)},
        queue_size=7,
    )
    recorder = UsageRecorder.from_config(config)
    assert recorder.queue_size == 7
    recorder.submit(rec(1, input_tokens=1_000_000))
    assert recorder.flush(10)
    (totals,) = recorder.stats(UsageFilters())
    assert totals["cost_usd"] == pytest.approx(1.0)
    assert recorder.recent(UsageFilters())[0]["cost_usd"] == pytest.approx(1.0)
    recorder.close()


def test_recorder_submit_from_many_threads(store: UsageStore) -> None:
    recorder = UsageRecorder(store, batch_size=50, batch_interval=0.001)

    def produce(t: int) -> None:
        for i in range(200):
            assert recorder.submit(rec(f"{t}-{i}"))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert recorder.flush(20)
    assert recorder.written == 1000
    assert recorder.stats(UsageFilters())[0]["requests"] == 1000
    recorder.close()


# --------------------------------------------------------------------------- HTTP queries


class CaptureQueries:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail

    def stats(
        self, filters: UsageFilters, group_by: Sequence[str] = (), *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        if self.fail:
            raise psycopg.OperationalError("server closed the connection")
        self.calls.append(("stats", filters, tuple(group_by), limit))
        return [{"requests": 0}]

    def recent(self, filters: UsageFilters, limit: int = 50) -> list[dict[str, Any]]:
        if self.fail:
            raise sqlite3.OperationalError("database is locked")
        self.calls.append(("recent", filters, limit))
        return []


def query(
    path: str, params: dict[str, str], target: CaptureQueries | None = None
) -> tuple[int, dict[str, Any], CaptureQueries]:
    target = target or CaptureQueries()
    status, body = handle_usage_query(target, path, params, now=NOW)
    json.dumps(body)
    return status, body, target


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, UsageFilters()),
        ({"since": "1700000000"}, UsageFilters(since=BASE)),
        ({"since": "1700000000.5"}, UsageFilters(since=BASE + 0.5)),
        ({"since": "2023-11-14T22:13:20Z"}, UsageFilters(since=BASE)),
        ({"since": "2023-11-14T23:13:20+01:00"}, UsageFilters(since=BASE)),
        ({"since": "2023-11-14T22:13:20"}, UsageFilters(since=BASE)),  # no zone: UTC
        ({"since": "2023-11-14"}, UsageFilters(since=BASE - 80_000)),
        ({"since": "15m"}, UsageFilters(since=NOW - 900)),
        ({"since": "2h", "until": "1h"}, UsageFilters(since=NOW - 7200, until=NOW - 3600)),
        ({"since": "7d", "until": "now"}, UsageFilters(since=NOW - 7 * 86400, until=NOW)),
        ({"since": "1.5h"}, UsageFilters(since=NOW - 5400)),
        ({"status": "429"}, UsageFilters(status=429)),
        ({"status": "4xx"}, UsageFilters(status="4xx")),
        ({"status": "5XX"}, UsageFilters(status="5xx")),
        (
            {
                "backend": "openai.1",
                "model": "gpt-4o",
                "client_key": "key-abc",
                "frontend": "anthropic",
                "session": "s-1",
            },
            UsageFilters(
                backend_instance="openai.1",
                model="gpt-4o",
                client_key_id="key-abc",
                frontend="anthropic",
                session_id="s-1",
            ),
        ),
        (
            {"backend_instance": "x", "client_key_id": "k", "session_id": "s"},
            UsageFilters(backend_instance="x", client_key_id="k", session_id="s"),
        ),
        ({"model": "", "since": " "}, UsageFilters()),  # empty form fields are "not set"
    ],
)
def test_query_filters(params: dict[str, str], expected: UsageFilters) -> None:
    for path in ("/v1/usage/stats", "/v1/usage/recent"):
        status, body, target = query(path, params)
        assert status == 200, body
        assert target.calls[0][1] == expected
        assert body["filters"] == {
            "since": expected.since,
            "until": expected.until,
            "backend": expected.backend_instance,
            "model": expected.model,
            "client_key": expected.client_key_id,
            "frontend": expected.frontend,
            "status": expected.status,
            "session": expected.session_id,
        }


def test_query_stats_group_by_and_limits() -> None:
    status, body, target = query("/v1/usage/stats", {"group_by": "model,backend"})
    assert status == 200
    assert target.calls == [("stats", UsageFilters(), ("model", "backend_instance"), 1000)]
    assert body["object"] == "usage.stats"
    assert body["group_by"] == ["model", "backend_instance"]
    assert body["data"] == [{"requests": 0}]

    _, body, target = query(
        "/v1/usage/stats", {"group_by": " session , client_key,frontend,model,model", "limit": "5"}
    )
    assert target.calls[0][2:] == (("session_id", "client_key_id", "frontend", "model"), 5)
    _, body, target = query("/v1/usage/stats", {})
    assert target.calls[0][2:] == ((), None)  # totals: one row, no limit
    assert body["group_by"] == []

    _, body, target = query("/v1/usage/recent", {})
    assert target.calls == [("recent", UsageFilters(), 50)]
    assert body["object"] == "usage.recent" and body["limit"] == 50
    _, body, target = query("/v1/usage/recent/", {"limit": "1000"})
    assert target.calls[0][2] == 1000


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v1/usage/stats", {"since": "yesterday"}, "since"),
        ("/v1/usage/stats", {"since": "1700000000000"}, "since"),  # milliseconds
        ("/v1/usage/stats", {"until": "-5"}, "until"),
        ("/v1/usage/stats", {"until": "nan"}, "until"),
        ("/v1/usage/stats", {"since": "15x"}, "since"),
        ("/v1/usage/stats", {"since": "1h", "until": "2h"}, "since"),  # since after until
        ("/v1/usage/stats", {"status": "6xx"}, "status"),
        ("/v1/usage/stats", {"status": "4x"}, "status"),
        ("/v1/usage/stats", {"status": "99"}, "status"),
        ("/v1/usage/stats", {"status": "600"}, "status"),
        ("/v1/usage/stats", {"status": "ok"}, "status"),
        ("/v1/usage/stats", {"group_by": "model,tokens"}, "group_by"),
        ("/v1/usage/stats", {"limit": "0"}, "limit"),
        ("/v1/usage/stats", {"limit": "10001"}, "limit"),
        ("/v1/usage/recent", {"limit": "1001"}, "limit"),
        ("/v1/usage/recent", {"limit": "ten"}, "limit"),
        ("/v1/usage/recent", {"limit": "-1"}, "limit"),
        ("/v1/usage/recent", {"group_by": "model"}, "group_by"),
        ("/v1/usage/recent", {"sesion": "x"}, "sesion"),
        ("/v1/usage/recent", {"backend": "a", "backend_instance": "b"}, "backend_instance"),
    ],
)
def test_query_bad_parameters(path: str, params: dict[str, str], param: str) -> None:
    status, body, target = query(path, params)
    assert status == 400
    error = body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"] and isinstance(error["code"], str)
    assert target.calls == []


def test_query_unknown_path_and_store_failure(caplog: pytest.LogCaptureFixture) -> None:
    status, body, _ = query("/v1/usage/everything", {})
    assert status == 404
    assert body["error"]["code"] == "not_found"
    for path in ("/v1/usage/stats", "/v1/usage/recent"):
        with caplog.at_level(logging.ERROR, logger="extproc.observe.usage"):
            status, body, _ = query(path, {}, CaptureQueries(fail=True))
        assert status == 503
        assert body["error"]["code"] == "usage_store_unavailable"
        assert "connection" not in body["error"]["message"]  # no internals to clients


def test_query_end_to_end(loaded: tuple[UsageStore, list[UsageRecord]]) -> None:
    store, records = loaded
    since = BASE + 60 * 20
    status, body = handle_usage_query(
        store,
        "/v1/usage/stats?ignored=1",
        {"since": str(since), "status": "2xx", "group_by": "backend"},
        now=NOW,
    )
    assert status == 200
    json.dumps(body)
    selected = [r for r in records if r.time >= since and 200 <= r.status < 300]
    got = {row["backend_instance"]: row["requests"] for row in body["data"]}
    want: dict[str | None, int] = {}
    for r in selected:
        want[r.backend_instance] = want.get(r.backend_instance, 0) + 1
    assert got == want
    assert body["filters"]["since"] == since and body["filters"]["status"] == "2xx"

    status, body = handle_usage_query(store, "/v1/usage/recent", {"limit": "3", "model": "fast"})
    assert status == 200
    newest = sorted((r for r in records if r.requested_model == "fast"), key=lambda r: -r.time)
    assert [row["request_id"] for row in body["data"]] == [r.request_id for r in newest[:3]]


def test_parse_time_defaults_to_the_clock() -> None:
    before = parse_time("now")
    assert abs(parse_time("1h") - (before - 3600)) < 60
    assert parse_time("1w", now=NOW) == NOW - 604800
    with pytest.raises(ValueError):
        parse_time("inf")


def test_usage_types_are_what_the_lead_wires(tmp_path: Path) -> None:
    """Both stores satisfy the UsageStore protocol; the recorder answers queries."""
    sqlite_store: UsageStore = SQLiteUsageStore(tmp_path / "x.sqlite")
    assert isinstance(sqlite_store, UsageStore)
    recorder = UsageRecorder(sqlite_store)
    status, body = handle_usage_query(recorder, "/v1/usage/stats", {})
    assert status == 200 and body["data"][0]["requests"] == 0
    recorder.close()
    factory: Callable[[str], UsageStore] = open_store
    assert callable(factory)


def test_cost_of_canonical_usage() -> None:
    from extproc.canonical import Usage

    table = PriceTable(PRICES)
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, cached_input_tokens=1_000_000)
    assert table.cost_of("openai", "gpt-4o", usage) == pytest.approx(1.25 + 1.0)
    assert table.cost_of("openai.1", "gpt-4o-mini-x", usage) == pytest.approx(0.1 + 0.04)
    assert table.cost_of("openai", "mystery", usage) is None
    assert table.cost_of("openai", None, usage) is None


def test_a_stream_that_failed_after_its_200_counts_as_an_error(store: UsageStore) -> None:
    store.add_many([rec(0), rec(1, error_code="upstream_stream_truncated"), rec(2, status=429)])
    [totals] = store.stats(UsageFilters())
    assert (totals["requests"], totals["errors"]) == (3, 2)
