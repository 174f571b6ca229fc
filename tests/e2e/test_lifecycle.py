"""Process lifecycle: one command starts everything; failures are loud and clean."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import two_backends
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import (
    CLIENT_KEY,
    REPO,
    envoy_binary,
    proxy_config,
    start_envoy,
    start_proxy,
    wait_for,
    write_config,
)

USER = [{"role": "user", "content": "hi"}]


def chat(base_url: str, key: str = CLIENT_KEY) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": USER},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of an exited parent is reaped by init; treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_extproc_and_envoy(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI, sig: int
) -> None:
    proxy = start_proxy(tmp_path, two_backends(fake_a, fake_b))
    envoy_pid = proxy.envoy_pid()
    assert chat(proxy.base_url).status_code == 200
    assert proxy.stop(sig) == 0
    wait_for(lambda: not alive(envoy_pid), 10, what="envoy to exit")
    assert "stopped" in proxy.log()


def test_envoy_dying_stops_the_proxy_with_an_error(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    proxy = start_proxy(tmp_path, two_backends(fake_a, fake_b))
    try:
        os.kill(proxy.envoy_pid(), signal.SIGKILL)
        proxy.proc.wait(15)
    finally:
        proxy.stop(signal.SIGKILL)
    assert proxy.proc.returncode == 1
    assert "Envoy exited unexpectedly" in proxy.log()


def test_extproc_down_fails_closed_then_recovers(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    config = two_backends(fake_a, fake_b)
    extproc = start_proxy(tmp_path, config, "--no-envoy", name="extproc")
    assert "Envoy started" not in extproc.log()
    bootstrap = subprocess.run(
        [sys.executable, "-m", "extproc", "envoy-config", "--config", str(extproc.config_path)],
        cwd=REPO,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    envoy = start_envoy(tmp_path, bootstrap, config["admin_port"])
    base = f"http://127.0.0.1:{config['port']}"
    try:
        assert chat(base).status_code == 200
        assert extproc.stop() == 0
        down = chat(base)
        assert down.status_code == 503
        assert down.headers["content-type"].startswith("application/json")
        assert down.json()["error"]["code"] == "proxy_unavailable"
        assert fake_a.chat_requests() and len(fake_a.chat_requests()) == 1
        extproc = start_proxy(tmp_path, config, "--no-envoy", name="extproc2")
        wait_for(lambda: chat(base).status_code == 200, 15, what="recovery")
    finally:
        extproc.stop()
        envoy.stop()


def test_single_user_mode_binds_loopback_only(tmp_path: Path) -> None:
    config = proxy_config({})
    proxy = start_proxy(tmp_path, config, "--host", "0.0.0.0", wait=False)
    assert proxy.proc.wait(30) == 2
    assert "single-user mode binds loopback only" in proxy.log()


def test_multi_user_mode_needs_keys(tmp_path: Path) -> None:
    proxy = start_proxy(tmp_path, proxy_config({}), "--multi-user-mode", wait=False)
    assert proxy.proc.wait(30) == 2
    assert "api_keys" in proxy.log()


def test_multi_user_mode_checks_proxy_keys(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    proxy = start_proxy(
        tmp_path,
        two_backends(fake_a, fake_b),
        "--multi-user-mode",
        "--api-keys",
        "sk-fake-proxy-key-a,sk-fake-proxy-key-b",
    )
    try:
        missing = httpx.post(
            f"{proxy.base_url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": USER},
            timeout=10,
        )
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        assert chat(proxy.base_url, "sk-fake-not-a-key").status_code == 401
        assert httpx.get(f"{proxy.base_url}/v1/models", timeout=5).status_code == 401
        assert chat(proxy.base_url, "sk-fake-proxy-key-b").status_code == 200
        [sent] = fake_a.chat_requests()
        assert "sk-fake-proxy-key-b" not in str(sent.headers)
        assert fake_a.chat_requests()[0].headers["authorization"].endswith("-alpha")
    finally:
        proxy.stop()


def test_busy_grpc_port_is_a_clear_error(tmp_path: Path) -> None:
    config = proxy_config({})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", config["grpc_port"]))
        busy.listen()
        proxy = start_proxy(tmp_path, config, wait=False)
        assert proxy.proc.wait(30) == 1
    assert "cannot listen for gRPC" in proxy.log()


def test_bad_config_is_reported_with_its_location(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    write_config(path, {"backends": {"openai": {"api_key": "${FAKE_UNSET_VARIABLE_XYZ}"}}})
    result = subprocess.run(
        [sys.executable, "-m", "extproc", "envoy-config", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "FAKE_UNSET_VARIABLE_XYZ"},
    )
    assert result.returncode == 2
    assert "FAKE_UNSET_VARIABLE_XYZ" in result.stderr
    assert "backends.openai.api_key" in result.stderr


def test_bad_pool_parameter_is_a_startup_error(tmp_path: Path) -> None:
    config = proxy_config(
        {"openai": {"api_key": "sk-fake", "base_url": "http://127.0.0.1:9/v1"}},
        models={"hot": {"failover": ["openai:gpt-4o?temperature=very"]}},
    )
    proxy = start_proxy(tmp_path, config, wait=False)
    assert proxy.proc.wait(30) == 2
    assert "models.hot" in proxy.log() and "Traceback" not in proxy.log()


def test_envoy_config_command_output_is_valid_for_envoy(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, two_backends(fake_a, fake_b))
    out = subprocess.run(
        [sys.executable, "-m", "extproc", "envoy-config", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    (tmp_path / "envoy.yaml").write_text(out)
    started = time.monotonic()
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(tmp_path / "envoy.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 30
