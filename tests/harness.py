"""Start the real proxy (``python -m extproc``), Envoy and fakes from the test process.

Everything is started with ``subprocess.Popen`` from this process and stopped
by PID, as ARCHITECTURE.md asks: nothing is left running after a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent

PROVIDER_KEY = "sk-fake-provider-key-0000"
CLIENT_KEY = "sk-fake-client-key-1111"


def _ephemeral_low() -> int:
    """The lowest port the kernel picks for outgoing connections (Linux; else 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(span: int = 1) -> int:
    """A free loopback port (with the ``span - 1`` ports after it free too).

    Chosen below the kernel's ephemeral range: a port from that range can be
    taken, between this check and the server's bind, as the source port of
    any outgoing connection (a Redis client's, say), and a test then fails for
    nothing.
    """
    low = min(_ephemeral_low(), 32768)
    for _ in range(1000):
        base = random.randrange(10000, low - span)
        ports = range(base, base + span)
        # Never the same port twice in one test run: a test picks several
        # before anything binds them.
        if _handed_out.isdisjoint(ports) and all(_bindable(port) for port in ports):
            _handed_out.update(ports)
            return base
    raise RuntimeError("no free port below the ephemeral range")


_handed_out: set[int] = set()


def wait_for(
    predicate: Callable[[], bool], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")


def fast_health(**overrides: Any) -> dict[str, Any]:
    """Backend settings for tests: quick health checks and short ejections."""
    settings: dict[str, Any] = {
        "health_check": {
            "interval": "0.3s",
            "no_traffic_interval": "0.3s",
            "timeout": "0.5s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
        },
        "outlier_detection": {
            "consecutive_5xx": 50,
            "interval": "0.5s",
            "base_ejection_time": "1s",
        },
        "connect_timeout": "0.5s",
    }
    settings.update(overrides)
    return settings


@dataclass
class ProxyProcess:
    """A running ``python -m extproc`` (with or without its Envoy)."""

    config: dict[str, Any]
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    port: int
    grpc_port: int
    admin_port: int
    extra_args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The dedicated Anthropic listener (``/v1/messages`` at the root)."""
        return f"http://127.0.0.1:{self.config['anthropic_port']}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0, marker: str = "proxy ready") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"proxy exited with {self.proc.returncode} during startup:\n{self.log()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"proxy not ready after {timeout:.0f}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def envoy_pid(self) -> int:
        for line in self.log().splitlines():
            if "Envoy started (pid " in line:
                return int(line.split("Envoy started (pid ", 1)[1].split(")", 1)[0])
        raise AssertionError("no Envoy pid in the log")

    def admin(self, path: str) -> str:
        return httpx.get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5).text

    def host_health(self, cluster: str) -> dict[str, str]:
        """``host:port`` -> Envoy's health flags for a cluster's hosts."""
        data = json.loads(self.admin("/clusters?format=json"))
        out: dict[str, str] = {}
        for status in data.get("cluster_statuses", []):
            if status["name"] != cluster:
                continue
            for host in status.get("host_statuses", []):
                addr = host["address"]["socket_address"]
                flags = host.get("health_status", {})
                unhealthy = [k for k, v in flags.items() if v is True and k != "eds_health_status"]
                out[f"{addr['address']}:{addr['port_value']}"] = ",".join(unhealthy) or "healthy"
        return out


def write_config(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def proxy_config(backends: dict[str, Any], **top: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "port": free_port(),
        "anthropic_port": free_port(),
        # Room for --workers (grpc_port + index).
        "grpc_port": free_port(span=4),
        "admin_port": free_port(),
        "backends": backends,
        "log_level": "info",
        "envoy": {"log_level": "error", "concurrency": 2},
        # Any free port: several proxies run at once (tests that scrape pick one).
        "metrics": {"port": 0},
    }
    if "capture" in top:
        # The capture process's port, unless the test picked one.
        top = {**top, "capture": {"grpc_port": free_port(), **top["capture"]}}
    config.update(top)
    return config


def start_proxy(
    tmp: Path,
    config: dict[str, Any],
    *args: str,
    wait: bool = True,
    env: dict[str, str] | None = None,
    name: str = "proxy",
) -> ProxyProcess:
    config_path = tmp / f"{name}.yaml"
    write_config(config_path, config)
    log_path = tmp / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "extproc", "--config", str(config_path), *args],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        )
    proxy = ProxyProcess(
        config=config,
        config_path=config_path,
        log_path=log_path,
        proc=proc,
        port=config["port"],
        grpc_port=config["grpc_port"],
        admin_port=config["admin_port"],
        extra_args=list(args),
    )
    if wait:
        try:
            proxy.wait_ready(
                marker="serving ext_proc only" if "--no-envoy" in args else "proxy ready"
            )
        except BaseException:
            proxy.stop(signal.SIGKILL)
            raise
    return proxy


@contextlib.contextmanager
def running_proxy(tmp: Path, config: dict[str, Any], *args: str) -> Iterator[ProxyProcess]:
    proxy = start_proxy(tmp, config, *args)
    try:
        yield proxy
    finally:
        code = proxy.stop()
        if code not in (0, -signal.SIGTERM):
            print(proxy.log())


@dataclass
class EnvoyProcess:
    """A bare Envoy (for --no-envoy mode and the Envoy-alone baseline)."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def envoy_binary() -> str:
    from extproc.server.envoy_process import find_envoy

    return find_envoy()


def start_envoy(tmp: Path, bootstrap: str, admin_port: int, name: str = "envoy") -> EnvoyProcess:
    path = tmp / f"{name}.yaml"
    path.write_text(bootstrap)
    log_path = tmp / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [envoy_binary(), "-c", str(path), "--log-level", "warning", "--disable-hot-restart"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    envoy = EnvoyProcess(proc, log_path)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"envoy exited: {log_path.read_text()}")
        try:
            return httpx.get(f"http://127.0.0.1:{admin_port}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 30, what="envoy ready")
    except BaseException:
        envoy.stop()
        raise
    return envoy
