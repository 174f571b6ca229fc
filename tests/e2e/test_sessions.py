"""Sessions and in-chat control end to end: real Envoy + extproc, the official SDKs, fake providers.

* ``!/hello`` is answered by the proxy in every dialect, JSON and stream, with no upstream request;
* ``!/set(model=X)`` routes the session's next requests to X; ``!/oneoff`` exactly one request;
* command text never reaches a provider, also inside resent history;
* the A-leg id is echoed in ``x-b2bua-session-id``; providers see B-leg ids only, a new one per
  attempt; two client keys using the same session id stay apart;
* settings survive a restart with the SQLite store;
* reply rewrites across stream chunk boundaries, steering rules, reasoning modes, request dedup.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import (
    CLIENT_KEY,
    PROVIDER_KEY,
    ProxyProcess,
    proxy_config,
    running_proxy,
    start_proxy,
    wait_for,
)

MODEL = "chat:fake-model-1"
FRONTENDS = ("openai-chat", "openai-responses", "anthropic", "gemini")
B_LEG = re.compile(r"leg-[0-9a-f-]{36}-(\d+)")
STEER = "Run the tests of the files you changed first: pytest path/to/test_x.py -q"
BASH = {
    "type": "object",
    "properties": {"command": {"type": "string"}},
    "required": ["command"],
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(name="sessions", chunk_chars=3) as made:
        yield made


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI) -> Iterator[ProxyProcess]:
    backends = {
        "chat": {
            "type": "openai",
            "base_url": fake.base_url,
            "api_key": PROVIDER_KEY,
            "health_check": {"enabled": False},
        }
    }
    config = proxy_config(
        backends,
        rewrites=[
            {
                "id": "spelling",
                "target": "reply",
                "find": "colour",
                "replacement": "color",
                "models": ["chat:rewrite-*"],
            },
            {
                "id": "house-style",
                "target": "system",
                "action": "prepend",
                "text": "Answer in English.",
                "models": ["chat:rewrite-*"],
            },
        ],
        steering=[{"id": "whole-suite", "trigger": r"^pytest\s*$", "message": STEER}],
    )
    with running_proxy(tmp_path_factory.mktemp("sessions"), config) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(fake: FakeOpenAI) -> Iterator[None]:
    yield
    fake.clear_requests()
    fake.clear_responses()
    fake.clear_faults()


_counter = iter(range(10**6))


def new_session() -> str:
    return f"test-session-{next(_counter)}-{threading.get_ident()}"


# -- one small adapter per SDK ---------------------------------------------------------


def say(
    proxy: ProxyProcess,
    frontend: str,
    turns: list[tuple[str, str]],
    *,
    session: str | None,
    stream: bool = False,
    model: str = MODEL,
    key: str = CLIENT_KEY,
) -> str:
    """The answer text the official SDK shows for a conversation of (role, text) turns."""
    headers = {"x-session-id": session} if session else {}
    if frontend in ("openai-chat", "openai-responses"):
        client = openai.OpenAI(
            base_url=proxy.openai_base_url, api_key=key, max_retries=0, default_headers=headers
        )
        if frontend == "openai-chat":
            messages: Any = [{"role": r, "content": t} for r, t in turns]
            if not stream:
                answer = client.chat.completions.create(model=model, messages=messages)
                return answer.choices[0].message.content or ""
            chunks = client.chat.completions.create(model=model, messages=messages, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        items: Any = [{"role": r, "content": t} for r, t in turns]
        if stream:
            with client.responses.stream(model=model, input=items) as events:
                return events.get_final_response().output_text
        return client.responses.create(model=model, input=items).output_text
    if frontend == "anthropic":
        claude = anthropic.Anthropic(
            base_url=f"{proxy.base_url}/anthropic",
            api_key=key,
            max_retries=0,
            default_headers=headers,
        )
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": 256,
            "messages": [{"role": r, "content": t} for r, t in turns],
        }
        if stream:
            with claude.messages.stream(**kwargs) as events:
                message = events.get_final_message()
        else:
            message = claude.messages.create(**kwargs)
        return "".join(b.text for b in message.content if b.type == "text")
    gem = genai.Client(
        api_key=key,
        http_options=gtypes.HttpOptions(
            base_url=proxy.base_url, api_version="v1beta", headers=headers
        ),
    )
    contents = [
        gtypes.Content(role="model" if r == "assistant" else "user", parts=[gtypes.Part(text=t)])
        for r, t in turns
    ]
    if stream:
        chunks = gem.models.generate_content_stream(model=model, contents=contents)
        return "".join(c.text or "" for c in chunks)
    return gem.models.generate_content(model=model, contents=contents).text or ""


def provider_body(fake: FakeOpenAI) -> dict[str, Any]:
    body: dict[str, Any] = fake.chat_requests()[-1].json
    return body


# -- in-chat commands ------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_hello_is_answered_by_the_proxy(
    proxy: ProxyProcess, fake: FakeOpenAI, frontend: str, stream: bool
) -> None:
    session = new_session()
    text = say(proxy, frontend, [("user", "!/hello")], session=session, stream=stream)
    assert text.startswith("LLM interactive proxy")
    assert "session: sess-" in text and "header x-session-id" in text
    assert "route: chat:fake-model-1 -> instance/chat" in text
    assert len(fake.chat_requests()) == 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_set_model_then_a_plain_message_routes_to_it(
    proxy: ProxyProcess, fake: FakeOpenAI, frontend: str, stream: bool
) -> None:
    session = new_session()
    answer = say(
        proxy, frontend, [("user", "!/set(model=chat:model-two)")], session=session, stream=stream
    )
    assert answer.startswith("Set model = chat:model-two.")
    assert len(fake.chat_requests()) == 0
    fake.queue_response(text="from two")
    text = say(proxy, frontend, [("user", "hi")], session=session, stream=stream)
    assert text == "from two"
    assert provider_body(fake)["model"] == "model-two"
    # Another session is untouched.
    fake.queue_response(text="from one")
    say(proxy, frontend, [("user", "hi")], session=new_session(), stream=stream)
    assert provider_body(fake)["model"] == "fake-model-1"


def test_oneoff_affects_exactly_one_request(proxy: ProxyProcess, fake: FakeOpenAI) -> None:
    session = new_session()
    answer = say(proxy, "openai-chat", [("user", "!/oneoff(chat:model-once)")], session=session)
    assert "next request" in answer
    models = []
    for n in range(3):
        fake.queue_response(text=f"answer {n}")
        say(proxy, "openai-chat", [("user", f"question {n}")], session=session)
        models.append(provider_body(fake)["model"])
    assert models == ["model-once", "fake-model-1", "fake-model-1"]


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_commands_never_reach_the_provider_also_in_resent_history(
    proxy: ProxyProcess, fake: FakeOpenAI, frontend: str
) -> None:
    session = new_session()
    banner = say(proxy, frontend, [("user", "!/hello")], session=session)
    fake.queue_response(text="ok")
    history = [
        ("user", "!/hello"),
        ("assistant", banner),
        ("user", "first question !/set(temperature=0.2)"),
        ("assistant", "first answer"),
        ("user", "second question"),
    ]
    assert say(proxy, frontend, history, session=session) == "ok"
    seen = json.dumps(provider_body(fake))
    assert "!/" not in seen and "LLM interactive proxy" not in seen
    assert "first question" in seen and "second question" in seen
    assert provider_body(fake).get("temperature") is None  # old commands do not run again


def test_a_command_before_a_prompt_applies_to_it(proxy: ProxyProcess, fake: FakeOpenAI) -> None:
    session = new_session()
    fake.queue_response(text="ok")
    say(proxy, "openai-chat", [("user", "!/set(temperature=0.25) explain")], session=session)
    body = provider_body(fake)
    assert body["temperature"] == 0.25
    assert body["messages"][-1]["content"] == "explain"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("!/set(model=", "Malformed command"),
        ("!/set(temperature=hot)", "temperature takes a number"),
        ("!/frobnicate", "unknown command !/frobnicate"),
        ("please !/set(top_p=7) now", "top-p must be between 0 and 1"),
    ],
)
def test_bad_commands_are_answered_and_nothing_is_forwarded(
    proxy: ProxyProcess, fake: FakeOpenAI, message: str, expected: str
) -> None:
    text = say(proxy, "anthropic", [("user", message)], session=new_session(), stream=True)
    assert expected in text
    assert "Nothing was sent to the model" in text
    assert len(fake.chat_requests()) == 0


def test_unknown_command_shows_the_help(proxy: ProxyProcess, fake: FakeOpenAI) -> None:
    text = say(proxy, "openai-chat", [("user", "!/nope")], session=new_session())
    assert "!/set(key=value, ...)" in text and "!/oneoff(backend:model)" in text


def test_session_settings_beat_uri_parameters_and_the_body(
    proxy: ProxyProcess, fake: FakeOpenAI
) -> None:
    session = new_session()
    say(proxy, "openai-chat", [("user", "!/set(temperature=0.1)")], session=session)
    fake.queue_response(text="ok")
    client = openai.OpenAI(
        base_url=proxy.openai_base_url,
        api_key=CLIENT_KEY,
        max_retries=0,
        default_headers={"x-session-id": session},
    )
    client.chat.completions.create(
        model=f"{MODEL}?temperature=0.9&top_p=0.5",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.5,
    )
    body = provider_body(fake)
    assert body["temperature"] == 0.1  # session > URI parameter > body
    assert body["top_p"] == 0.5  # URI parameter > body default


def test_reset_and_session_show_state(proxy: ProxyProcess, fake: FakeOpenAI) -> None:
    session = new_session()
    say(
        proxy,
        "openai-chat",
        [("user", "!/set(model=chat:model-two) !/route-create(chat:a, chat:b)")],
        session=session,
    )
    shown = say(proxy, "openai-chat", [("user", "!/session")], session=session)
    assert "model=chat:model-two" in shown and "route: chat:a | chat:b" in shown
    say(proxy, "openai-chat", [("user", "!/reset")], session=session)
    fake.queue_response(text="ok")
    say(proxy, "openai-chat", [("user", "hi")], session=session)
    assert provider_body(fake)["model"] == "fake-model-1"


def test_a_route_list_fails_over_in_order(proxy: ProxyProcess, fake: FakeOpenAI) -> None:
    session = new_session()
    refused = say(
        proxy, "openai-chat", [("user", "!/route-create(nowhere:x, chat:model-b)")], session=session
    )
    assert "cannot be routed: unknown backend 'nowhere'" in refused  # a typo, said at once
    listed = say(
        proxy,
        "openai-chat",
        [("user", "!/route-create(chat:model-b, chat:model-c)")],
        session=session,
    )
    assert listed.startswith("Session route: chat:model-b | chat:model-c.")
    fake.queue_response(text="ok")
    assert say(proxy, "openai-chat", [("user", "hi")], session=session) == "ok"
    assert provider_body(fake)["model"] == "model-b"


# -- B2BUA legs ------------------------------------------------------------------------


def _raw_post(proxy: ProxyProcess, frontend: str, session: str, **extra: Any) -> httpx.Response:
    headers = {"x-session-id": session, "authorization": f"Bearer {CLIENT_KEY}"}
    if frontend == "openai-chat":
        body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        path = "/v1/chat/completions"
    elif frontend == "openai-responses":
        body, path = {"model": MODEL, "input": "hi"}, "/v1/responses"
    elif frontend == "anthropic":
        body = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
        path = "/anthropic/v1/messages"
        headers["anthropic-version"] = "2023-06-01"
    else:
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        path = f"/v1beta/models/{MODEL}:generateContent"
    body.update(extra)
    return httpx.post(proxy.base_url + path, json=body, headers=headers, timeout=30)


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_a_leg_echoed_and_the_provider_sees_only_b_legs(
    proxy: ProxyProcess, fake: FakeOpenAI, frontend: str
) -> None:
    session = new_session()
    first = _raw_post(proxy, frontend, session)
    second = _raw_post(proxy, frontend, session)
    assert first.status_code == 200, first.text
    a_leg = first.headers["x-b2bua-session-id"]
    assert re.fullmatch(r"sess-[0-9a-f]{24}", a_leg)
    assert second.headers["x-b2bua-session-id"] == a_leg  # one conversation
    legs = []
    for request in fake.chat_requests():
        seen = json.dumps(dict(request.headers)) + request.body.decode()
        assert session not in seen and a_leg not in seen
        match = B_LEG.fullmatch(request.headers["x-session-id"])
        assert match is not None and match.group(1) == "1"
        legs.append(request.headers["x-session-id"])
    assert len(set(legs)) == 2  # a B-leg per request


def test_body_session_fields_are_replaced_for_the_provider(
    proxy: ProxyProcess, fake: FakeOpenAI
) -> None:
    session = new_session()
    response = _raw_post(
        proxy, "openai-chat", session, session_id="body-session-1", prompt_cache_key="cache-me"
    )
    assert response.status_code == 200
    body = provider_body(fake)
    assert "session_id" not in body
    assert body["prompt_cache_key"].startswith("pck-")
    # Stable per session: provider prompt caching keeps working.
    _raw_post(proxy, "openai-chat", session, prompt_cache_key="cache-me")
    assert provider_body(fake)["prompt_cache_key"] == body["prompt_cache_key"]


def test_errors_and_proxy_answers_carry_the_session_id(proxy: ProxyProcess) -> None:
    session = new_session()
    hello = httpx.post(
        proxy.base_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "!/hello"}]},
        headers={"x-session-id": session},
    )
    bad = httpx.post(
        proxy.base_url + "/v1/chat/completions",
        json={"model": "nowhere:x", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-session-id": session},
    )
    assert bad.status_code == 404
    assert hello.headers["x-b2bua-session-id"] == bad.headers["x-b2bua-session-id"]


def test_sessions_are_listed_in_diagnostics(proxy: ProxyProcess, fake: FakeOpenAI) -> None:
    session = new_session()
    say(proxy, "openai-chat", [("user", "!/set(temperature=0.3)")], session=session)
    fake.queue_response(text="ok")
    say(proxy, "openai-chat", [("user", "hi")], session=session)

    def listed() -> dict[str, Any] | None:
        data = httpx.get(proxy.base_url + "/v1/diagnostics/sessions?limit=1000").json()
        for entry in data["sessions"]:
            if entry["client_session"] == session and entry["requests"] >= 1:
                return dict(entry)
        return None

    wait_for(lambda: listed() is not None, what="the session in diagnostics")
    entry = listed()
    assert entry is not None
    assert entry["settings"] == {"temperature": 0.3}
    assert entry["owner"] == "local" and entry["last_route"].startswith("instance/chat")


# -- steering, rewrites, reasoning, dedup ---------------------------------------------------


def _bash_call(proxy: ProxyProcess, session: str, history: list[Any]) -> tuple[str, list[Any]]:
    client = openai.OpenAI(
        base_url=proxy.openai_base_url,
        api_key=CLIENT_KEY,
        max_retries=0,
        default_headers={"x-session-id": session},
    )
    answer = client.chat.completions.create(
        model=MODEL,
        messages=history,
        tools=[{"type": "function", "function": {"name": "Bash", "parameters": BASH}}],
    )
    message = answer.choices[0].message
    return message.content or "", list(message.tool_calls or [])


@pytest.mark.parametrize("with_session", [True, False], ids=["session", "history-only"])
def test_a_steering_rule_swallows_the_first_call_and_lets_a_repeat_through(
    proxy: ProxyProcess, fake: FakeOpenAI, with_session: bool
) -> None:
    session = new_session() if with_session else ""
    history: list[Any] = [{"role": "user", "content": "run the tests"}]
    fake.queue_response(tool_calls=[("Bash", json.dumps({"command": "pytest"}))])
    text, calls = _bash_call(proxy, session, history)
    assert calls == [] and STEER in text
    history.append({"role": "assistant", "content": text})
    history.append({"role": "user", "content": "go on"})
    fake.queue_response(tool_calls=[("Bash", json.dumps({"command": "pytest"}))])
    _, calls = _bash_call(proxy, session, history)
    assert len(calls) == 1 and json.loads(calls[0].function.arguments) == {"command": "pytest"}
    # A targeted run was never steered.
    fake.queue_response(tool_calls=[("Bash", json.dumps({"command": "pytest tests/x.py -q"}))])
    _, calls = _bash_call(proxy, new_session(), [{"role": "user", "content": "run"}])
    assert len(calls) == 1


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_reply_rewrites_across_stream_chunk_boundaries(
    proxy: ProxyProcess, fake: FakeOpenAI, frontend: str
) -> None:
    # The fake streams 3 characters a chunk: "colour" is split across chunks.
    fake.queue_response(text="The colour of the sky; colour again.")
    text = say(
        proxy, frontend, [("user", "hi")], session=None, stream=True, model="chat:rewrite-model"
    )
    assert text == "The color of the sky; color again."
    messages = provider_body(fake)["messages"]
    assert messages[0] == {"role": "system", "content": "Answer in English."}
    # Other models are not rewritten.
    fake.queue_response(text="colour")
    assert say(proxy, frontend, [("user", "hi")], session=None, stream=True) == "colour"


def _stream_raw(proxy: ProxyProcess, mode: str | None) -> str:
    headers = {"x-llmproxy-reasoning-mode": mode} if mode else {}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = httpx.post(
        proxy.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.text


def _sse_field(raw: str, field: str) -> str:
    out = ""
    for line in raw.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                out += choice.get("delta", {}).get(field) or ""
    return out


@pytest.mark.parametrize("mode", [None, "passthrough", "coerce_to_content", "drop"])
def test_reasoning_modes(proxy: ProxyProcess, fake: FakeOpenAI, mode: str | None) -> None:
    fake.queue_response(text="The answer.", reasoning="Let me think about it.")
    raw = _stream_raw(proxy, mode)
    content, reasoning = _sse_field(raw, "content"), _sse_field(raw, "reasoning_content")
    if mode in (None, "passthrough"):
        assert reasoning == "Let me think about it." and content == "The answer."
    elif mode == "coerce_to_content":
        assert reasoning == ""
        assert content == "<think>\nLet me think about it.\n</think>\n\nThe answer."
    else:
        assert reasoning == "" and content == "The answer."


def test_a_bad_reasoning_mode_is_refused(proxy: ProxyProcess) -> None:
    response = httpx.post(
        proxy.base_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-llmproxy-reasoning-mode": "loud"},
    )
    assert response.status_code == 400
    assert "x-llmproxy-reasoning-mode" in response.json()["error"]["message"]


def test_a_duplicate_in_flight_is_refused_with_retry_after(
    proxy: ProxyProcess, fake: FakeOpenAI
) -> None:
    session = new_session()
    fake.set_fault(delay=1.5, count=1, chat_only=True)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "slow one"}]}
    headers = {"x-session-id": session}
    results: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: results.append(
            httpx.post(
                proxy.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=30
            )
        )
    )
    first.start()
    wait_for(lambda: len(fake.chat_requests()) == 1, what="the first request upstream")
    duplicate = httpx.post(
        proxy.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=30
    )
    first.join()
    assert duplicate.status_code == 429
    assert duplicate.json()["error"]["code"] == "duplicate_request"
    assert int(duplicate.headers["retry-after"]) >= 1
    assert results[0].status_code == 200
    # After a success the same request may be sent again; another session was never blocked.
    again = httpx.post(proxy.base_url + "/v1/chat/completions", json=body, headers=headers)
    assert again.status_code == 200
    assert len(fake.chat_requests()) == 2


# -- keys, restarts, attempts --------------------------------------------------------------


def test_two_client_keys_with_one_session_id_stay_apart(tmp_path: Path, fake: FakeOpenAI) -> None:
    keys = ["sk-proxy-FAKE-alice-0000", "sk-proxy-FAKE-bob-00000"]
    backends = {
        "chat": {
            "type": "openai",
            "base_url": fake.base_url,
            "api_key": PROVIDER_KEY,
            "health_check": {"enabled": False},
        }
    }
    config = proxy_config(backends, multi_user_mode=True, api_keys=keys)
    with running_proxy(tmp_path, config) as multi:
        say(
            multi,
            "openai-chat",
            [("user", "!/set(model=chat:alice-model)")],
            session="shared",
            key=keys[0],
        )
        fake.queue_response(text="for bob")
        say(multi, "openai-chat", [("user", "hi")], session="shared", key=keys[1])
        assert provider_body(fake)["model"] == "fake-model-1"
        fake.queue_response(text="for alice")
        say(multi, "openai-chat", [("user", "hi")], session="shared", key=keys[0])
        assert provider_body(fake)["model"] == "alice-model"
        hello_a = say(multi, "openai-chat", [("user", "!/hello")], session="shared", key=keys[0])
        hello_b = say(multi, "openai-chat", [("user", "!/hello")], session="shared", key=keys[1])
        id_a = re.search(r"session: (sess-\w+)", hello_a)
        id_b = re.search(r"session: (sess-\w+)", hello_b)
        assert id_a and id_b and id_a.group(1) != id_b.group(1)
        # Multi-user mode keeps safety stages on for clients.
        refused = say(
            multi, "openai-chat", [("user", "!/set(redaction=off)")], session="s", key=keys[0]
        )
        assert "cannot be turned off" in refused


def test_settings_survive_a_restart_with_sqlite(tmp_path: Path, fake: FakeOpenAI) -> None:
    backends = {
        "chat": {
            "type": "openai",
            "base_url": fake.base_url,
            "api_key": PROVIDER_KEY,
            "health_check": {"enabled": False},
        }
    }
    config = proxy_config(
        backends, sessions={"store": "sqlite", "sqlite_path": str(tmp_path / "sessions.db")}
    )
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with running_proxy(tmp_path / "one", config) as first:
        say(first, "openai-chat", [("user", "!/set(model=chat:kept-model)")], session="durable")
    with running_proxy(tmp_path / "two", config) as second:
        fake.queue_response(text="ok")
        say(second, "openai-chat", [("user", "hi")], session="durable")
        assert provider_body(fake)["model"] == "kept-model"


def test_each_attempt_gets_its_own_b_leg(tmp_path: Path) -> None:
    with FakeOpenAI(name="leg-a") as fake_a, FakeOpenAI(name="leg-b") as fake_b:
        backends = {
            name: {
                "type": "openai",
                "base_url": f.base_url,
                "api_key": PROVIDER_KEY,
                "health_check": {"enabled": False},
            }
            for name, f in (("a", fake_a), ("b", fake_b))
        }
        config = proxy_config(
            backends, routing={"aliases": {"chain": "a:fake-model-1|b:fake-model-1"}}
        )
        with running_proxy(tmp_path, config) as chained:
            fake_a.set_fault(status=503, count=1, chat_only=True)
            text = say(chained, "openai-chat", [("user", "hi")], session="retry-me", model="chain")
            assert "leg-b says hello" in text
            first = B_LEG.fullmatch(fake_a.chat_requests()[0].headers["x-session-id"])
            second = B_LEG.fullmatch(fake_b.chat_requests()[0].headers["x-session-id"])
            assert first is not None and second is not None
            assert (first.group(1), second.group(1)) == ("1", "2")


def test_an_unusable_sqlite_path_is_a_clear_startup_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a directory should be")
    config = proxy_config(
        {}, sessions={"store": "sqlite", "sqlite_path": str(blocker / "sessions.db")}
    )
    proxy = start_proxy(tmp_path, config, wait=False)
    assert proxy.proc.wait(30) == 1
    assert "cannot start sessions" in proxy.log() and "sessions.db" in proxy.log()


def test_disable_interactive_commands_forwards_the_text(tmp_path: Path, fake: FakeOpenAI) -> None:
    backends = {
        "chat": {
            "type": "openai",
            "base_url": fake.base_url,
            "api_key": PROVIDER_KEY,
            "health_check": {"enabled": False},
        }
    }
    with running_proxy(tmp_path, proxy_config(backends), "--disable-interactive-commands") as off:
        fake.queue_response(text="the model saw it")
        text = say(off, "openai-chat", [("user", "!/hello")], session="s")
        assert text == "the model saw it"
        assert provider_body(fake)["messages"][-1]["content"] == "!/hello"


def test_a_new_command_prefix_and_old_commands_in_history(
    proxy: ProxyProcess, fake: FakeOpenAI
) -> None:
    session = new_session()
    first = say(proxy, "openai-chat", [("user", "!/set(command-prefix=@@)")], session=session)
    assert first.startswith("Set command-prefix = @@.")
    hello = say(proxy, "openai-chat", [("user", "@@hello")], session=session)
    assert hello.startswith("LLM interactive proxy")
    fake.queue_response(text="ok")
    history = [
        ("user", "question !/max"),  # typed before the change: a command, stripped
        ("assistant", "answer"),
        ("user", "!/set(command-prefix=@@)"),
        ("assistant", first),
        ("user", "what does !/max do?"),  # typed after it: the user's text
        ("assistant", "it sets a preset"),
        ("user", "thanks @@low"),
    ]
    say(proxy, "openai-chat", history, session=session)
    messages = provider_body(fake)["messages"]
    assert [m["content"] for m in messages] == [
        "question",
        "answer",
        "what does !/max do?",
        "it sets a preset",
        "thanks",
    ]
