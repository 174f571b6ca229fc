"""Steering rules and rewrites: the configured conversation controls, in the real pipeline.

Steering: the first matching tool call of a session is swallowed with advice; a repeat
within the window (the session remembers) or after the advice (the history shows it) goes
through. Rewrites: system, user and reply targets, scoped by model, key and agent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from extproc.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    Finish,
    Message,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    Usage,
)
from extproc.canonical.aggregate import response_events
from extproc.config.sessions import RewriteConfig, SteeringRuleConfig
from extproc.pipeline import RequestContext
from extproc.pipeline.context import key_id
from extproc.pipeline.stages.rewrites import RewriteStage
from extproc.pipeline.stages.steering import SteeringStage
from extproc.sessions.ids import a_leg_id
from tests.unit.test_session_stages import KEY_A, KEY_B, MULTI_USER, Proxy, Result, chat

STEER = "Run the tests of the files you changed: pytest path/to/test_x.py -q"
RULES: list[dict[str, Any]] = [
    {
        "id": "whole-suite",
        "trigger": r"(?:^|[\s;&'])pytest(?:\s+-[-\w=]+)*\s*'?$",
        "message": STEER,
    },
    {
        "id": "heredoc",
        "trigger": r"\bcat\s*>>?\s*\S+\s*<<",
        "message": "Use your file editing tool.",
        "tools": ["Bash", "run_*"],
        "window": "10m",
    },
    {"id": "one-liner", "trigger": r"\bpython3?\s+-c\s", "message": "Write a script file."},
]
TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("Bash", "shell", "run_shell_command")
]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def proxies() -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def make(**config: Any) -> Proxy:
        proxy = Proxy(**config)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def steering_proxy(proxies: Callable[..., Proxy], clock: Clock, **config: Any) -> Proxy:
    proxy = proxies(steering=RULES, **config)
    book = proxy.app.sessions
    stage = SteeringStage(proxy.app.config.steering, book, clock=clock)
    proxy.replace_stage("steering", stage)
    return proxy


def calls_answer(*calls: tuple[str, dict[str, Any]]) -> CanonicalResponse:
    return CanonicalResponse(
        id="resp_calls",
        model="m",
        content=[
            TextPart("Running it."),
            *(
                ToolCallPart(id=f"call_{i}", name=name, arguments=json.dumps(args))
                for i, (name, args) in enumerate(calls)
            ),
        ],
        finish_reason="tool_calls",
        usage=Usage(1, 1),
    )


def agent_turn(
    proxy: Proxy,
    *calls: tuple[str, dict[str, Any]],
    session: str | None = "s",
    history: tuple[str | dict[str, Any], ...] = (),
    stream: bool = False,
    tools: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Result:
    """The agent sends its conversation; the provider answers with ``calls``."""
    return chat(
        proxy,
        *history,
        "run the tests",
        session=session,
        tools=TOOLS if tools is None else tools,
        stream=stream,
        answer=calls_answer(*calls),
        **fields,
    )


def sent_calls(result: Result) -> list[tuple[str, str]]:
    answer = result.client_answer()
    return [
        (p.name, json.loads(p.arguments).get("command", ""))
        for p in answer.content
        if isinstance(p, ToolCallPart)
    ]


def answer_text(result: Result) -> str:
    return "".join(p.text for p in result.client_answer().content if isinstance(p, TextPart))


# -- steering ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_first_matching_call_is_swallowed_with_the_advice(
    proxies: Callable[..., Proxy], stream: bool
) -> None:
    proxy = steering_proxy(proxies, Clock())
    result = agent_turn(proxy, ("Bash", {"command": "pytest"}), stream=stream)
    assert sent_calls(result) == []
    assert answer_text(result) == f"Running it.\n\n[llm-proxy] {STEER}"
    assert result.client_answer().finish_reason == "stop"


def test_a_repeat_within_the_window_goes_through(proxies: Callable[..., Proxy]) -> None:
    clock = Clock()
    proxy = steering_proxy(proxies, clock)
    agent_turn(proxy, ("Bash", {"command": "pytest -q"}))
    state = proxy.state(a_leg_id("local", "s"))
    assert state is not None and state.steering == {"whole-suite": clock.now}
    clock.now += 599
    # The agent compacted its history: only the session remembers.
    again = agent_turn(proxy, ("Bash", {"command": "pytest -q"}))
    assert sent_calls(again) == [("Bash", "pytest -q")]
    assert again.client_answer().finish_reason == "tool_calls"


def test_after_the_window_the_advice_is_given_again(proxies: Callable[..., Proxy]) -> None:
    clock = Clock()
    proxy = steering_proxy(proxies, clock)
    agent_turn(proxy, ("Bash", {"command": "pytest"}))
    clock.now += 601
    assert sent_calls(agent_turn(proxy, ("Bash", {"command": "pytest"}))) == []


def test_each_session_is_advised_once(proxies: Callable[..., Proxy]) -> None:
    proxy = steering_proxy(proxies, Clock())
    agent_turn(proxy, ("Bash", {"command": "pytest"}), session="one")
    assert sent_calls(agent_turn(proxy, ("Bash", {"command": "pytest"}), session="two")) == []
    assert sent_calls(agent_turn(proxy, ("Bash", {"command": "pytest"}), session="one")) == [
        ("Bash", "pytest")
    ]


def test_each_rule_is_remembered_on_its_own(proxies: Callable[..., Proxy]) -> None:
    proxy = steering_proxy(proxies, Clock())
    agent_turn(proxy, ("Bash", {"command": "pytest"}))
    heredoc = agent_turn(proxy, ("Bash", {"command": "cat > a.py << EOF"}))
    assert sent_calls(heredoc) == []
    assert "[llm-proxy] Use your file editing tool." in answer_text(heredoc)


def test_without_a_session_only_the_history_tells(proxies: Callable[..., Proxy]) -> None:
    proxy = steering_proxy(proxies, Clock())
    first = agent_turn(proxy, ("Bash", {"command": "pytest"}), session=None)
    assert sent_calls(first) == []
    # Nothing remembered: the same turn is advised again...
    assert sent_calls(agent_turn(proxy, ("Bash", {"command": "pytest"}), session=None)) == []
    # ... until the advice sits in an earlier assistant turn: the model insists.
    history = ("run the tests", answer_text(first))
    insisted = agent_turn(proxy, ("Bash", {"command": "pytest"}), session=None, history=history)
    assert sent_calls(insisted) == [("Bash", "pytest")]


def test_the_advice_in_the_history_counts_for_a_session_too(
    proxies: Callable[..., Proxy],
) -> None:
    clock = Clock()
    proxy = steering_proxy(proxies, clock)
    first = agent_turn(proxy, ("Bash", {"command": "pytest"}))
    clock.now += 3600  # the window is long gone, the history still shows the advice
    history = ("run the tests", answer_text(first))
    insisted = agent_turn(proxy, ("Bash", {"command": "pytest"}), history=history)
    assert sent_calls(insisted) == [("Bash", "pytest")]


def test_tool_globs_limit_a_rule(proxies: Callable[..., Proxy]) -> None:
    proxy = steering_proxy(proxies, Clock())
    heredoc = {"command": "cat > notes.md << EOF"}
    # "shell" is not one of the rule's tools ...
    assert sent_calls(agent_turn(proxy, ("shell", heredoc), session="a")) == [
        ("shell", heredoc["command"])
    ]
    # ... "run_shell_command" matches run_*, "Bash" matches exactly.
    assert sent_calls(agent_turn(proxy, ("run_shell_command", heredoc), session="b")) == []
    assert sent_calls(agent_turn(proxy, ("Bash", heredoc), session="c")) == []


def test_a_rule_without_tools_applies_to_every_tool_and_to_argv_commands(
    proxies: Callable[..., Proxy],
) -> None:
    proxy = steering_proxy(proxies, Clock())
    argv = {"command": ["bash", "-lc", "pytest -q"]}  # Codex's shell tool
    blocked = agent_turn(proxy, ("shell", argv), session="a")
    assert sent_calls(blocked) == []
    # A call with no command is searched as its JSON arguments.
    raw = agent_turn(proxy, ("custom", {"code": "python -c 'print(1)'"}), session="b")
    assert sent_calls(raw) == []
    assert "[llm-proxy] Write a script file." in answer_text(raw)


def test_calls_that_do_not_match_go_through(proxies: Callable[..., Proxy]) -> None:
    proxy = steering_proxy(proxies, Clock())
    result = agent_turn(
        proxy,
        ("Bash", {"command": "pytest tests/unit/test_x.py"}),
        ("Bash", {"command": "ls"}),
    )
    assert sent_calls(result) == [("Bash", "pytest tests/unit/test_x.py"), ("Bash", "ls")]


def test_a_steered_call_holds_back_the_other_calls_of_the_answer(
    proxies: Callable[..., Proxy],
) -> None:
    proxy = steering_proxy(proxies, Clock())
    result = agent_turn(proxy, ("Bash", {"command": "ls"}), ("Bash", {"command": "pytest"}))
    assert sent_calls(result) == []
    assert "The other 1 tool call(s) of this answer were not sent" in answer_text(result)


def test_requests_without_tools_are_not_checked(proxies: Callable[..., Proxy]) -> None:
    proxy = steering_proxy(proxies, Clock())
    stage = proxy.stage("steering")
    ctx = RequestContext(
        request_id="r", frontend="openai-chat", method="POST", path="/", headers={}
    )
    request = CanonicalRequest(protocol="openai-chat", model="m")
    assert stage.tool_check(ctx, request) is None
    assert SteeringStage([], None).tool_check(ctx, request) is None


def test_a_key_policy_turns_steering_off(proxies: Callable[..., Proxy]) -> None:
    proxy = proxies(
        **MULTI_USER,
        steering=RULES,
        key_policies={key_id(KEY_A): {"disable": ["steering"]}},
    )
    alice = agent_turn(proxy, ("Bash", {"command": "pytest"}), key=KEY_A)
    assert sent_calls(alice) == [("Bash", "pytest")]
    bob = agent_turn(proxy, ("Bash", {"command": "pytest"}), key=KEY_B)
    assert sent_calls(bob) == []


def test_reset_forgets_the_steering_memory(proxies: Callable[..., Proxy]) -> None:
    proxy = steering_proxy(proxies, Clock())
    agent_turn(proxy, ("Bash", {"command": "pytest"}))
    chat(proxy, "!/reset", session="s")
    assert sent_calls(agent_turn(proxy, ("Bash", {"command": "pytest"}))) == []


def test_steering_counts_what_it_steered() -> None:
    steered: list[str] = []
    stage = SteeringStage(
        [SteeringRuleConfig(id="r1", trigger="pytest", message="no")], None, on_steer=steered.append
    )
    ctx = RequestContext(
        request_id="r", frontend="openai-chat", method="POST", path="/", headers={}
    )
    request = CanonicalRequest(protocol="openai-chat", model="m", tools=[_tool("Bash")])
    check = stage.tool_check(ctx, request)
    assert check is not None
    verdict = check.check(ToolCallPart(id="c", name="Bash", arguments='{"command": "pytest"}'))
    assert verdict is not None and steered == ["r1"]


def _tool(name: str) -> Tool:
    return Tool(name=name, parameters={"type": "object"})


# -- rewrites ------------------------------------------------------------------------------


def rewrite_proxy(proxies: Callable[..., Proxy], *rules: dict[str, Any], **config: Any) -> Proxy:
    return proxies(rewrites=list(rules), **config)


def provider_messages(result: Result) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in result.upstream()["messages"]]


def test_system_rules_edit_system_and_developer_messages(proxies: Callable[..., Proxy]) -> None:
    proxy = rewrite_proxy(
        proxies,
        {"id": "r", "target": "system", "find": "Falcon", "replacement": "the project"},
        {"id": "p", "target": "system", "action": "prepend", "text": "[house] "},
        {"id": "a", "target": "system", "action": "append", "text": " [end]"},
    )
    result = chat(
        proxy,
        {"role": "system", "content": "About Falcon."},
        {"role": "developer", "content": "Falcon rules."},
        {"role": "user", "content": "Falcon?"},
    )
    assert provider_messages(result) == [
        ("system", "[house] About the project. [end]"),
        ("developer", "[house] the project rules. [end]"),
        ("user", "Falcon?"),  # not a user rule
    ]


def test_a_system_prompt_is_created_when_missing(proxies: Callable[..., Proxy]) -> None:
    proxy = rewrite_proxy(
        proxies,
        {"id": "p", "target": "system", "action": "prepend", "text": "Be brief."},
        {"id": "a", "target": "system", "action": "append", "text": " Answer in English."},
    )
    assert provider_messages(chat(proxy, "hi")) == [
        ("system", "Be brief. Answer in English."),
        ("user", "hi"),
    ]
    # Through a dialect where the system prompt is its own field.
    result = proxy.send(
        "anthropic",
        {"model": "anthropic:c", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert result.upstream()["system"] == "Be brief. Answer in English."


def test_a_replace_only_rule_creates_no_system_prompt(proxies: Callable[..., Proxy]) -> None:
    proxy = rewrite_proxy(proxies, {"id": "r", "target": "system", "find": "x", "replacement": "y"})
    assert provider_messages(chat(proxy, "x")) == [("user", "x")]


def test_user_rules_edit_every_user_turn_but_not_tool_results() -> None:
    stage = RewriteStage(
        [
            RewriteConfig(id="r", target="user", pattern=r"Project (\w+)", replacement=r"P-\1"),
            RewriteConfig(id="p", target="user", action="prepend", text="> "),
            RewriteConfig(id="a", target="user", action="append", text=" <"),
        ]
    )
    request = CanonicalRequest(
        protocol="anthropic",
        model="m",
        messages=[
            Message(role="user", content=[TextPart("Project Falcon"), TextPart("and Project Owl")]),
            Message(role="assistant", content=[TextPart("Project Falcon is ...")]),
            Message(
                role="user",
                content=[
                    ToolResultPart(tool_call_id="t1", content=[TextPart("Project Falcon log")]),
                    TextPart("Project Kite"),
                ],
            ),
        ],
    )
    ctx = RequestContext(request_id="r", frontend="anthropic", method="POST", path="/", headers={})
    stage.on_request(ctx, request)
    first, answer, last = request.messages
    assert [p.text for p in first.content if isinstance(p, TextPart)] == [
        "> P-Falcon",
        "and P-Owl <",
    ]
    assert answer.content == [TextPart("Project Falcon is ...")]
    result = last.content[0]
    assert isinstance(result, ToolResultPart)
    assert result.content == [TextPart("Project Falcon log")]
    assert last.content[1] == TextPart("> P-Kite <")


def test_rules_are_scoped_by_the_model_the_client_asked_for(
    proxies: Callable[..., Proxy],
) -> None:
    proxy = rewrite_proxy(
        proxies,
        {
            "id": "p",
            "target": "user",
            "action": "prepend",
            "text": "[gpt] ",
            "models": ["openai:gpt-*"],
        },
    )
    assert provider_messages(chat(proxy, "hi", model="openai:gpt-x")) == [("user", "[gpt] hi")]
    assert provider_messages(chat(proxy, "hi", model="anthropic:claude")) == [("user", "hi")]
    # A session's model does not change which rules apply.
    chat(proxy, "!/model(anthropic:claude)", session="s")
    routed = chat(proxy, "hi", session="s", model="openai:gpt-x")
    assert routed.ctx.model == "claude"
    assert provider_messages(routed) == [("user", "[gpt] hi")]


def test_rules_are_scoped_by_agent(proxies: Callable[..., Proxy]) -> None:
    proxy = rewrite_proxy(
        proxies,
        {"id": "p", "target": "user", "action": "append", "text": "!", "agents": ["claude-cli/*"]},
    )
    cli = chat(proxy, "hi", headers={"user-agent": "claude-cli/2.1.0 (external, cli)"})
    assert provider_messages(cli) == [("user", "hi!")]
    assert provider_messages(chat(proxy, "hi", headers={"user-agent": "curl/8"})) == [
        ("user", "hi")
    ]
    assert provider_messages(chat(proxy, "hi")) == [("user", "hi")]


def test_rules_are_scoped_by_client_key(proxies: Callable[..., Proxy]) -> None:
    proxy = rewrite_proxy(
        proxies,
        {"id": "p", "target": "user", "action": "append", "text": "!", "keys": [key_id(KEY_A)]},
        **MULTI_USER,
    )
    assert provider_messages(chat(proxy, "hi", key=KEY_A)) == [("user", "hi!")]
    assert provider_messages(chat(proxy, "hi", key=KEY_B)) == [("user", "hi")]


def test_a_key_policy_turns_rewrites_off(proxies: Callable[..., Proxy]) -> None:
    proxy = rewrite_proxy(
        proxies,
        {"id": "p", "target": "user", "action": "append", "text": "!"},
        {"id": "r", "target": "reply", "find": "ok", "replacement": "OK"},
        **MULTI_USER,
        key_policies={key_id(KEY_B): {"disable": ["rewrites"]}},
    )
    alice = chat(proxy, "hi", key=KEY_A)
    assert provider_messages(alice) == [("user", "hi!")]
    assert answer_text(alice) == "OK"
    bob = chat(proxy, "hi", key=KEY_B)
    assert provider_messages(bob) == [("user", "hi")]
    assert answer_text(bob) == "ok"


COLOUR = [
    {"id": "spelling", "target": "reply", "find": "colour", "replacement": "color"},
    {"id": "p", "target": "reply", "action": "prepend", "text": "<<"},
    {"id": "a", "target": "reply", "action": "append", "text": ">>"},
]


def reply_events(*deltas: str) -> list[StreamEvent]:
    answer = CanonicalResponse(id="r1", model="m", content=[], finish_reason="stop", usage=Usage())
    start, *_, usage, end = response_events(answer)
    return [start, *(TextDelta(d) for d in deltas), Finish("stop"), usage, end]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_reply_rules_edit_the_answer(proxies: Callable[..., Proxy], stream: bool) -> None:
    proxy = rewrite_proxy(proxies, *COLOUR)
    answer = CanonicalResponse(
        id="r1",
        model="m",
        content=[TextPart("the colour of colours")],
        finish_reason="stop",
        usage=Usage(1, 1),
    )
    result = chat(proxy, "hi", stream=stream, answer=answer)
    assert answer_text(result) == "<<the color of colors>>"


def test_a_match_split_across_stream_chunks_is_replaced(proxies: Callable[..., Proxy]) -> None:
    proxy = rewrite_proxy(proxies, *COLOUR)
    text = "colour, colour and more colour"
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            result = chat(proxy, "hi", stream=True, finish=False)
            result.finish(events=reply_events(text[:i], text[i:j], text[j:]))
            assert answer_text(result) == "<<color, color and more color>>", (i, j)


def test_a_reply_with_only_tool_calls_gets_the_prepend_and_append(
    proxies: Callable[..., Proxy],
) -> None:
    proxy = rewrite_proxy(proxies, *COLOUR)
    answer = CanonicalResponse(
        id="r1",
        model="m",
        content=[ToolCallPart(id="c1", name="ls", arguments="{}")],
        finish_reason="tool_calls",
        usage=Usage(1, 1),
    )
    result = chat(proxy, "hi", tools=TOOLS, answer=answer)
    assert answer_text(result) == "<<>>"
    assert [p.name for p in result.client_answer().content if isinstance(p, ToolCallPart)] == ["ls"]


def test_replies_are_scoped_by_the_requested_model(proxies: Callable[..., Proxy]) -> None:
    rule = {**COLOUR[0], "models": ["openai:gpt-*"]}
    proxy = rewrite_proxy(proxies, rule)
    answer = CanonicalResponse(
        id="r1", model="m", content=[TextPart("colour")], finish_reason="stop", usage=Usage(1, 1)
    )
    assert answer_text(chat(proxy, "hi", model="openai:gpt-x", answer=answer)) == "color"
    assert answer_text(chat(proxy, "hi", model="openai:o3", answer=answer)) == "colour"


def test_held_reply_text_goes_out_before_a_tool_call(proxies: Callable[..., Proxy]) -> None:
    proxy = rewrite_proxy(proxies, COLOUR[0])
    result = chat(proxy, "hi", stream=True, tools=TOOLS, finish=False)
    events = reply_events("the col")
    events[-3:-3] = [ToolCallStart(index=0, id="c1", name="ls"), ToolCallDelta(0, "{}")]
    events[-3] = Finish("tool_calls")
    result.finish(events=events)
    answer = result.client_answer()
    assert [type(p).__name__ for p in answer.content] == ["TextPart", "ToolCallPart"]
    assert answer_text(result) == "the col"
