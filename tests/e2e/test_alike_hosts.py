"""A failover pool whose hosts all get the same request (replicas sharing one credential):
the ROUTER role sets the host headers itself and Envoy skips the UPSTREAM role's stream on
the first attempt. Real Envoy, real extproc, two fake providers expecting the same key."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import running_fake
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import (
    CLIENT_KEY,
    PROVIDER_KEY,
    ProxyProcess,
    fast_health,
    proxy_config,
    running_proxy,
)

SHARED_KEY = f"{PROVIDER_KEY}-shared"
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def one() -> Iterator[FakeOpenAI]:
    yield from running_fake("one", expected_api_key=SHARED_KEY)


@pytest.fixture(scope="module")
def two() -> Iterator[FakeOpenAI]:
    yield from running_fake("two", expected_api_key=SHARED_KEY)


@pytest.fixture(scope="module")
def other() -> Iterator[FakeOpenAI]:
    yield from running_fake("other", expected_api_key=f"{PROVIDER_KEY}-other")


@pytest.fixture(autouse=True)
def _clean(one: FakeOpenAI, two: FakeOpenAI, other: FakeOpenAI) -> Iterator[None]:
    yield
    for fake in (one, two, other):
        fake.clear_faults()
        fake.clear_requests()


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, one: FakeOpenAI, two: FakeOpenAI, other: FakeOpenAI
) -> Iterator[ProxyProcess]:
    def backend(fake: FakeOpenAI, key: str) -> dict[str, object]:
        return {
            "type": "openai",
            "base_url": fake.base_url,
            "api_key": key,
            "models": ["gpt-4o"],
            **fast_health(),
        }

    config = proxy_config(
        {
            "openai": backend(one, SHARED_KEY),
            "openai.1": backend(two, SHARED_KEY),
            "openai.2": backend(other, f"{PROVIDER_KEY}-other"),
        },
        models={
            "replicas": {"failover": ["openai:gpt-4o", "openai.1:gpt-4o"]},
            "accounts": {"failover": ["openai:gpt-4o", "openai.2:gpt-4o"]},
        },
        default_backend="openai:gpt-4o",
    )
    tmp: Path = tmp_path_factory.mktemp("alike")
    with running_proxy(tmp, config) as running:
        yield running


def ask(proxy: ProxyProcess, model: str, headers: dict[str, str] | None = None) -> str:
    client = openai.OpenAI(
        base_url=proxy.openai_base_url,
        api_key=CLIENT_KEY,
        max_retries=0,
        default_headers=headers,
    )
    answer = client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    return answer.choices[0].message.content or ""


def streams_started(proxy: ProxyProcess) -> int:
    """Every ext_proc stream Envoy opened (ROUTER and UPSTREAM filters together)."""
    total = 0
    for line in proxy.admin("/stats?filter=ext_proc.streams_started").splitlines():
        name, _, value = line.partition(": ")
        if name.endswith("ext_proc.streams_started"):
            total += int(value)
    return total


def assert_clean(sent_headers: dict[str, str], key: str) -> None:
    assert sent_headers["authorization"] == f"Bearer {key}"
    assert sent_headers["accept-encoding"] == "identity"
    assert not any(name.startswith("x-llm-") for name in sent_headers)
    assert CLIENT_KEY not in str(sent_headers)


def test_replicas_cost_one_stream_per_request(
    proxy: ProxyProcess, one: FakeOpenAI, two: FakeOpenAI
) -> None:
    before = streams_started(proxy)
    for _ in range(5):
        assert ask(proxy, "replicas") == "one says hello to gpt-4o"
    assert streams_started(proxy) - before == 5  # the ROUTER role's only
    sent = one.chat_requests()
    assert len(sent) == 5 and not two.chat_requests()
    for request in sent:
        assert_clean(request.headers, SHARED_KEY)


def attempts(proxy: ProxyProcess) -> dict[tuple[str, str], float]:
    """``llm_proxy_upstream_attempts_total`` by (backend, outcome)."""
    found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", proxy.log())
    assert found is not None, "the proxy logs its metrics port"
    text = httpx.get(f"http://127.0.0.1:{found.group(1)}/metrics", timeout=5).text
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "llm_proxy_upstream_attempts_total":
                out[(sample.labels["backend"], sample.labels["outcome"])] = sample.value
    return out


def test_a_failover_among_replicas_keeps_the_credential_and_drops_the_mark(
    proxy: ProxyProcess, one: FakeOpenAI, two: FakeOpenAI
) -> None:
    before = attempts(proxy)
    one.set_fault(status=503, count=1, chat_only=True)
    assert ask(proxy, "replicas") == "two says hello to gpt-4o"
    after = attempts(proxy)

    def moved(backend: str, outcome: str) -> float:
        return after.get((backend, outcome), 0) - before.get((backend, outcome), 0)

    # The retried first attempt had no UPSTREAM role: counted, never as the retry's host.
    assert moved("", "retried") == 1
    assert moved("openai.1", "retried") == 0
    assert moved("openai.1", "ok") == 1
    [first] = one.chat_requests()
    [second] = two.chat_requests()
    assert_clean(first.headers, SHARED_KEY)
    assert_clean(second.headers, SHARED_KEY)
    assert second.json is not None and second.json["model"] == "gpt-4o"


def test_accounts_with_their_own_keys_still_get_the_upstream_role(
    proxy: ProxyProcess, one: FakeOpenAI, other: FakeOpenAI
) -> None:
    before = streams_started(proxy)
    assert ask(proxy, "accounts") == "one says hello to gpt-4o"
    assert streams_started(proxy) - before == 2  # ROUTER + UPSTREAM (the chosen key)
    one.set_fault(status=503, count=1, chat_only=True)
    assert ask(proxy, "accounts") == "other says hello to gpt-4o"
    [retried] = other.chat_requests()
    # The first account's key never follows a retry to the other account.
    assert_clean(retried.headers, f"{PROVIDER_KEY}-other")
    assert SHARED_KEY not in str(retried.headers)


def test_a_client_cannot_send_the_mark(
    proxy: ProxyProcess, one: FakeOpenAI, other: FakeOpenAI
) -> None:
    # Internal headers from clients are dropped on arrival: the mark would otherwise skip
    # the role that sets the chosen account's key.
    before = streams_started(proxy)
    assert ask(proxy, "accounts", {"x-llm-hosts-alike": "1"}) == "one says hello to gpt-4o"
    assert streams_started(proxy) - before == 2
    [sent] = one.chat_requests()
    assert_clean(sent.headers, SHARED_KEY)
