"""Agent guards end to end: real Envoy + extproc, the official SDKs, fake providers.

* a looping stream is cut in every dialect with a note and a proper end, and the fake provider
  sees its request cancelled; a whole looping answer is cut to one occurrence;
* ``!/set(loop-detection=off)`` lets a session's loops through.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.test_safety import ask
from tests.e2e.test_sessions import FRONTENDS, say
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import PROVIDER_KEY, ProxyProcess, proxy_config, running_proxy, wait_for

LOOP = "Let me check the file again. " * 300  # ~8,700 characters: ~2,200 chunks of 4
MODEL = "up:fake-model-1"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(name="guards", chunk_chars=4) as made:
        yield made


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI) -> Iterator[ProxyProcess]:
    backends = {
        "up": {
            "type": "openai",
            "base_url": fake.base_url,
            "api_key": PROVIDER_KEY,
            "health_check": {"enabled": False},
        }
    }
    # Compression stays off by default; sessions turn it on (no size threshold here).
    config = proxy_config(backends, compression={"threshold_tokens": 0})
    with running_proxy(tmp_path_factory.mktemp("guards"), config) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(fake: FakeOpenAI) -> Iterator[None]:
    yield
    fake.clear_requests()
    fake.clear_responses()
    fake.clear_faults()


def _cancelled(fake: FakeOpenAI) -> None:
    def gone() -> bool:
        sent = fake.chat_sent_responses()
        return bool(sent) and not sent[-1].complete and fake.open_connections == 0

    wait_for(gone, timeout=10, what="the upstream request to be cancelled")
    assert len(fake.chat_sent_responses()[-1].chunks) < 1000  # of ~2,200


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_a_looping_stream_is_cut_and_the_provider_cancelled(
    proxy: ProxyProcess, fake: FakeOpenAI, frontend: str
) -> None:
    fake.set_fault(chunk_delay=0.002, count=1)
    fake.queue_response(text=LOOP)
    text = say(proxy, frontend, [("user", "look")], session=None, stream=True, model=MODEL)
    body, _, note = text.partition("\n\n[proxy: answer cut: the model was repeating itself")
    assert note, text[-300:]
    assert LOOP.startswith(body) and 400 <= len(body) < 1200
    _cancelled(fake)


def test_a_whole_looping_answer_is_cut_to_one_occurrence(
    proxy: ProxyProcess, fake: FakeOpenAI
) -> None:
    fake.queue_response(text="Sure. " + LOOP)
    text = say(proxy, "anthropic", [("user", "look")], session=None, model=MODEL)
    body, _, note = text.partition("\n\n[proxy: answer cut")
    assert note
    assert body.startswith("Sure. Let me check the file again")
    assert body.count("Let me check the file again.") <= 2  # one period, from where it repeats


def test_a_session_can_turn_loop_detection_off(proxy: ProxyProcess, fake: FakeOpenAI) -> None:
    session = "loops-off"
    assert say(proxy, "openai-chat", [("user", "!/set(loop-detection=off)")], session=session)
    fake.queue_response(text=LOOP)
    text = say(proxy, "openai-chat", [("user", "look")], session=session, stream=True, model=MODEL)
    assert text == LOOP


# -- tool-call loops -----------------------------------------------------------------------

PYTEST_OUTPUT = (
    "============================= test session starts ==============================\n"
    "collected 12 items\n\ntests/test_app.py ...........F\n\n"
    "=================================== FAILURES ===================================\n"
    "___________________________________ test_sum ___________________________________\n"
    "    def test_sum():\n>       assert add(2, 2) == 5\nE       assert 4 == 5\n\n"
    "tests/test_app.py:14: AssertionError\n"
    "========================= 1 failed, 11 passed in 0.31s ========================="
)


def _pytest_history(calls: int) -> list[dict[str, object]]:
    history: list[dict[str, object]] = [{"role": "user", "content": "make the tests pass"}]
    for n in range(calls):
        call = {
            "id": f"call_{n}",
            "type": "function",
            "function": {"name": "Bash", "arguments": '{"command": "pytest"}'},
        }
        history.append({"role": "assistant", "content": None, "tool_calls": [call]})
        history.append({"role": "tool", "tool_call_id": f"call_{n}", "content": PYTEST_OUTPUT})
    return history


def _chat(proxy: ProxyProcess, history: list[dict[str, object]]) -> httpx.Response:
    tools = [{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}]
    return httpx.post(
        f"{proxy.openai_base_url}/chat/completions",
        json={"model": MODEL, "messages": history, "tools": tools},
        timeout=30,
    )


def test_a_repeated_tool_call_is_steered_then_refused(
    proxy: ProxyProcess, fake: FakeOpenAI
) -> None:
    fake.queue_response(text="ok")
    assert _chat(proxy, _pytest_history(3)).status_code == 200
    assert "[proxy: repeated tool call]" not in json.dumps(fake.chat_requests()[-1].json)

    fake.queue_response(text="ok")
    assert _chat(proxy, _pytest_history(4)).status_code == 200
    last = fake.chat_requests()[-1].json["messages"][-1]
    assert last["role"] == "tool" and "[proxy: repeated tool call]" in last["content"]
    assert last["content"].startswith(PYTEST_OUTPUT)

    refused = _chat(proxy, _pytest_history(6))
    assert refused.status_code == 409
    assert refused.headers["x-should-retry"] == "false"  # the SDKs would retry in vain
    error = refused.json()["error"]
    assert error["code"] == "tool_loop" and "[proxy: tool loop stopped]" in error["message"]
    assert len(fake.chat_requests()) == 2  # the refused one never went upstream

    # The user speaks: the count starts again.
    fake.queue_response(text="ok")
    again = [*_pytest_history(6), {"role": "user", "content": "try another approach"}]
    assert _chat(proxy, again).status_code == 200


# -- tool-call repair ----------------------------------------------------------------------

READ_TOOL = {
    "name": "read_file",
    "schema": {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
        "additionalProperties": False,
    },
}
FENCED = 'I will read it.\n```json\n{"name": "read_file", "arguments": {"path": "src/app.py"}}\n```'


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_a_tool_call_written_as_text_becomes_a_real_call(
    proxy: ProxyProcess, fake: FakeOpenAI, frontend: str, stream: bool
) -> None:
    fake.queue_response(text=FENCED)
    text, calls, finish = ask(
        proxy,
        frontend,
        system="s",
        user="open app.py",
        stream=stream,
        backend="up",
        tools=[READ_TOOL],
    )
    assert calls == [("read_file", {"path": "src/app.py"})]
    assert text.strip() == "I will read it."
    assert finish.lower() in ("tool_calls", "tool_use", "completed", "finishreason.stop", "stop")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_broken_arguments_are_repaired_against_the_schema(
    proxy: ProxyProcess, fake: FakeOpenAI, stream: bool
) -> None:
    # A trailing comma, single quotes and a near-miss property name.
    fake.queue_response(tool_calls=[("Read_File", "{'Path': 'src/app.py',}")])
    _, calls, _ = ask(
        proxy,
        "anthropic",
        system="s",
        user="open",
        stream=stream,
        backend="up",
        tools=[READ_TOOL],
    )
    assert calls == [("read_file", {"path": "src/app.py"})]


def test_a_code_answer_is_not_mistaken_for_a_call(proxy: ProxyProcess, fake: FakeOpenAI) -> None:
    code = 'Here:\n```python\nprint({"name": "read_file", "arguments": {"path": "x"}})\n```\n'
    fake.queue_response(text=code)
    text, calls, _ = ask(
        proxy,
        "openai-chat",
        system="s",
        user="code",
        stream=True,
        backend="up",
        tools=[READ_TOOL],
    )
    assert calls == [] and text == code


def test_a_dangerous_call_written_as_text_is_still_blocked(
    proxy: ProxyProcess, fake: FakeOpenAI
) -> None:
    # Made from text, the call passes the tool-call gate like any other.
    call = '{"name": "Bash", "arguments": {"command": "git reset --hard && git clean -fd"}}'
    wipe = f"```json\n{call}\n```"
    fake.queue_response(text=wipe)
    text, calls, _ = ask(proxy, "openai-chat", system="s", user="tidy", stream=True, backend="up")
    assert calls == []
    assert "blocked" in text and "git reset --hard" in text


# -- context compression ---------------------------------------------------------------------

VERBOSE_PYTEST = "\n".join(
    [f"tests/test_app.py::test_case_{n} PASSED{' ' * 30}[{n}%]" for n in range(60)]
    + ["tests/test_app.py::test_sum FAILED", "", PYTEST_OUTPUT]
)


def _read_and_test_history() -> list[dict[str, object]]:
    def call(n: int, name: str, arguments: str) -> dict[str, object]:
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"c{n}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        }

    source = "def add(a, b):\n    return a + b\n" * 40
    return [
        {"role": "user", "content": "fix the failing test"},
        call(1, "Read", '{"file_path": "/repo/app.py"}'),
        {"role": "tool", "tool_call_id": "c1", "content": source},
        call(2, "Bash", '{"command": "pytest -v"}'),
        {"role": "tool", "tool_call_id": "c2", "content": VERBOSE_PYTEST},
        call(3, "Read", '{"file_path": "/repo/app.py"}'),
        {"role": "tool", "tool_call_id": "c3", "content": source},
    ]


def test_compression_is_off_by_default_and_on_per_session(
    proxy: ProxyProcess, fake: FakeOpenAI
) -> None:
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in ("Read", "Bash")
    ]
    body = {"model": MODEL, "messages": _read_and_test_history(), "tools": tools}
    fake.queue_response(text="ok")
    plain = httpx.post(f"{proxy.openai_base_url}/chat/completions", json=body, timeout=30)
    assert plain.status_code == 200 and "x-llmproxy-tokens-saved" not in plain.headers
    untouched = fake.chat_requests()[-1].json["messages"]
    assert untouched[4]["content"] == VERBOSE_PYTEST

    session = {"x-session-id": "compress-me"}
    assert say(proxy, "openai-chat", [("user", "!/set(compression=on)")], session="compress-me")
    fake.queue_response(text="ok")
    small = httpx.post(
        f"{proxy.openai_base_url}/chat/completions", json=body, headers=session, timeout=30
    )
    assert small.status_code == 200
    assert int(small.headers["x-llmproxy-tokens-saved"]) > 100
    messages = fake.chat_requests()[-1].json["messages"]
    assert messages[2]["content"].startswith("[proxy: superseded by a later")  # the older read
    assert messages[6]["content"] == untouched[6]["content"]  # the newest stays whole
    test_output = messages[4]["content"]
    assert "PASSED" not in test_output.replace("PASSED lines removed", "")
    assert "test_sum" in test_output and "1 failed, 11 passed" in test_output


def test_a_bare_pytest_call_gets_quiet_flags_when_compression_is_on(
    proxy: ProxyProcess, fake: FakeOpenAI
) -> None:
    session = "quiet-pytest"
    say(proxy, "openai-chat", [("user", "!/set(compression=on)")], session=session)
    fake.queue_response(tool_calls=[("Bash", json.dumps({"command": "pytest"}))])
    client_tools = [{"type": "function", "function": {"name": "Bash", "parameters": {}}}]
    answer = httpx.post(
        f"{proxy.openai_base_url}/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "test"}],
            "tools": client_tools,
        },
        headers={"x-session-id": session},
        timeout=30,
    ).json()
    [call] = answer["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"command": "pytest -q -rfE"}


# -- empty answers -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_empty_answer_is_a_clear_error_not_silence(
    proxy: ProxyProcess, fake: FakeOpenAI, stream: bool
) -> None:
    fake.queue_response(text="")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    answer = httpx.post(f"{proxy.openai_base_url}/chat/completions", json=body, timeout=30)
    if not stream:
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "empty_answer"
        return
    assert answer.status_code == 200  # the status line went out with the stream's start
    assert '"code":"empty_answer"' in answer.text.replace(" ", "")
