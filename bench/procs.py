"""Start and stop the benchmark's processes by PID, and read their CPU time from ``/proc``.

* the fake upstream: ``python -m tests.fakes.openai_upstream`` (its own process);
* Envoy alone: the proxy's bootstrap built with ``baseline_cluster`` (no ext_proc filters);
* the proxy: ``python -m extproc --config FILE``, which supervises its own Envoy.

Every process is started with :class:`subprocess.Popen` and registered on an
:class:`contextlib.ExitStack` right away, so it is stopped by PID whatever happens.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_ENVOY_PID_RE = re.compile(r"Envoy started \(pid (\d+)\)")


class StartupError(RuntimeError):
    """A process did not come up; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------
# CPU time


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of all threads of ``pid``; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


#: The key under which :class:`CpuSampler` reports the busy time of the whole machine.
MACHINE = "machine"


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs; not idle, not iowait)."""
    with open("/proc/stat", "rb") as handle:
        fields = handle.readline().split()
    # cpu user nice system idle iowait irq softirq steal ...
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class CpuSampler:
    """Snapshots of the CPU seconds of named processes, and of the whole machine."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pid in self.pids.items():
            seconds = cpu_seconds(pid)
            if seconds is not None:
                out[name] = seconds
        out[MACHINE] = machine_busy_seconds()
        return out

    @staticmethod
    def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in after if name in before}


# --------------------------------------------------------------------------------------------
# Processes


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"


def stop_foreign_pid(pid: int, timeout: float = 10.0) -> None:
    """Stop a process this one did not start (Envoy under extproc) by PID, if it is left."""
    with contextlib.suppress(ProcessLookupError):
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Managed:
    """A process started by the benchmark, with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise StartupError(
                    f"{self.name} exited with {self.proc.returncode} before {what}:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise StartupError(
                    f"{self.name}: no {what} after {timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)


def spawn(
    stack: contextlib.ExitStack,
    name: str,
    args: list[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> Managed:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    managed = Managed(name, proc, log_path)
    stack.callback(managed.stop)
    return managed


def start_fake(
    stack: contextlib.ExitStack,
    workdir: Path,
    *,
    api_key: str,
    answer_chars: int,
    chunk_chars: int,
) -> tuple[Managed, int, int]:
    """The fake upstream in its own process; returns it, its port and its control port."""
    port, control_port = free_port(), free_port()
    args = [sys.executable, "-m", "tests.fakes.openai_upstream", "--port", str(port)]
    args += ["--control-port", str(control_port)]
    args += ["--name", "bench", "--api-key", api_key, "--models", "gpt-4o-mini,gpt-4o"]
    args += ["--answer-chars", str(answer_chars), "--chunk-chars", str(chunk_chars)]
    fake = spawn(stack, "fake", args, workdir / "fake.log")
    fake.wait_for(lambda: f"listening on {port}" in fake.log(), "'listening on' line")
    return fake, port, control_port


def fake_control(control_port: int, method: str, path: str, body: Any = None) -> Any:
    """Call the fake's control API (``POST /faults`` and friends); returns the JSON answer."""
    connection = http.client.HTTPConnection("127.0.0.1", control_port, timeout=5)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if payload is not None else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        answer = json.loads(response.read() or b"null")
        if response.status != 200:
            raise RuntimeError(f"fake control {method} {path}: {response.status} {answer}")
        return answer
    finally:
        connection.close()


#: A failover pool of two accounts at the same fake: the proxy path where
#: Envoy chooses the host, so the UPSTREAM role runs per attempt.
POOL_MODEL = "bench-pool"


def listen_ports() -> dict[str, Any]:
    """A bench proxy's listening part of the config: loopback, fresh ports, no Anthropic port."""
    return {
        "host": "127.0.0.1",
        "port": free_port(),
        "grpc_port": free_port(),
        "admin_port": free_port(),
        "anthropic_port": 0,
    }


def proxy_config(fake_port: int, api_key: str) -> dict[str, Any]:
    """The proxy's YAML config (as data) with fresh ports."""
    backend = {
        "type": "openai",
        "base_url": f"http://127.0.0.1:{fake_port}/v1",
        "api_key": api_key,
        "models": ["gpt-4o-mini"],
        "health_check": {"interval": "1s"},
    }
    return {
        **listen_ports(),
        "backends": {"openai": backend, "openai.1": {**backend, "models": []}},
        "models": {POOL_MODEL: {"failover": ["openai:gpt-4o-mini", "openai.1:gpt-4o-mini"]}},
        "envoy": {"log_level": "error"},
        "metrics": {"port": 0},
    }


def envoy_ready(admin_port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=2)
        try:
            connection.request("GET", "/ready")
            response = connection.getresponse()
            return response.status == 200 and response.read().strip() == b"LIVE"
        finally:
            connection.close()
    except OSError:
        return False


def start_proxy(
    stack: contextlib.ExitStack,
    workdir: Path,
    config: dict[str, Any],
    name: str = "proxy",
    module: str = "extproc",
) -> tuple[Managed, int]:
    """``python -m extproc --config FILE`` (or another ``module`` taking the proxy's
    arguments); returns it and the PID of the Envoy it started."""
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    args = [sys.executable, "-m", module, "--config", str(config_path)]
    proxy = spawn(stack, "extproc" if name == "proxy" else name, args, workdir / f"{name}.log")
    envoy_pids: list[int] = []

    def stop_envoy() -> None:  # runs after proxy.stop(): only a left-over Envoy is stopped
        for pid in envoy_pids:
            stop_foreign_pid(pid)

    stack.callback(stop_envoy)
    stack.callback(proxy.stop)

    def envoy_started() -> bool:
        match = _ENVOY_PID_RE.search(proxy.log())
        if match and not envoy_pids:
            envoy_pids.append(int(match.group(1)))
        return match is not None

    proxy.wait_for(envoy_started, "'Envoy started' line")
    proxy.wait_for(lambda: "proxy ready" in proxy.log(), "'proxy ready' line")
    return proxy, envoy_pids[0]


def start_baseline_envoy(
    stack: contextlib.ExitStack, workdir: Path, raw_config: dict[str, Any], envoy_binary: str
) -> Managed:
    """Envoy alone: the same listener and cluster, no ext_proc, every request to the fake."""
    from extproc.config import build_config
    from extproc.envoy_config import build_bootstrap, render

    config = build_config(raw_config, env={})
    bootstrap_path = workdir / "envoy-baseline.yaml"
    bootstrap_path.write_text(render(build_bootstrap(config, baseline_cluster="instance/openai")))
    args = [envoy_binary, "-c", str(bootstrap_path), "--disable-hot-restart"]
    args += ["--log-level", config.envoy.log_level]
    if config.envoy.concurrency:
        args += ["--concurrency", str(config.envoy.concurrency)]
    envoy = spawn(stack, "envoy-baseline", args, workdir / "envoy-baseline.log")
    envoy.wait_for(lambda: envoy_ready(config.admin_port), "LIVE on admin /ready")
    return envoy


def find_envoy_binary() -> str:
    from extproc.server.envoy_process import find_envoy

    return str(find_envoy(None))


def envoy_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    match = re.search(r"version: (\S+)", out)
    return match.group(1) if match else out.strip()


def envoy_counters(admin_port: int, contains: str) -> dict[str, int]:
    """Envoy's counters whose name contains ``contains`` (admin ``/stats``), {} on failure."""
    connection = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    try:
        connection.request("GET", f"/stats?filter={contains}")
        text = connection.getresponse().read().decode("utf-8", "replace")
    except OSError:
        return {}
    finally:
        connection.close()
    counters: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.strip().isdigit():
            counters[name] = int(value)
    return counters
