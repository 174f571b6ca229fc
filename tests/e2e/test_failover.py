"""Failover through Envoy: a pool of two OpenAI-compatible backends at priority 0 and 1."""

from __future__ import annotations

import time

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import CLIENT_KEY, PROVIDER_KEY, ProxyProcess, wait_for

POOL = "pool/smart"
MESSAGES = [{"role": "user", "content": "hello"}]


def client(proxy: ProxyProcess) -> openai.OpenAI:
    # No SDK retries: every success here is Envoy's failover, not the client's.
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)


def ask(proxy: ProxyProcess, stream: bool = False, model: str = "smart") -> str:
    c = client(proxy)
    if stream:
        chunks = c.chat.completions.create(model=model, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    answer = c.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    return answer.choices[0].message.content or ""


# The two pools: "smart" is encoded per attempt (different models), "twin"
# once by the ROUTER role (same model, two accounts).
SECOND = {"smart": "beta says hello to gpt-4o-mini", "twin": "beta says hello to gpt-4o"}


def address(fake: FakeOpenAI) -> str:
    return f"127.0.0.1:{fake.port}"


def wait_health(proxy: ProxyProcess, fake: FakeOpenAI, healthy: bool) -> None:
    def check() -> bool:
        state = proxy.host_health(POOL).get(address(fake), "")
        return (state == "healthy") == healthy

    wait_for(check, 15, what=f"{fake.name} {'healthy' if healthy else 'unhealthy'} in Envoy")
    # Envoy merges health changes for up to 1 s (common_lb_config's
    # update_merge_window) before load balancers see them.
    time.sleep(1.2)


def test_first_target_answers(proxy: ProxyProcess, fake_a: FakeOpenAI, fake_b: FakeOpenAI) -> None:
    assert ask(proxy) == "alpha says hello to gpt-4o"
    assert len(fake_b.chat_requests()) == 0


def assert_second_got_its_own_request(fake_b: FakeOpenAI, model: str) -> None:
    [sent] = fake_b.chat_requests()
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}-beta"
    # Envoy shares one header map between attempts: nothing of the first
    # account (key, organization) may reach the second.
    assert "openai-organization" not in sent.headers
    assert "alpha" not in str(sent.headers)
    assert sent.json is not None
    assert sent.json["model"] == ("gpt-4o-mini" if model == "smart" else "gpt-4o")
    assert not any(name.startswith("x-llm-") for name in sent.headers)


@pytest.mark.parametrize("model", ["smart", "twin"])
def test_503_fails_over_to_second(
    proxy: ProxyProcess, fake_a: FakeOpenAI, fake_b: FakeOpenAI, model: str
) -> None:
    fake_a.set_fault(status=503, count=1, chat_only=True)
    assert ask(proxy, model=model) == SECOND[model]
    [first] = fake_a.chat_requests()
    assert first.headers["authorization"] == f"Bearer {PROVIDER_KEY}-alpha"
    assert first.headers["openai-organization"] == "org-fake-alpha"
    assert_second_got_its_own_request(fake_b, model)


@pytest.mark.parametrize("model", ["smart", "twin"])
def test_429_fails_over_to_second(
    proxy: ProxyProcess, fake_a: FakeOpenAI, fake_b: FakeOpenAI, model: str
) -> None:
    fake_a.set_fault(status=429, count=1, chat_only=True)
    assert ask(proxy, model=model) == SECOND[model]
    assert_second_got_its_own_request(fake_b, model)


@pytest.mark.parametrize("model", ["smart", "twin"])
def test_503_fails_over_for_streams_too(
    proxy: ProxyProcess, fake_a: FakeOpenAI, fake_b: FakeOpenAI, model: str
) -> None:
    fake_a.set_fault(status=503, count=1, chat_only=True)
    assert ask(proxy, stream=True, model=model) == SECOND[model]
    assert_second_got_its_own_request(fake_b, model)
    assert fake_b.chat_requests()[0].json["stream"] is True  # type: ignore[index]


@pytest.mark.parametrize("model", ["smart", "twin"])
def test_connection_reset_fails_over(
    proxy: ProxyProcess, fake_a: FakeOpenAI, fake_b: FakeOpenAI, model: str
) -> None:
    fake_a.set_fault(reset=True, count=1, chat_only=True)
    assert ask(proxy, model=model) == SECOND[model]
    assert len(fake_a.chat_requests()) == 1
    assert_second_got_its_own_request(fake_b, model)


def test_refused_connection_fails_over_and_health_checks_follow(
    proxy: ProxyProcess, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.set_fault(refuse=True)
    try:
        assert ask(proxy) == "beta says hello to gpt-4o-mini"
        wait_health(proxy, fake_a, healthy=False)
        assert [ask(proxy) for _ in range(5)] == ["beta says hello to gpt-4o-mini"] * 5
    finally:
        fake_a.clear_faults()
    wait_health(proxy, fake_a, healthy=True)
    assert ask(proxy) == "alpha says hello to gpt-4o"


def test_down_backend_is_taken_out_then_used_again(
    proxy: ProxyProcess, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    # Down for everything, health checks included.
    fake_a.set_fault(status=503)
    wait_health(proxy, fake_a, healthy=False)
    before = len(fake_a.chat_requests())
    answers = [ask(proxy) for _ in range(10)]
    assert answers == ["beta says hello to gpt-4o-mini"] * 10
    # Straight to the second: the first saw no generation attempt at all.
    assert len(fake_a.chat_requests()) == before
    fake_a.clear_faults()
    wait_health(proxy, fake_a, healthy=True)
    assert [ask(proxy) for _ in range(3)] == ["alpha says hello to gpt-4o"] * 3
    assert len(fake_b.chat_requests()) == 10


def test_both_down_gives_a_clear_error(
    proxy: ProxyProcess, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.set_fault(status=503, chat_only=True)
    fake_b.set_fault(status=503, chat_only=True)
    try:
        client(proxy).chat.completions.create(model="smart", messages=MESSAGES)  # type: ignore[arg-type]
    except openai.APIStatusError as exc:
        assert exc.status_code == 503
        body = exc.response.json()
        assert set(body["error"]) >= {"message", "type", "code"}
    else:
        raise AssertionError("expected a 503")
