"""Real coding agents from npm as clients, each in a loopback-only network namespace.

Claude Code (`claude -p`), Codex (`codex exec`) and Gemini CLI (`gemini -p`)
run non-interactively with their base URL pointed at the proxy, inside a
network namespace that has only loopback (``unshare -n`` + ``ip link set lo
up``), so nothing can reach anything but the proxy. Each gets its answer
through a backend of another schema than its own. The agents are installed
from tests/agents/package.json by .ci/run (``npm ci``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.harness import REPO

BIN = REPO / "tests" / "agents" / "node_modules" / ".bin"
ANSWER = "PONG-7f3a"


def run_in_netns(*args: str, timeout: float = 300) -> dict[str, Any]:
    assert shutil.which("unshare") and shutil.which("ip"), "needs util-linux and iproute2"
    for agent in ("claude", "codex", "gemini"):
        assert (BIN / agent).exists(), f"run: npm ci --prefix tests/agents ({agent} missing)"
    done = subprocess.run(
        ["unshare", "-n", sys.executable, str(REPO / "tests" / "agents" / "netns_run.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("agent", "schema", "path"),
    [
        ("claude", "openai-chat", "/v1/chat/completions"),
        ("codex", "gemini", "/v1beta/models/fake-model-1:streamGenerateContent"),
        ("gemini", "anthropic", "/v1/messages"),
    ],
)
def test_agent_through_another_schema(agent: str, schema: str, path: str) -> None:
    result = run_in_netns("--agent", agent, "--schema", schema, "--answer", ANSWER)
    assert result["returncode"] == 0, result
    assert ANSWER in result["stdout"], result
    assert result["provider_requests"] >= 1
    assert path in result["provider_paths"]


def test_claude_code_on_a_real_model() -> None:
    """No fake on this path: Claude Code -> proxy -> llama-cpp-python serving SmolLM2."""
    result = run_in_netns(
        "--agent", "claude", "--real-model", "--prompt", "What is the capital of France?"
    )
    assert result["returncode"] == 0, result
    assert result["stdout"].strip(), result


def test_claude_code_keeps_uncommitted_work_when_told_to_wipe_it() -> None:
    """A provider tells Claude Code to run ``git reset --hard && git clean -fd``.

    Without the dangerous-command stage the agent really runs it (the work is
    gone: the scenario is real); with the proxy's default settings the call
    never reaches the agent, which shows the proxy's note instead.
    """
    exposed = run_in_netns(
        "--agent", "claude", "--schema", "anthropic", "--scenario", "git-wipe",
        "--disable-commands", "--prompt", "Clean up the repository.",
    )  # fmt: skip
    assert exposed["work_intact"] is False, exposed
    protected = run_in_netns(
        "--agent", "claude", "--schema", "anthropic", "--scenario", "git-wipe",
        "--prompt", "Clean up the repository.",
    )  # fmt: skip
    assert protected["returncode"] == 0, protected
    assert protected["work_intact"] is True, protected
    assert "blocked" in protected["stdout"], protected


def test_claude_code_in_chat_commands() -> None:
    """Claude Code's prompts ``!/hello`` and ``!/set(model=...)`` are answered by the proxy.

    ``!/hello`` alone never reaches the provider: Claude Code prints the proxy's
    banner. ``!/set(model=up:fake-model-2)`` in one run and a prompt in a second run
    of the same conversation (``--session-id``, then ``--resume``: the same
    ``x-claude-code-session-id``) send the prompt to fake-model-2 although Claude Code
    asks for fake-model-1; neither the commands nor the proxy's answers to them reach
    the provider when Claude Code resends the conversation.
    """
    prompt = "Reply with the single word PONG."
    result = run_in_netns(
        "--agent", "claude", "--schema", "anthropic", "--scenario", "chat-commands",
        "--model", "fake-model-1", "--second-model", "fake-model-2", "--prompt", prompt,
    )  # fmt: skip
    assert "runs" in result, result
    hello, set_model, asked = (result["runs"][name] for name in ("hello", "set", "prompt"))
    assert hello["returncode"] == 0, result
    assert "LLM interactive proxy" in hello["stdout"], result
    assert "session: sess-" in hello["stdout"], result
    assert set_model["returncode"] == 0, result
    assert "Set model = up:fake-model-2." in set_model["stdout"], result
    assert asked["returncode"] == 0, result
    # The fake's unscripted answer names the model it was asked for.
    assert "netns says hello to fake-model-2" in asked["stdout"], result
    # The main-model request: the prompt is its newest user text. (With nonessential
    # traffic off Claude Code made no side requests; any would be in all_requests.)
    main = [r for r in asked["requests"] if prompt in (r["last_user"] or "")]
    assert main, result
    assert {r["model"] for r in main} == {"fake-model-2"}, result
    # Read after the proxy stopped: the model Claude Code asked for was never called
    # (the command runs were answered by the proxy), and no command reached the provider.
    seen = result["all_requests"]
    assert not [r for r in seen if r["model"] == "fake-model-1"], result
    assert not [r for r in seen if r["has_command"] or r["has_proxy_answer"]], result


@pytest.mark.parametrize("form", ["text", "broken-json"])
def test_claude_code_runs_a_repaired_tool_call(form: str) -> None:
    """Claude Code runs a Bash call only the proxy's tool-call repair makes real.

    ``text``: the provider's first main-model answer is text only, a fenced JSON call
    of ``Bash``; ``broken-json``: a native ``tool_use`` whose streamed input JSON has
    single quotes and a trailing comma. The call creates a marker file in a scratch
    directory, and the provider's next request carries Claude Code's tool_result for it.
    With repair off (the control, read after ``claude -p`` exited and the proxy stopped)
    Claude Code prints the fence as its answer, or rejects the input as unparsable:
    no marker either way.
    """
    args = (
        "--agent", "claude", "--schema", "anthropic", "--scenario", "repaired-call",
        "--call-form", form, "--prompt", "Create the marker file.",
    )  # fmt: skip
    exposed = run_in_netns(*args, "--disable-tool-repair")
    assert exposed["returncode"] == 0, exposed
    assert exposed["marker_exists"] is False, exposed
    ran = [t for r in exposed["requests"] for t in r["tool_results"] if not t["is_error"]]
    assert not ran, exposed

    result = run_in_netns(*args)
    assert result["returncode"] == 0, result
    texts, sent = result["scenario_texts"], result["provider_first_answer"]
    # The provider really sent the call in the form under test.
    if form == "text":
        assert sent["tool_use_ids"] == [] and sent["partial_json"] == "", result
        assert sent["text"] == texts["fenced"], result
    else:
        assert sent["partial_json"] == texts["broken"], result
        with pytest.raises(json.JSONDecodeError):
            json.loads(sent["partial_json"])
    assert result["marker_exists"] is True, result
    # Claude Code resends the call it ran (parsed arguments) and answers it.
    answered = [r for r in result["requests"] if r["tool_results"]]
    assert answered, result
    second = answered[0]
    calls = [b for b in second["assistant"] if b["type"] == "tool_use"]
    assert [(c["name"], c["input"]) for c in calls] == [("Bash", texts["arguments"])], result
    call_id = calls[0]["id"]
    assert [(t["tool_use_id"], t["is_error"]) for t in second["tool_results"]] == [
        (call_id, False)
    ], result
    if form == "text":
        # The call is the proxy's own (the provider opened none), and its fence is gone.
        assert call_id, result
        assert not [b for b in second["assistant"] if "```" in b.get("text", "")], result
    else:
        # The provider's call id is kept.
        assert call_id == sent["tool_use_ids"][0], result
