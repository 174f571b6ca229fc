"""OpenAI Chat Completions through real Envoy + extproc, with the official SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import CLIENT_KEY, PROVIDER_KEY, ProxyProcess

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_tide",
            "description": "Tide times for a port",
            "parameters": {
                "type": "object",
                "properties": {"port": {"type": "string"}},
                "required": ["port"],
            },
        },
    }
]


def client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)


def assert_no_client_key(fake: FakeOpenAI) -> None:
    for request in fake.requests:
        assert CLIENT_KEY not in json.dumps(request.headers)
        assert CLIENT_KEY.encode() not in request.body


def test_non_streaming_answer_from_configured_backend(
    proxy: ProxyProcess, fake_a: FakeOpenAI
) -> None:
    answer = client(proxy).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.choices[0].message.content == "alpha says hello to gpt-4o-mini"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens > 0
    [sent] = fake_a.chat_requests()
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}-alpha"
    assert sent.json == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    assert_no_client_key(fake_a)


def test_streaming_tool_call_with_usage(proxy: ProxyProcess, fake_a: FakeOpenAI) -> None:
    arguments = '{"port": "Porto", "note": "été \\u00e9 \\"quoted\\""}'
    fake_a.queue_response(tool_calls=[("lookup_tide", arguments)], completion_tokens=17)
    stream = client(proxy).chat.completions.create(
        model="openai:gpt-4o",
        messages=[{"role": "user", "content": "tide in Porto?"}],
        tools=TOOLS,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                if call.function is not None:
                    entry["name"] += call.function.name or ""
                    entry["arguments"] += call.function.arguments or ""
    assert calls[0]["name"] == "lookup_tide"
    assert calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"]) == json.loads(arguments)
    assert finish == "tool_calls"
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    assert usage_chunks[0].usage is not None
    assert usage_chunks[0].usage.completion_tokens == 17
    [sent] = fake_a.chat_requests()
    assert sent.json is not None
    assert sent.json["tools"] == TOOLS and sent.json["stream"] is True
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}-alpha"
    assert_no_client_key(fake_a)


def test_stream_without_include_usage_hides_usage_but_provider_is_asked(
    proxy: ProxyProcess, fake_a: FakeOpenAI
) -> None:
    stream = client(proxy).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha says hello to gpt-4o-mini"
    assert all(c.usage is None for c in chunks)
    [sent] = fake_a.chat_requests()
    assert sent.json is not None
    # The proxy always asks for usage (for accounting) and hides it again.
    assert sent.json["stream_options"] == {"include_usage": True}


def test_raw_sse_framing_reaches_client_intact(proxy: ProxyProcess) -> None:
    with httpx.stream(
        "POST",
        f"{proxy.openai_base_url}/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = b"".join(response.iter_bytes())
    events = body.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    for event in events[:-2]:
        assert event.startswith(b"data: {")
        json.loads(event[len(b"data: ") :])


def test_tool_result_round_trip(proxy: ProxyProcess, fake_a: FakeOpenAI) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "tide?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_fake_1",
                    "type": "function",
                    "function": {"name": "lookup_tide", "arguments": '{"port":"Porto"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_fake_1", "content": '{"high":"14:05"}'},
    ]
    answer = client(proxy).chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        temperature=0.3,
        seed=7,
        logit_bias={"50256": -100},
        response_format={"type": "text"},
    )
    assert answer.choices[0].message.content
    [sent] = fake_a.chat_requests()
    assert sent.json is not None
    assert sent.json["messages"] == messages
    # Fields the canonical model has no home for survive same-protocol routing.
    assert sent.json["logit_bias"] == {"50256": -100}
    assert sent.json["response_format"] == {"type": "text"}
    assert sent.json["temperature"] == 0.3 and sent.json["seed"] == 7


def test_pool_and_instance_selectors(
    proxy: ProxyProcess, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    c = client(proxy)
    pooled = c.chat.completions.create(model="smart", messages=[{"role": "user", "content": "x"}])
    assert pooled.choices[0].message.content == "alpha says hello to gpt-4o"
    direct = c.chat.completions.create(
        model="openai.1:gpt-4o", messages=[{"role": "user", "content": "x"}]
    )
    assert direct.choices[0].message.content == "beta says hello to gpt-4o"
    assert fake_b.chat_requests()[0].headers["authorization"] == f"Bearer {PROVIDER_KEY}-beta"
    unknown_model = c.chat.completions.create(
        model="some-new-model", messages=[{"role": "user", "content": "x"}]
    )
    # Not configured anywhere: the default backend serves it under its own name.
    assert unknown_model.choices[0].message.content == "alpha says hello to some-new-model"


def test_uri_parameters_apply_to_request(proxy: ProxyProcess, fake_b: FakeOpenAI) -> None:
    client(proxy).chat.completions.create(
        model="openai.1:gpt-4o?temperature=0.5&max_tokens=64&top_k=40",
        messages=[{"role": "user", "content": "x"}],
        temperature=1.0,
    )
    [sent] = fake_b.chat_requests()
    assert sent.json is not None
    assert sent.json["model"] == "gpt-4o"
    assert sent.json["temperature"] == 0.5
    assert sent.json["max_tokens"] == 64
    assert sent.json["top_k"] == 40


def test_client_routing_headers_are_ignored_and_stripped(
    proxy: ProxyProcess, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    response = httpx.post(
        f"{proxy.openai_base_url}/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        headers={
            "authorization": f"Bearer {CLIENT_KEY}",
            "x-llm-cluster": "instance/openai.1",
            "x-llm-backend": "openai.1",
            "x-api-key": CLIENT_KEY,
        },
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"]
    assert response.json()["choices"][0]["message"]["content"].startswith("alpha")
    assert fake_b.chat_requests() == []
    [sent] = fake_a.chat_requests()
    assert not any(name.startswith("x-llm-") for name in sent.headers)
    assert "x-api-key" not in sent.headers
    assert not any(name.startswith("x-llm-") for name in response.headers)
    assert_no_client_key(fake_a)


def test_models_endpoint_is_answered_by_the_proxy(proxy: ProxyProcess, fake_a: FakeOpenAI) -> None:
    models = client(proxy).models.list()
    ids = {m.id for m in models.data}
    assert {"smart", "gpt-4o-mini", "gpt-4o", "openai:gpt-4o"} <= ids
    one = client(proxy).models.retrieve("smart")
    assert one.id == "smart"
    assert fake_a.chat_requests() == []
    with pytest.raises(openai.NotFoundError):
        client(proxy).models.retrieve("no-such-model")


def test_provider_answers_even_the_sdk_async_client(proxy: ProxyProcess) -> None:
    import asyncio

    async def run() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0
        ) as aclient:
            answers = await asyncio.gather(
                *(
                    aclient.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": str(i)}]
                    )
                    for i in range(8)
                )
            )
        return [a.choices[0].message.content or "" for a in answers]

    assert asyncio.run(run()) == ["alpha says hello to gpt-4o-mini"] * 8
