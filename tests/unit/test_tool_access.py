"""Tool access rules: globs, scopes, the allow/deny decision and its cache."""

from __future__ import annotations

import itertools
import time

import pytest

from extproc.pipeline.context import key_id
from extproc.safety.tool_access import ToolPolicy, ToolRule, ToolScope, glob_to_regex

KEY_A = key_id("alice-key")
KEY_B = key_id("bob-key")


def scope(
    model: str = "gpt-4o",
    key: str | None = None,
    agent: str = "",
    requested: str | None = None,
) -> ToolScope:
    return ToolScope(model=model, key_id=key, user_agent=agent, requested_model=requested)


def allowed(policy: ToolPolicy, tool: str, where: ToolScope | None = None) -> bool:
    tool_filter = policy.for_scope(where or scope())
    return tool_filter is None or tool_filter.allows(tool)


# -- globs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "yes", "no"),
    [
        ("read_file", ["read_file"], ["read_files", "xread_file", "Read_file", "read-file"]),
        ("mcp__github__*", ["mcp__github__", "mcp__github__create_pr"], ["mcp__gitlab__x"]),
        ("*delete*", ["delete", "rm_delete_all", "x\ndelete\ny"], ["Delete", "del"]),
        ("*[Dd]elete*", ["Delete_file", "delete"], ["DELETE"]),
        ("tool?", ["tool1", "toolZ"], ["tool", "tool12"]),
        ("[!a-c]x", ["dx", "-x", "\nx"], ["ax", "cx", "x"]),
        ("[]x]", ["]", "x"], ["[]", "y"]),
        ("[a-]", ["a", "-"], ["b"]),
        ("a.b+(c)|d", ["a.b+(c)|d"], ["aXb+(c)|d", "a.bb(c)|d", "d"]),
        ("[*]", ["*"], ["x", "**"]),
        ("\\*", ["\\*", "\\abc"], ["*"]),  # no backslash escapes: '\' is literal
        ("é?*", ["éa", "é€x"], ["é"]),
        ("**a**", ["a", "bab"], ["b"]),
    ],
)
def test_tool_globs(glob: str, yes: list[str], no: list[str]) -> None:
    policy = ToolPolicy([ToolRule(allow=(glob,))])
    for name in yes:
        assert allowed(policy, name), (glob, name)
    for name in no:
        assert not allowed(policy, name), (glob, name)


@pytest.mark.parametrize(
    ("glob", "message"),
    [
        ("", "non-empty"),
        ("[abc", "never closed"),
        ("x[!", "never closed"),
        ("[z-a]", "backwards"),
    ],
)
def test_invalid_globs(glob: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        glob_to_regex(glob)
    with pytest.raises(ValueError, match=message):
        ToolRule(deny=(glob,))
    with pytest.raises(ValueError, match=message):
        ToolRule(deny=("ok",), agents=(glob,))


def test_matching_is_linear_time_on_hostile_names() -> None:
    # A backtracking matcher takes exponential time on this; RE2 does not.
    policy = ToolPolicy([ToolRule(deny=("*a*a*a*a*a*a*a*a*a*b",))])
    hostile = "a" * 200_000
    started = time.monotonic()
    assert allowed(policy, hostile)
    assert allowed(policy, hostile, scope(agent=hostile, model=hostile))
    assert time.monotonic() - started < 5


def test_lone_surrogates_do_not_crash() -> None:
    policy = ToolPolicy([ToolRule(deny=("*delete*",), agents=("bad*",))])
    where = scope(agent="bad\ud800agent")
    tool_filter = policy.for_scope(where)
    assert tool_filter is not None
    assert not tool_filter.allows("x\udc00delete")
    assert tool_filter.allows("x\udc00read")


# -- rules -----------------------------------------------------------------------


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="would do nothing"):
        ToolRule(models=("gpt-*",))
    with pytest.raises(ValueError, match="list of strings"):
        ToolRule(deny="*delete*")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty strings"):
        ToolRule(deny=("x", ""))
    with pytest.raises(ValueError, match="never the keys"):
        ToolRule(deny=("x",), keys=("sk-my-secret-key",))
    with pytest.raises(ValueError, match="never the keys"):
        ToolRule(deny=("x",), keys=(KEY_A.upper(),))
    with pytest.raises(ValueError, match="ToolRule"):
        ToolPolicy([{"deny": ["x"]}])  # type: ignore[list-item]
    rule = ToolRule(deny=["a", "b"], keys=[KEY_A])  # type: ignore[arg-type]
    assert rule.deny == ("a", "b") and rule.keys == (KEY_A,)


def test_no_rules_or_no_applicable_rule_is_the_fast_path() -> None:
    assert ToolPolicy([]).for_scope(scope()) is None
    policy = ToolPolicy([ToolRule(deny=("*",), models=("claude-*",))])
    assert policy.for_scope(scope(model="gpt-4o")) is None
    assert policy.for_scope(scope(model="claude-sonnet-4")) is not None


def test_deny_wins_over_allow() -> None:
    policy = ToolPolicy(
        [
            ToolRule(allow=("mcp__github__*",)),
            ToolRule(deny=("*delete*",)),
        ]
    )
    assert allowed(policy, "mcp__github__create_issue")
    assert not allowed(policy, "mcp__github__delete_repo")
    assert not allowed(policy, "bash")  # allow-list mode: not listed


def test_deny_only_rules_allow_the_rest() -> None:
    policy = ToolPolicy([ToolRule(deny=("bash", "*delete*"))])
    assert not allowed(policy, "bash")
    assert not allowed(policy, "file_delete")
    assert allowed(policy, "read_file")
    assert allowed(policy, "Bash")  # tool names are case-sensitive


def test_allow_lists_of_applicable_rules_add_up() -> None:
    policy = ToolPolicy(
        [
            ToolRule(allow=("read_*",)),
            ToolRule(allow=("write_*",), models=("gpt-*",)),
        ]
    )
    assert allowed(policy, "write_file", scope(model="gpt-4o"))
    assert not allowed(policy, "write_file", scope(model="claude-opus"))
    assert allowed(policy, "read_file", scope(model="claude-opus"))
    assert not allowed(policy, "bash", scope(model="gpt-4o"))


def test_decision_does_not_depend_on_rule_order() -> None:
    rules = [
        ToolRule(allow=("read_*", "mcp__*")),
        ToolRule(deny=("mcp__*__delete*",), agents=("claude-cli/*",)),
        ToolRule(allow=("bash",), keys=(KEY_A,)),
        ToolRule(deny=("read_secret",), models=("gpt-*",)),
    ]
    tools = ["read_file", "read_secret", "mcp__gh__delete_repo", "mcp__gh__list", "bash", "x"]
    scopes = [
        scope(model=m, key=k, agent=a)
        for m in ("gpt-4o", "claude-opus")
        for k in (None, KEY_A, KEY_B)
        for a in ("", "claude-cli/1.0.83 (external, cli)")
    ]
    expected = None
    for order in itertools.permutations(rules):
        policy = ToolPolicy(list(order))
        outcome = [[allowed(policy, t, s) for t in tools] for s in scopes]
        expected = expected or outcome
        assert outcome == expected


# -- scopes ------------------------------------------------------------------------


def test_model_scope_is_a_case_insensitive_glob_on_routed_or_requested_model() -> None:
    policy = ToolPolicy([ToolRule(deny=("bash",), models=("claude-*", "openai:gpt-4o"))])
    assert not allowed(policy, "bash", scope(model="claude-sonnet-4"))
    assert not allowed(policy, "bash", scope(model="Claude-Sonnet-4"))
    assert not allowed(policy, "bash", scope(model="OpenAI:GPT-4o"))
    assert allowed(policy, "bash", scope(model="openai:gpt-4o-mini"))
    # the client asked for an alias the router resolved to another name
    assert not allowed(policy, "bash", scope(model="anthropic:x", requested="claude-x"))
    assert allowed(policy, "bash", scope(model="anthropic:x", requested="fast"))


def test_key_scope_matches_exact_key_ids() -> None:
    policy = ToolPolicy([ToolRule(deny=("bash",), keys=(KEY_A,))])
    assert not allowed(policy, "bash", scope(key=KEY_A))
    assert allowed(policy, "bash", scope(key=KEY_B))
    assert allowed(policy, "bash", scope(key=None))  # no key: never in a keys list


@pytest.mark.parametrize(
    ("agent", "denied"),
    [
        ("claude-cli/1.0.83 (external, cli)", True),
        ("Claude-CLI/2.0", True),
        ("codex_cli_rs/0.30.0 (Mac OS 15.5.0; arm64)", True),
        ("codex", True),
        ("GeminiCLI/0.1.0 (linux; x64)", True),
        ("geminicli/9", True),
        ("my-claude-cli/1.0", False),
        ("curl/8.7.1", False),
        ("", False),
    ],
)
def test_agent_scope_is_a_case_insensitive_user_agent_glob(agent: str, denied: bool) -> None:
    policy = ToolPolicy(
        [ToolRule(deny=("bash",), agents=("claude-cli/*", "codex*", "GeminiCLI/*"))]
    )
    assert allowed(policy, "bash", scope(agent=agent)) is not denied


def test_all_scope_dimensions_must_match() -> None:
    policy = ToolPolicy(
        [ToolRule(deny=("bash",), models=("gpt-*",), keys=(KEY_A,), agents=("codex*",))]
    )
    assert not allowed(policy, "bash", scope(model="gpt-5", key=KEY_A, agent="codex/1"))
    assert allowed(policy, "bash", scope(model="o3", key=KEY_A, agent="codex/1"))
    assert allowed(policy, "bash", scope(model="gpt-5", key=KEY_B, agent="codex/1"))
    assert allowed(policy, "bash", scope(model="gpt-5", key=KEY_A, agent="claude-cli/1"))


def test_denial_names_the_rule() -> None:
    policy = ToolPolicy([ToolRule(allow=("read_*", "bash")), ToolRule(deny=("bash",))])
    tool_filter = policy.for_scope(scope())
    assert tool_filter is not None
    assert tool_filter.rules == (0, 1)
    assert tool_filter.denial("read_file") is None
    assert tool_filter.denial("bash") == "tool 'bash' is denied by tool rule 2"
    assert tool_filter.denial("rm") == "tool 'rm' is not in the allow-list of tool rule(s) 1"


# -- cache -------------------------------------------------------------------------


def test_for_scope_is_cached_and_bounded() -> None:
    policy = ToolPolicy([ToolRule(deny=("bash",), agents=("codex*",))], cache_size=4)
    first = policy.for_scope(scope(agent="codex/1"))
    assert first is not None
    assert policy.for_scope(scope(agent="codex/1")) is first
    # another scope with the same applicable rules shares the compiled filter
    assert policy.for_scope(scope(agent="codex/2")) is first
    for n in range(50):
        policy.for_scope(scope(agent=f"other/{n}"))
    assert len(policy._scopes) == 4
    assert policy.for_scope(scope(agent="codex/1")) is first


def test_long_scopes_are_not_cached() -> None:
    policy = ToolPolicy([ToolRule(deny=("bash",), agents=("codex*",))])
    long_agent = "codex/" + "x" * 5000
    tool_filter = policy.for_scope(scope(agent=long_agent))
    assert tool_filter is not None and not tool_filter.allows("bash")
    assert len(policy._scopes) == 0
