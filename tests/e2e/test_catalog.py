"""Every backend type of the catalog, end to end: real Envoy + extproc, the official
``openai`` SDK as the client, a fake of the type's wire schema mounted at the path of
the type's default base URL.

Each case checks what reached the provider: the base path and endpoint, the credential
in the type's auth style (and no client key), the body in the type's schema, and one of
the type's documented quirks (docs/backends.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from backends import CATALOG
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.base import RecordedRequest
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.responses_upstream import FakeResponses
from tests.harness import CLIENT_KEY, ProxyProcess, fast_health, proxy_config, running_proxy

MODEL = "catalog-model-1"
CLIENT_AGENT = "catalog-test-client/1.0"


@dataclass(frozen=True)
class Case:
    #: Fake class of the type's schema.
    fake: type[Any]
    #: The endpoint under the base path (Gemini's names the model).
    endpoint: str
    #: (header, value) the credential must arrive as.
    auth: tuple[str, str]
    #: The type's config options.
    options: dict[str, str]
    #: Extra arguments to ``chat.completions.create``.
    request: dict[str, Any]
    #: Checks the request the provider received for the type's quirk.
    quirk: Callable[[RecordedRequest], None]
    stream: bool = False
    #: The client's API: "chat" (Chat Completions) or "responses" (translated to the
    #: provider's schema, so the provider's own conventions apply, not the client's).
    api: str = "chat"


def key(name: str) -> str:
    return f"sk-fake-provider-{name}"


def bearer(name: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {key(name)}")


def _max_completion(request: RecordedRequest) -> None:
    assert request.json["max_completion_tokens"] == 40
    assert "max_tokens" not in request.json


def _max_tokens(request: RecordedRequest) -> None:
    assert request.json["max_tokens"] == 40
    assert "max_completion_tokens" not in request.json


def _responses(request: RecordedRequest) -> None:
    assert request.json["max_output_tokens"] == 40
    assert isinstance(request.json["input"], list)


def _anthropic(request: RecordedRequest) -> None:
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["anthropic-beta"] == "fake-beta-2026-01-01"
    assert request.json["max_tokens"] == 40


def _gemini(request: RecordedRequest) -> None:
    assert request.json["generationConfig"]["maxOutputTokens"] == 40
    assert "contents" in request.json


def _openrouter(request: RecordedRequest) -> None:
    assert request.headers["http-referer"] == "https://example.test/app"
    assert request.headers["x-openrouter-title"] == "Catalog Test"
    assert request.headers["x-title"] == "Catalog Test"


def _temperature(expected: float) -> Callable[[RecordedRequest], None]:
    def check(request: RecordedRequest) -> None:
        assert request.json["temperature"] == pytest.approx(expected)

    return check


def _qwen(request: RecordedRequest) -> None:
    assert request.json["enable_thinking"] is False


def _internlm(request: RecordedRequest) -> None:
    body = request.json
    assert set(body) == {"model", "messages", "temperature", "stream", "tools"}
    assert body["temperature"] == pytest.approx(0.3)  # accepted fields stay
    assert [t["function"]["name"] for t in body["tools"]] == ["noop"]


def _kimi_code(request: RecordedRequest) -> None:
    assert request.headers["user-agent"] == "KimiCLI/1.30.0"


CASES: dict[str, Case] = {
    "openai": Case(
        FakeOpenAI,
        "/chat/completions",
        bearer("openai"),
        {},
        {"max_output_tokens": 40},
        _max_completion,
        api="responses",
    ),
    "openai-compatible": Case(
        FakeOpenAI,
        "/chat/completions",
        bearer("openai-compatible"),
        {},
        {"max_tokens": 40},
        _max_tokens,
    ),
    # The bundled model's type: an OpenAI-compatible server; a key, when one is
    # configured, goes as a bearer token.
    "local": Case(
        FakeOpenAI, "/chat/completions", bearer("local"), {}, {"max_tokens": 40}, _max_tokens
    ),
    "openai-responses": Case(
        FakeResponses, "/responses", bearer("openai-responses"), {}, {"max_tokens": 40}, _responses
    ),
    "anthropic": Case(
        FakeAnthropic,
        "/messages",
        ("x-api-key", key("anthropic")),
        {"version": "2023-06-01", "beta": "fake-beta-2026-01-01"},
        {"max_tokens": 40},
        _anthropic,
    ),
    "gemini": Case(
        FakeGemini,
        f"/models/{MODEL}:generateContent",
        ("x-goog-api-key", key("gemini")),
        {},
        {"max_tokens": 40},
        _gemini,
    ),
    "openrouter": Case(
        FakeOpenAI,
        "/chat/completions",
        bearer("openrouter"),
        {"referer": "https://example.test/app", "title": "Catalog Test"},
        {},
        _openrouter,
        stream=True,  # with ': OPENROUTER PROCESSING' comments in the stream
    ),
    "zai": Case(
        FakeOpenAI, "/chat/completions", bearer("zai"), {}, {"temperature": 1.7}, _temperature(1.0)
    ),
    "qwen": Case(FakeOpenAI, "/chat/completions", bearer("qwen"), {}, {}, _qwen),
    "minimax": Case(
        FakeOpenAI,
        "/chat/completions",
        bearer("minimax"),
        {},
        {"temperature": 0},
        _temperature(0.01),
    ),
    "internlm": Case(
        FakeOpenAI,
        "/chat/completions",
        bearer("internlm"),
        {},
        {
            "temperature": 0.3,
            "seed": 7,
            "tool_choice": "none",
            "tools": [
                {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}
            ],
            "response_format": {"type": "json_object"},
            "presence_penalty": 0.5,
            "user": "someone",
        },
        _internlm,
        stream=True,  # no stream_options either
    ),
    "zenmux": Case(
        FakeOpenAI,
        "/chat/completions",
        bearer("zenmux"),
        {},
        {"max_output_tokens": 40},
        _max_completion,
        api="responses",
    ),
    "kimi": Case(
        FakeOpenAI, "/chat/completions", bearer("kimi"), {}, {"temperature": 1.5}, _temperature(1.0)
    ),
    "kimi-code": Case(
        FakeOpenAI,
        "/chat/completions",
        bearer("kimi-code"),
        {"user_agent": "KimiCLI/1.30.0"},
        {},
        _kimi_code,
    ),
}


def instance(type_name: str) -> str:
    return type_name.replace("-", "_")


def base_path(type_name: str) -> str:
    url = CATALOG[type_name].default_base_url or "http://placeholder/v1"
    return urlsplit(url).path.rstrip("/")


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    started: dict[str, Any] = {}
    try:
        for type_name, case in CASES.items():
            fake = case.fake(
                name=instance(type_name),
                path_prefix=base_path(type_name),
                expected_api_key=key(type_name),
                models=[MODEL],
            )
            if type_name == "openrouter":
                fake.stream_comment = ": OPENROUTER PROCESSING"
            started[type_name] = fake.start()
        yield started
    finally:
        for fake in started.values():
            fake.stop()


@pytest.fixture(scope="module")
def catalog_proxy(
    tmp_path_factory: pytest.TempPathFactory, fakes: dict[str, Any]
) -> Iterator[ProxyProcess]:
    backends = {
        instance(type_name): {
            "type": type_name,
            # The fake's host, the type's own base path.
            "base_url": f"http://127.0.0.1:{fakes[type_name].port}{base_path(type_name)}",
            "api_key": key(type_name),
            "options": case.options,
            **fast_health(),
        }
        for type_name, case in CASES.items()
    }
    tmp: Path = tmp_path_factory.mktemp("catalog")
    with running_proxy(tmp, proxy_config(backends)) as running:
        yield running


def test_every_catalog_type_has_a_case() -> None:
    assert set(CASES) == set(CATALOG)


@pytest.mark.parametrize("type_name", list(CASES))
def test_catalog_type_end_to_end(
    catalog_proxy: ProxyProcess, fakes: dict[str, Any], type_name: str
) -> None:
    case, fake = CASES[type_name], fakes[type_name]
    fake.clear_requests()
    client = openai.OpenAI(
        base_url=catalog_proxy.openai_base_url,
        api_key=CLIENT_KEY,
        default_headers={"user-agent": CLIENT_AGENT},
        max_retries=0,
    )
    model = f"{instance(type_name)}:{MODEL}"
    arguments: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        **case.request,
    }
    if case.api == "responses":
        response = client.responses.create(model=model, input="Say hello.", **case.request)
        text = response.output_text
    elif case.stream:
        chunks = list(client.chat.completions.create(stream=True, **arguments))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        completion = client.chat.completions.create(**arguments)
        text = completion.choices[0].message.content or ""
    assert text  # a clean answer in the client's dialect

    [request] = fake.chat_requests()
    endpoint = case.endpoint.replace(":generateContent", ":streamGenerateContent")
    assert request.path == base_path(type_name) + (endpoint if case.stream else case.endpoint)
    name, value = case.auth
    assert request.headers[name] == value
    assert CLIENT_KEY not in json.dumps(request.headers)
    if type_name != "gemini":
        assert request.json["model"] == MODEL
    assert bool(request.json.get("stream")) == (case.stream and case.fake is not FakeGemini)
    case.quirk(request)


def test_a_client_user_agent_passes_through_without_the_option(
    catalog_proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    """Kimi Code checks the User-Agent: a coding agent's own reaches the provider."""
    fake = fakes["zai"]
    fake.clear_requests()
    client = openai.OpenAI(
        base_url=catalog_proxy.openai_base_url,
        api_key=CLIENT_KEY,
        default_headers={"user-agent": CLIENT_AGENT},
        max_retries=0,
    )
    client.chat.completions.create(
        model=f"zai:{MODEL}", messages=[{"role": "user", "content": "hi"}]
    )
    [request] = fake.chat_requests()
    assert request.headers["user-agent"] == CLIENT_AGENT


def test_streams_without_thinking_default(
    catalog_proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    """Qwen's enable_thinking=false is for non-streaming requests only."""
    fake = fakes["qwen"]
    fake.clear_requests()
    client = openai.OpenAI(
        base_url=catalog_proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0
    )
    list(
        client.chat.completions.create(
            model=f"qwen:{MODEL}", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    [request] = fake.chat_requests()
    assert "enable_thinking" not in request.json
    assert request.json["stream_options"] == {"include_usage": True}
