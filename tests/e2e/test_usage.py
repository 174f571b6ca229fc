"""Usage and cost accounting through real Envoy + extproc (``python -m extproc``).

One proxy per database kind (SQLite file, PostgreSQL) in multi-user mode, with two
client keys and an admin key, an OpenAI fake and a Gemini fake behind it, and a price
table. A fixed mix of requests goes through it once (OpenAI non-streamed and streamed,
an Anthropic client translated onto the OpenAI fake, a Gemini client, a provider 429,
two sessions); the tests then read ``/v1/usage/recent`` and ``/v1/usage/stats`` and
compare every field with what the fakes reported and the price table says. Records are
written off the request path, so the tests poll the endpoint until the rows are there.

Other proxies of their own: usage off (404), two replicas on one database, the access
log, and a restart on the same SQLite file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import psycopg
import pytest
from google import genai
from google.genai import types as gtypes

from extproc.sessions.ids import a_leg_id
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import (
    CLIENT_KEY,
    PROVIDER_KEY,
    ProxyProcess,
    fast_health,
    proxy_config,
    running_proxy,
    start_proxy,
)
from tests.observe.postgres import scratch_database

ADMIN_KEY = "sk-fake-admin-key-9999"
USER_ONE = "sk-fake-user-one-2222"
USER_TWO = "sk-fake-user-two-3333"
URL_KEY = "sk-fake-url-key-7777"

#: USD per million tokens.
PRICES: dict[str, dict[str, float]] = {
    "gpt-4o-mini": {"input": 0.15, "output": 0.60, "cached_input": 0.075},
    # Instance-qualified: gpt-4o as served by the instance "openai" (no cached price:
    # cached input costs the input price).
    "openai:gpt-4o": {"input": 2.50, "output": 10.00},
    "gemini-*": {"input": 1.00, "output": 4.00, "cached_input": 0.25},
}

#: Every field of a /v1/usage/recent row.
ROW_FIELDS = {
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
STAT_FIELDS = {
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
}


def key_id(key: str) -> str:
    """What the proxy records instead of a client key (computed here independently)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def a_leg(key: str, session: str) -> str:
    """The proxy's A-leg id of a client's session id (usage records carry it)."""
    return a_leg_id(key_id(key), session)


#: The mix's two sessions as the records name them (owner: the client key).
ALPHA = a_leg(USER_ONE, "s-alpha")
BETA = a_leg(USER_TWO, "s-beta")


def _row(
    key: str,
    session: str | None,
    frontend: str,
    backend: str,
    requested: str,
    model: str,
    tokens: tuple[int, int, int, int],
    cost: float | None,
    *,
    status: int = 200,
    streamed: bool = False,
) -> dict[str, Any]:
    schema = "gemini" if backend == "gem" else "openai-chat"
    return {
        "client_key_id": key_id(key),
        "session_id": session,
        "frontend": frontend,
        "backend_instance": backend,
        "backend_schema": schema,
        "requested_model": requested,
        "model": model,
        "status": status,
        "streamed": streamed,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cached_input_tokens": tokens[2],
        "reasoning_tokens": tokens[3],
        "cost_usd": cost,
        "error_code": None,
    }


#: What each request of the mix must leave in the database. Costs by hand from PRICES:
EXPECTED: dict[str, dict[str, Any]] = {
    # (1000 - 400 cached) * 0.15 + 400 * 0.075 + 200 * 0.60 = 90 + 30 + 120 per million
    "chat": _row(
        USER_ONE,
        ALPHA,
        "openai-chat",
        "openai",
        "gpt-4o-mini",
        "gpt-4o-mini",
        (1000, 200, 400, 50),
        240e-6,
    ),
    # 300 * 0.15 + 100 * 0.60 = 45 + 60 per million
    "chat_stream": _row(
        USER_ONE,
        ALPHA,
        "openai-chat",
        "openai",
        "gpt-4o-mini",
        "gpt-4o-mini",
        (300, 100, 0, 0),
        105e-6,
        streamed=True,
    ),
    # "openai:gpt-4o" (instance-qualified), no cached price: 2000 * 2.5 + 500 * 10
    "anthropic": _row(
        USER_TWO,
        BETA,
        "anthropic",
        "openai",
        "openai:gpt-4o",
        "gpt-4o",
        (2000, 500, 1000, 0),
        0.01,
    ),
    # "gemini-*": (800 - 200) * 1 + 200 * 0.25 + (100 + 60 thoughts) * 4 = 600 + 50 + 640
    "gemini": _row(
        USER_TWO,
        BETA,
        "gemini",
        "gem",
        "gem:gemini-2.5-flash",
        "gemini-2.5-flash",
        (800, 160, 200, 60),
        1290e-6,
    ),
    # The provider's 429: no tokens, priced at zero; a relayed error has no proxy code.
    "rate_limited": _row(
        USER_ONE,
        None,
        "openai-chat",
        "openai",
        "gpt-4o-mini",
        "gpt-4o-mini",
        (0, 0, 0, 0),
        0.0,
        status=429,
    ),
    # No price matches o3-mini: cost unknown. The client did not ask for usage; the
    # proxy asked the provider anyway, so the tokens are recorded.
    "unpriced_stream": _row(
        USER_TWO,
        None,
        "openai-chat",
        "openai",
        "openai:o3-mini",
        "o3-mini",
        (70, 30, 0, 0),
        None,
        streamed=True,
    ),
}
EARLY = ("chat", "chat_stream")  # sent before Traffic.middle, the rest after it


@dataclass
class Traffic:
    """The request mix as the clients saw it."""

    request_ids: dict[str, str] = field(default_factory=dict)
    #: (input, output) tokens the client was told, when it was told.
    client_usage: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    started: float = 0.0
    #: Between the EARLY requests and the others (epoch seconds).
    middle: float = 0.0
    ended: float = 0.0
    #: A request refused for its unknown client key.
    rejected: str = ""

    def names(self, ids: Iterable[str]) -> set[str]:
        by_id = {v: k for k, v in self.request_ids.items()}
        return {by_id[i] for i in ids}


# -- helpers ---------------------------------------------------------------------------


def usage_get(
    proxy: ProxyProcess, endpoint: str, key: str | None = ADMIN_KEY, **params: Any
) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.get(
        f"{proxy.base_url}/v1/usage/{endpoint}", params=params, headers=headers, timeout=10
    )


def wait_rows(
    proxy: ProxyProcess, ids: Iterable[str], key: str | None = ADMIN_KEY, timeout: float = 20.0
) -> dict[str, dict[str, Any]]:
    """Poll /v1/usage/recent until every request id has its row; the rows by id."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    while True:
        response = usage_get(proxy, "recent", key=key, limit="1000")
        assert response.status_code == 200, response.text
        rows = {row["request_id"]: row for row in response.json()["data"]}
        if wanted <= rows.keys():
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(
                f"usage rows missing after {timeout:.0f}s: {sorted(wanted - rows.keys())}\n"
                + proxy.log()[-3000:]
            )
        time.sleep(0.05)


def percentile_cont(values: list[float], p: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the nearest ranks."""
    ordered = sorted(values)
    h = p * (len(ordered) - 1)
    low = int(h)
    if low + 1 >= len(ordered):
        return ordered[low]
    return ordered[low] + (ordered[low + 1] - ordered[low]) * (h - low)


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The /v1/usage/stats numbers of these rows, computed here from the rows."""
    if not rows:
        return {
            "requests": 0,
            "errors": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_input_tokens": 0,
            "reasoning_tokens": 0,
            "cost_usd": 0.0,
            "unpriced_requests": 0,
            "duration_ms_avg": None,
            "duration_ms_p50": None,
            "duration_ms_p95": None,
            "ttft_ms_avg": None,
            "ttft_ms_p50": None,
            "ttft_ms_p95": None,
            "first_time": None,
            "last_time": None,
        }
    durations = [r["duration_ms"] for r in rows]
    ttfts = [r["ttft_ms"] for r in rows if r["ttft_ms"] is not None]
    return {
        "requests": len(rows),
        "errors": sum(r["status"] >= 400 or r["error_code"] is not None for r in rows),
        "input_tokens": sum(r["input_tokens"] for r in rows),
        "output_tokens": sum(r["output_tokens"] for r in rows),
        "cached_input_tokens": sum(r["cached_input_tokens"] for r in rows),
        "reasoning_tokens": sum(r["reasoning_tokens"] for r in rows),
        "cost_usd": pytest.approx(sum(r["cost_usd"] or 0.0 for r in rows), rel=1e-9),
        "unpriced_requests": sum(r["cost_usd"] is None for r in rows),
        "duration_ms_avg": pytest.approx(sum(durations) / len(durations), rel=1e-9),
        "duration_ms_p50": pytest.approx(percentile_cont(durations, 0.5), rel=1e-9),
        "duration_ms_p95": pytest.approx(percentile_cont(durations, 0.95), rel=1e-9),
        "ttft_ms_avg": pytest.approx(sum(ttfts) / len(ttfts), rel=1e-9) if ttfts else None,
        "ttft_ms_p50": pytest.approx(percentile_cont(ttfts, 0.5), rel=1e-9) if ttfts else None,
        "ttft_ms_p95": pytest.approx(percentile_cont(ttfts, 0.95), rel=1e-9) if ttfts else None,
        "first_time": pytest.approx(min(r["time"] for r in rows), abs=1e-6),
        "last_time": pytest.approx(max(r["time"] for r in rows), abs=1e-6),
    }


def openai_client(proxy: ProxyProcess, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=proxy.openai_base_url,
        api_key=key,
        max_retries=0,
        default_headers=headers or None,
    )


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"  # tmp paths are absolute: four slashes in all


def usage_backends(fake: FakeOpenAI, gemini: FakeGemini) -> dict[str, Any]:
    return {
        "openai": {
            "type": "openai",
            "base_url": fake.base_url,
            "api_key": f"{PROVIDER_KEY}-alpha",
            "models": ["gpt-4o-mini", "gpt-4o"],
            **fast_health(),
        },
        "gem": {
            "type": "gemini",
            "base_url": gemini.base_url,
            "api_key": f"{PROVIDER_KEY}-gem",
            **fast_health(),
        },
    }


def multi_user_config(database: str, fake: FakeOpenAI, gemini: FakeGemini) -> dict[str, Any]:
    return proxy_config(
        usage_backends(fake, gemini),
        multi_user_mode=True,
        api_keys=[USER_ONE, USER_TWO],
        admin_keys=[ADMIN_KEY],
        usage={"enabled": True, "database": database, "prices": PRICES},
        # The mix sends a 429 and goes on with the same account at once.
        routing={"health": {"max_retry_after": 0, "rate_limit_cooldown": 0}},
    )


def single_user_config(database: str | None, fake: FakeOpenAI, **top: Any) -> dict[str, Any]:
    backends = {
        "openai": {
            "type": "openai",
            "base_url": fake.base_url,
            "api_key": f"{PROVIDER_KEY}-alpha",
            "models": ["gpt-4o-mini", "gpt-4o"],
            **fast_health(),
        }
    }
    usage = (
        {"enabled": True, "database": database, "prices": PRICES}
        if database
        else {"enabled": False}
    )
    return proxy_config(backends, usage=usage, **top)


@contextlib.contextmanager
def fresh_database(kind: str, tmp: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of an empty usage database: a SQLite file, or a PostgreSQL database."""
    if kind == "sqlite":
        yield sqlite_url(tmp / "usage.sqlite")
        return
    dsn: str = request.getfixturevalue("usage_postgres_dsn")
    with scratch_database(dsn, "e2e_usage") as url:
        yield url


def stored_bytes(database: str) -> bytes:
    """Everything the database holds for the usage table, as bytes to search."""
    if database.startswith("sqlite:///"):
        path = Path(database[len("sqlite:///") :])
        files = [path, path.with_name(path.name + "-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT t::text FROM usage_records t").fetchall()
    return "\n".join(row[0] for row in rows).encode()


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# -- the shared proxy and its traffic ---------------------------------------------------


@pytest.fixture(scope="module")
def gemini_fake() -> Iterator[FakeGemini]:
    fake = FakeGemini(name="gem", expected_api_key=f"{PROVIDER_KEY}-gem")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with fresh_database(request.param, tmp_path_factory.mktemp("usage-db"), request) as url:
        yield url


@pytest.fixture(scope="module")
def usage_proxy(
    tmp_path_factory: pytest.TempPathFactory,
    database: str,
    fake_a: FakeOpenAI,
    gemini_fake: FakeGemini,
) -> Iterator[ProxyProcess]:
    config = multi_user_config(database, fake_a, gemini_fake)
    with running_proxy(tmp_path_factory.mktemp("usage-proxy"), config) as proxy:
        yield proxy


def send_mix(proxy: ProxyProcess, fake: FakeOpenAI, gemini: FakeGemini) -> Traffic:
    traffic = Traffic(started=time.time())
    ids, seen = traffic.request_ids, traffic.client_usage

    one = openai_client(proxy, USER_ONE, **{"x-session-id": "s-alpha"})
    fake.queue_response(
        "from the cache",
        prompt_tokens=1000,
        completion_tokens=200,
        cached_tokens=400,
        reasoning_tokens=50,
    )
    raw = one.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=user("hi"))
    answer = raw.parse()
    assert answer.usage is not None
    ids["chat"] = raw.headers["x-request-id"]
    seen["chat"] = (answer.usage.prompt_tokens, answer.usage.completion_tokens)

    fake.queue_response("streamed", prompt_tokens=300, completion_tokens=100)
    raw_stream = one.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=user("stream it"),
        stream=True,
        stream_options={"include_usage": True},
    )
    [usage] = [c.usage for c in raw_stream.parse() if c.usage is not None]
    ids["chat_stream"] = raw_stream.headers["x-request-id"]
    seen["chat_stream"] = (usage.prompt_tokens, usage.completion_tokens)

    time.sleep(0.02)
    traffic.middle = time.time()
    time.sleep(0.02)

    claude = anthropic.Anthropic(
        base_url=proxy.anthropic_base_url,
        api_key=USER_TWO,
        max_retries=0,
        default_headers={"x-session-id": "s-beta"},
    )
    fake.queue_response(
        "from gpt-4o", prompt_tokens=2000, completion_tokens=500, cached_tokens=1000
    )
    raw_message = claude.messages.with_raw_response.create(
        model="openai:gpt-4o", max_tokens=256, messages=user("hello from claude")
    )
    message = raw_message.parse()
    ids["anthropic"] = raw_message.headers["x-request-id"]
    # Anthropic counts cache reads apart from input_tokens.
    read = message.usage.cache_read_input_tokens or 0
    seen["anthropic"] = (message.usage.input_tokens + read, message.usage.output_tokens)

    gem = genai.Client(
        api_key=USER_TWO,
        http_options=gtypes.HttpOptions(
            base_url=proxy.base_url, api_version="v1beta", headers={"x-session-id": "s-beta"}
        ),
    )
    gemini.queue_response(
        "from gemini",
        prompt_tokens=800,
        completion_tokens=100,
        cached_tokens=200,
        reasoning_tokens=60,
    )
    result = gem.models.generate_content(model="gem:gemini-2.5-flash", contents="hello gemini")
    assert result.sdk_http_response is not None and result.sdk_http_response.headers
    assert result.usage_metadata is not None
    ids["gemini"] = result.sdk_http_response.headers["x-request-id"]
    meta = result.usage_metadata
    seen["gemini"] = (
        meta.prompt_token_count or 0,
        (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0),
    )

    fake.set_fault(status=429, count=1, chat_only=True)
    with pytest.raises(openai.RateLimitError) as limited:
        openai_client(proxy, USER_ONE).chat.completions.create(
            model="gpt-4o-mini", messages=user("too fast")
        )
    ids["rate_limited"] = limited.value.response.headers["x-request-id"]
    seen["rate_limited"] = None

    # Not a known client key: refused before anything is routed; never recorded.
    with pytest.raises(openai.AuthenticationError) as refused:
        openai_client(proxy, "sk-fake-unknown-4444").chat.completions.create(
            model="gpt-4o-mini", messages=user("let me in")
        )
    traffic.rejected = refused.value.response.headers["x-request-id"]

    fake.queue_response("no usage asked", prompt_tokens=70, completion_tokens=30)
    raw_unpriced = openai_client(proxy, USER_TWO).chat.completions.with_raw_response.create(
        model="openai:o3-mini", messages=user("cheap?"), stream=True
    )
    chunks = list(raw_unpriced.parse())
    assert chunks and all(c.usage is None for c in chunks)
    ids["unpriced_stream"] = raw_unpriced.headers["x-request-id"]
    seen["unpriced_stream"] = None
    traffic.ended = time.time()
    assert len(set(ids.values()) | {traffic.rejected}) == len(EXPECTED) + 1
    return traffic


@pytest.fixture(scope="module")
def traffic(usage_proxy: ProxyProcess, fake_a: FakeOpenAI, gemini_fake: FakeGemini) -> Traffic:
    return send_mix(usage_proxy, fake_a, gemini_fake)


@pytest.fixture(scope="module")
def rows(usage_proxy: ProxyProcess, traffic: Traffic) -> dict[str, dict[str, Any]]:
    """The recorded row of each request of the mix, by name."""
    by_id = wait_rows(usage_proxy, traffic.request_ids.values())
    return {name: by_id[request_id] for name, request_id in traffic.request_ids.items()}


# -- /v1/usage/recent ----------------------------------------------------------------


def test_each_request_has_a_row_with_what_the_provider_reported(
    traffic: Traffic, rows: dict[str, dict[str, Any]]
) -> None:
    for name, expected in EXPECTED.items():
        row = rows[name]
        assert set(row) == ROW_FIELDS, name
        got = {k: row[k] for k in expected}
        cost = got.pop("cost_usd")
        want = dict(expected)
        want_cost = want.pop("cost_usd")
        assert got == want, name
        assert cost == (None if want_cost is None else pytest.approx(want_cost, rel=1e-12)), name
        assert row["request_id"] == traffic.request_ids[name]
        assert traffic.started <= row["time"] <= traffic.ended, name
        assert row["duration_ms"] > 0, name
        if row["streamed"]:
            assert 0 < row["ttft_ms"] <= row["duration_ms"], name
        else:
            assert row["ttft_ms"] is None, name
        told = traffic.client_usage[name]
        if told is not None:  # what the client was told is what was recorded
            assert told == (row["input_tokens"], row["output_tokens"]), name
    assert {n for n in EXPECTED if rows[n]["time"] < traffic.middle} == set(EARLY)


def test_a_refused_request_is_not_recorded(
    usage_proxy: ProxyProcess, traffic: Traffic, rows: dict[str, dict[str, Any]]
) -> None:
    # Records are written in order: the later requests' rows are there, so its would be.
    recent = usage_get(usage_proxy, "recent", limit="1000").json()["data"]
    assert len(recent) == len(EXPECTED)
    assert traffic.rejected not in {row["request_id"] for row in recent}


def test_keys_are_never_stored_only_their_ids(
    usage_proxy: ProxyProcess, database: str, rows: dict[str, dict[str, Any]]
) -> None:
    secrets = [USER_ONE, USER_TWO, ADMIN_KEY, "sk-fake-unknown-4444", PROVIDER_KEY]
    answer = usage_get(usage_proxy, "recent").text
    stored = stored_bytes(database)
    assert key_id(USER_ONE).encode() in stored  # the dump holds the rows
    for secret in secrets:
        assert secret not in answer
        assert secret.encode() not in stored
    assert {row["client_key_id"] for row in rows.values()} == {key_id(USER_ONE), key_id(USER_TWO)}


def test_recent_is_newest_first_with_a_limit(
    usage_proxy: ProxyProcess, rows: dict[str, dict[str, Any]]
) -> None:
    newest = sorted(rows.values(), key=lambda r: r["time"], reverse=True)
    answer = usage_get(usage_proxy, "recent", limit="2").json()
    assert answer["object"] == "usage.recent" and answer["limit"] == 2
    assert answer["data"] == newest[:2]
    filtered = usage_get(usage_proxy, "recent", session=BETA, frontend="gemini").json()
    assert filtered["filters"] == {
        "since": None,
        "until": None,
        "backend": None,
        "model": None,
        "client_key": None,
        "frontend": "gemini",
        "status": None,
        "session": BETA,
    }
    assert filtered["data"] == [rows["gemini"]]


# -- /v1/usage/stats -----------------------------------------------------------------

#: Filter parameters -> the requests of the mix they select. "MIDDLE" / "MIDDLE_ISO" are
#: replaced by the time between the EARLY requests and the others.
FILTER_CASES: list[tuple[dict[str, str], set[str]]] = [
    ({}, set(EXPECTED)),
    ({"backend": "gem"}, {"gemini"}),
    ({"backend": "openai"}, set(EXPECTED) - {"gemini"}),
    ({"backend": "nowhere"}, set()),
    ({"model": "gpt-4o-mini"}, {"chat", "chat_stream", "rate_limited"}),
    ({"model": "gpt-4o"}, {"anthropic"}),  # the model the backend was asked for
    ({"model": "openai:gpt-4o"}, {"anthropic"}),  # or the one the client named
    ({"client_key": key_id(USER_ONE)}, {"chat", "chat_stream", "rate_limited"}),
    ({"client_key": key_id(USER_TWO), "frontend": "openai-chat"}, {"unpriced_stream"}),
    ({"frontend": "anthropic"}, {"anthropic"}),
    ({"frontend": "gemini"}, {"gemini"}),
    ({"status": "429"}, {"rate_limited"}),
    ({"status": "4xx"}, {"rate_limited"}),
    ({"status": "2xx"}, set(EXPECTED) - {"rate_limited"}),
    ({"session": ALPHA}, {"chat", "chat_stream"}),
    ({"session": BETA, "backend": "openai"}, {"anthropic"}),
    ({"since": "MIDDLE"}, set(EXPECTED) - set(EARLY)),
    ({"until": "MIDDLE"}, set(EARLY)),
    ({"since": "MIDDLE_ISO", "status": "2xx"}, {"anthropic", "gemini", "unpriced_stream"}),
    ({"since": "1h"}, set(EXPECTED)),
    ({"until": "1h"}, set()),
]


def _resolve(params: dict[str, str], traffic: Traffic) -> dict[str, str]:
    iso = datetime.fromtimestamp(traffic.middle, UTC).isoformat()
    values = {"MIDDLE": repr(traffic.middle), "MIDDLE_ISO": iso}
    return {k: values.get(v, v) for k, v in params.items()}


@pytest.mark.parametrize(
    ("params", "selected"),
    FILTER_CASES,
    ids=["&".join(f"{k}={v}" for k, v in p.items()) or "all" for p, _ in FILTER_CASES],
)
def test_stats_with_filters(
    usage_proxy: ProxyProcess,
    traffic: Traffic,
    rows: dict[str, dict[str, Any]],
    params: dict[str, str],
    selected: set[str],
) -> None:
    query = _resolve(params, traffic)
    recent = usage_get(usage_proxy, "recent", **query)
    assert recent.status_code == 200, recent.text
    assert traffic.names(r["request_id"] for r in recent.json()["data"]) == selected
    answer = usage_get(usage_proxy, "stats", **query)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "usage.stats" and body["group_by"] == []
    [totals] = body["data"]
    assert set(totals) == STAT_FIELDS
    assert totals == aggregate([rows[n] for n in selected])


def test_stats_totals_and_cost_from_the_price_table(
    usage_proxy: ProxyProcess, rows: dict[str, dict[str, Any]]
) -> None:
    [totals] = usage_get(usage_proxy, "stats").json()["data"]
    # By hand: see EXPECTED.
    assert totals["requests"] == 6
    assert totals["errors"] == 1
    assert totals["input_tokens"] == 1000 + 300 + 2000 + 800 + 70
    assert totals["output_tokens"] == 200 + 100 + 500 + 160 + 30
    assert totals["cached_input_tokens"] == 400 + 1000 + 200
    assert totals["reasoning_tokens"] == 50 + 60
    assert totals["cost_usd"] == pytest.approx(240e-6 + 105e-6 + 0.01 + 1290e-6, rel=1e-12)
    assert totals["unpriced_requests"] == 1
    streams = [rows["chat_stream"]["ttft_ms"], rows["unpriced_stream"]["ttft_ms"]]
    assert totals["ttft_ms_avg"] == pytest.approx(sum(streams) / 2, rel=1e-9)


def test_stats_grouped(usage_proxy: ProxyProcess, rows: dict[str, dict[str, Any]]) -> None:
    def groups(**params: str) -> list[dict[str, Any]]:
        answer = usage_get(usage_proxy, "stats", **params)
        assert answer.status_code == 200, answer.text
        data: list[dict[str, Any]] = answer.json()["data"]
        return data

    def expect(fields: dict[str, Any], names: set[str]) -> dict[str, Any]:
        return {**fields, **aggregate([rows[n] for n in names])}

    one, two = sorted([key_id(USER_ONE), key_id(USER_TWO)])
    by_key = {key_id(USER_ONE): {"chat", "chat_stream", "rate_limited"}}
    by_key[key_id(USER_TWO)] = {"anthropic", "gemini", "unpriced_stream"}
    # Most requests first; ties in ascending order of the group values.
    assert groups(group_by="client_key") == [
        expect({"client_key_id": one}, by_key[one]),
        expect({"client_key_id": two}, by_key[two]),
    ]
    assert groups(group_by="session") == [
        expect({"session_id": None}, {"rate_limited", "unpriced_stream"}),
        *sorted(
            [
                expect({"session_id": ALPHA}, {"chat", "chat_stream"}),
                expect({"session_id": BETA}, {"anthropic", "gemini"}),
            ],
            key=lambda group: str(group["session_id"]),
        ),
    ]
    assert groups(group_by="model,backend") == [
        expect(
            {"model": "gpt-4o-mini", "backend_instance": "openai"},
            {"chat", "chat_stream", "rate_limited"},
        ),
        expect({"model": "gemini-2.5-flash", "backend_instance": "gem"}, {"gemini"}),
        expect({"model": "gpt-4o", "backend_instance": "openai"}, {"anthropic"}),
        expect({"model": "o3-mini", "backend_instance": "openai"}, {"unpriced_stream"}),
    ]
    assert groups(group_by="frontend", status="2xx", limit="2") == [
        expect({"frontend": "openai-chat"}, {"chat", "chat_stream", "unpriced_stream"}),
        expect({"frontend": "anthropic"}, {"anthropic"}),
    ]
    echo = usage_get(usage_proxy, "stats", group_by="backend,client_key").json()
    assert echo["group_by"] == ["backend_instance", "client_key_id"]


@pytest.mark.parametrize(
    ("endpoint", "params", "param", "code"),
    [
        ("stats", {"group_by": "price"}, "group_by", "invalid_parameter"),
        ("stats", {"status": "teapot"}, "status", "invalid_parameter"),
        ("stats", {"since": "yesterday"}, "since", "invalid_parameter"),
        ("stats", {"since": "1h", "until": "2h"}, "since", "invalid_parameter"),
        ("recent", {"limit": "0"}, "limit", "invalid_parameter"),
        ("recent", {"group_by": "model"}, "group_by", "unknown_parameter"),
        ("recent", {"colour": "blue"}, "colour", "unknown_parameter"),
    ],
)
def test_bad_parameters_are_openai_shaped_400s(
    usage_proxy: ProxyProcess, endpoint: str, params: dict[str, str], param: str, code: str
) -> None:
    answer = usage_get(usage_proxy, endpoint, **params)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert error["message"]


# -- who may ask --------------------------------------------------------------------


def test_only_an_admin_key_reads_usage(usage_proxy: ProxyProcess) -> None:
    for endpoint in ("stats", "recent"):
        for key in (None, USER_ONE, "sk-fake-unknown-4444"):
            answer = usage_get(usage_proxy, endpoint, key=key)
            assert answer.status_code == 401, (endpoint, key)
            assert answer.json() == {
                "error": {
                    "message": "this endpoint needs an admin key (admin_keys in the proxy config)",
                    "type": "authentication_error",
                    "param": None,
                    "code": "invalid_admin_key",
                }
            }
        assert usage_get(usage_proxy, endpoint).status_code == 200
    # Any header an SDK puts its key in.
    other = httpx.get(
        f"{usage_proxy.base_url}/v1/usage/stats", headers={"x-api-key": ADMIN_KEY}, timeout=10
    )
    assert other.status_code == 200, other.text


def test_a_non_ascii_key_is_refused_not_an_internal_error(usage_proxy: ProxyProcess) -> None:
    answer = httpx.get(
        f"{usage_proxy.base_url}/v1/usage/stats",
        headers={b"authorization": "Bearer sk-fake-\u00e9t\u00e9".encode()},
        timeout=10,
    )
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "invalid_admin_key"


def test_usage_off_answers_404_usage_disabled(tmp_path: Path, fake_a: FakeOpenAI) -> None:
    with running_proxy(tmp_path, single_user_config(None, fake_a)) as proxy:
        answer = openai_client(proxy, CLIENT_KEY).chat.completions.create(
            model="gpt-4o-mini", messages=user("still served")
        )
        assert answer.choices[0].message.content == "alpha says hello to gpt-4o-mini"
        for endpoint in ("stats", "recent"):
            response = usage_get(proxy, endpoint, key=None)
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/json"
            error = response.json()["error"]
            assert (error["type"], error["param"], error["code"]) == (
                "invalid_request_error",
                None,
                "usage_disabled",
            )
            assert "usage: {enabled: true}" in error["message"]


# -- replicas ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_two_replicas_share_one_database(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fake_a: FakeOpenAI,
    gemini_fake: FakeGemini,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        fresh_database(kind, tmp_path, request) as url,
        running_proxy(tmp_path / "a", multi_user_config(url, fake_a, gemini_fake)) as a,
        running_proxy(tmp_path / "b", multi_user_config(url, fake_a, gemini_fake)) as b,
    ):
        sent: dict[str, tuple[str, int, int]] = {}  # request id -> session, tokens
        for proxy, session, count in ((a, "replica-a", 1), (b, "replica-b", 2)):
            client = openai_client(proxy, USER_ONE, **{"x-session-id": session})
            for _ in range(count):
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=user(f"hello {session}")
                )
                usage = raw.parse().usage
                assert usage is not None
                sent[raw.headers["x-request-id"]] = (
                    session,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                )
        for proxy in (a, b):
            by_id = wait_rows(proxy, sent)
            assert {i: by_id[i]["session_id"] for i in sent} == {
                i: a_leg(USER_ONE, s[0]) for i, s in sent.items()
            }
            groups = usage_get(proxy, "stats", group_by="session").json()["data"]
            assert [(g["session_id"], g["requests"], g["input_tokens"]) for g in groups] == [
                (
                    a_leg(USER_ONE, session),
                    len([s for s in sent.values() if s[0] == session]),
                    sum(s[1] for s in sent.values() if s[0] == session),
                )
                for session in ("replica-b", "replica-a")
            ]


# -- the access log ---------------------------------------------------------------------

ACCESS_LOG = {"log_level": "error", "concurrency": 2, "access_log": True}


def access_log_lines(log: str) -> dict[str, dict[str, Any]]:
    """Envoy's JSON access-log lines in a proxy log, by request id."""
    lines: dict[str, dict[str, Any]] = {}
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            lines[entry["request_id"]] = entry
    return lines


@dataclass(frozen=True)
class Logged:
    """A proxy with the access log on, after a few requests; stopped (its log flushed)."""

    proxy: ProxyProcess
    database: str
    #: name -> request id
    ids: dict[str, str]

    def line(self, name: str) -> dict[str, Any]:
        return access_log_lines(self.proxy.log())[self.ids[name]]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory, fake_a: FakeOpenAI) -> Logged:
    tmp = tmp_path_factory.mktemp("access-log")
    database = sqlite_url(tmp / "usage.sqlite")
    config = single_user_config(database, fake_a, envoy=ACCESS_LOG, admin_keys=[ADMIN_KEY])
    proxy = start_proxy(tmp, config)
    ids: dict[str, str] = {}
    try:
        client = openai_client(proxy, CLIENT_KEY, **{"x-session-id": "s-log"})
        fake_a.queue_response(
            "logged",
            prompt_tokens=1000,
            completion_tokens=200,
            cached_tokens=400,
            reasoning_tokens=50,
        )
        plain = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=user("log me")
        )
        plain.parse()
        ids["plain"] = plain.headers["x-request-id"]
        fake_a.queue_response("logged stream", prompt_tokens=300, completion_tokens=100)
        streamed = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=user("log my stream"), stream=True
        )
        list(streamed.parse())
        ids["stream"] = streamed.headers["x-request-id"]
        # A Gemini client with its key in the URL (stripped before the request goes on).
        gemini = httpx.post(
            f"{proxy.base_url}/v1beta/models/openai:gpt-4o-mini:generateContent?key={URL_KEY}",
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            timeout=10,
        )
        assert gemini.status_code == 200, gemini.text
        ids["gemini"] = gemini.headers["x-request-id"]
        # The proxy's own error answer.
        lost = httpx.post(
            f"{proxy.openai_base_url}/chat/completions",
            json={"model": "nowhere:x", "messages": user("where?")},
            headers={"x-session-id": "s-lost"},
            timeout=10,
        )
        assert lost.json()["error"]["code"] == "backend_not_found"
        ids["lost"] = lost.headers["x-request-id"]
        # Keys in the URL of requests the proxy answers itself.
        stats = httpx.get(f"{proxy.base_url}/v1/usage/stats?key={ADMIN_KEY}", timeout=10)
        assert stats.status_code == 200, stats.text
        ids["stats"] = stats.headers["x-request-id"]
        models = httpx.get(f"{proxy.base_url}/v1beta/models?key={URL_KEY}", timeout=10)
        assert models.status_code == 200, models.text
        ids["models"] = models.headers["x-request-id"]
        # A stream the provider breaks off with an error event.
        fake_a.set_fault(midstream_error=2, count=1, chat_only=True)
        broken = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=user("break"), stream=True
        )
        with pytest.raises(openai.APIError):
            list(broken.parse())
        ids["broken"] = broken.headers["x-request-id"]
    finally:
        assert proxy.stop() == 0  # Envoy flushes its access log when it stops
    return Logged(proxy, database, ids)


def test_access_log_has_tokens_and_cost_per_request(logged: Logged) -> None:
    common = {
        "frontend": "openai-chat",
        "backend": "openai",
        "model": "gpt-4o-mini",
        "session": a_leg_id("local", "s-log"),
        "finish_reason": "stop",
        "status": 200,
        "method": "POST",
        "path": "/v1/chat/completions",
        "cluster": "instance/openai",
    }
    first = logged.line("plain")
    assert {k: first[k] for k in common} == common
    assert (
        first["input_tokens"],
        first["output_tokens"],
        first["cached_input_tokens"],
        first["reasoning_tokens"],
    ) == (1000, 200, 400, 50)
    assert first["cost_usd"] == pytest.approx(240e-6, rel=1e-12)
    assert first["ttft_ms"] is None
    second = logged.line("stream")
    assert {k: second[k] for k in common} == common
    assert (second["input_tokens"], second["output_tokens"]) == (300, 100)
    assert second["cost_usd"] == pytest.approx(105e-6, rel=1e-12)
    assert second["ttft_ms"] > 0
    third = logged.line("gemini")
    assert (third["frontend"], third["backend"], third["model"]) == (
        "gemini",
        "openai",
        "gpt-4o-mini",
    )
    assert third["path"] == "/v1/chat/completions"  # the path as sent upstream
    assert (logged.line("lost")["status"], logged.line("lost")["details"]) == (
        404,
        "llm_proxy_backend_not_found",
    )


def test_no_key_in_the_database_nor_the_log(logged: Logged) -> None:
    stored = stored_bytes(logged.database)
    assert key_id(URL_KEY).encode() in stored  # the Gemini client's key, by its id
    log = logged.proxy.log()
    for secret in (CLIENT_KEY, PROVIDER_KEY, URL_KEY, ADMIN_KEY):
        assert secret.encode() not in stored
        assert secret not in log


def test_access_log_paths_have_no_query(logged: Logged) -> None:
    # Keys in the URL of requests the proxy answered itself, from their headers.
    assert logged.line("stats")["path"] == "/v1/usage/stats"
    assert logged.line("models")["path"] == "/v1beta/models"


def test_access_log_names_frontend_and_model_of_the_proxys_own_errors(logged: Logged) -> None:
    line = logged.line("lost")
    assert (line["frontend"], line["model"], line["session"]) == (
        "openai-chat",
        "nowhere:x",
        a_leg_id("local", "s-lost"),
    )


def stored_row(database: str, request_id: str) -> dict[str, Any]:
    """A record read straight from a SQLite usage database."""
    path = database[len("sqlite:///") :]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute(
            "SELECT * FROM usage_records WHERE request_id = ?", (request_id,)
        ).fetchone()
    assert row is not None, request_id
    return dict(row)


def test_a_stream_broken_by_the_provider_is_not_recorded_as_a_success(logged: Logged) -> None:
    row = stored_row(logged.database, logged.ids["broken"])
    assert (row["status"], row["streamed"]) == (200, 1)  # the client had its 200 already
    assert row["error_code"] is not None


def test_access_log_lines_appear_while_the_proxy_runs(tmp_path: Path, fake_a: FakeOpenAI) -> None:
    config = single_user_config(None, fake_a, envoy=ACCESS_LOG)
    with running_proxy(tmp_path, config) as proxy:
        client = openai_client(proxy, CLIENT_KEY)
        ids = []
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=user("now")
            )
            ids.append(raw.headers["x-request-id"])
        # Envoy writes its log out every second (--file-flush-interval-msec), not every 10 s.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and not set(ids) <= access_log_lines(proxy.log()).keys():
            time.sleep(0.05)
        assert set(ids) <= access_log_lines(proxy.log()).keys()


# -- persistence ------------------------------------------------------------------------


def test_rows_survive_a_restart(tmp_path: Path, fake_a: FakeOpenAI) -> None:
    url = sqlite_url(tmp_path / "usage.sqlite")

    def ask(proxy: ProxyProcess) -> str:
        raw = openai_client(proxy, CLIENT_KEY).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=user("remember me")
        )
        raw.parse()
        return str(raw.headers["x-request-id"])

    first = start_proxy(tmp_path, single_user_config(url, fake_a), name="first")
    try:
        written = ask(first)
        before = wait_rows(first, [written], key=None)[written]
        # Queued, perhaps not yet written, when the proxy is told to stop: written at exit.
        queued = ask(first)
    finally:
        assert first.stop() == 0
    second = start_proxy(tmp_path, single_user_config(url, fake_a), name="second")
    try:
        rows = wait_rows(second, [written, queued], key=None)
        assert rows[written] == before
        assert rows[queued]["status"] == 200 and rows[queued]["input_tokens"] > 0
        third = ask(second)
        assert len(wait_rows(second, [third], key=None)) == 3
    finally:
        second.stop()
