"""In-chat commands: every command and setting, and the interactive stage in the real pipeline.

The first half runs the command handlers on a :class:`CommandEnv` (the checks and messages
users read); the second sends chat messages through the ROUTER role of a real ``App`` (the
harness of test_session_stages.py) and looks at what the client and the provider get.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from extproc.canonical import CanonicalRequest, Reasoning
from extproc.config.sessions import PresetRuleConfig
from extproc.interactive import scan
from extproc.interactive.commands import (
    COMMANDS,
    MAX_ROUTE_LEGS,
    CommandEnv,
    CommandError,
    effective_route,
    run_command,
)
from extproc.interactive.presets import Presets
from extproc.interactive.settings import SETTINGS, SettingError, canonical_key, parse_value
from extproc.pipeline.context import key_id
from extproc.sessions.ids import a_leg_id
from extproc.sessions.state import SessionState
from tests.unit.test_session_stages import (
    KEY_A,
    KEY_B,
    MULTI_USER,
    Proxy,
    Result,
    chat,
)

PRESETS = ("max", "medium", "low", "no-think")


def make_env(**over: Any) -> CommandEnv:
    values: dict[str, Any] = {
        "state": SessionState.new("sess-1", "local", client_session="c-1"),
        "session_id": "sess-1",
        "session_source": "header x-session-id",
        "prefix": "!/",
        "request_model": "gpt-x",
        "describe_route": lambda expression: f"{expression} -> cluster/x",
        "model_allowed": lambda model: True,
        "features": ("sessions", "interactive", "routing"),
        "presets": PRESETS,
    }
    values.update(over)
    return CommandEnv(**values)


def do(env: CommandEnv, text: str) -> list[str]:
    """Run every command of ``text`` in order (as the stage does); the lines they answer."""
    found = scan(text)
    assert not found.errors, found.errors
    return [run_command(command, env) for command in found.commands]


def refused(env: CommandEnv, text: str) -> str:
    with pytest.raises(CommandError) as caught:
        do(env, text)
    return str(caught.value)


# -- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("model", "model"),
        ("MODEL", "model"),
        ("route", "backend"),
        ("top_p", "top-p"),
        ("topp", "top-p"),
        ("effort", "reasoning-effort"),
        ("reasoning", "reasoning-effort"),
        ("reasoning_effort", "reasoning-effort"),
        ("thinking", "thinking-budget"),
        ("budget", "thinking-budget"),
        ("preset", "reasoning-preset"),
        ("commands", "dangerous-commands"),
        ("command-protection", "dangerous-commands"),
        ("sandbox", "project-dir"),
        ("project", "project-dir"),
        ("prefix", "command-prefix"),
        (" Redaction ", "redaction"),
    ],
)
def test_setting_names_and_their_other_spellings(typed: str, key: str) -> None:
    assert canonical_key(typed) == key


def test_an_unknown_setting_lists_the_known_ones() -> None:
    with pytest.raises(SettingError) as caught:
        canonical_key("colour")
    message = str(caught.value)
    assert message.startswith("unknown setting 'colour'; settings: model, backend")
    assert all(key in message for key in SETTINGS)


@pytest.mark.parametrize(
    ("key", "raw", "value"),
    [
        ("temperature", "0", 0.0),
        ("temperature", "2", 2.0),
        ("temperature", " 0.25 ", 0.25),
        ("top-p", "1", 1.0),
        ("reasoning-effort", "HIGH", "high"),
        ("reasoning-effort", "xhigh", "xhigh"),
        ("thinking-budget", "0", 0),
        ("thinking-budget", "1000000", 1_000_000),
        ("model", " openai:gpt-4o ", "openai:gpt-4o"),
        ("model", "org/model@v1+x", "org/model@v1+x"),
        ("backend", "openai:gpt-4o|anthropic:claude", "openai:gpt-4o|anthropic:claude"),
        ("backend", "a[weight=2,first]^b", "a[weight=2,first]^b"),
        ("project-dir", "/home/me/app/", "/home/me/app"),
        ("project-dir", "/", "/"),
        ("project-dir", "C:\\work\\app", "C:\\work\\app"),
        ("command-prefix", "@@", "@@"),
        ("command-prefix", "#", "#"),
        ("reasoning-preset", "No-Think", "no-think"),
    ],
)
def test_setting_values_accepted(key: str, raw: str, value: Any) -> None:
    assert parse_value(key, raw) == value


@pytest.mark.parametrize("raw", ["on", "ON", "true", "yes", "1", "enable", "enabled"])
def test_switches_turn_on(raw: str) -> None:
    assert parse_value("redaction", raw) is True


@pytest.mark.parametrize("raw", ["off", "false", "No", "0", "disable", "disabled"])
def test_switches_turn_off(raw: str) -> None:
    assert parse_value("dangerous-commands", raw) is False


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("redaction", "maybe", "redaction takes on or off, not 'maybe'"),
        ("temperature", "hot", "temperature takes a number, not 'hot'"),
        ("temperature", "2.5", "temperature must be between 0 and 2"),
        ("temperature", "-0.1", "temperature must be between 0 and 2"),
        ("temperature", "nan", "temperature must be between 0 and 2"),
        ("temperature", "inf", "temperature must be between 0 and 2"),
        ("top-p", "1.5", "top-p must be between 0 and 1"),
        ("thinking-budget", "1.5", "thinking-budget takes a whole number of tokens, not '1.5'"),
        ("thinking-budget", "-1", "thinking-budget must be between 0 and 1000000 tokens"),
        ("thinking-budget", "1000001", "thinking-budget must be between 0 and 1000000 tokens"),
        ("reasoning-effort", "extreme", "reasoning-effort takes one of none, minimal, low"),
        ("model", "gpt 4o", "model 'gpt 4o' is not a model name"),
        ("model", "-gpt", "model '-gpt' is not a model name"),
        ("model", "m" * 201, "is not a model name"),
        ("backend", " ", "backend needs a routing expression"),
        ("backend", "x" * 1001, "backend needs a routing expression"),
        ("backend", "a||b", "backend 'a||b': "),
        ("project-dir", "work/app", "project-dir must be an absolute path, not 'work/app'"),
        ("project-dir", "/a\0b", "project-dir is not a usable path"),
        ("command-prefix", "ab", "command-prefix must be 1 to 8 punctuation characters"),
        ("command-prefix", "!!!!!!!!!", "command-prefix must be 1 to 8 punctuation characters"),
        ("command-prefix", "`", "command-prefix must be 1 to 8 punctuation characters"),
        ("command-prefix", "!\\", "command-prefix must be 1 to 8 punctuation characters"),
        ("reasoning-preset", "9x", "reasoning-preset takes a preset name"),
    ],
)
def test_setting_values_refused(key: str, raw: str, message: str) -> None:
    with pytest.raises(SettingError) as caught:
        parse_value(key, raw)
    assert message in str(caught.value)


# -- the commands, one by one ----------------------------------------------------------------


def test_set_several_settings_at_once() -> None:
    env = make_env()
    assert do(env, "!/set(model=gpt-4o, temperature=0.2, redaction=on)") == [
        "Set model = gpt-4o, temperature = 0.2, redaction = on."
    ]
    assert env.state.settings == {"model": "gpt-4o", "temperature": 0.2, "redaction": True}
    assert len(env.changes) == 3


def test_set_with_quoted_values_and_underscored_keys() -> None:
    env = make_env()
    do(env, '!/set(top_p="0.5", project_dir="/srv/my app")')
    assert env.state.settings == {"top-p": 0.5, "project-dir": "/srv/my app"}


@pytest.mark.parametrize("text", ["!/set", "!/set()", "!/set(temperature)", "!/set(a=1, b)"])
def test_set_needs_key_value_pairs(text: str) -> None:
    assert refused(make_env(), text) == (
        "set takes key=value pairs, e.g. set(model=gpt-4o, temperature=0.2)"
    )


def test_set_reports_the_bad_setting() -> None:
    env = make_env()
    assert refused(env, "!/set(colour=red)").startswith("unknown setting 'colour'")
    assert refused(env, "!/set(temperature=7)") == "temperature must be between 0 and 2"


def test_unset_settings_or_all() -> None:
    env = make_env()
    do(env, "!/set(model=gpt-4o, temperature=0.2, top-p=0.5)")
    assert do(env, "!/unset(model, TOP_P)") == ["Unset model, top-p."]
    assert env.state.settings == {"temperature": 0.2}
    assert do(env, "!/unset(thinking)") == ["Unset thinking-budget."]  # not set: fine
    assert do(env, "!/unset(ALL)") == ["All settings cleared."]
    assert env.state.settings == {}


@pytest.mark.parametrize("text", ["!/unset", "!/unset()", "!/unset(model=x)"])
def test_unset_needs_setting_names(text: str) -> None:
    assert refused(make_env(), text) == (
        "unset takes setting names, e.g. unset(model, temperature)"
    )


def test_unset_all_with_other_names_is_an_unknown_setting() -> None:
    assert refused(make_env(), "!/unset(all, model)").startswith("unknown setting 'all'")


def test_model_sets_the_sessions_model() -> None:
    env = make_env()
    assert do(env, "!/model(gpt-4o-mini)") == ["Model set to gpt-4o-mini."]
    assert env.state.settings["model"] == "gpt-4o-mini"
    do(env, "!/backend(openai)")
    assert do(env, "!/model(gpt-4o)") == [
        "Model set to gpt-4o (backend 'openai' still comes first: unset(backend))."
    ]


@pytest.mark.parametrize(
    "text", ["!/model", "!/model()", "!/model(a, b)", "!/model(name=x)", "!/model( )"]
)
def test_model_takes_one_argument(text: str) -> None:
    assert refused(make_env(), text) == "model takes one argument, e.g. model(openai:gpt-4o)"


def test_model_refuses_a_bad_name() -> None:
    assert refused(make_env(), "!/model(gpt 4o)") == "model 'gpt 4o' is not a model name"


def test_backend_sets_a_routing_expression() -> None:
    env = make_env()
    assert do(env, "!/backend(openai:gpt-4o|anthropic:claude-sonnet-4)") == [
        "Backend set to openai:gpt-4o|anthropic:claude-sonnet-4."
    ]
    assert env.state.settings["backend"] == "openai:gpt-4o|anthropic:claude-sonnet-4"
    assert refused(env, "!/backend(a||b)").startswith("backend 'a||b': ")
    assert refused(env, "!/backend").startswith("backend takes one argument")


def test_oneoff_sets_the_next_requests_route() -> None:
    env = make_env()
    assert do(env, "!/oneoff(anthropic:claude-haiku-4)") == [
        "The next request goes to anthropic:claude-haiku-4; the one after returns to the "
        "session's route."
    ]
    assert env.state.oneoff == "anthropic:claude-haiku-4"
    assert env.state.settings == {}  # not a setting
    assert refused(env, "!/oneoff()").startswith("oneoff takes one argument")


def test_route_create_append_prepend_list_clear() -> None:
    env = make_env()
    assert do(env, "!/route-list") == ["Session route: (none)."]
    assert do(env, "!/route-create(openai:gpt-4o, anthropic:claude)") == [
        "Session route: openai:gpt-4o | anthropic:claude."
    ]
    assert do(env, "!/route-append(gemini:g)") == [
        "Session route: openai:gpt-4o | anthropic:claude | gemini:g."
    ]
    assert do(env, "!/route-prepend(local:q, local:r)") == [
        "Session route: local:q | local:r | openai:gpt-4o | anthropic:claude | gemini:g."
    ]
    assert env.state.route == [
        "local:q",
        "local:r",
        "openai:gpt-4o",
        "anthropic:claude",
        "gemini:g",
    ]
    # route-create replaces the list.
    do(env, "!/route-create(x:y)")
    assert env.state.route == ["x:y"]
    assert do(env, "!/route-clear") == ["Session route cleared."]
    assert env.state.route == []


@pytest.mark.parametrize("name", ["route-create", "route-append", "route-prepend"])
def test_route_legs_are_one_per_argument(name: str) -> None:
    env = make_env()
    assert refused(env, f"!/{name}") == (
        f"{name} takes backend:model legs, e.g. {name}(openai:gpt-4o)"
    )
    assert refused(env, f"!/{name}(leg=openai:x)").startswith(f"{name} takes backend:model legs")
    assert refused(env, f"!/{name}(openai:a|anthropic:b)") == (
        f"{name}: give one leg per argument, not 'openai:a|anthropic:b'"
    )
    assert refused(env, f"!/{name}(a^b)").startswith(f"{name}: give one leg per argument")
    assert refused(env, f"!/{name}(a||b)").startswith("backend 'a||b'")


def test_a_route_holds_at_most_eight_legs() -> None:
    env = make_env()
    legs = ", ".join(f"b:m{i}" for i in range(MAX_ROUTE_LEGS + 1))
    assert refused(env, f"!/route-create({legs})") == "a session route holds at most 8 legs"
    do(env, "!/route-create(" + ", ".join(f"b:m{i}" for i in range(MAX_ROUTE_LEGS - 1)) + ")")
    do(env, "!/route-append(b:last)")
    assert len(env.state.route) == MAX_ROUTE_LEGS
    assert refused(env, "!/route-append(b:more)") == "a session route holds at most 8 legs"
    assert refused(env, "!/route-prepend(b:more)") == "a session route holds at most 8 legs"


@pytest.mark.parametrize(
    "name", ["route-list", "route-clear", "session", "reset", "hello", "max", "no-think"]
)
def test_commands_without_arguments_refuse_them(name: str) -> None:
    assert refused(make_env(), f"!/{name}(x)") == f"{name} takes no arguments"
    assert refused(make_env(), f"!/{name}(x=1)") == f"{name} takes no arguments"


def test_session_shows_the_state() -> None:
    state = SessionState.new("sess-1", "local", client_session="c-1")
    state.settings.update(temperature=0.2, redaction=False)
    state.oneoff = "a:b"
    state.route = ["x:y", "z:w"]
    state.last_route = "instance/openai (gpt-x)"
    state.counters["requests"] = 7
    assert do(make_env(state=state), "!/session") == [
        "session: sess-1\n"
        "settings: redaction=off, temperature=0.2\n"
        "one-off: a:b\n"
        "route: x:y | z:w\n"
        "last route: instance/openai (gpt-x)\n"
        "requests: 7"
    ]
    assert do(make_env(), "!/session") == [
        "session: sess-1\nsettings: (none)\none-off: (none)\nroute: (none)\n"
        "last route: (none)\nrequests: 0"
    ]


def test_reset_clears_settings_oneoff_and_route() -> None:
    env = make_env()
    do(env, "!/set(temperature=0.2) !/oneoff(a:b) !/route-create(x:y)")
    assert do(env, "!/reset") == ["Session reset: settings, one-off and route cleared."]
    assert env.state.settings == {} and env.state.oneoff is None and env.state.route == []
    assert env.reset


def test_presets_are_commands() -> None:
    env = make_env()
    assert do(env, "!/max") == [
        "Reasoning preset 'max' on for this session (unset(reasoning-preset) to drop it)."
    ]
    assert env.state.settings["reasoning-preset"] == "max"
    do(env, "!/no-think")
    assert env.state.settings["reasoning-preset"] == "no-think"
    # A configured preset name that is not a default one.
    env = make_env(presets=("quick",))
    do(env, "!/quick")
    assert env.state.settings["reasoning-preset"] == "quick"
    assert refused(env, "!/max") == "unknown command !/max"


def test_a_reasoning_preset_must_be_configured() -> None:
    env = make_env(presets=("quick", "max"))
    assert do(env, "!/set(preset=quick)") == ["Set reasoning-preset = quick."]
    assert refused(env, "!/set(preset=medium)") == (
        "unknown reasoning preset 'medium'; presets: quick, max"
    )


def test_unknown_commands() -> None:
    assert refused(make_env(), "!/bogus") == "unknown command !/bogus"
    assert refused(make_env(prefix="@@"), "!/bogus") == "unknown command @@bogus"


def test_help_lists_every_command_and_the_presets() -> None:
    [text] = do(make_env(), "!/help")
    lines = text.splitlines()
    assert lines[0] == "Commands (typed alone in a message, or before your prompt):"
    for spec in COMMANDS.values():
        assert f"  !/{spec.usage} — {spec.summary}" in lines
    assert "  !/max, !/medium, !/low, !/no-think — reasoning presets" in lines
    assert lines[-1] == "!/help(set) lists the settings."
    [text] = do(make_env(prefix="@@", presets=()), "!/help")
    assert "  @@hello — the session, its route and the active features" in text
    assert "reasoning presets" not in text


def test_help_for_one_command() -> None:
    env = make_env()
    assert do(env, "!/help(oneoff)") == [
        "!/oneoff(backend:model)\nthe next request only\n"
        "Example: !/oneoff(anthropic:claude-haiku-4)"
    ]
    # Typed with the prefix, in any case.
    assert do(env, "!/help(!/ONEOFF)") == do(env, "!/help(oneoff)")
    [text] = do(env, "!/help(set)")
    assert "Settings:" in text
    assert all(f"  {s.key}: {s.help}" in text for s in SETTINGS.values())
    assert do(env, "!/help(no-think)") == [
        "!/no-think: reasoning preset 'no-think' for this session."
    ]
    assert refused(env, "!/help(bogus)") == "unknown command 'bogus'; !/help lists them"
    assert refused(env, "!/help(a, b)") == "help takes at most one command name, e.g. help(set)"
    assert refused(env, "!/help(x=1)") == "help takes at most one command name, e.g. help(set)"


def test_hello_describes_session_route_features_and_settings() -> None:
    env = make_env()
    [text] = do(env, "!/hello")
    lines = text.splitlines()
    assert lines[0] == "LLM interactive proxy"
    assert lines[1].startswith("session: sess-1 (") and "header x-session-id" in lines[1]
    assert lines[2] == "route: gpt-x -> cluster/x"
    assert lines[3] == "features: sessions, interactive, routing"
    assert lines[-1] == "Type !/help for the commands."
    assert not any(line.startswith("settings:") for line in lines)
    do(env, "!/set(model=gpt-4o, temperature=0.2)")
    [text] = do(env, "!/hello")
    assert "route: gpt-4o -> cluster/x [session model]" in text
    assert "settings: model=gpt-4o, temperature=0.2" in text


def test_hello_in_an_isolated_session_says_nothing_is_remembered() -> None:
    [text] = do(make_env(session_source=None, features=()), "!/hello")
    assert "not remembered: this client sends no session id (send x-session-id)" in text
    assert "features: none" in text


def test_hello_uses_the_sessions_prefix() -> None:
    [text] = do(make_env(prefix="@@"), "!/hello")
    assert text.endswith("Type @@help for the commands.")


# -- what a session's route is --------------------------------------------------------------


def _state(**fields: Any) -> SessionState:
    state = SessionState.new("s", "local")
    for name, value in fields.items():
        if name in ("oneoff", "route"):
            setattr(state, name, value)
        else:
            state.settings[name.replace("_", "-")] = value
    return state


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, (None, "")),
        ({"model": "m1"}, ("m1", "session model")),
        ({"backend": "openai"}, ("openai:req", "session backend")),
        ({"backend": "openai", "model": "m1"}, ("openai:m1", "session backend")),
        ({"backend": "openai:x", "model": "m1"}, ("openai:x", "session backend")),
        ({"backend": "a|b", "model": "m1"}, ("a|b", "session backend")),
        ({"route": ["a:1", "b:2"], "backend": "x:y"}, ("a:1|b:2", "session route")),
        ({"oneoff": "o:1", "route": ["a:1"], "model": "m1"}, ("o:1", "one-off")),
    ],
)
def test_effective_route_precedence(fields: dict[str, Any], expected: tuple[Any, str]) -> None:
    assert effective_route(_state(**fields), "req") == expected


def test_effective_route_without_a_state() -> None:
    assert effective_route(None, "req") == (None, "")


# -- reasoning presets (extproc/interactive/presets.py) ---------------------------------------


def _presets() -> Presets:
    return Presets(
        {
            "max": [
                PresetRuleConfig(
                    models=["claude-*", "anthropic/*"], budget_tokens=60000, enabled=True
                ),
                PresetRuleConfig(effort="high"),
            ],
            "no-think": [PresetRuleConfig(enabled=False)],
            "quick": [PresetRuleConfig(models=["gpt-*"], effort="minimal", budget_tokens=512)],
        }
    )


def _request(reasoning: Reasoning | None = None) -> CanonicalRequest:
    return CanonicalRequest(protocol="openai-chat", model="m", reasoning=reasoning)


def test_preset_names_and_the_first_rule_that_matches() -> None:
    presets = _presets()
    assert presets.names == ("max", "no-think", "quick")
    rule = presets.rule("max", "CLAUDE-sonnet-4")  # globs are case-insensitive
    assert rule is not None and rule.budget_tokens == 60000
    rule = presets.rule("max", "gpt-4o")
    assert rule is not None and rule.effort == "high"
    assert presets.rule("quick", "o3") is None
    assert presets.rule("quick", "my-gpt-4o") is None  # the whole name
    assert presets.rule("unknown", "gpt-4o") is None


def test_a_preset_sets_only_what_its_rule_names() -> None:
    presets = _presets()
    request = _request(Reasoning(effort="low", budget_tokens=100))
    assert presets.apply("max", "gpt-4o", request)
    assert request.reasoning == Reasoning(effort="high", budget_tokens=100)
    request = _request()
    assert presets.apply("max", "claude-x", request)
    assert request.reasoning == Reasoning(budget_tokens=60000, enabled=True)


def test_a_preset_that_turns_reasoning_off_drops_the_budget() -> None:
    request = _request(Reasoning(effort="high", budget_tokens=9999, enabled=True))
    assert _presets().apply("no-think", "anything", request)
    assert request.reasoning == Reasoning(enabled=False)


def test_a_preset_without_a_rule_for_the_model_leaves_the_request_alone() -> None:
    request = _request(Reasoning(effort="low"))
    assert not _presets().apply("quick", "claude-x", request)
    assert request.reasoning == Reasoning(effort="low")


# -- multi-user checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "!/set(redaction=off)",
        "!/set(dangerous-commands=no)",
        "!/set(commands=0)",
        "!/set(temperature=0.2, redaction=off)",
    ],
)
def test_safety_locked_refuses_turning_safety_off(text: str) -> None:
    message = refused(make_env(safety_locked=True), text)
    assert message.endswith(
        "cannot be turned off here: the proxy's operator keeps it on for every client"
    )


def test_safety_locked_still_lets_safety_be_turned_on() -> None:
    env = make_env(safety_locked=True)
    do(env, "!/set(redaction=on, dangerous-commands=on)")
    assert env.state.settings == {"redaction": True, "dangerous-commands": True}
    # Without the lock, off is fine.
    env = make_env()
    do(env, "!/set(redaction=off)")
    assert env.state.settings == {"redaction": False}


def test_every_way_to_name_a_model_is_checked_against_the_keys_models() -> None:
    allowed = {"openai:gpt-4o-mini", "anthropic:claude-haiku", "claude-haiku"}
    checked: list[str] = []

    def model_allowed(model: str) -> bool:
        checked.append(model)
        return model in allowed

    env = make_env(model_allowed=model_allowed)
    do(env, "!/model(openai:gpt-4o-mini) !/set(model=claude-haiku)")
    do(env, "!/backend(openai:gpt-4o-mini?temperature=1|anthropic:claude-haiku[max_context=9])")
    do(env, "!/backend(openai:gpt-4o-mini[weight=2]^anthropic:claude-haiku)")
    do(env, "!/oneoff(anthropic:claude-haiku) !/route-create(openai:gpt-4o-mini)")
    assert set(checked) == allowed  # each leg as typed, as access control matches requests
    for text in (
        "!/model(o3)",
        "!/set(model=openai:o3)",
        "!/backend(openai:gpt-4o-mini|openai:o3)",
        "!/backend(openai:gpt-4o-mini^openai:o3)",
        "!/backend(openai:gpt-4o-mini!openai:o3)",
        "!/oneoff(openai:o3)",
        "!/route-create(openai:gpt-4o-mini, openai:o3)",
        "!/route-append(openai:o3)",
        "!/route-prepend(openai:o3)",
    ):
        leg = "o3" if text == "!/model(o3)" else "openai:o3"
        assert refused(env, text).endswith(f"this key may not use model {leg!r}"), text


def test_project_dir_must_stay_inside_the_allowed_roots() -> None:
    env = make_env(project_roots=("/srv/proj/", "/home/alice"))
    for path in ("/srv/proj", "/srv/proj/app", "/home/alice/x/y"):
        do(env, f"!/set(project-dir={path})")
        assert env.state.settings["project-dir"] == path
    for path in ("/srv/projshop", "/srv", "/etc", "/home/alice-evil/x"):
        message = refused(env, f"!/set(project-dir={path})")
        assert message == (
            f"project-dir '{path}' is outside the directories allowed here: /srv/proj/, /home/alice"
        )
    # Without roots, any absolute path.
    env = make_env()
    do(env, "!/set(sandbox=/etc)")
    assert env.state.settings["project-dir"] == "/etc"


# -- the stage in the pipeline ------------------------------------------------------------


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


@pytest.fixture
def proxy(proxies: Callable[..., Proxy]) -> Proxy:
    return proxies()


def messages_to_provider(result: Result) -> list[tuple[str, str]]:
    """(role, text) of the OpenAI Chat messages the provider gets."""
    return [(m["role"], m.get("content") or "") for m in result.upstream()["messages"]]


def stored(proxy: Proxy, session: str, owner: str = "local") -> SessionState | None:
    return proxy.state(a_leg_id(owner, session))


def client_request(protocol: str, text: str, stream: bool) -> dict[str, Any]:
    if protocol == "openai-chat":
        return {
            "model": "openai:gpt-x",
            "messages": [{"role": "user", "content": text}],
            "stream": stream,
        }
    if protocol == "openai-responses":
        return {"model": "openai:gpt-x", "input": text, "stream": stream}
    if protocol == "anthropic":
        return {
            "model": "openai:gpt-x",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": text}],
            "stream": stream,
        }
    return {
        "model": "openai:gpt-x",
        "contents": [{"role": "user", "parts": [{"text": text}]}],
        "stream": stream,
    }


@pytest.mark.parametrize("protocol", ["openai-chat", "openai-responses", "anthropic", "gemini"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_command_only_message_is_answered_in_the_clients_dialect(
    proxy: Proxy, protocol: str, stream: bool
) -> None:
    result = proxy.send(
        protocol, client_request(protocol, "!/hello", stream), headers={"x-session-id": "s"}
    )
    assert result.reply.status == 200
    text = result.text()
    assert text.startswith("LLM interactive proxy\nsession: " + a_leg_id("local", "s"))
    assert "route: openai:gpt-x -> instance/openai model gpt-x" in text
    assert result.answer().finish_reason == "stop"


def test_command_names_are_case_insensitive(proxy: Proxy) -> None:
    assert chat(proxy, "!/HeLLo", session="s").text().startswith("LLM interactive proxy")


def test_a_prompt_with_commands_goes_on_without_them(proxy: Proxy) -> None:
    result = chat(proxy, "!/set(temperature=0.3) write a poem", session="s")
    body = result.upstream()
    assert messages_to_provider(result) == [("user", "write a poem")]
    assert body["temperature"] == 0.3
    state = stored(proxy, "s")
    assert state is not None and state.settings == {"temperature": 0.3}
    # Commands after the prompt, and between its lines.
    result = chat(proxy, "explain this\n!/max\nplease", session="s", model="anthropic:claude")
    assert messages_to_provider(result) == [("user", "explain this\nplease")]
    assert result.request.reasoning is not None and result.request.reasoning.effort == "high"


def test_several_commands_in_one_message(proxy: Proxy) -> None:
    result = chat(
        proxy,
        "!/set(temperature=0.2) !/max!/route-create(anthropic:c1) !/hello",
        session="s",
    )
    lines = result.text().splitlines()
    assert lines[0] == "Set temperature = 0.2."
    assert lines[1].startswith("Reasoning preset 'max' on")
    assert lines[2] == "Session route: anthropic:c1."
    # A later command of the message sees what the earlier ones did.
    assert "[session route]" in result.text()
    assert "settings: reasoning-preset=max, temperature=0.2" in result.text()
    state = stored(proxy, "s")
    assert state is not None and state.route == ["anthropic:c1"]
    assert state.settings == {"temperature": 0.2, "reasoning-preset": "max"}


def test_commands_in_code_are_not_run(proxy: Proxy) -> None:
    text = "what does `!/reset` do?\n```\n!/set(temperature=2)\n```"
    result = chat(proxy, text, session="s")
    assert messages_to_provider(result) == [("user", text)]
    assert "temperature" not in result.upstream()
    state = stored(proxy, "s")
    assert state is not None and state.settings == {}


@pytest.mark.parametrize("text", ["see http://host!/path", "a!/b", "!/ hello", "!/(x)"])
def test_prose_with_the_prefix_is_not_a_command(proxy: Proxy, text: str) -> None:
    result = chat(proxy, text, session="s")
    assert messages_to_provider(result) == [("user", text)]


def test_an_unknown_command_answers_with_the_help(proxy: Proxy) -> None:
    result = chat(proxy, "!/set(temperature=0.5) !/bogus and a prompt", session="s")
    lines = result.text().splitlines()
    assert lines[0] == "Set temperature = 0.5."
    assert lines[1] == "!/bogus: unknown command !/bogus"
    assert lines[2] == "Commands (typed alone in a message, or before your prompt):"
    assert lines[-1] == "Nothing was sent to the model; fix the command and send it again."
    # Nothing was saved either (the set before it included).
    state = stored(proxy, "s")
    assert state is None or state.settings == {}


def test_a_malformed_command_is_an_error_and_nothing_is_saved(proxy: Proxy) -> None:
    result = chat(proxy, "!/max !/set(temperature=0.5\nwrite a poem", session="s")
    lines = result.text().splitlines()
    assert lines[0].startswith("Malformed command: !/set(temperature=0.5")
    assert lines[-1] == "Nothing was sent to the model; fix the command and send it again."
    state = stored(proxy, "s")
    assert state is None or state.settings == {}


def test_too_many_commands_in_one_message(proxy: Proxy) -> None:
    result = chat(proxy, " ".join(["!/session"] * 33) + " hi", session="s")
    text = result.text()
    assert "Malformed command: !/session: too many commands (at most 32 in one message)" in text
    assert text.endswith("Nothing was sent to the model; fix the command and send it again.")


def test_repeating_a_command_is_never_a_duplicate_request(proxy: Proxy) -> None:
    held = chat(proxy, "hi", session="s", finish=False)  # a request in flight
    assert held.forwarded
    for _ in range(3):
        assert chat(proxy, "!/session", session="s").reply.status == 200


def test_a_refused_command_names_itself(proxy: Proxy) -> None:
    result = chat(proxy, "!/set(temperature=5) hi", session="s")
    assert result.text().splitlines() == [
        "!/set: temperature must be between 0 and 2",
        "Nothing was sent to the model; fix the command and send it again.",
    ]


def test_the_prefix_can_change_per_session(proxy: Proxy) -> None:
    assert chat(proxy, "!/set(prefix=@@)", session="s").text() == "Set command-prefix = @@."
    hello = chat(proxy, "@@hello", session="s")
    assert hello.text().endswith("Type @@help for the commands.")
    # The default prefix is ordinary text in that session...
    forwarded = chat(proxy, "!/hello there", session="s")
    assert messages_to_provider(forwarded) == [("user", "!/hello there")]
    # ... and still the prefix of other sessions.
    assert chat(proxy, "!/hello", session="other").reply.status == 200
    assert chat(proxy, "@@hello", session="other").forwarded
    # Back to the default.
    assert chat(proxy, "@@unset(prefix)", session="s").text() == "Unset command-prefix."
    assert chat(proxy, "!/hello", session="s").reply.status == 200


def test_history_from_before_a_prefix_change_is_still_stripped(proxy: Proxy) -> None:
    chat(proxy, "!/set(prefix=@@)", session="s")
    result = chat(
        proxy,
        "!/max write a poem",  # typed before the change, resent
        "ok",
        "!/set(prefix=@@)",
        "Set command-prefix = @@.",
        "@@low shorter",
        session="s",
    )
    assert messages_to_provider(result) == [
        ("user", "write a poem"),
        ("assistant", "ok"),
        ("user", "shorter"),
    ]
    # The old prefix's commands in the history are not run again.
    state = stored(proxy, "s")
    assert state is not None and state.settings == {
        "command-prefix": "@@",
        "reasoning-preset": "low",
    }


def test_history_from_before_a_second_prefix_change_is_still_stripped(proxy: Proxy) -> None:
    chat(proxy, "!/set(prefix=@@)", session="s")
    chat(proxy, "!/set(prefix=@@)", "Set command-prefix = @@.", "@@set(prefix=##)", session="s")
    result = chat(
        proxy,
        "!/set(prefix=@@)",
        "Set command-prefix = @@.",
        "@@set(prefix=##)",
        "Set command-prefix = ##.",
        "write a poem",
        session="s",
    )
    assert messages_to_provider(result) == [("user", "write a poem")]


def test_old_prefix_text_sent_as_prose_stays_prose_in_the_history(proxy: Proxy) -> None:
    chat(proxy, "!/set(prefix=@@)", session="s")
    prose = chat(proxy, "what does !/hello print?", session="s")
    assert messages_to_provider(prose) == [("user", "what does !/hello print?")]
    # The provider saw that text: the resent history must read the same.
    result = chat(
        proxy,
        "!/set(prefix=@@)",
        "Set command-prefix = @@.",
        "what does !/hello print?",
        "It greets you.",
        "thanks",
        session="s",
    )
    assert messages_to_provider(result)[0] == ("user", "what does !/hello print?")


def test_the_configured_prefix(proxies: Callable[..., Proxy]) -> None:
    proxy = proxies(interactive={"prefix": "::"})
    assert chat(proxy, "::hello", session="s").reply.status == 200
    assert chat(proxy, "!/hello", session="s").forwarded


def test_commands_off_forwards_them_as_text(proxies: Callable[..., Proxy]) -> None:
    proxy = proxies(interactive={"enabled": False})
    assert "interactive" not in [s.name for s in proxy.app.pipeline.stages]
    result = chat(proxy, "!/hello", session="s")
    assert messages_to_provider(result) == [("user", "!/hello")]


def test_an_isolated_session_is_told_its_settings_do_not_last(proxy: Proxy) -> None:
    result = chat(proxy, "!/set(temperature=0.3)")
    assert result.text().splitlines() == [
        "Set temperature = 0.3.",
        "Note: this client sends no session id, so these settings apply to this message only "
        "(send an x-session-id header to keep them).",
    ]
    # Commands that change nothing get no note.
    assert "Note:" not in chat(proxy, "!/hello").text()
    assert "Note:" not in chat(proxy, "!/session").text()
    # With a prompt, the settings shape that prompt, and only it.
    mixed = chat(proxy, "!/set(temperature=0.3) go")
    assert mixed.upstream()["temperature"] == 0.3
    assert "temperature" not in chat(proxy, "go").upstream()
    assert proxy.run(proxy.book.store.list()) == []


def test_with_sessions_off_commands_are_still_answered(proxies: Callable[..., Proxy]) -> None:
    proxy = proxies(sessions={"enabled": False})
    result = chat(proxy, "!/set(temperature=0.3)", session="s")
    lines = result.text().splitlines()
    assert lines[0] == "Set temperature = 0.3."
    assert lines[1].startswith("Note: sessions are off")
    hello = chat(proxy, "!/hello", session="s").text()
    assert "session: (sessions off)" in hello
    # Nothing is remembered; with a prompt, the settings shape that prompt only.
    assert "temperature" not in chat(proxy, "go", session="s").upstream()
    assert chat(proxy, "!/set(temperature=0.3) go", session="s").upstream()["temperature"] == 0.3
    assert chat(proxy, "!/oneoff(anthropic:c) go", session="s").ctx.model == "c"


def test_settings_shape_every_later_request(proxy: Proxy) -> None:
    chat(
        proxy,
        "!/set(temperature=0.4, top-p=0.9, effort=low, thinking=4096) !/medium",
        session="s",
    )
    result = chat(proxy, "hi", session="s")
    overrides = result.ctx.overrides
    assert overrides.params == {"temperature": 0.4, "top_p": 0.9, "reasoning_effort": "low"}
    assert overrides.thinking_budget == 4096 and overrides.preset == "medium"
    assert overrides.route is None
    chat(proxy, "!/model(anthropic:claude-x)", session="s")
    overrides = chat(proxy, "hi", session="s").ctx.overrides
    assert (overrides.route, overrides.why) == ("anthropic:claude-x", "session model")


def test_a_oneoff_is_used_up_by_the_next_request(proxy: Proxy) -> None:
    chat(proxy, "!/model(openai:gpt-session)", session="s")
    chat(proxy, "!/oneoff(anthropic:claude-once)", session="s")
    once = chat(proxy, "hi", session="s")
    assert once.ctx.route is not None and once.ctx.route.cluster == "instance/anthropic"
    assert once.ctx.model == "claude-once"
    state = stored(proxy, "s")
    assert state is not None and state.oneoff is None
    after = chat(proxy, "hi", session="s")
    assert after.ctx.model == "gpt-session"


def test_a_oneoff_with_a_prompt_is_used_by_that_prompt(proxy: Proxy) -> None:
    once = chat(proxy, "!/oneoff(anthropic:claude-once) hi", session="s")
    assert once.ctx.model == "claude-once"
    assert chat(proxy, "hi", session="s").ctx.model == "gpt-x"


def test_a_oneoff_in_an_isolated_session_routes_its_own_prompt(proxy: Proxy) -> None:
    assert chat(proxy, "!/oneoff(anthropic:claude-once) hi").ctx.model == "claude-once"


def test_reset_forgets_the_session(proxy: Proxy) -> None:
    chat(
        proxy, "!/set(temperature=0.2) !/oneoff(anthropic:c) !/route-create(gemini:g)", session="s"
    )
    chat(proxy, "hi", session="s")
    chat(proxy, "hi", "ok", "more", session="s")
    before = stored(proxy, "s")
    assert before is not None and before.counters["requests"] == 2
    assert chat(proxy, "!/reset", session="s").text() == (
        "Session reset: settings, one-off and route cleared."
    )
    after = stored(proxy, "s")
    assert after is not None
    assert after.settings == {} and after.oneoff is None and after.route == []
    assert after.counters == {} and after.steering == {} and after.last_route is None
    # A setting in the same message after the reset is kept.
    chat(proxy, "!/reset !/set(top-p=0.5)", session="s")
    again = stored(proxy, "s")
    assert again is not None and again.settings == {"top-p": 0.5}


def test_session_command_shows_the_stored_state(proxy: Proxy) -> None:
    chat(proxy, "!/set(temperature=0.2)", session="s")
    chat(proxy, "hi", session="s")
    text = chat(proxy, "!/session", session="s").text()
    assert text.splitlines() == [
        f"session: {a_leg_id('local', 's')}",
        "settings: temperature=0.2",
        "one-off: (none)",
        "route: (none)",
        "last route: instance/openai (gpt-x)",
        "requests: 1",
    ]


# -- history ----------------------------------------------------------------------------


def test_command_text_is_stripped_from_every_history_turn(proxy: Proxy) -> None:
    result = chat(
        proxy,
        "!/max explain monads",
        "A monad is ...",
        "!/set(temperature=0.2)",
        "Set temperature = 0.2.",
        "and functors?",
        session="s",
    )
    assert messages_to_provider(result) == [
        ("user", "explain monads"),
        ("assistant", "A monad is ..."),
        ("user", "and functors?"),
    ]
    # Commands in the history are not run again.
    assert "temperature" not in result.upstream()
    state = stored(proxy, "s")
    assert state is not None and state.settings == {}


def test_a_command_only_turn_without_an_answer_after_it_keeps_the_next_turn(
    proxy: Proxy,
) -> None:
    result = chat(
        proxy,
        {"role": "user", "content": "!/hello"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "second question"},
        session="s",
    )
    assert messages_to_provider(result) == [
        ("user", "first question"),
        ("assistant", "an answer"),
        ("user", "second question"),
    ]


def test_system_messages_are_kept_when_a_command_turn_is_dropped(proxy: Proxy) -> None:
    result = chat(
        proxy,
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "!/hello"},
        {"role": "assistant", "content": "LLM interactive proxy"},
        {"role": "user", "content": "hi"},
        session="s",
    )
    assert messages_to_provider(result) == [("system", "be brief"), ("user", "hi")]


def test_a_command_turn_before_an_assistant_prefill(proxy: Proxy) -> None:
    data = {
        "model": "openai:gpt-x",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "!/hello"},
            {"role": "assistant", "content": "Sure,"},
        ],
    }
    result = proxy.send("anthropic", data, headers={"x-session-id": "s"})
    assert not result.forwarded or result.upstream()["messages"] != []


def test_a_refused_duplicate_changes_nothing(proxy: Proxy) -> None:
    # Dedup runs before the commands: a zombie retry does not run them twice.
    turn = "!/route-append(anthropic:c1) hi"
    assert chat(proxy, turn, session="s", finish=False).forwarded
    duplicate = chat(proxy, turn, session="s")
    assert duplicate.reply.status == 429
    state = stored(proxy, "s")
    assert state is not None and state.route == ["anthropic:c1"]


def test_a_trailing_tool_result_does_not_run_the_commands_again(proxy: Proxy) -> None:
    turn = "!/route-append(anthropic:c1) list the files"
    first = chat(proxy, turn, session="s")
    assert messages_to_provider(first) == [("user", "list the files")]
    call = {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
    result = chat(
        proxy,
        {"role": "user", "content": turn},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
        session="s",
        tools=[{"type": "function", "function": {"name": "ls", "parameters": {}}}],
    )
    assert result.forwarded
    assert result.upstream()["messages"][0] == {"role": "user", "content": "list the files"}
    state = stored(proxy, "s")
    assert state is not None and state.route == ["anthropic:c1"]  # not appended twice


def test_an_anthropic_tool_result_turn_does_not_run_commands(proxy: Proxy) -> None:
    data = {
        "model": "openai:gpt-x",
        "max_tokens": 100,
        "tools": [{"name": "ls", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "!/route-append(gemini:g) list the files"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "ls", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.txt"}],
            },
        ],
    }
    result = proxy.send("anthropic", data, headers={"x-session-id": "s"})
    assert result.forwarded
    assert "!/" not in json.dumps(result.upstream())
    state = stored(proxy, "s")
    assert state is not None and state.route == []  # the bookkeeping only


REMINDER = "<system-reminder>\nThe user's todo list is empty.\n</system-reminder>"


def claude_code(proxy: Proxy, *parts: str) -> Result:
    content = [{"type": "text", "text": p} for p in parts]
    data = {
        "model": "openai:gpt-x",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": content}],
    }
    return proxy.send("anthropic", data, headers={"x-claude-code-session-id": "cc-1"})


def test_claude_codes_system_reminders_are_not_a_prompt(proxy: Proxy) -> None:
    answered = claude_code(proxy, REMINDER, "!/hello")
    assert answered.text().startswith("LLM interactive proxy")
    answered = claude_code(proxy, "!/set(temperature=0.3)", REMINDER)
    assert answered.text() == "Set temperature = 0.3."
    forwarded = claude_code(proxy, REMINDER, "!/max fix the bug")
    assert forwarded.forwarded
    texts = [m["content"] for m in forwarded.upstream()["messages"]]
    assert "fix the bug" in json.dumps(texts) and "!/max" not in json.dumps(texts)
    assert "todo list is empty" in json.dumps(texts)


def test_a_system_message_after_the_users_turn_does_not_hide_it(proxy: Proxy) -> None:
    # Claude Code appends a system message after the user's turn.
    result = chat(
        proxy,
        {"role": "user", "content": "!/hello"},
        {"role": "system", "content": "mid-conversation note"},
        session="s",
    )
    assert result.text().startswith("LLM interactive proxy")


# -- multi-user mode ----------------------------------------------------------------------


def test_multi_user_mode_refuses_turning_safety_off(proxies: Callable[..., Proxy]) -> None:
    proxy = proxies(**MULTI_USER, redaction={"enabled": True})
    result = chat(proxy, "!/set(redaction=off)", session="s", key=KEY_A)
    assert result.text().splitlines() == [
        "!/set: redaction cannot be turned off here: the proxy's operator keeps it on for "
        "every client",
        "Nothing was sent to the model; fix the command and send it again.",
    ]
    assert stored(proxy, "s", key_id(KEY_A)) is None
    assert chat(proxy, "!/set(redaction=on)", session="s", key=KEY_A).reply.status == 200


def test_multi_user_mode_may_allow_safety_toggles(proxies: Callable[..., Proxy]) -> None:
    proxy = proxies(
        **MULTI_USER,
        redaction={"enabled": True},
        interactive={"allow_safety_toggles": True},
    )
    assert chat(proxy, "!/set(redaction=off)", session="s", key=KEY_A).text() == (
        "Set redaction = off."
    )
    secret = "sk-proj-" + "A1b2C3d4E5f6G7h8" * 4
    redacted = chat(proxy, f"my key is {secret}", session="other", key=KEY_A)
    assert secret not in json.dumps(redacted.upstream())
    plain = chat(proxy, f"my key is {secret}", session="s", key=KEY_A)
    assert secret in json.dumps(plain.upstream())


def test_single_user_mode_lets_a_session_turn_redaction_off(
    proxies: Callable[..., Proxy],
) -> None:
    proxy = proxies(redaction={"enabled": True})
    secret = "sk-proj-" + "A1b2C3d4E5f6G7h8" * 4
    chat(proxy, "!/set(redaction=off)", session="s")
    assert secret in json.dumps(chat(proxy, secret, session="s").upstream())
    assert secret not in json.dumps(chat(proxy, secret, session="t").upstream())


def test_multi_user_mode_checks_the_keys_models(proxies: Callable[..., Proxy]) -> None:
    proxy = proxies(
        **MULTI_USER,
        key_policies={key_id(KEY_A): {"models": ["gpt-4o-mini", "openai:gpt-4o-mini"]}},
    )

    def say(text: str, key: str = KEY_A) -> Result:
        # The request itself must name a model the key may use (access control).
        return chat(proxy, text, session="s", key=key, model="gpt-4o-mini")

    result = say("!/model(anthropic:claude-sonnet-4)")
    assert result.text().startswith(
        "!/model: model 'anthropic:claude-sonnet-4': this key may not use model "
        "'anthropic:claude-sonnet-4'"
    )
    assert say("!/model(openai:gpt-4o-mini)").text() == "Model set to openai:gpt-4o-mini."
    assert "this key may not use model 'openai:o3'" in say("!/oneoff(openai:o3) hi").text()
    assert "this key may not use model 'openai:o3'" in say("!/route-create(openai:o3)").text()
    routed = say("hi")
    assert routed.ctx.route is not None and routed.ctx.route.cluster == "instance/openai"
    assert routed.ctx.model == "gpt-4o-mini"
    # Another key has no such policy.
    assert say("!/model(openai:o3)", key=KEY_B).text() == "Model set to openai:o3."


def test_a_stored_session_model_is_checked_against_the_current_policy(
    proxies: Callable[..., Proxy], tmp_path: Any
) -> None:
    sessions = {"store": "sqlite", "sqlite_path": str(tmp_path / "s.db")}
    before = proxies(**MULTI_USER, sessions=sessions)
    assert chat(before, "!/model(openai:o3)", session="s", key=KEY_A, model="gpt-4o-mini").text()
    before.close()
    after = proxies(
        **MULTI_USER,
        sessions=sessions,
        key_policies={key_id(KEY_A): {"models": ["gpt-4o-mini"]}},
    )
    result = chat(after, "hi", session="s", key=KEY_A, model="gpt-4o-mini")
    assert not (result.forwarded and result.ctx.model == "o3")


def test_multi_user_mode_keeps_project_dir_inside_the_sandbox_roots(
    proxies: Callable[..., Proxy], tmp_path: Any
) -> None:
    root = str(tmp_path / "work")
    proxy = proxies(**MULTI_USER, sandbox={"enabled": True, "roots": [root]})
    inside = chat(proxy, f"!/set(project-dir={root}/app)", session="s", key=KEY_A)
    assert inside.text() == f"Set project-dir = {root}/app."
    outside = chat(proxy, "!/set(project-dir=/etc)", session="s", key=KEY_A)
    assert "is outside the directories allowed here" in outside.text()
    # Single-user mode: any absolute path.
    single = proxies(sandbox={"enabled": True, "roots": [root]})
    assert chat(single, "!/set(project-dir=/etc)", session="s").text() == (
        "Set project-dir = /etc."
    )


def test_multi_user_sessions_are_per_key_for_commands_too(proxies: Callable[..., Proxy]) -> None:
    proxy = proxies(**MULTI_USER)
    chat(proxy, "!/set(prefix=@@)", session="s", key=KEY_A)
    assert chat(proxy, "@@hello", session="s", key=KEY_A).reply.status == 200
    assert chat(proxy, "@@hello", session="s", key=KEY_B).forwarded
