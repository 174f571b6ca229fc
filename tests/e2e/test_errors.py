"""Bad input and provider faults: OpenAI-shaped errors with the right status."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import two_backends
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import CLIENT_KEY, PROVIDER_KEY, ProxyProcess, running_proxy

LIMIT = 64 * 1024
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> Iterator[ProxyProcess]:
    config = two_backends(fake_a, fake_b, limits={"max_request_bytes": LIMIT})
    with running_proxy(tmp_path_factory.mktemp("errors"), config) as running:
        yield running


def client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)


def post(proxy: ProxyProcess, body: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(
        proxy.base_url + path,
        content=body,
        headers={"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}"},
        timeout=10,
    )


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    assert PROVIDER_KEY not in response.text


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, None),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "missing_model"),
        (b'{"model": 42, "messages": []}', 400, None),
        (b'{"model": "gpt-4o"}', 400, "invalid_messages"),
        (b'{"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]}', 400, None),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], '
            b'"temperature": "hot"}',
            400,
            None,
        ),
        (
            b'{"model": "nowhere:gpt-4o", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "backend_not_found",
        ),
        (
            b'{"model": "openai.7:gpt-4o", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "backend_not_found",
        ),
        (
            b'{"model": "a|b^c", "messages": [{"role": "user", "content": "x"}]}',
            400,
            "invalid_model",
        ),
    ],
)
def test_bad_requests(
    proxy: ProxyProcess, fake_a: FakeOpenAI, body: bytes, status: int, code: str | None
) -> None:
    assert_openai_error(post(proxy, body), status, code)
    assert fake_a.chat_requests() == []


def test_sdk_sees_typed_errors(proxy: ProxyProcess) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client(proxy).chat.completions.create(model="nowhere:gpt-4o", messages=USER)  # type: ignore[arg-type]
    assert not_found.value.code == "backend_not_found"
    with pytest.raises(openai.BadRequestError):
        client(proxy).chat.completions.create(model="gpt-4o", messages=[])


def test_body_over_the_limit_is_413(proxy: ProxyProcess, fake_a: FakeOpenAI) -> None:
    big = "x" * (LIMIT + 1024)
    response = post(
        proxy,
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + big.encode() + b'"}]}',
    )
    assert_openai_error(response, 413)
    assert fake_a.chat_requests() == []
    with pytest.raises(openai.APIStatusError) as exc:
        client(proxy).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": big}]
        )
    assert exc.value.status_code == 413


def test_unknown_path_and_wrong_method(proxy: ProxyProcess) -> None:
    assert_openai_error(httpx.get(proxy.base_url + "/v1/engines", timeout=5), 404, "unknown_url")
    assert_openai_error(post(proxy, b"{}", "/v2/chat/completions"), 404, "unknown_url")
    wrong = httpx.get(proxy.base_url + "/v1/chat/completions", timeout=5)
    assert_openai_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"
    assert_openai_error(httpx.delete(proxy.base_url + "/v1/models", timeout=5), 405)


@pytest.mark.parametrize(
    ("status", "exc_type"),
    [
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_provider_errors_keep_status_and_shape(
    proxy: ProxyProcess, fake_b: FakeOpenAI, status: int, exc_type: type[Exception]
) -> None:
    fake_b.set_fault(status=status, chat_only=True)
    with pytest.raises(exc_type) as caught:
        client(proxy).chat.completions.create(model="openai.1:gpt-4o", messages=USER)  # type: ignore[arg-type]
    error: Any = caught.value
    assert error.status_code == status
    body = error.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if status == 429:
        assert error.response.headers["retry-after"]
        assert body["error"]["code"] == "rate_limit_exceeded"
    assert PROVIDER_KEY not in error.response.text
    # A single backend is not retried on its own errors (the SDK decides).
    assert len(fake_b.chat_requests()) == 1


def test_wrong_provider_key_is_reported_without_leaking_it(
    tmp_path_factory: pytest.TempPathFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    config = two_backends(fake_a, fake_b)
    config["backends"]["openai"]["api_key"] = "sk-fake-wrong-key-9999"
    with running_proxy(tmp_path_factory.mktemp("badkey"), config) as proxy:
        response = post(
            proxy, b'{"model": "openai:gpt-4o", "messages": [{"role": "user", "content": "x"}]}'
        )
        assert_openai_error(response, 401)
        assert "sk-fake-wrong-key-9999" not in response.text
        assert "sk-fake-wrong-key-9999" not in proxy.log()


def test_midstream_provider_error_becomes_an_error_event(
    proxy: ProxyProcess, fake_b: FakeOpenAI
) -> None:
    fake_b.set_fault(midstream_error=3)
    stream = client(proxy).chat.completions.create(
        model="openai.1:gpt-4o",
        messages=USER,
        stream=True,  # type: ignore[arg-type]
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_truncated_stream_is_reported_not_silently_cut(
    proxy: ProxyProcess, fake_b: FakeOpenAI
) -> None:
    # The provider closes after a few events with neither finish nor [DONE].
    fake_b.set_fault(midstream_error=2)
    with httpx.stream(
        "POST",
        proxy.openai_base_url + "/chat/completions",
        json={"model": "openai.1:gpt-4o", "stream": True, "messages": USER},
        timeout=10,
    ) as response:
        body = b"".join(response.iter_bytes())
    assert response.status_code == 200
    assert b'data: {"error":' in body
    assert not body.rstrip().endswith(b"[DONE]")
