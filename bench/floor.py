"""The floor: Envoy + a no-op ext_proc beside the proxy, measured with wrk in one run.

``python -m bench.floor [--seconds S] [--rounds R] [--quick] [--out FILE]``

Processes (all started here, stopped by PID):

* **upstream**: an Envoy whose listeners answer with ``direct_response`` (a fixed chat
  completion, or under ``/sse/`` a fixed SSE stream ending with ``data: [DONE]``): an upstream
  that costs almost nothing. Two listener ports, so a failover pool has two backends.
* **envoy**: Envoy alone, the proxy's bootstrap built with ``baseline_cluster`` (no ext_proc).
* **floor**: the proxy's own bootstrap for the same config (same processing modes, attributes,
  UPSTREAM role filter, access logs), its ``extproc`` cluster pointed at
  :mod:`bench.noop_extproc`, which answers every message with the minimal reply (plus the
  cluster header the routes need, and the proxy's stream body mode).
* **proxy**: ``python -m extproc`` with the default config (every default stage on);
  **all**: the same with every agent stage on (tool access rules, sandbox, compression
  besides the defaults); **proxy-noop**: the proxy's own process
  (``bench.proxy_noop_router``) with its ROUTER role answering like the no-op server: what
  the proxy costs over it is the exchange, what it costs over the floor is the server around
  the exchange; **proxy-cpus**: the default proxy with Envoy's own default
  (``envoy.concurrency``: a worker per CPU) instead of the proxy's sizing (CPUs less extproc
  workers: 1 on 2 CPUs). The floor's Envoy gets the proxy's sizing; Envoy alone its own
  default.

Kinds of request: ``json`` (single instance), ``stream`` (single instance, SSE), ``pool`` (a
failover pool of two replicas with one key: the ROUTER role sets the host headers and Envoy
skips the UPSTREAM role on the first attempt) and ``accounts`` (a failover pool of two
accounts, each with its own key: the UPSTREAM role runs on every attempt). Each round runs
every kind at c=1 and c=32 (``wrk -t1``) against every target in turn (A, B, C, D, A, B, C,
D, ...); the figures are medians over rounds, differences and ratios paired within a round.
Before the rounds, one request per kind and target is validated (status, answer text, SSE
framing); wrk counts non-2xx answers and socket errors during the rounds. Messages per
request come from each Envoy's ``ext_proc`` counters. Writes a small JSON report
(``bench/results/floor.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.load import chat_body
from bench.procs import (
    REPO,
    CpuSampler,
    Managed,
    envoy_counters,
    envoy_ready,
    find_envoy_binary,
    free_port,
    listen_ports,
    spawn,
    start_baseline_envoy,
    start_proxy,
)
from bench.stats import median
from bench.wrk import WrkResult, find_wrk, run_wrk, write_script
from extproc.server.sizing import available_cpus, envoy_concurrency

__all__ = [
    "ANSWER_TEXT",
    "JSON_MODEL",
    "backend_config",
    "check_answer",
    "main",
    "request_headers",
    "start_upstream",
]

CHAT_PATH = "/v1/chat/completions"
CLIENT_KEY = "sk-bench-client"
PROVIDER_KEY = "sk-floor-upstream"
JSON_MODEL = "gpt-json"
STREAM_MODEL = "gpt-stream"
POOL_MODEL = "bench-pool"
ACCOUNTS_MODEL = "bench-accounts"
#: What the direct_response upstream answers, in pieces (one SSE event each when streamed).
ANSWER_PARTS = (
    "Envoy retries ",
    "a 503 on the ",
    "next priority, ",
    "and the buffered ",
    "request body is ",
    "replayed unchanged ",
    "on that attempt.",
)
ANSWER_TEXT = "".join(ANSWER_PARTS)
DEFAULT_OUT = REPO / "bench" / "results" / "floor.json"

KINDS = ("json", "stream", "pool", "accounts")
#: Kinds answered like ``json`` (Envoy alone: its json row).
POOLS = ("pool", "accounts")
LOADS = (1, 32)
#: Bars from the issue ("Close to the floor").
BAR_THROUGHPUT = 0.90
BAR_ADDED_P50_MS = 0.25
BAR_POOL_P50_MS = 0.3
BAR_ALL_P50_MS = 0.3
BAR_ALL_THROUGHPUT = 0.85
BAR_CONCURRENCY_GAIN = 1.25


# --------------------------------------------------------------------------------------------
# The direct_response upstream


def _json_answer() -> str:
    return json.dumps(
        {
            "id": "chatcmpl-floor",
            "object": "chat.completion",
            "created": 1700000000,
            "model": JSON_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER_TEXT},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 61, "completion_tokens": 16, "total_tokens": 77},
        },
        separators=(",", ":"),
    )


def _sse_answer() -> str:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {
            "id": "chatcmpl-floor",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": STREAM_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return "data: " + json.dumps(data, separators=(",", ":")) + "\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": part}) for part in ANSWER_PARTS]
    events.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 61, "completion_tokens": 16, "total_tokens": 77}
    events.append(
        "data: "
        + json.dumps(
            {
                "id": "chatcmpl-floor",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": STREAM_MODEL,
                "choices": [],
                "usage": usage,
            },
            separators=(",", ":"),
        )
        + "\n\n"
    )
    events.append("data: [DONE]\n\n")
    return "".join(events)


def _direct(body: str, content_type: str) -> dict[str, Any]:
    return {
        "direct_response": {"status": 200, "body": {"inline_string": body}},
        "response_headers_to_add": [
            {
                "header": {"key": "content-type", "value": content_type},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }


def upstream_bootstrap(ports: Sequence[int], admin_port: int) -> dict[str, Any]:
    """Envoy answering every request itself: SSE under ``/sse/``, a chat completion elsewhere."""
    routes = [
        {"match": {"prefix": "/sse/"}, **_direct(_sse_answer(), "text/event-stream")},
        {"match": {"prefix": "/"}, **_direct(_json_answer(), "application/json")},
    ]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "upstream",
        "codec_type": "AUTO",
        "route_config": {
            "name": "upstream",
            "virtual_hosts": [{"name": "upstream", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    listeners = [
        {
            "name": f"upstream-{index}",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": hcm,
                        }
                    ]
                }
            ],
        }
        for index, port in enumerate(ports)
    ]
    return {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {"listeners": listeners},
    }


def _start_envoy(
    stack: contextlib.ExitStack,
    workdir: Path,
    name: str,
    bootstrap: Mapping[str, Any],
    admin_port: int,
    envoy_binary: str,
    concurrency: int | None,
) -> Managed:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(bootstrap), sort_keys=False))
    args = [envoy_binary, "-c", str(path), "--disable-hot-restart", "--log-level", "error"]
    if concurrency:
        args += ["--concurrency", str(concurrency)]
    return _spawn(stack, name, args, workdir / f"{name}.log", lambda: envoy_ready(admin_port))


def _spawn(
    stack: contextlib.ExitStack, name: str, args: list[str], log_path: Path, ready: Any
) -> Managed:
    """bench.procs' spawner (stopped with ``stack``), then wait until ``ready()``."""
    managed = spawn(stack, name, args, log_path)
    managed.wait_for(ready, "readiness")
    return managed


def start_upstream(
    stack: contextlib.ExitStack, workdir: Path, envoy_binary: str, listeners: int = 2
) -> tuple[Managed, list[int]]:
    """The direct_response upstream (one Envoy thread); returns it and its listener ports."""
    ports = [free_port() for _ in range(listeners)]
    admin = free_port()
    upstream = _start_envoy(
        stack, workdir, "upstream", upstream_bootstrap(ports, admin), admin, envoy_binary, 1
    )
    return upstream, ports


def backend_config(ports: Sequence[int]) -> dict[str, Any]:
    """The proxy's default config (as data) on the direct_response upstream, fresh ports.

    ``openai`` serves ``gpt-json``, ``stream`` (``/sse/`` on the same port) ``gpt-stream``,
    and the pool ``bench-pool`` fails over from ``openai`` to ``openai.1`` (the second port).
    """

    def backend(port: int, base: str, models: list[str], key: str = PROVIDER_KEY) -> dict[str, Any]:
        return {
            "type": "openai-compatible",
            "base_url": f"http://127.0.0.1:{port}{base}",
            "api_key": key,
            "models": models,
        }

    return {
        **listen_ports(),
        "backends": {
            "openai": backend(ports[0], "/v1", [JSON_MODEL]),
            "openai.1": backend(ports[-1], "/v1", []),  # a replica: the same key
            "openai.2": backend(ports[-1], "/v1", [], PROVIDER_KEY + "-2"),  # an account
            "stream": backend(ports[0], "/sse/v1", [STREAM_MODEL]),
        },
        "models": {
            POOL_MODEL: {"failover": [f"openai:{JSON_MODEL}", f"openai.1:{JSON_MODEL}"]},
            ACCOUNTS_MODEL: {"failover": [f"openai:{JSON_MODEL}", f"openai.2:{JSON_MODEL}"]},
        },
        "envoy": {"log_level": "error"},
        "metrics": {"port": 0},
    }


def all_stages(config: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    """``config`` with every agent stage on (defaults + tool access, sandbox, compression)."""
    out = dict(config)
    out["tool_access"] = {"rules": [{"deny": ["mcp__*__delete_*"]}]}
    out["sandbox"] = {"enabled": True, "roots": [str(workdir)]}
    out["compression"] = {"enabled": True}
    return out


# --------------------------------------------------------------------------------------------
# Targets


@dataclass
class Target:
    """One measured target: where it listens, the path per kind, the processes it costs."""

    name: str
    port: int
    pids: dict[str, int]
    admin_port: int | None = None  # an Envoy with ext_proc: its counters
    paths: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    kinds: tuple[str, ...] = KINDS


#: The proxy picks the backend by model; Envoy alone and the floor by path.
PROXY_MODELS = {
    "json": JSON_MODEL,
    "stream": STREAM_MODEL,
    "pool": POOL_MODEL,
    "accounts": ACCOUNTS_MODEL,
}
PROXY_PATHS = dict.fromkeys(KINDS, CHAT_PATH)
FLOOR_PATHS = {
    "json": CHAT_PATH,
    "stream": "/sse" + CHAT_PATH,
    "pool": "/pool" + CHAT_PATH,
    "accounts": "/accounts" + CHAT_PATH,
}


def _body(kind: str, model: str) -> bytes:
    return chat_body(model, stream=kind == "stream")


def request_headers(kind: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "authorization": f"Bearer {CLIENT_KEY}",
        "accept": "text/event-stream" if kind == "stream" else "application/json",
        "user-agent": "llm-proxy-bench/1",
    }


def check_answer(port: int, path: str, kind: str, body: bytes) -> str | None:
    """None when one request answers ``ANSWER_TEXT`` correctly for ``kind``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, body=body, headers=request_headers(kind))
        response = connection.getresponse()
        data = response.read()
        ctype = response.getheader("content-type") or ""
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
    if response.status != 200:
        return f"status {response.status}: {data[:200]!r}"
    try:
        if kind != "stream":
            text = json.loads(data)["choices"][0]["message"]["content"]
        else:
            if not ctype.startswith("text/event-stream"):
                return f"content-type {ctype!r}"
            events = [e for e in data.decode().replace("\r\n", "\n").split("\n\n") if e.strip()]
            payloads = [e.removeprefix("data:").strip() for e in events if e.startswith("data:")]
            if not payloads or payloads[-1] != "[DONE]":
                return f"stream does not end with data: [DONE]: {data[-120:]!r}"
            text = "".join(
                (choice.get("delta") or {}).get("content") or ""
                for payload in payloads[:-1]
                for choice in json.loads(payload).get("choices") or ()
            )
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"bad answer ({exc!r}): {data[:200]!r}"
    return None if text == ANSWER_TEXT else f"unexpected text {text!r:.120}"


# --------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Phase:
    """One wrk run of one target, kind and load, with the ext_proc counters it moved."""

    result: WrkResult
    streams: int = 0  # ROUTER ext_proc streams (one per request that reached it)
    all_streams: int = 0
    messages: int = 0


def _ext_proc_totals(admin_port: int) -> tuple[int, int, int]:
    counters = envoy_counters(admin_port, "ext_proc")
    router = counters.get("http.llm.ext_proc.streams_started", 0)
    streams = sum(v for k, v in counters.items() if k.endswith("ext_proc.streams_started"))
    sent = sum(v for k, v in counters.items() if k.endswith("ext_proc.stream_msgs_sent"))
    return router, streams, sent


def _measure(
    target: Target,
    kind: str,
    load: int,
    script: Path,
    seconds: float,
    sampler: CpuSampler,
) -> Phase:
    before = _ext_proc_totals(target.admin_port) if target.admin_port else (0, 0, 0)
    result = run_wrk(
        f"http://127.0.0.1:{target.port}{target.paths[kind]}",
        script,
        connections=load,
        seconds=seconds,
        sampler=sampler,
    )
    after = _ext_proc_totals(target.admin_port) if target.admin_port else (0, 0, 0)
    router, streams, sent = (b - a for a, b in zip(before, after, strict=True))
    return Phase(result, router, streams, sent)


def _summary(phases: Sequence[Phase], pids: Sequence[str]) -> dict[str, Any]:
    results = [p.result for p in phases]
    router = sum(p.streams for p in phases)
    return {
        "p50_ms": median([r.p50_ms for r in results]),
        "p99_ms": median([r.p99_ms for r in results]),
        "rps": median([r.rps for r in results]),
        "cpu_ms_per_request": median([r.cpu_ms_per_request(list(pids)) for r in results]),
        # Each process's share (Envoy, extproc or the no-op server): sizing figures.
        "cpu_ms_per_request_by_process": {
            name: round(median([r.cpu_ms_per_request([name]) for r in results]), 3) for name in pids
        },
        "machine_cores": median(
            [r.cpu_s.get("machine", 0.0) / r.seconds for r in results if r.seconds]
        ),
        "messages_per_request": sum(p.messages for p in phases) / router if router else 0.0,
        "streams_per_request": sum(p.all_streams for p in phases) / router if router else 0.0,
        "errors": sum(r.errors for r in results),
        "rounds_rps": [round(r.rps) for r in results],
        "rounds_p50_ms": [round(r.p50_ms, 3) for r in results],
    }


def _paired(a: Sequence[Phase], b: Sequence[Phase], how: str, value: str = "p50") -> float:
    """Median over rounds of ``a - b`` (p50, ms) or ``a / b`` (req/s)."""
    pairs = list(zip(a, b, strict=True))
    if how == "diff":
        return median([x.result.latency_ms[value] - y.result.latency_ms[value] for x, y in pairs])
    return median([x.result.rps / y.result.rps for x, y in pairs if y.result.rps])


def _schedule(targets: Sequence[Target]) -> list[tuple[str, int, Target]]:
    out = []
    for kind in KINDS:
        for load in LOADS:
            out += [(kind, load, t) for t in targets if kind in t.kinds]
    return out


# --------------------------------------------------------------------------------------------
# Report


def _fmt(value: float, digits: int = 3) -> str:
    return "—" if value != value else f"{value:.{digits}f}"  # NaN


def _tables(report: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for kind in KINDS:
        rows = report["kinds"][kind]
        lines += [
            "",
            f"### {kind}" + (" (Envoy alone: the json row)" if kind in POOLS else ""),
            "",
            "| target | c=1 p50 | added p50 over Envoy | c=1 p99 | c=32 req/s | c=32 p50 "
            "| messages / request | streams / request | CPU ms / request (c=32) | errors |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            c1, c32 = row["c1"], row["c32"]
            added = row.get("added_p50_ms")
            lines.append(
                f"| {name} | {_fmt(c1['p50_ms'])} ms | "
                f"{'—' if added is None else f'{added:+.3f} ms'} | {_fmt(c1['p99_ms'])} ms | "
                f"{c32['rps']:.0f} | {_fmt(c32['p50_ms'])} ms | "
                f"{c1['messages_per_request']:.2f} | {c1['streams_per_request']:.2f} | "
                f"{_fmt(c32['cpu_ms_per_request'])} | {c1['errors'] + c32['errors']} |"
            )
    lines += ["", "| ratio (paired within rounds, median) | value | bar | |", "|---|---|---|---|"]
    for check in report["checks"]:
        lines.append(
            f"| {check['what']} | {check['value']:{check['format']}} | {check['bar']} | "
            f"{'PASS' if check['pass'] else 'FAIL'} |"
        )
    return lines


def _checks(phases: Mapping[tuple[str, str, int], list[Phase]]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def check(what: str, a: tuple[str, str, int], b: tuple[str, str, int], bar: float) -> None:
        """``a`` over ``b``: a ratio of req/s at c=32 (at least ``bar``), else a p50
        difference in ms (at most ``bar``); nothing when either was not measured."""
        first, second = phases.get(a), phases.get(b)
        if not first or not second:
            return
        ratio = a[2] == 32
        value = _paired(first, second, "ratio" if ratio else "diff")
        checks.append(
            {
                "what": what,
                "value": value,
                "bar": f">= {bar}" if ratio else f"<= {bar} ms",
                "pass": value >= bar if ratio else value <= bar,
                "format": ".2f" if ratio else "+.3f",
            }
        )

    for kind in KINDS:
        check(
            f"{kind}: proxy / floor req/s, c=32",
            ("proxy", kind, 32),
            ("floor", kind, 32),
            BAR_THROUGHPUT,
        )
        check(
            f"{kind}: proxy added p50 - floor added p50, c=1",
            ("proxy", kind, 1),
            ("floor", kind, 1),
            BAR_ADDED_P50_MS,
        )
    for pool in POOLS:
        check(
            f"proxy: {pool} p50 - single p50, c=1",
            ("proxy", pool, 1),
            ("proxy", "json", 1),
            BAR_POOL_P50_MS,
        )
    for kind in ("json", "stream"):
        check(
            f"{kind}: all stages - plain p50, c=1",
            ("all", kind, 1),
            ("proxy", kind, 1),
            BAR_ALL_P50_MS,
        )
        check(
            f"{kind}: all stages / plain req/s, c=32",
            ("all", kind, 32),
            ("proxy", kind, 32),
            BAR_ALL_THROUGHPUT,
        )
    check(
        "json: proxy (sized Envoy) / Envoy's default workers req/s, c=32",
        ("proxy", "json", 32),
        ("proxy-cpus", "json", 32),
        BAR_CONCURRENCY_GAIN,
    )
    return checks


def _report(
    targets: Sequence[Target],
    phases: Mapping[tuple[str, str, int], list[Phase]],
) -> dict[str, Any]:
    kinds: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        rows: dict[str, Any] = {}
        for target in targets:
            if kind not in target.kinds:
                continue
            row: dict[str, Any] = {
                f"c{load}": _summary(phases[(target.name, kind, load)], list(target.pids))
                for load in LOADS
            }
            base_kind = "json" if kind in POOLS else kind
            if target.name != "envoy":
                row["added_p50_ms"] = _paired(
                    phases[(target.name, kind, 1)], phases[("envoy", base_kind, 1)], "diff"
                )
            rows[target.name] = row
        kinds[kind] = rows
    return {"kinds": kinds, "checks": _checks(phases)}


# --------------------------------------------------------------------------------------------
# Main


def _git_head() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() or "?"


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (3; quick 1)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (5; quick 2)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    parser.add_argument(
        "--kinds",
        type=lambda text: tuple(text.split(",")),
        default=KINDS,
        help=f"comma-separated subset of {','.join(KINDS)} (pools bring json along)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    if set(args.kinds) & set(POOLS):
        args.kinds = (*args.kinds, "json")
    args.seconds = args.seconds or (1.0 if args.quick else 3.0)
    args.rounds = args.rounds or (2 if args.quick else 5)
    return args


def _start(
    stack: contextlib.ExitStack, logs: Path, envoy_binary: str
) -> tuple[list[Target], dict[str, int]]:
    """Every process; the targets and the shared upstream's pid."""
    from extproc.config import build_config
    from extproc.envoy_config import build_bootstrap

    upstream, ports = start_upstream(stack, logs, envoy_binary)
    shared = {"upstream": upstream.pid}
    base = backend_config(ports)
    # The floor's Envoy is sized as the proxy sizes its own (envoy_concurrency).
    concurrency = envoy_concurrency(base["envoy"].get("concurrency"), 1)

    envoy = start_baseline_envoy(stack, logs, base, envoy_binary)
    targets = [
        Target(
            "envoy",
            base["port"],
            {"envoy-alone": envoy.pid},
            None,
            FLOOR_PATHS,
            kinds=("json", "stream"),
        )
    ]

    floor_raw = {**backend_config(ports), "envoy": base["envoy"]}
    bootstrap = build_bootstrap(build_config(floor_raw, env={}))
    clusters = [c["name"] for c in bootstrap["static_resources"]["clusters"]]
    assert {"instance/openai", "instance/stream", f"pool/{POOL_MODEL}"} <= set(clusters), clusters
    noop_args = [sys.executable, "-m", "bench.noop_extproc", "--port", str(floor_raw["grpc_port"])]
    noop_args += ["--cluster", "instance/openai", "--route", "/sse/=instance/stream"]
    noop_args += ["--route", f"/pool/=pool/{POOL_MODEL}", "--alike", "/pool/"]
    noop_args += ["--route", f"/accounts/=pool/{ACCOUNTS_MODEL}", "--stream-mode", "full_duplex"]
    noop_log = logs / "noop.log"
    noop = _spawn(
        stack,
        "noop",
        noop_args,
        noop_log,
        lambda: "listening" in noop_log.read_text(errors="replace"),
    )
    floor_envoy = _start_envoy(
        stack, logs, "envoy-floor", bootstrap, floor_raw["admin_port"], envoy_binary, concurrency
    )
    targets.append(
        Target(
            "floor",
            floor_raw["port"],
            {"floor-envoy": floor_envoy.pid, "noop": noop.pid},
            floor_raw["admin_port"],
            FLOOR_PATHS,
        )
    )

    variants: list[tuple[str, dict[str, Any], tuple[str, ...], str]] = [
        ("proxy", backend_config(ports), KINDS, "extproc"),
        ("all", all_stages(backend_config(ports), logs), ("json", "stream"), "extproc"),
        # The proxy's own server with a no-op ROUTER role: splits the gap to the floor.
        ("proxy-noop", backend_config(ports), ("json",), "bench.proxy_noop_router"),
    ]
    cpus = available_cpus()
    if cpus != concurrency:
        alt = backend_config(ports)
        alt["envoy"] = {**alt["envoy"], "concurrency": cpus}
        variants.append(("proxy-cpus", alt, ("json",), "extproc"))
    for name, config, kinds, module in variants:
        proxy, envoy_pid = start_proxy(stack, logs, config, name=f"proxy-{name}", module=module)
        targets.append(
            Target(
                name,
                config["port"],
                {f"{name}-envoy": envoy_pid, f"{name}-extproc": proxy.pid},
                config["admin_port"],
                PROXY_PATHS,
                PROXY_MODELS,
                kinds,
            )
        )
    return targets, shared


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    find_wrk()
    envoy_binary = find_envoy_binary()
    load_before = os.getloadavg()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        logs = Path(tmp)
        targets, shared = _start(stack, logs, envoy_binary)
        for target in targets:
            target.kinds = tuple(k for k in target.kinds if k in args.kinds)
        problems = []
        scripts: dict[tuple[str, str], Path] = {}
        for target in targets:
            for kind in target.kinds:
                body = _body(kind, target.models.get(kind, PROXY_MODELS[kind]))
                for _attempt in range(50):  # health checks may still be settling
                    problem = check_answer(target.port, target.paths[kind], kind, body)
                    if problem is None:
                        break
                    time.sleep(0.1)
                if problem:
                    problems.append(f"{target.name} {kind}: {problem}")
                scripts[(target.name, kind)] = write_script(
                    logs, f"{target.name}-{kind}", body, request_headers(kind)
                )
        if problems:
            print("VALIDATION FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 2
        pids = {name: pid for t in targets for name, pid in t.pids.items()} | shared
        sampler = CpuSampler(pids)
        schedule = _schedule(targets)
        print(
            f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f}; {args.rounds} rounds of "
            f"{len(schedule)} wrk runs x {args.seconds:.0f} s; targets "
            + ", ".join(t.name for t in targets),
            flush=True,
        )
        for kind, load, target in schedule:  # warm-up
            run_wrk(
                f"http://127.0.0.1:{target.port}{target.paths[kind]}",
                scripts[(target.name, kind)],
                connections=load,
                seconds=1,
            )
        phases: dict[tuple[str, str, int], list[Phase]] = {}
        for index in range(args.rounds):
            for kind, load, target in schedule:
                phase = _measure(
                    target, kind, load, scripts[(target.name, kind)], args.seconds, sampler
                )
                phases.setdefault((target.name, kind, load), []).append(phase)
            print(f"  round {index + 1}/{args.rounds} done", flush=True)
        report = _report(targets, phases)
    load_after = os.getloadavg()
    report["run"] = {
        "head": _git_head(),
        "cpus": os.cpu_count(),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "wall_s": round(time.monotonic() - started),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "envoy_concurrency": {
            "proxy_and_floor": envoy_concurrency(None, 1),
            "envoy_alone_and_proxy_cpus": available_cpus(),
        },
    }
    lines = _tables(report)
    print("\n".join(lines))
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    errors = sum(
        row[f"c{load}"]["errors"]
        for rows in report["kinds"].values()
        for row in rows.values()
        for load in LOADS
    )
    return 0 if errors == 0 else 2


if __name__ == "__main__":
    raise SystemExit(main())
