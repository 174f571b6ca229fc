"""A small runner for ``wrk``: one POST request, C connections, S seconds, parsed results.

``run_wrk`` writes a Lua script that sets the method, the body (read from a file beside the
script) and the headers, runs ``wrk -t1 -cC -dS --latency URL -s SCRIPT`` and parses what it
prints: requests/sec, the latency percentiles of ``--latency`` (p50, p75, p90, p99), the
count of non-2xx/3xx answers and the socket errors. The CPU seconds of the processes it is
given (and of the whole machine) are read from ``/proc`` before and after the run
(:class:`bench.procs.CpuSampler`), so that CPU per request can be reported beside the rates.

``wrk`` records latency from the request written to the whole response read, per
connection, in microseconds; it does not look at response bodies (validate them apart).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import CpuSampler

__all__ = ["WrkError", "WrkResult", "find_wrk", "parse_output", "run_wrk", "write_script"]

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION = r"([\d.]+)(us|ms|s|m|h)"
_PERCENTILE_RE = re.compile(r"^\s+(50|75|90|99)(?:\.\d+)?%\s+" + _DURATION + r"\s*$", re.M)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL_RE = re.compile(r"^\s+(\d+) requests in " + _DURATION, re.M)
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M
)


class WrkError(RuntimeError):
    """wrk failed or printed something this module cannot parse."""


@dataclass
class WrkResult:
    """One wrk run against one URL."""

    connections: int
    seconds: float
    requests: int
    rps: float
    latency_ms: dict[str, float]  # "p50", "p75", "p90", "p99"
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    #: CPU seconds per named process (and ``machine``) spent during the run.
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def p50_ms(self) -> float:
        return self.latency_ms["p50"]

    @property
    def p99_ms(self) -> float:
        return self.latency_ms["p99"]

    def cpu_ms_per_request(self, names: list[str] | None = None) -> float:
        """CPU ms per completed request of the named processes (all but ``machine`` if None)."""
        if not self.requests:
            return float("nan")
        chosen = names if names is not None else [n for n in self.cpu_s if n != "machine"]
        return sum(self.cpu_s.get(name, 0.0) for name in chosen) * 1000 / self.requests

    def to_json(self) -> dict[str, Any]:
        return {
            "c": self.connections,
            "rps": round(self.rps, 1),
            "requests": self.requests,
            **{k: round(v, 4) for k, v in self.latency_ms.items()},
            "non_2xx": self.non_2xx,
            "socket_errors": sum(self.socket_errors.values()),
        }


def find_wrk() -> str:
    """The ``wrk`` executable on PATH, or :class:`WrkError`."""
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk not found on PATH (Debian/Ubuntu: apt-get install wrk)")
    return found


def _lua_string(text: str) -> str:
    level = "=" * 3
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def write_script(directory: Path, name: str, body: bytes, headers: Mapping[str, str]) -> Path:
    """A wrk Lua script sending ``body`` with ``headers`` as a POST; returns its path."""
    body_path = directory / f"{name}.body"
    body_path.write_bytes(body)
    lines = [
        'wrk.method = "POST"',
        f"local handle = assert(io.open({_lua_string(str(body_path))}, 'rb'))",
        "wrk.body = handle:read('*a')",
        "handle:close()",
    ]
    for key, value in headers.items():
        lines.append(f"wrk.headers[ {_lua_string(key)} ] = {_lua_string(value)}")
    script = directory / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def _ms(number: str, unit: str) -> float:
    return float(number) * _UNITS_MS[unit]


def parse_output(text: str, connections: int, seconds: float) -> WrkResult:
    """The numbers of wrk's ``--latency`` report."""
    rps = _RPS_RE.search(text)
    total = _TOTAL_RE.search(text)
    percentiles = {
        f"p{m.group(1)}": _ms(m.group(2), m.group(3)) for m in _PERCENTILE_RE.finditer(text)
    }
    if rps is None or total is None or "p50" not in percentiles or "p99" not in percentiles:
        raise WrkError(f"cannot parse wrk output:\n{text}")
    non_2xx = _NON_2XX_RE.search(text)
    sockets = _SOCKET_RE.search(text)
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, sockets.groups()), strict=True))
        if sockets
        else {}
    )
    return WrkResult(
        connections=connections,
        seconds=_ms(total.group(2), total.group(3)) / 1000,
        requests=int(total.group(1)),
        rps=float(rps.group(1)),
        latency_ms=percentiles,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors={k: v for k, v in socket_errors.items() if v},
    )


def run_wrk(
    url: str,
    script: Path,
    *,
    connections: int,
    seconds: float,
    sampler: CpuSampler | None = None,
    wrk: str | None = None,
    timeout_s: float = 10.0,
) -> WrkResult:
    """``wrk -t1 -cC -dS --latency`` against ``url`` with ``script``; CPU of ``sampler``'s pids."""
    args = [wrk or find_wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    args += ["--latency", "--timeout", f"{timeout_s:.0f}s", "-s", str(script), url]
    before = sampler.snapshot() if sampler else {}
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False
    )
    after = sampler.snapshot() if sampler else {}
    if done.returncode != 0 or "error" in done.stderr.lower():
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    result = parse_output(done.stdout, connections, seconds)
    if sampler:
        result.cpu_s = CpuSampler.delta(before, after)
    return result
