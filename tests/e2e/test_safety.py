"""The agent safety layer end to end: real Envoy + extproc, the official SDKs, fake providers.

* secrets in every place the model reads never reach the provider; a secret
  in a streamed answer, split across chunks, never reaches the client while
  the text around it does;
* a dangerous tool call never reaches the client, which gets the steering
  note instead; benign look-alikes pass unchanged;
* a disallowed tool disappears from the request and its call from the answer;
* a write outside the sandbox is blocked;
* proxy-key lockout works and expires.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.responses_upstream import FakeResponses
from tests.harness import (
    CLIENT_KEY,
    PROVIDER_KEY,
    ProxyProcess,
    proxy_config,
    running_proxy,
    wait_for,
)

# Obviously fake secrets in the formats the redaction stage knows.
OPENAI_KEY = "sk-proj-FAKEFAKEFAKE0000000000000000000000000000000000EXAMPLE"
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp_FAKE0000000000000000000000000000EXMP"
DB_URL = "postgres://app:hunter2-FAKE-pass@db.internal:5432/app"
SECRETS = (OPENAI_KEY, AWS_ID, GITHUB_TOKEN, "hunter2-FAKE-pass")

MODEL = "fake-model-1"
BASH_TOOL = {
    "name": "Bash",
    "description": "Run a shell command",
    "schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
}
FRONTENDS = ("openai-chat", "openai-responses", "anthropic", "gemini")


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    made = {
        "chat": FakeOpenAI(name="safety-chat", chunk_chars=7),
        "claude": FakeAnthropic(name="safety-claude"),
        "gem": FakeGemini(name="safety-gem"),
        "resp": FakeResponses(name="safety-resp"),
    }
    for fake in made.values():
        fake.start()
    try:
        yield made
    finally:
        for fake in made.values():
            fake.stop()


BACKEND_TYPES = {
    "chat": "openai",
    "claude": "anthropic",
    "gem": "gemini",
    "resp": "openai-responses",
}


@pytest.fixture(scope="module")
def safety_proxy(
    tmp_path_factory: pytest.TempPathFactory, fakes: dict[str, Any]
) -> Iterator[ProxyProcess]:
    backends = {
        name: {
            "type": BACKEND_TYPES[name],
            "base_url": fake.base_url,
            "api_key": PROVIDER_KEY,
            "health_check": {"enabled": False},
        }
        for name, fake in fakes.items()
    }
    config = proxy_config(
        backends,
        tool_access={"rules": [{"deny": ["delete_*"]}]},
        sandbox={"enabled": True, "roots": ["/srv/project"], "home": "/home/agent"},
    )
    with running_proxy(tmp_path_factory.mktemp("safety"), config) as proxy:
        yield proxy


@pytest.fixture(autouse=True)
def _clean(fakes: dict[str, Any]) -> Iterator[None]:
    yield
    for fake in fakes.values():
        fake.clear_requests()
        fake.clear_responses()


# -- one small adapter per SDK ---------------------------------------------------------


def ask(
    proxy: ProxyProcess,
    frontend: str,
    *,
    system: str,
    user: str,
    stream: bool,
    backend: str = "chat",
    tools: list[dict[str, Any]] | None = None,
) -> tuple[str, list[tuple[str, dict[str, Any]]], str]:
    """(text, tool calls, finish reason) as the SDK saw them."""
    model = f"{backend}:{MODEL}"
    tools = tools or [BASH_TOOL]
    if frontend == "openai-chat":
        client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
        messages: Any = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        chat_tools: Any = [
            {"type": "function", "function": {"name": t["name"], "parameters": t["schema"]}}
            for t in tools
        ]
        if not stream:
            answer = client.chat.completions.create(
                model=model, messages=messages, tools=chat_tools
            )
            message = answer.choices[0].message
            calls = [
                (c.function.name, json.loads(c.function.arguments))
                for c in message.tool_calls or []
                if c.type == "function"
            ]
            return message.content or "", calls, answer.choices[0].finish_reason
        text, finish, parts = "", "", {}  # type: ignore[var-annotated]
        for chunk in client.chat.completions.create(
            model=model, messages=messages, tools=chat_tools, stream=True
        ):
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
                for delta in choice.delta.tool_calls or []:
                    entry = parts.setdefault(delta.index, ["", ""])
                    if delta.function is not None:
                        entry[0] += delta.function.name or ""
                        entry[1] += delta.function.arguments or ""
        return text, [(n, json.loads(a or "{}")) for n, a in parts.values()], finish
    if frontend == "openai-responses":
        client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
        resp_tools: Any = [
            {"type": "function", "name": t["name"], "parameters": t["schema"], "strict": False}
            for t in tools
        ]
        if stream:
            with client.responses.stream(
                model=model, instructions=system, input=user, tools=resp_tools
            ) as events:
                response = events.get_final_response()
        else:
            response = client.responses.create(
                model=model, instructions=system, input=user, tools=resp_tools
            )
        calls = [
            (item.name, json.loads(item.arguments))
            for item in response.output
            if item.type == "function_call"
        ]
        return response.output_text, calls, "tool_calls" if calls else (response.status or "")
    if frontend == "anthropic":
        claude = anthropic.Anthropic(
            base_url=f"{proxy.base_url}/anthropic", api_key=CLIENT_KEY, max_retries=0
        )
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": 512,
            "system": system,
            "messages": [{"role": "user", "content": user}],
            "tools": [{"name": t["name"], "input_schema": t["schema"]} for t in tools],
        }
        if stream:
            with claude.messages.stream(**kwargs) as events:
                message = events.get_final_message()
        else:
            message = claude.messages.create(**kwargs)
        text = "".join(b.text for b in message.content if b.type == "text")
        calls = [(b.name, dict(b.input)) for b in message.content if b.type == "tool_use"]  # type: ignore[call-overload]
        return text, calls, message.stop_reason or ""
    gem = genai.Client(
        api_key=CLIENT_KEY,
        http_options=gtypes.HttpOptions(base_url=proxy.base_url, api_version="v1beta"),
    )
    config = gtypes.GenerateContentConfig(
        system_instruction=system,
        tools=[
            gtypes.Tool(
                function_declarations=[
                    gtypes.FunctionDeclaration(name=t["name"], parameters_json_schema=t["schema"])
                    for t in tools
                ]
            )
        ],
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
    )
    contents = [gtypes.Content(role="user", parts=[gtypes.Part(text=user)])]
    chunks = (
        list(gem.models.generate_content_stream(model=model, contents=contents, config=config))
        if stream
        else [gem.models.generate_content(model=model, contents=contents, config=config)]
    )
    text, calls, finish = "", [], ""
    for chunk in chunks:
        for candidate in chunk.candidates or []:
            if candidate.finish_reason is not None:
                finish = str(candidate.finish_reason.value)
            for part in (candidate.content.parts or []) if candidate.content else []:
                if part.text and not part.thought:
                    text += part.text
                if part.function_call is not None:
                    calls.append(
                        (part.function_call.name or "", dict(part.function_call.args or {}))
                    )
    return text, calls, finish


def provider_saw(fake: Any) -> str:
    request = fake.chat_requests()[-1]
    return request.body.decode() if isinstance(request.body, bytes) else json.dumps(request.json)


# -- secret redaction ------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_secrets_in_requests_never_reach_the_provider(
    safety_proxy: ProxyProcess, fakes: dict[str, Any], frontend: str, stream: bool
) -> None:
    fake = fakes["chat"]
    fake.queue_response(text="noted")
    text, _, _ = ask(
        safety_proxy,
        frontend,
        system=f"Deploy with OPENAI_API_KEY={OPENAI_KEY} and {DB_URL}",
        user=f"my aws id is {AWS_ID} and token {GITHUB_TOKEN}; what now?",
        stream=stream,
    )
    assert text == "noted"
    seen = provider_saw(fake)
    for secret in SECRETS:
        assert secret not in seen
    assert "[REDACTED:" in seen
    assert "what now?" in seen and "db.internal" in seen  # the text around the secrets survives


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_a_secret_in_the_answer_never_reaches_the_client(
    safety_proxy: ProxyProcess, fakes: dict[str, Any], frontend: str, stream: bool
) -> None:
    fake = fakes["chat"]  # streams 7 characters a chunk: the key is split over many
    fake.queue_response(text=f"Use the key {OPENAI_KEY} to call the API, then rotate it.")
    text, _, _ = ask(safety_proxy, frontend, system="s", user="which key?", stream=stream)
    assert OPENAI_KEY not in text
    assert OPENAI_KEY[:12] not in text and OPENAI_KEY[-12:] not in text
    assert text.startswith("Use the key [REDACTED:openai-")
    assert text.endswith("] to call the API, then rotate it.")


def test_the_same_secret_gets_the_same_placeholder(
    safety_proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    fake = fakes["chat"]
    placeholders = []
    for _ in range(2):
        fake.queue_response(text="ok")
        ask(safety_proxy, "openai-chat", system="s", user=f"key {OPENAI_KEY}", stream=False)
        seen = json.loads(provider_saw(fake))["messages"][-1]["content"]
        placeholders.append(seen.split("key ", 1)[1])
    assert placeholders[0] == placeholders[1] and placeholders[0].startswith("[REDACTED:")


def test_lookalikes_are_not_redacted(safety_proxy: ProxyProcess, fakes: dict[str, Any]) -> None:
    fake = fakes["chat"]
    benign = (
        "commit 3f2a9c1e7b4d8a6f0e5c2b9d1a7e4f3c8b6d0a2e, id 123e4567-e89b-12d3-a456-426614174000, "
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    )
    fake.queue_response(text=benign)
    text, _, _ = ask(safety_proxy, "openai-chat", system="s", user=benign, stream=True)
    assert benign in provider_saw(fake)
    assert text == benign


# -- dangerous commands --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("frontend", FRONTENDS)
@pytest.mark.parametrize("backend", ["chat", "claude"])
def test_a_dangerous_tool_call_is_swallowed_with_a_steering_note(
    safety_proxy: ProxyProcess, fakes: dict[str, Any], frontend: str, backend: str, stream: bool
) -> None:
    fakes[backend].queue_response(
        text="Cleaning up.",
        tool_calls=[("Bash", json.dumps({"command": "git reset --hard && git clean -fd"}))],
    )
    text, calls, finish = ask(
        safety_proxy, frontend, system="s", user="tidy up", stream=stream, backend=backend
    )
    assert calls == []
    assert "blocked" in text and "git reset --hard" in text
    assert text.startswith("Cleaning up.")
    assert finish.lower() in ("stop", "end_turn", "completed", "finishreason.stop", "1")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_benign_lookalike_commands_pass_unchanged(
    safety_proxy: ProxyProcess, fakes: dict[str, Any], frontend: str, stream: bool
) -> None:
    commands = ["git reset --soft HEAD~1", "rm -rf ./build", "echo 'git reset --hard'"]
    fakes["chat"].queue_response(
        tool_calls=[("Bash", json.dumps({"command": c})) for c in commands]
    )
    _, calls, _ = ask(safety_proxy, frontend, system="s", user="go", stream=stream)
    assert [c[1]["command"] for c in calls] == commands


# -- tool access -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_a_disallowed_tool_vanishes_from_request_and_answer(
    safety_proxy: ProxyProcess, fakes: dict[str, Any], frontend: str, stream: bool
) -> None:
    fake = fakes["chat"]
    delete_tool = {"name": "delete_branch", "schema": {"type": "object", "properties": {}}}
    fake.queue_response(tool_calls=[("delete_branch", "{}")])
    text, calls, _ = ask(
        safety_proxy, frontend, system="s", user="go", stream=stream, tools=[BASH_TOOL, delete_tool]
    )
    seen = json.loads(provider_saw(fake))
    assert [t["function"]["name"] for t in seen["tools"]] == ["Bash"]
    assert calls == []
    assert "delete_branch" in text and "blocked" in text


# -- file sandbox ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_write_outside_the_sandbox_is_blocked(
    safety_proxy: ProxyProcess, fakes: dict[str, Any], stream: bool
) -> None:
    write = {
        "name": "Write",
        "schema": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
        },
    }
    fake = fakes["chat"]
    fake.queue_response(
        tool_calls=[("Write", json.dumps({"file_path": "/home/agent/.bashrc", "content": "x"}))]
    )
    text, calls, _ = ask(
        safety_proxy, "anthropic", system="s", user="go", stream=stream, tools=[write]
    )
    assert calls == [] and ".bashrc" in text
    inside = {"file_path": "/srv/project/src/app.py", "content": "print(1)"}
    fake.queue_response(tool_calls=[("Write", json.dumps(inside))])
    _, calls, _ = ask(
        safety_proxy, "anthropic", system="s", user="go", stream=stream, tools=[write]
    )
    assert calls == [("Write", inside)]


# -- proxy-key lockout -------------------------------------------------------------------------


def test_failed_keys_lock_the_client_out_and_the_lock_expires(
    tmp_path_factory: pytest.TempPathFactory, fakes: dict[str, Any]
) -> None:
    fake = fakes["chat"]
    backends = {"chat": {"type": "openai", "base_url": fake.base_url, "api_key": PROVIDER_KEY}}
    config = proxy_config(
        backends,
        multi_user_mode=True,
        host="127.0.0.1",
        api_keys=[CLIENT_KEY],
        auth={"lockout": {"threshold": 3, "base": "1s", "max": "4s"}},
    )
    with running_proxy(tmp_path_factory.mktemp("lockout"), config) as proxy:
        url = f"{proxy.openai_base_url}/chat/completions"
        payload = {"model": f"chat:{MODEL}", "messages": [{"role": "user", "content": "hi"}]}

        def post(key: str, **headers: str) -> httpx.Response:
            return httpx.post(
                url, json=payload, headers={"authorization": f"Bearer {key}", **headers}, timeout=10
            )

        statuses = [post(f"sk-wrong-{i}").status_code for i in range(3)]
        assert statuses == [401, 401, 429]
        locked = post(CLIENT_KEY, **{"x-forwarded-for": "203.0.113.9"})  # a forged address
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) >= 1
        assert locked.json()["error"]["code"] == "too_many_auth_failures"
        fake.queue_response(text="welcome back")
        wait_for(lambda: post(CLIENT_KEY).status_code != 429, timeout=10, what="the lock to expire")
        fake.queue_response(text="welcome back")
        answer = post(CLIENT_KEY)
        assert answer.status_code == 200, answer.text


def test_secrets_in_tool_calls_and_results_never_reach_the_provider(
    safety_proxy: ProxyProcess, fakes: dict[str, Any]
) -> None:
    """The history's tool-call arguments and tool results, in all four dialects."""
    fake = fakes["chat"]
    arguments = json.dumps({"command": f"export GITHUB_TOKEN={GITHUB_TOKEN}"})
    result = f"exported; AWS id {AWS_ID} in use"
    model = f"chat:{MODEL}"
    chat = openai.OpenAI(base_url=safety_proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
    claude = anthropic.Anthropic(
        base_url=f"{safety_proxy.base_url}/anthropic", api_key=CLIENT_KEY, max_retries=0
    )
    gem = genai.Client(
        api_key=CLIENT_KEY,
        http_options=gtypes.HttpOptions(base_url=safety_proxy.base_url, api_version="v1beta"),
    )
    chat_tools: Any = [
        {"type": "function", "function": {"name": "Bash", "parameters": BASH_TOOL["schema"]}}
    ]

    def via_chat() -> None:
        messages: Any = [
            {"role": "user", "content": "set it up"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "Bash", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": result},
        ]
        chat.chat.completions.create(model=model, messages=messages, tools=chat_tools)

    def via_responses() -> None:
        items: Any = [
            {"role": "user", "content": "set it up"},
            {"type": "function_call", "call_id": "c1", "name": "Bash", "arguments": arguments},
            {"type": "function_call_output", "call_id": "c1", "output": result},
        ]
        tools: Any = [{"type": "function", "name": "Bash", "parameters": BASH_TOOL["schema"]}]
        chat.responses.create(model=model, input=items, tools=tools)

    def via_anthropic() -> None:
        claude.messages.create(
            model=model,
            max_tokens=64,
            tools=[{"name": "Bash", "input_schema": BASH_TOOL["schema"]}],  # type: ignore[list-item]
            messages=[
                {"role": "user", "content": "set it up"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "c1",
                            "name": "Bash",
                            "input": json.loads(arguments),
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "c1", "content": result}],
                },
            ],
        )

    def via_gemini() -> None:
        call = gtypes.Part(
            function_call=gtypes.FunctionCall(name="Bash", args=json.loads(arguments))
        )
        answer = gtypes.Part(
            function_response=gtypes.FunctionResponse(name="Bash", response={"output": result})
        )
        gem.models.generate_content(
            model=model,
            contents=[
                gtypes.Content(role="user", parts=[gtypes.Part(text="set it up")]),
                gtypes.Content(role="model", parts=[call]),
                gtypes.Content(role="user", parts=[answer]),
            ],
            config=gtypes.GenerateContentConfig(
                tools=[
                    gtypes.Tool(
                        function_declarations=[
                            gtypes.FunctionDeclaration(
                                name="Bash", parameters_json_schema=BASH_TOOL["schema"]
                            )
                        ]
                    )
                ],
                automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
            ),
        )

    for send in (via_chat, via_responses, via_anthropic, via_gemini):
        fake.queue_response(text="done")
        send()
        seen = provider_saw(fake)
        assert GITHUB_TOKEN not in seen and AWS_ID not in seen, send.__name__
        assert seen.count("[REDACTED:") >= 2, (send.__name__, seen)
