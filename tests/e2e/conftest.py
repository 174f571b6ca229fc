"""Fixtures for end-to-end tests: real Envoy + extproc, fake providers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.responses_upstream import FakeResponses
from tests.harness import (
    CLIENT_KEY,
    PROVIDER_KEY,
    ProxyProcess,
    fast_health,
    proxy_config,
    running_proxy,
)
from tests.observe.postgres import usage_postgres_dsn  # noqa: F401 (a shared session fixture)
from tests.redis_server import redis_server  # noqa: F401 (a real redis-server per test)


def running_fake(name: str, **options: Any) -> Iterator[FakeOpenAI]:
    """A started fake OpenAI provider named ``name`` (its answers say so), stopped after."""
    fake = FakeOpenAI(name=name, **options)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def fake_a() -> Iterator[FakeOpenAI]:
    yield from running_fake("alpha", expected_api_key=f"{PROVIDER_KEY}-alpha")


@pytest.fixture(scope="module")
def fake_b() -> Iterator[FakeOpenAI]:
    yield from running_fake("beta", expected_api_key=f"{PROVIDER_KEY}-beta")


def reactivate_all(proxy: ProxyProcess) -> None:
    """End every disable and cool-down the proxy's health board holds (test isolation)."""
    base = proxy.openai_base_url
    with httpx.Client(timeout=5, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as client:
        report = client.get(f"{base}/diagnostics")
        if report.status_code != 200:
            return  # an admin key is needed: such tests manage their own proxy
        for instance, state in report.json()["instances"].items():
            if state["proxy"]["state"] != "ok":
                client.post(f"{base}/diagnostics/backends/{instance}/reactivate")


@pytest.fixture(autouse=True)
def _reset_fakes(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in request.fixturenames:
        try:
            value = request.getfixturevalue(name)
        except Exception:  # a parametrize argument, not a fixture
            continue
        proxy = getattr(value, "proxy", value)  # a fixture bundling a proxy with more
        if isinstance(proxy, ProxyProcess) and proxy.proc.poll() is None:
            reactivate_all(proxy)
    for name in ("fake_a", "fake_b"):
        if name in request.fixturenames:
            fake: FakeOpenAI = request.getfixturevalue(name)
            fake.clear_faults()
            fake.clear_responses()
            fake.clear_requests()


def two_backends(fake_a: FakeOpenAI, fake_b: FakeOpenAI, **top: object) -> dict[str, object]:
    """The standard e2e config: two OpenAI-compatible accounts and a failover pool."""
    backends = {
        "openai": {
            "type": "openai",
            "base_url": fake_a.base_url,
            "api_key": f"{PROVIDER_KEY}-alpha",
            "models": ["gpt-4o-mini", "gpt-4o"],
            # Account-specific: must never follow a retry to another account.
            "headers": {"OpenAI-Organization": "org-fake-alpha"},
            **fast_health(),
        },
        "openai.1": {
            "type": "openai",
            "base_url": fake_b.base_url,
            "api_key": f"{PROVIDER_KEY}-beta",
            **fast_health(),
        },
    }
    config = proxy_config(
        backends,
        models={
            # Different models: the UPSTREAM role encodes per attempt.
            "smart": {"failover": ["openai:gpt-4o", "openai.1:gpt-4o-mini"]},
            # Same model on two accounts: encoded once, per-host credentials.
            "twin": {"failover": ["openai:gpt-4o", "openai.1:gpt-4o"]},
        },
        default_backend="openai:gpt-4o-mini",
    )
    config.update(top)
    return config


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> Iterator[ProxyProcess]:
    tmp: Path = tmp_path_factory.mktemp("proxy")
    with running_proxy(tmp, two_backends(fake_a, fake_b)) as running:
        yield running


# -- a provider of every schema (the translation tests) -----------------------------

#: backend schema -> (instance name, backend type)
BACKENDS = {
    "openai-chat": ("chat", "openai-compatible"),
    "openai-responses": ("resp", "openai-responses"),
    "anthropic": ("claude", "anthropic"),
    "gemini": ("gem", "gemini"),
}


@pytest.fixture(scope="module")
def schema_fakes() -> Iterator[dict[str, Any]]:
    started: dict[str, Any] = {
        "openai-chat": FakeOpenAI(name="chat", expected_api_key=f"{PROVIDER_KEY}-chat"),
        "openai-responses": FakeResponses(name="resp", expected_api_key=f"{PROVIDER_KEY}-resp"),
        "anthropic": FakeAnthropic(name="claude", expected_api_key=f"{PROVIDER_KEY}-claude"),
        "gemini": FakeGemini(name="gem", expected_api_key=f"{PROVIDER_KEY}-gem"),
    }
    for fake in started.values():
        fake.start()
    try:
        yield started
    finally:
        for fake in started.values():
            fake.stop()


@pytest.fixture(scope="module")
def translation_proxy(
    tmp_path_factory: pytest.TempPathFactory, schema_fakes: dict[str, Any]
) -> Iterator[ProxyProcess]:
    """One proxy with a backend of every schema (instances chat, resp, claude, gem)."""
    backends = {
        instance: {
            "type": kind,
            "base_url": schema_fakes[schema].base_url,
            "api_key": f"{PROVIDER_KEY}-{instance}",
            **fast_health(),
        }
        for schema, (instance, kind) in BACKENDS.items()
    }
    with running_proxy(tmp_path_factory.mktemp("matrix"), proxy_config(backends)) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset_schema_fakes(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "schema_fakes" not in request.fixturenames:
        return
    for fake in request.getfixturevalue("schema_fakes").values():
        fake.clear_faults()
        fake.clear_responses()
        fake.clear_requests()
