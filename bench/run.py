"""Benchmark: direct-to-fake vs Envoy alone vs Envoy + extproc, in one run, on loopback.

    python -m bench.run [--quick] [--profile] [--out bench/results/latest.json]

Starts the fake upstream, a baseline Envoy (same bootstrap without ext_proc) and the proxy
(``python -m extproc``), runs every phase against all three targets back to back, prints the
tables and the milestone floor checks, writes the report as JSON and stops every process it
started, by PID. See ``bench/README.md`` for what the numbers mean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report as reporting
from bench.guards import measure as measure_guards
from bench.guards import render as render_guards
from bench.load import PhaseResult, Target, chat_body, run_closed_loop, run_sequential
from bench.observability import measure as measure_observability
from bench.observability import observability_config
from bench.observability import render as render_observability
from bench.procs import (
    POOL_MODEL,
    REPO,
    CpuSampler,
    StartupError,
    envoy_counters,
    envoy_version,
    fake_control,
    find_envoy_binary,
    free_port,
    proxy_config,
    start_baseline_envoy,
    start_fake,
    start_proxy,
)
from bench.profiling import PySpyRecorder, find_py_spy, summarize_speedscope
from bench.safety import costs as safety_costs
from bench.safety import measure as measure_safety
from bench.safety import render as render_safety
from bench.safety import safety_config
from bench.sessions import render as render_sessions
from bench.sessions import run_section as run_sessions_section
from bench.stats import summarize_ns
from bench.translation import (
    chunk_translation_cpu,
    request_translation_cpu,
    through_proxy,
)
from bench.translation import render as render_translation

MODEL = "gpt-4o-mini"
CHAT_PATH = "/v1/chat/completions"
#: The provider key: the fake requires it, so the proxy must inject it (direct and Envoy alone
#: get it from the client, as Envoy passes the client's header through).
PROVIDER_KEY = "sk-fake-bench"
#: What the proxy's client sends; it must never reach the fake (it would answer 401).
CLIENT_KEY = "sk-bench-client"
DEFAULT_OUT = REPO / "bench" / "results" / "latest.json"


@dataclass(frozen=True)
class Settings:
    quick: bool
    latency_requests: int
    latency_warmup: int
    concurrencies: tuple[int, ...]
    duration_s: float
    stream_requests: int
    stream_warmup: int
    paced_gap_ms: float
    paced_streams: int
    answer_chars: int
    chunk_chars: int
    profile: bool
    profile_native: bool
    out: Path
    route: str = "instance"

    @property
    def content_chunks(self) -> int:
        return math.ceil(self.answer_chars / self.chunk_chars)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "quick" if self.quick else "full",
            "latency_requests": self.latency_requests,
            "latency_warmup": self.latency_warmup,
            "concurrencies": list(self.concurrencies),
            "duration_s": self.duration_s,
            "stream_requests": self.stream_requests,
            "paced_gap_ms": self.paced_gap_ms,
            "paced_streams": self.paced_streams,
            "answer": f"{self.answer_chars} chars in chunks of {self.chunk_chars} "
            f"= {self.content_chunks} SSE content chunks",
            "proxy_route": (
                f"failover pool {POOL_MODEL!r} (two endpoints: the UPSTREAM role runs per attempt)"
                if self.route == "pool"
                else f"single instance {MODEL!r} (the ROUTER role encodes for the host)"
            ),
            "out": str(self.out),
        }


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Compare direct-to-fake, Envoy alone and Envoy + extproc on loopback.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter phases")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    parser.add_argument(
        "--profile", action="store_true", help="sample the extproc process with py-spy afterwards"
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="with --profile: sample C frames too (py-spy --native; much slower, fewer requests)",
    )
    parser.add_argument("--requests", type=int, help="non-streaming c=1 requests (2000; quick 300)")
    parser.add_argument("--duration", type=float, help="seconds per concurrency (5; quick 2)")
    parser.add_argument("--streams", type=int, help="streams at c=1 (500; quick 100)")
    parser.add_argument(
        "--concurrency", help="comma-separated closed-loop concurrencies (1,8,32,64; quick 1,8,32)"
    )
    parser.add_argument(
        "--paced-gap-ms",
        type=float,
        default=1.0,
        help="also stream with the fake pausing this long between events (1; 0: skip)",
    )
    parser.add_argument("--paced-streams", type=int, help="paced streams (100; quick 20)")
    parser.add_argument("--answer-chars", type=int, default=256, help="answer length (256)")
    parser.add_argument("--chunk-chars", type=int, default=4, help="characters per SSE chunk (4)")
    parser.add_argument(
        "--route",
        choices=["instance", "pool"],
        default="instance",
        help="what the proxy target asks for: a single instance (default) or a failover pool",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    concurrencies: tuple[int, ...] = (1, 8, 32) if quick else (1, 8, 32, 64)
    if args.concurrency:
        concurrencies = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    settings = Settings(
        quick=quick,
        latency_requests=args.requests or (300 if quick else 2000),
        latency_warmup=50 if quick else 200,
        concurrencies=concurrencies,
        duration_s=args.duration or (2.0 if quick else 5.0),
        stream_requests=args.streams or (100 if quick else 500),
        stream_warmup=10 if quick else 30,
        paced_gap_ms=args.paced_gap_ms,
        paced_streams=args.paced_streams or (20 if quick else 100),
        answer_chars=args.answer_chars,
        chunk_chars=args.chunk_chars,
        profile=bool(args.profile or args.profile_native),
        profile_native=bool(args.profile_native),
        out=args.out,
        route=args.route,
    )
    if min(settings.concurrencies, default=0) < 1 or settings.latency_requests < 1:
        parser.error("concurrencies and request counts must be positive")
    if settings.answer_chars < 1 or settings.chunk_chars < 1:
        parser.error("--answer-chars and --chunk-chars must be positive")
    return settings


def _git(*args: str) -> str:
    try:
        result = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return result.stdout.strip() if result.returncode == 0 else "?"


def environment(envoy_binary: str) -> dict[str, Any]:
    import grpc

    dirty = _git("status", "--porcelain")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "envoy": envoy_version(envoy_binary),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "git": _git("rev-parse", "--short", "HEAD")
        + (f" (+{len(dirty.splitlines())} changed files)" if dirty not in ("", "?") else ""),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


async def _wait_until_serving(
    targets: Mapping[str, Target], expected_text: str, timeout_s: float = 20.0
) -> None:
    """One valid answer from every target (health checks may need a moment)."""
    request_body = chat_body(MODEL, stream=False)
    for target in targets.values():
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            probe = await run_sequential(
                target,
                target.request(request_body, stream=False),
                1,
                phase="probe",
                sampler=None,
                expected_text=expected_text,
                timeout_s=5.0,
            )
            if not probe.errors:
                break
            last = probe.error_samples[0]
            if time.monotonic() > deadline:
                raise StartupError(f"{target.name} does not answer correctly: {last}")
            await asyncio.sleep(0.2)


def _summary(result: PhaseResult) -> str:
    lat = summarize_ns(result.latencies_ns)
    errors = f", {result.errors} ERRORS" if result.errors else ""
    return f"p50 {lat['p50']:.3f} ms, {result.rps:.0f} req/s{errors}"


async def run_phases(
    settings: Settings,
    targets: Mapping[str, Target],
    sampler: CpuSampler,
    expected_text: str,
    fake_control_port: int,
    proxy_admin_port: int,
) -> dict[str, dict[str, PhaseResult]]:
    """Every phase, each against every target back to back (so drift hits all alike)."""
    await _wait_until_serving(targets, expected_text)

    async def counted(name: str, phase: Awaitable[PhaseResult]) -> PhaseResult:
        """Run ``phase``; for the proxy, record how many ext_proc messages it cost."""
        if name != "proxy":
            return await phase
        before = envoy_counters(proxy_admin_port, "ext_proc")
        result = await phase
        after = envoy_counters(proxy_admin_port, "ext_proc")
        result.envoy_counters = {
            key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key)
        }
        return result

    plain = chat_body(MODEL, stream=False)
    streamed = chat_body(MODEL, stream=True)
    results: dict[str, dict[str, PhaseResult]] = {name: {} for name in targets}
    for name, target in targets.items():
        result = await counted(
            name,
            run_sequential(
                target,
                target.request(plain, stream=False),
                settings.latency_requests,
                phase="latency",
                sampler=sampler,
                expected_text=expected_text,
                warmup=settings.latency_warmup,
            ),
        )
        results[name]["latency"] = result
        _progress(f"non-stream c=1  {name:<6} {_summary(result)}")
    for concurrency in settings.concurrencies:
        for name, target in targets.items():
            result = await counted(
                name,
                run_closed_loop(
                    target,
                    target.request(plain, stream=False),
                    concurrency,
                    settings.duration_s,
                    phase=f"c{concurrency}",
                    sampler=sampler,
                    expected_text=expected_text,
                ),
            )
            results[name][f"c{concurrency}"] = result
            _progress(f"closed loop c={concurrency:<3} {name:<6} {_summary(result)}")
    for name, target in targets.items():
        result = await counted(
            name,
            run_sequential(
                target,
                target.request(streamed, stream=True),
                settings.stream_requests,
                phase="stream",
                sampler=sampler,
                expected_text=expected_text,
                stream=True,
                warmup=settings.stream_warmup,
            ),
        )
        results[name]["stream"] = result
        _progress(f"stream c=1      {name:<6} {_summary(result)}")
    if settings.paced_gap_ms > 0:
        knobs = {"chunk_delay": settings.paced_gap_ms / 1000, "chat_only": True}
        fake_control(fake_control_port, "POST", "/faults", knobs)
        try:
            for name, target in targets.items():
                result = await counted(
                    name,
                    run_sequential(
                        target,
                        target.request(streamed, stream=True),
                        settings.paced_streams,
                        phase="paced",
                        sampler=sampler,
                        expected_text=expected_text,
                        stream=True,
                        warmup=3,
                    ),
                )
                results[name]["paced"] = result
                _progress(f"paced stream    {name:<6} {_summary(result)}")
        finally:
            fake_control(fake_control_port, "DELETE", "/faults")
    return results


async def _profiled_phase(
    target: Target,
    settings: Settings,
    sampler: CpuSampler,
    expected_text: str,
    *,
    stream: bool,
) -> PhaseResult:
    body = chat_body(MODEL, stream=stream)
    count = settings.stream_requests if stream else settings.latency_requests
    if settings.profile_native:  # native sampling slows extproc down by an order of magnitude
        count = min(count, 50 if stream else 300)
    return await run_sequential(
        target,
        target.request(body, stream=stream),
        count,
        phase="profile-stream" if stream else "profile-latency",
        sampler=sampler,
        expected_text=expected_text,
        stream=stream,
        warmup=settings.stream_warmup if stream else settings.latency_warmup,
    )


def run_profile(
    settings: Settings,
    target: Target,
    extproc_pid: int,
    sampler: CpuSampler,
    expected_text: str,
) -> dict[str, Any]:
    """The proxy's c=1 phases again, non-streaming then streaming, with py-spy attached."""
    py_spy = find_py_spy()
    if py_spy is None:
        return {"error": "py-spy not installed (pip install py-spy): no profile taken"}
    runs = []
    for stream in (False, True):
        label = "stream" if stream else "nonstream"
        output = settings.out.parent / f"profile-extproc-{label}.speedscope.json"
        _progress(f"profiling extproc (pid {extproc_pid}), {label} c=1, with py-spy")
        try:
            recorder = PySpyRecorder(py_spy, extproc_pid, output, native=settings.profile_native)
            with recorder:
                result = asyncio.run(
                    _profiled_phase(target, settings, sampler, expected_text, stream=stream)
                )
        except (OSError, RuntimeError) as exc:
            return {"error": f"py-spy failed: {exc}"}
        if not output.exists():
            return {"error": f"py-spy wrote no {output} (see {output.with_suffix('.log')})"}
        lat = summarize_ns(result.latencies_ns)
        runs.append(
            {
                "phase": f"{'streaming' if stream else 'non-streaming'} c=1",
                "wall_s": result.wall_ns / 1e9,
                "requests": result.requests,
                "errors": result.errors,
                "p50": lat["p50"],
                "p99": lat["p99"],
                "extproc_cpu_ms_per_request": result.cpu_s.get("extproc", math.nan)
                * 1000
                / max(result.requests, 1),
                "summary": summarize_speedscope(output, recorder.rate).as_json(),
            }
        )
    return {"runs": runs}


def _extra_proxy(
    stack: contextlib.ExitStack, logs: Path, config: dict[str, Any], variant: str
) -> Target:
    """Another proxy beside the benchmark's (fresh ports), as a target."""
    config.update(port=free_port(), grpc_port=free_port(), admin_port=free_port())
    start_proxy(stack, logs, config, name=f"proxy-{variant}")
    return Target(variant, "127.0.0.1", config["port"], CHAT_PATH, CLIENT_KEY)


def run_observability(
    stack: contextlib.ExitStack,
    logs: Path,
    proxy_cfg: dict[str, Any],
    targets: Mapping[str, Target],
    expected_text: str,
    settings: Settings,
) -> dict[str, Any]:
    """Section 8: two more proxies (capture on; everything on) beside the first."""
    variants = {}
    for variant in ("capture", "all"):
        config = observability_config(proxy_cfg, logs, variant)
        config["capture"]["grpc_port"] = free_port()
        variants[variant] = _extra_proxy(stack, logs, config, variant)
    measured = {"envoy": targets["envoy"], "proxy": targets["proxy"], **variants}
    return asyncio.run(
        measure_observability(
            measured, expected_text, settings.latency_requests, settings.stream_requests
        )
    )


def run_safety(
    stack: contextlib.ExitStack,
    logs: Path,
    proxy_cfg: dict[str, Any],
    targets: Mapping[str, Target],
    expected_text: str,
    settings: Settings,
) -> dict[str, Any]:
    """Section 9: a proxy with every safety stage off, and one with every stage on."""
    measured: dict[str, Target] = {"envoy": targets["envoy"]}
    for variant in ("plain", "safety"):
        config = safety_config(proxy_cfg, variant, logs)
        measured[variant] = _extra_proxy(stack, logs, config, variant)
    section = asyncio.run(
        measure_safety(
            measured, MODEL, expected_text, settings.latency_requests, settings.stream_requests
        )
    )
    section["costs"] = safety_costs(section)
    return section


def run_sessions(
    stack: contextlib.ExitStack,
    logs: Path,
    proxy_cfg: dict[str, Any],
    envoy: Target,
    pids: Mapping[str, int],
    expected_text: str,
    settings: Settings,
) -> dict[str, Any]:
    """Section 10: sessions + in-chat commands off, on (memory store), on (SQLite)."""
    rounds = 8 if settings.quick else 10
    return run_sessions_section(
        stack,
        logs,
        proxy_cfg,
        envoy,
        pids["envoy-baseline"],
        expected_text,
        rounds=rounds,
        per_round=max(25, settings.latency_requests // rounds),
        streams_per_round=max(1, settings.stream_requests // (rounds * 4)),
        extra_pids={"fake": pids["fake"], "loadgen": pids["loadgen"]},
        inprocess_repeat=800 if settings.quick else 2000,
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    out_dir = settings.out.parent
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    from tests.fakes.openai_upstream import default_answer

    expected_text = default_answer("bench", MODEL, settings.answer_chars)
    envoy_binary = find_envoy_binary()
    env = environment(envoy_binary)
    print(reporting.render_environment(env, settings.describe()), flush=True)
    profile: dict[str, Any] | None = None
    try:
        with contextlib.ExitStack() as stack:
            _progress("starting the fake upstream, Envoy alone and the proxy")
            fake, fake_port, control_port = start_fake(
                stack,
                logs,
                api_key=PROVIDER_KEY,
                answer_chars=settings.answer_chars,
                chunk_chars=settings.chunk_chars,
            )
            baseline_config = proxy_config(fake_port, PROVIDER_KEY)
            envoy = start_baseline_envoy(stack, logs, baseline_config, envoy_binary)
            proxy_cfg = proxy_config(fake_port, PROVIDER_KEY)
            extproc, proxy_envoy_pid = start_proxy(stack, logs, proxy_cfg)
            pids = {
                "fake": fake.pid,
                "envoy-baseline": envoy.pid,
                "envoy-proxy": proxy_envoy_pid,
                "extproc": extproc.pid,
                "loadgen": os.getpid(),
            }
            _progress(f"pids: {pids}; logs in {logs}")
            targets = {
                "direct": Target("direct", "127.0.0.1", fake_port, CHAT_PATH, PROVIDER_KEY),
                "envoy": Target(
                    "envoy", "127.0.0.1", baseline_config["port"], CHAT_PATH, PROVIDER_KEY
                ),
                "proxy": Target(
                    "proxy",
                    "127.0.0.1",
                    proxy_cfg["port"],
                    CHAT_PATH,
                    CLIENT_KEY,
                    model=POOL_MODEL if settings.route == "pool" else None,
                ),
            }
            sampler = CpuSampler(pids)
            results = asyncio.run(
                run_phases(
                    settings, targets, sampler, expected_text, control_port, proxy_cfg["admin_port"]
                )
            )
            _progress("translation: OpenAI vs Anthropic client through the proxy, in-process CPU")
            translation = {
                "through_proxy": asyncio.run(
                    through_proxy(
                        proxy_cfg["port"],
                        CLIENT_KEY,
                        MODEL,
                        expected_text,
                        settings.latency_requests,
                        settings.stream_requests,
                        pace=lambda on: fake_control(
                            control_port,
                            "POST" if on else "DELETE",
                            "/faults",
                            {"chunk_delay": settings.paced_gap_ms / 1000, "chat_only": True}
                            if on
                            else None,
                        ),
                        paced_streams=settings.paced_streams if settings.paced_gap_ms > 0 else 0,
                    )
                ),
                "request_cpu": request_translation_cpu(),
                "chunk_cpu": chunk_translation_cpu(),
            }
            _progress("observability: the proxy with capture off, capture on, everything on")
            observability = run_observability(
                stack, logs, proxy_cfg, targets, expected_text, settings
            )
            _progress("safety: every safety stage off, and every stage on")
            safety = run_safety(stack, logs, proxy_cfg, targets, expected_text, settings)
            _progress("sessions: sessions + commands off, on (memory), on (SQLite); !/hello")
            sessions = run_sessions(
                stack, logs, proxy_cfg, targets["envoy"], pids, expected_text, settings
            )
            if settings.profile:
                profile = run_profile(
                    settings, targets["proxy"], extproc.pid, sampler, expected_text
                )
            for managed in (fake, envoy, extproc):
                if managed.proc.poll() is not None:
                    raise StartupError(
                        f"{managed.name} exited during the run ({managed.proc.returncode}):\n"
                        + managed.log_tail()
                    )
    except StartupError as exc:
        print(f"\nBENCHMARK BROKEN: {exc}", flush=True)
        return 1
    _progress("guards: loop detection, tool-call repair, compression, tool loops (in-process)")
    guards = measure_guards(quick=settings.quick)
    report = reporting.build(
        results, concurrencies=settings.concurrencies, expected_chunks=settings.content_chunks
    )
    print(reporting.render(report, settings.describe()), flush=True)
    print("\n" + render_translation(translation), flush=True)
    print("\n" + render_observability(observability), flush=True)
    print("\n" + render_safety(safety), flush=True)
    print("\n" + render_sessions(sessions), flush=True)
    print("\n" + render_guards(guards), flush=True)
    if settings.profile:
        assert profile is not None
        print(reporting.render_profile(profile), flush=True)
    document = {
        "environment": env,
        "settings": settings.describe(),
        "pids": pids,
        **report,
        "translation": translation,
        "observability": observability,
        "safety": safety,
        "sessions": sessions,
        "guards": guards,
        "profile": profile,
        "loadavg_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    settings.out.write_text(json.dumps(_finite(document), indent=2, default=str) + "\n")
    print(f"\nload average at end: {document['loadavg_at_end']}", flush=True)
    print(f"report written to {settings.out}", flush=True)
    if report["errors"]:
        print(f"!!! {report['errors']} requests failed validation: exit code 2 !!!", flush=True)
        return 2
    return 0


def _finite(value: Any) -> Any:
    """The document with NaN and infinities as null (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
