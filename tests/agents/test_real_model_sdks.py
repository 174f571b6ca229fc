"""Every SDK gets a real streamed answer from a real model through translation.

The backend is llama-cpp-python's OpenAI-compatible server with SmolLM2
(tests/real_model.py); the proxy translates each dialect to OpenAI Chat.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from tests.harness import CLIENT_KEY, ProxyProcess, proxy_config, running_proxy
from tests.real_model import LlamaServer, start_llama_server

PROMPT = "Name one colour of the rainbow."
MODEL = "llama:smollm2"


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = start_llama_server(Path(tmp_path_factory.mktemp("llama")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, llama: LlamaServer) -> Iterator[ProxyProcess]:
    backends = {"llama": {"type": "openai-compatible", "base_url": llama.base_url}}
    with running_proxy(tmp_path_factory.mktemp("proxy"), proxy_config(backends)) as running:
        yield running


def test_openai_chat_stream(proxy: ProxyProcess) -> None:
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=24,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1


def test_openai_responses_stream(proxy: ProxyProcess) -> None:
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
    deltas: list[str] = []
    terminal = None
    for event in client.responses.create(
        model=MODEL, input=PROMPT, max_output_tokens=24, stream=True
    ):
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type in ("response.completed", "response.incomplete"):
            terminal = event.response  # incomplete: the 24-token limit was reached
    assert terminal is not None and len(deltas) > 1
    assert "".join(deltas) == terminal.output_text and terminal.output_text.strip()
    # llama.cpp's server reports no usage in streams: the proxy's estimate stands in.
    assert terminal.usage is not None and terminal.usage.output_tokens > 0


def test_anthropic_stream(proxy: ProxyProcess) -> None:
    client = anthropic.Anthropic(
        base_url=f"{proxy.base_url}/anthropic", api_key=CLIENT_KEY, max_retries=0
    )
    deltas: list[str] = []
    with client.messages.stream(
        model=MODEL, max_tokens=24, messages=[{"role": "user", "content": PROMPT}]
    ) as events:
        deltas.extend(events.text_stream)
        final = events.get_final_message()
    assert "".join(deltas).strip() and len(deltas) > 1
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_gemini_stream(proxy: ProxyProcess) -> None:
    client = genai.Client(
        api_key=CLIENT_KEY,
        http_options=gtypes.HttpOptions(base_url=proxy.base_url, api_version="v1beta"),
    )
    chunks = list(
        client.models.generate_content_stream(
            model=MODEL,
            contents=PROMPT,
            config=gtypes.GenerateContentConfig(max_output_tokens=24),
        )
    )
    text = "".join(c.text or "" for c in chunks)
    assert text.strip() and len(chunks) > 1
