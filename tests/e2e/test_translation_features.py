"""Translation beyond the tool round trip: listeners, token counts, thinking, images, errors.

All through real Envoy + extproc with the official SDKs, against fake
providers of each schema (instances ``chat``, ``resp``, ``claude``, ``gem``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as gerrors
from google.genai import types as gtypes

from tests.e2e.clients import AnthropicFrontend, GeminiFrontend
from tests.e2e.conftest import reactivate_all
from tests.harness import CLIENT_KEY, PROVIDER_KEY, ProxyProcess

TOOLS: Any = [
    {
        "name": "read_file",
        "description": "Read a file of the repository",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        },
    },
    {
        "name": "list_files",
        "description": "List the repository",
        "input_schema": {"type": "object", "properties": {}},
    },
]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()


def anthropic_client(proxy: ProxyProcess, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=proxy.anthropic_base_url,
        api_key=CLIENT_KEY,
        max_retries=0,
        default_headers=headers or None,
    )


def gemini_client(proxy: ProxyProcess, version: str = "v1beta") -> genai.Client:
    return genai.Client(
        api_key=CLIENT_KEY,
        http_options=gtypes.HttpOptions(base_url=proxy.base_url, api_version=version),
    )


def last_json(fake: Any) -> dict[str, Any]:
    request = fake.chat_requests()[-1]
    assert request.json is not None
    body: dict[str, Any] = request.json
    return body


# -- listeners and paths ----------------------------------------------------------------


def test_dedicated_anthropic_listener_and_claude_code_beta_path(
    translation_proxy: ProxyProcess, schema_fakes: dict[str, Any]
) -> None:
    proxy, fake = translation_proxy, schema_fakes["openai-chat"]
    front = AnthropicFrontend(dedicated_listener=True)
    fake.queue_response(tool_calls=[("lookup_tide", '{"port": "Porto"}')])
    first = front.ask(proxy, "chat:fake-model-1", stream=True)
    assert first.calls[0].arguments == {"port": "Porto"}
    # Claude Code posts to /v1/messages?beta=true with beta headers.
    response = httpx.post(
        f"{proxy.anthropic_base_url}/v1/messages?beta=true",
        json={
            "model": "chat:fake-model-1",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={
            "x-api-key": CLIENT_KEY,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "interleaved-thinking-2025-05-14",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "chat says hello to fake-model-1"


def test_gemini_v1_surface(translation_proxy: ProxyProcess, schema_fakes: dict[str, Any]) -> None:
    fake = schema_fakes["anthropic"]
    fake.queue_response(text="from claude")
    turn = GeminiFrontend("v1").ask(translation_proxy, "claude:fake-model-1", stream=False)
    assert turn.text == "from claude"
    assert fake.chat_requests()[-1].path == "/v1/messages"


def test_gemini_key_in_the_url_never_reaches_anyone(
    translation_proxy: ProxyProcess, schema_fakes: dict[str, Any]
) -> None:
    key = "sk-fake-gemini-url-key"
    response = httpx.post(
        f"{translation_proxy.base_url}/v1beta/models/chat:fake-model-1:generateContent?key={key}",
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    sent = schema_fakes["openai-chat"].chat_requests()[-1]
    assert key not in json.dumps(sent.headers) and key not in sent.path
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}-chat"


# -- token counting -----------------------------------------------------------------------


def test_token_counts_in_three_dialects(translation_proxy: ProxyProcess) -> None:
    proxy = translation_proxy
    short = anthropic_client(proxy).messages.count_tokens(
        model="chat:fake-model-1", messages=[{"role": "user", "content": "hi"}]
    )
    long = anthropic_client(proxy).messages.count_tokens(
        model="chat:fake-model-1",
        messages=[{"role": "user", "content": "a much longer question " * 50}],
        tools=TOOLS,
    )
    assert 0 < short.input_tokens < long.input_tokens
    gemini = gemini_client(proxy)  # keep a reference: the SDK closes clients on collection
    counted = gemini.models.count_tokens(
        model="resp:fake-model-1", contents="how many tokens is this?"
    )
    assert counted.total_tokens is not None and counted.total_tokens > 0
    oa = openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
    tokens = oa.responses.input_tokens.count(model="claude:fake-model-1", input="hello there")
    assert tokens.input_tokens > 0


# -- a coding-agent-shaped session --------------------------------------------------------


def test_agent_session_anthropic_thinking_tools_on_openai_backend(
    translation_proxy: ProxyProcess, schema_fakes: dict[str, Any]
) -> None:
    """Claude-Code-shaped: streaming, thinking, beta headers, count_tokens, several tool turns."""
    proxy, fake = translation_proxy, schema_fakes["openai-chat"]
    client = anthropic_client(
        proxy, **{"anthropic-beta": "interleaved-thinking-2025-05-14,claude-code-20250219"}
    )
    model = "chat:fake-model-1"
    system = [
        {"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}
    ]
    messages: list[Any] = [{"role": "user", "content": "What does the README say?"}]
    script = [
        ("Look around first.", [("list_files", "")]),
        ("The README is at the root.", [("read_file", '{"path": "README.md"}')]),
        ("Summarise.", []),
    ]
    for step, (reasoning, calls) in enumerate(script):
        before = client.messages.count_tokens(model=model, system=system, messages=messages)
        assert before.input_tokens > 0
        if calls:
            fake.queue_response(tool_calls=calls, reasoning=reasoning)
        else:
            fake.queue_response("It describes an LLM proxy.", reasoning=reasoning)
        with client.messages.stream(
            model=model,
            max_tokens=2048,
            system=system,  # type: ignore[arg-type]
            messages=messages,
            tools=TOOLS,
            thinking={"type": "enabled", "budget_tokens": 1024},
        ) as events:
            message = events.get_final_message()
        kinds = [block.type for block in message.content]
        assert kinds[0] == "thinking"  # reasoning_content became a thinking block
        assert message.content[0].thinking == reasoning  # type: ignore[union-attr]
        assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
        sent = last_json(fake)
        assert [t["function"]["name"] for t in sent["tools"]] == ["read_file", "list_files"]
        assert sent["messages"][0] == {"role": "system", "content": "You are a coding agent."}
        assert sent["reasoning_effort"] == "low"  # the 1024-token budget, by policy
        if not calls:
            assert message.stop_reason == "end_turn"
            assert message.content[-1].text == "It describes an LLM proxy."  # type: ignore[union-attr]
            break
        assert message.stop_reason == "tool_use"
        use = message.content[-1]
        assert use.type == "tool_use" and use.name == calls[0][0]
        assert use.input == (json.loads(calls[0][1]) if calls[0][1] else {})
        messages.append({"role": "assistant", "content": [b.model_dump() for b in message.content]})
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": f"ok {step}"}
                ],
            }
        )
    # The last request carried the whole history in OpenAI's shape: two tool turns.
    history = last_json(fake)["messages"]
    tool_messages = [m for m in history if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["ok 0", "ok 1"]
    calls_sent = [c for m in history if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    assert [c["id"] for c in calls_sent] == [m["tool_call_id"] for m in tool_messages]
    assert calls_sent[0]["function"]["arguments"] == "{}"  # empty arguments stay an object
    assert all("thinking" not in json.dumps(m) for m in history)  # foreign reasoning not replayed


def test_anthropic_thinking_signature_replayed_unchanged(
    translation_proxy: ProxyProcess, schema_fakes: dict[str, Any]
) -> None:
    proxy, fake = translation_proxy, schema_fakes["anthropic"]
    client = anthropic_client(proxy)
    fake.queue_response(tool_calls=[("list_files", "{}")], thinking="I should list files.")
    first = client.messages.create(
        model="claude:fake-model-1",
        max_tokens=2048,
        messages=[{"role": "user", "content": "list"}],
        tools=TOOLS,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    thinking = first.content[0]
    assert thinking.type == "thinking" and thinking.signature
    use = first.content[-1]
    assert use.type == "tool_use"
    fake.queue_response(text="done")
    client.messages.create(
        model="claude:fake-model-1",
        max_tokens=2048,
        messages=[
            {"role": "user", "content": "list"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "a.txt"}],
            },
        ],
        tools=TOOLS,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    replayed = last_json(fake)["messages"][1]["content"][0]
    assert replayed == {
        "type": "thinking",
        "thinking": thinking.thinking,
        "signature": thinking.signature,
    }


# -- images ---------------------------------------------------------------------------------


def chat_with_image(proxy: ProxyProcess, model: str, url: str) -> Any:
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
    return client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )


def test_images_cross_protocols(
    translation_proxy: ProxyProcess, schema_fakes: dict[str, Any]
) -> None:
    data_url = f"data:image/png;base64,{PNG}"
    chat_with_image(translation_proxy, "claude:fake-model-1", data_url)
    block = last_json(schema_fakes["anthropic"])["messages"][0]["content"][1]
    assert block == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    chat_with_image(translation_proxy, "gem:fake-model-1", data_url)
    part = last_json(schema_fakes["gemini"])["contents"][0]["parts"][1]
    assert part == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    chat_with_image(translation_proxy, "claude:fake-model-1", "https://example.org/a.png")
    block = last_json(schema_fakes["anthropic"])["messages"][0]["content"][1]
    assert block["source"] == {"type": "url", "url": "https://example.org/a.png"}
    with pytest.raises(openai.BadRequestError) as rejected:
        chat_with_image(translation_proxy, "gem:fake-model-1", "https://example.org/a.png")
    assert "image" in rejected.value.message.lower()


# -- errors across protocols ----------------------------------------------------------------


def test_provider_errors_in_the_clients_dialect(
    translation_proxy: ProxyProcess, schema_fakes: dict[str, Any]
) -> None:
    proxy = translation_proxy
    schema_fakes["openai-chat"].set_fault(status=429, count=1, chat_only=True)
    with pytest.raises(anthropic.RateLimitError) as limited:
        anthropic_client(proxy).messages.create(
            model="chat:fake-model-1", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert limited.value.response.json()["type"] == "error"
    assert limited.value.response.json()["error"]["type"] == "rate_limit_error"
    assert limited.value.response.headers["retry-after"]
    reactivate_all(proxy)  # the 429's retry-after cooled the account down

    schema_fakes["openai-chat"].set_fault(status=503, count=1, chat_only=True)
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        anthropic_client(proxy).messages.create(
            model="chat:fake-model-1", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert overloaded.value.status_code == 529  # what Anthropic clients retry

    schema_fakes["anthropic"].set_fault(status=529, count=1, chat_only=True)
    gemini = gemini_client(proxy)
    with pytest.raises(gerrors.APIError) as unavailable:
        gemini.models.generate_content(model="claude:fake-model-1", contents="x")
    assert unavailable.value.code == 503
    assert unavailable.value.status == "UNAVAILABLE"

    schema_fakes["gemini"].set_fault(status=400, count=1, chat_only=True)
    oa = openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        oa.responses.create(model="gem:fake-model-1", input="x")
    assert bad.value.body is not None


def test_midstream_errors_end_the_clients_stream_with_its_error_event(
    translation_proxy: ProxyProcess, schema_fakes: dict[str, Any]
) -> None:
    schema_fakes["openai-chat"].set_fault(midstream_error=3)
    client = anthropic_client(translation_proxy)
    stream = client.messages.stream(
        model="chat:fake-model-1", max_tokens=50, messages=[{"role": "user", "content": "x"}]
    )
    with pytest.raises(anthropic.APIStatusError), stream as events:
        events.get_final_message()
    schema_fakes["anthropic"].set_fault(midstream_error=3)
    oa = openai.OpenAI(
        base_url=translation_proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0
    )
    with pytest.raises(openai.APIError):
        for _ in oa.chat.completions.create(
            model="claude:fake-model-1", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            pass


def test_responses_server_state_cannot_cross_protocols(translation_proxy: ProxyProcess) -> None:
    oa = openai.OpenAI(
        base_url=translation_proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0
    )
    with pytest.raises(openai.BadRequestError) as rejected:
        oa.responses.create(
            model="claude:fake-model-1", input="continue", previous_response_id="resp_fake_1"
        )
    assert "openai-responses" in rejected.value.message
