"""The stage contract through real Envoy: ending an answer early cancels the upstream.

A custom stage (``pipeline.custom``) cuts a slow stream after a few text
deltas. The client (the official OpenAI and Anthropic SDKs) gets a proper end
in its dialect, and Envoy, told to stop by an immediate response after the
headers went out, resets the upstream request: the fake provider sees its
client go away and never writes the rest of its answer.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.e2e.conftest import running_fake
from tests.e2e.stages_for_tests import CUT_AFTER, NOTE
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import (
    CLIENT_KEY,
    PROVIDER_KEY,
    ProxyProcess,
    proxy_config,
    running_proxy,
    wait_for,
)

LONG = "word " * 200  # 1,000 characters: 250 chunks of 4


@pytest.fixture(scope="module")
def slow_fake() -> Iterator[FakeOpenAI]:
    yield from running_fake("slow", chunk_chars=4)


@pytest.fixture(scope="module")
def cutting_proxy(
    tmp_path_factory: pytest.TempPathFactory, slow_fake: FakeOpenAI
) -> Iterator[ProxyProcess]:
    backends = {
        "up": {
            "type": "openai",
            "base_url": slow_fake.base_url,
            "api_key": PROVIDER_KEY,
            # No health-check connections: the only connection is the request's.
            "health_check": {"enabled": False},
        }
    }
    config = proxy_config(
        backends,
        default_backend="up",
        pipeline={"custom": ["tests.e2e.stages_for_tests:cut_stage"]},
    )
    with running_proxy(tmp_path_factory.mktemp("cut"), config) as proxy:
        yield proxy


def _provider_stopped(fake: FakeOpenAI) -> None:
    """The fake's last answer was abandoned by its client long before its end."""

    def gone() -> bool:
        # Envoy reset the upstream request: the fake's connection closed mid-answer
        # (a finished stream would leave it open in Envoy's pool, and complete).
        sent = fake.chat_sent_responses()
        return bool(sent) and not sent[-1].complete and fake.open_connections == 0

    wait_for(gone, timeout=10, what="the upstream request to be cancelled")
    sent = fake.chat_sent_responses()[-1]
    assert len(sent.chunks) < 100, len(sent.chunks)  # of the ~250 it would have sent


def test_openai_stream_ends_early_and_the_provider_stops_being_read(
    cutting_proxy: ProxyProcess, slow_fake: FakeOpenAI
) -> None:
    slow_fake.set_fault(chunk_delay=0.02, count=1)
    slow_fake.queue_response(text=LONG)
    client = openai.OpenAI(
        base_url=cutting_proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0
    )
    text, finish = "", None
    for chunk in client.chat.completions.create(
        model="fake-model-1",
        messages=[{"role": "user", "content": "cut me"}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    # CUT_AFTER deltas of 4 characters, then the note.
    assert text == LONG[: CUT_AFTER * 4] + NOTE
    assert text.endswith(NOTE) and text.startswith("word word")
    assert finish == "length"
    _provider_stopped(slow_fake)


def test_anthropic_stream_ends_early_with_a_proper_end(
    cutting_proxy: ProxyProcess, slow_fake: FakeOpenAI
) -> None:
    slow_fake.set_fault(chunk_delay=0.02, count=1)
    slow_fake.queue_response(text=LONG)
    client = anthropic.Anthropic(
        base_url=cutting_proxy.anthropic_base_url, api_key=CLIENT_KEY, max_retries=0
    )
    with client.messages.stream(
        model="fake-model-1", max_tokens=1000, messages=[{"role": "user", "content": "cut me"}]
    ) as stream:
        message = stream.get_final_message()
    text = "".join(b.text for b in message.content if b.type == "text")
    assert text == LONG[: CUT_AFTER * 4] + NOTE
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens > 0
    _provider_stopped(slow_fake)


@pytest.mark.parametrize("stream", [False, True])
def test_a_stage_answers_without_a_backend(
    cutting_proxy: ProxyProcess, slow_fake: FakeOpenAI, stream: bool
) -> None:
    before = slow_fake.chat_request_count
    client = openai.OpenAI(
        base_url=cutting_proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0
    )
    messages: list = [{"role": "user", "content": "ping the proxy"}]  # type: ignore[type-arg]
    if stream:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="fake-model-1", messages=messages, stream=True
            )
            if c.choices
        )
    else:
        answer = client.chat.completions.create(model="fake-model-1", messages=messages)
        text = answer.choices[0].message.content or ""
    assert text == "pong from a stage"
    assert slow_fake.chat_request_count == before
