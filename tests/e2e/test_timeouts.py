"""A provider that stops sending: the client gets an error, never a silent hang."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import two_backends
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import CLIENT_KEY, ProxyProcess, running_proxy

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> Iterator[ProxyProcess]:
    config = two_backends(fake_a, fake_b, timeouts={"stream_idle": "1s"})
    with running_proxy(tmp_path_factory.mktemp("timeouts"), config) as running:
        yield running


def test_silent_provider_gets_a_504_in_openai_shape(
    proxy: ProxyProcess, fake_b: FakeOpenAI
) -> None:
    fake_b.set_fault(delay=5, chat_only=True)
    started = time.monotonic()
    response = httpx.post(
        f"{proxy.openai_base_url}/chat/completions",
        json={"model": "openai.1:gpt-4o", "messages": USER},
        timeout=10,
    )
    assert time.monotonic() - started < 4
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_stalled_stream_ends_with_an_error_not_a_hang(
    proxy: ProxyProcess, fake_b: FakeOpenAI
) -> None:
    fake_b.set_fault(stall_after=3)
    client = openai.OpenAI(
        base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0, timeout=10
    )
    started = time.monotonic()
    received = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in client.chat.completions.create(
            model="openai.1:gpt-4o",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
        ):
            received.append(chunk)
    assert time.monotonic() - started < 5
    assert received  # the stream had started before it stalled
