"""The cost of sessions and in-chat commands on the hot path (section 10).

    python -m bench.sessions                 # about 4 minutes
    python -m bench.sessions --quick         # about 1 minute
    python -m bench.sessions --profile       # plus cProfile of the in-process path

Three proxies against the same fake upstream, and Envoy alone beside them:

* ``plain``: sessions, in-chat commands and dedup off
  (``sessions``/``interactive``/``dedup``: ``enabled: false``);
* ``sessions``: the defaults: sessions (memory store), in-chat commands and
  dedup on;
* ``sqlite``: the same with ``sessions.store: sqlite`` (for information).

Everything else is the benchmark proxy's default config in all three (the
safety stages at their defaults: redaction and dangerous commands on), so only
the sessions, commands and dedup stages differ. Every request carries the
same ``x-session-id`` per target, so the session path really loads the stored
state and writes its per-request bookkeeping.

Each round, at concurrency 1 (block orders rotate every round so drift of
the shared machine hits every target alike):

* the four targets, ``--requests`` back to back to each in turn: the bar's
  figure is the median over rounds of each round's p50 difference
  ``sessions - plain`` (the bar, sessions issue: at most 0.2 ms per small
  non-streaming request), beside the CPU per request of each target's
  processes (``/proc``);
* the same four alternated request by request in random order with an idle
  gap before each (rows ``name~``): the request path alone, informational;
* ``hello``: the command-only ``!/hello`` to the ``sessions`` proxy (answered
  by the proxy, no provider call), alternated with a forwarded request;
* streams (TTFT, per chunk).

Then in-process figures without gRPC or Envoy: one whole ROUTER exchange
(request headers, body, answer headers, answer body) per variant, for the
small request and a ~100 KB agent conversation, with the background session
write measured apart; each added stage's hooks alone; one exchange over a
real grpc.aio channel per variant (the server's CPU, with and without the
background session write); ``!/hello`` answered in-process against a
forwarded request. ``--profile`` (or a missed bar): a
cProfile of the in-process exchange, ``sessions`` against ``plain``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import inspect
import json
import math
import os
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.httpclient import Response
from bench.load import (
    SYSTEM_PROMPT,
    PhaseResult,
    Target,
    _Client,
    _quiet_gc,
    chat_body,
    run_sequential,
)
from bench.procs import (
    REPO,
    CpuSampler,
    StartupError,
    find_envoy_binary,
    free_port,
    proxy_config,
    start_baseline_envoy,
    start_fake,
    start_proxy,
)
from bench.stats import percentile

#: The bar of the sessions issue: sessions + commands over the plain proxy, p50, per request.
REQUEST_BAR_MS = 0.2
MODEL = "gpt-4o-mini"
CHAT_PATH = "/v1/chat/completions"
PROVIDER_KEY = "sk-fake-bench"
CLIENT_KEY = "sk-bench-client"
DEFAULT_OUT = REPO / "bench" / "results" / "sessions.json"
HELLO_PREFIX = "LLM interactive proxy"
#: The proxies, in the order of the tables.
VARIANTS = ("plain", "sessions", "sqlite")


# --------------------------------------------------------------------------------------------
# Targets and configs


@dataclass(frozen=True)
class SessionTarget(Target):
    """A target whose requests carry ``x-session-id``; ``hello``: answered by the proxy."""

    session: str | None = None
    hello: bool = False

    def request(self, body: bytes, *, stream: bool) -> bytes:
        raw = super().request(body, stream=stream)
        if self.session is None:
            return raw
        line, rest = raw.split(b"\r\n", 1)
        return line + f"\r\nx-session-id: {self.session}\r\n".encode() + rest

    def check(self, response: Response, expected_text: str) -> str | None:
        if not self.hello:
            return super().check(response, expected_text)
        body = response.full_body()
        if response.status != 200:
            return f"status {response.status}: {body[:200]!r}"
        try:
            content = json.loads(body)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return f"bad JSON body ({exc!r}): {body[:200]!r}"
        if not content.startswith(HELLO_PREFIX):
            return f"not the proxy's hello: {content!r:.120}"
        return None


def hello_body(model: str) -> bytes:
    """A command-only user turn: the proxy answers it without calling a provider."""
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "!/hello"},
        ],
        "temperature": 0.2,
        "max_tokens": 512,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def sessions_config(base: Mapping[str, Any], variant: str, workdir: Path) -> dict[str, Any]:
    """``base`` with sessions, commands and dedup off (``plain``) or on (memory, sqlite)."""
    config = dict(base)
    if variant == "plain":
        config["sessions"] = {"enabled": False}
        config["interactive"] = {"enabled": False}
        config["dedup"] = {"enabled": False}
    elif variant == "sessions":
        config["sessions"] = {"enabled": True, "store": "memory"}
        config["interactive"] = {"enabled": True}
        config["dedup"] = {"enabled": True}
    elif variant == "sqlite":
        path = workdir / "sessions-bench.sqlite"
        for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
        config["sessions"] = {"enabled": True, "store": "sqlite", "sqlite_path": str(path)}
        config["interactive"] = {"enabled": True}
        config["dedup"] = {"enabled": True}
    else:
        raise ValueError(variant)
    return config


@dataclass
class Arm:
    """One measured target and the processes whose CPU it costs."""

    target: SessionTarget
    pids: dict[str, int]


def start_arms(
    stack: contextlib.ExitStack,
    logs: Path,
    base_config: Mapping[str, Any],
    envoy: Target,
    envoy_pid: int,
) -> dict[str, Arm]:
    """The three proxies (fresh ports), and the five targets over them and Envoy alone."""
    arms = {
        "envoy": Arm(
            SessionTarget(
                "envoy", envoy.host, envoy.port, envoy.path, envoy.api_key, session="bench-envoy"
            ),
            {"envoy": envoy_pid},
        )
    }
    for variant in VARIANTS:
        config = sessions_config(base_config, variant, logs)
        config.update(port=free_port(), grpc_port=free_port(), admin_port=free_port())
        proc, proxy_envoy = start_proxy(stack, logs, config, name=f"proxy-s10-{variant}")
        arms[variant] = Arm(
            SessionTarget(
                variant,
                "127.0.0.1",
                config["port"],
                CHAT_PATH,
                CLIENT_KEY,
                session=f"bench-{variant}",
            ),
            {"extproc": proc.pid, "envoy": proxy_envoy},
        )
    sessions = arms["sessions"]
    arms["hello"] = Arm(
        SessionTarget(
            "hello",
            "127.0.0.1",
            sessions.target.port,
            CHAT_PATH,
            CLIENT_KEY,
            session="bench-hello",
            hello=True,
        ),
        sessions.pids,
    )
    return arms


# --------------------------------------------------------------------------------------------
# Through the proxy: interleaved rounds


#: The proxies and Envoy alone, alternated request by request (window A).
ALTERNATED = ("envoy", "plain", "sessions", "sqlite")


async def alternate(
    targets: Sequence[tuple[str, Target, bytes]],
    cycles: int,
    expected_text: str,
    *,
    warmup: int = 10,
    gap_s: float = 0.003,
    seed: int = 0,
) -> dict[str, PhaseResult]:
    """``cycles`` times one request to each target, one keep-alive connection each.

    Request by request, in a fresh random order every cycle (so no target
    always follows the same one), with ``gap_s`` of idle time before each
    request: the previous request's trailing work (the proxy finishing its
    exchange, background writes) is over before the next is timed. Still
    one request at a time (concurrency 1); whatever else the machine does
    hits every target alike.
    """
    rng = random.Random(seed)
    clients = {name: _Client(target, 30.0) for name, target, _ in targets}
    watchdogs = [asyncio.ensure_future(c.watchdog()) for c in clients.values()]
    conns: dict[str, Any] = {}
    responses: dict[str, list[Response]] = {name: [] for name in clients}
    order = list(targets)
    try:
        for name, client in clients.items():
            conns[name] = await client.connect()
        for _ in range(warmup):
            for name, _target, request in targets:
                conns[name], _response = await clients[name].send(conns[name], request)
        for client in clients.values():
            client.failures.clear()
        with _quiet_gc():
            for _ in range(cycles):
                rng.shuffle(order)
                for name, _target, request in order:
                    await asyncio.sleep(gap_s)
                    conns[name], response = await clients[name].send(conns[name], request)
                    if response is not None:
                        responses[name].append(response)
    finally:
        for watchdog in watchdogs:
            watchdog.cancel()
        for client in clients.values():
            client.close()
    results = {}
    for name, target, _request in targets:
        result = PhaseResult(name, "sessions-alternating", 1)
        client = clients[name]
        result.requests = len(responses[name]) + len(client.failures)
        for failure in client.failures:
            result.error(failure)
        for response in responses[name]:
            problem = target.check(response, expected_text)
            if problem is None:
                result.latencies_ns.append(response.latency_ns)
            else:
                result.error(problem)
        results[name] = result
    return results


async def measure(
    arms: Mapping[str, Arm],
    expected_text: str,
    *,
    rounds: int,
    per_round: int,
    streams_per_round: int,
    all_pids: Mapping[str, int],
) -> dict[str, Any]:
    """Rounds at concurrency 1, each with four windows (block orders rotate every round).

    A (the bar's figure): Envoy alone and the three proxies, ``per_round``
    requests back to back to each in turn, CPU per request of each target's
    processes; A2: the same four alternated request by request in random
    order with an idle gap before each (``per_round // 2`` each); B:
    ``!/hello`` and a forwarded request to the ``sessions`` proxy, alternated
    likewise; C: streams, target after target (TTFT, per chunk).
    """
    plain_body = chat_body(MODEL, stream=False)
    stream_body = chat_body(MODEL, stream=True)
    sessions = arms["sessions"].target
    forwarded = SessionTarget(
        "forwarded", sessions.host, sessions.port, CHAT_PATH, CLIENT_KEY, session="bench-forwarded"
    )
    hello = arms["hello"].target
    names = [*ALTERNATED, *(f"{n}~" for n in ALTERNATED), "hello", "forwarded"]
    latencies: dict[str, list[int]] = {n: [] for n in names}
    round_p50: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, dict[str, float]] = {n: {} for n in names}
    counted: dict[str, int] = dict.fromkeys(names, 0)
    errors = dict.fromkeys(names, 0)
    samples: dict[str, list[str]] = {n: [] for n in names}
    ttfts: dict[str, list[int]] = {n: [] for n in names}
    per_chunk: dict[str, list[float]] = {n: [] for n in names}
    everything = CpuSampler(all_pids)
    before_all, started_all = everything.snapshot(), time.monotonic()

    def collect(name: str, result: PhaseResult) -> None:
        latencies[name] += result.latencies_ns
        if result.latencies_ns:
            round_p50[name].append(percentile(sorted(result.latencies_ns), 50) / 1e6)
        errors[name] += result.errors
        samples[name] += result.error_samples[: max(0, 3 - len(samples[name]))]
        counted[name] += result.requests
        for process, seconds in result.cpu_s.items():
            if process != "machine":
                cpu[name][process] = cpu[name].get(process, 0.0) + seconds

    for round_no in range(rounds):
        shift = round_no % len(ALTERNATED)
        order = [*ALTERNATED[shift:], *ALTERNATED[:shift]]
        for name in order:
            target = arms[name].target
            collect(
                name,
                await run_sequential(
                    target,
                    target.request(plain_body, stream=False),
                    per_round,
                    phase="sessions-latency",
                    sampler=CpuSampler(arms[name].pids),
                    expected_text=expected_text,
                    warmup=10,
                ),
            )
        window = [
            (f"{name}~", arms[name].target, arms[name].target.request(plain_body, stream=False))
            for name in ALTERNATED
        ]
        for name, result in (
            await alternate(window, per_round // 2, expected_text, seed=round_no)
        ).items():
            collect(name, result)
        pair = [
            ("hello", hello, hello.request(hello_body(MODEL), stream=False)),
            ("forwarded", forwarded, forwarded.request(plain_body, stream=False)),
        ]
        for name, result in (
            await alternate(pair, per_round // 2, expected_text, seed=round_no)
        ).items():
            collect(name, result)
        if streams_per_round <= 0:
            continue
        for name in order:
            target = arms[name].target
            stream = await run_sequential(
                target,
                target.request(stream_body, stream=True),
                streams_per_round,
                phase="sessions-stream",
                sampler=None,
                expected_text=expected_text,
                stream=True,
                warmup=2,
            )
            errors[name] += stream.errors
            samples[name] += stream.error_samples[: max(0, 3 - len(samples[name]))]
            for sample in stream.streams:
                ttfts[name].append(sample.ttft_ns)
                if sample.content_chunks:
                    per_chunk[name].append(sample.total_ns / sample.content_chunks / 1e6)
    wall = time.monotonic() - started_all
    spent_all = CpuSampler.delta(before_all, everything.snapshot())
    machine = spent_all.pop("machine", 0.0)
    out: dict[str, Any] = {
        "rounds": rounds,
        "requests_per_round": per_round,
        "streams_per_round": streams_per_round,
        "busy_cores": sum(spent_all.values()) / wall if wall else math.nan,
        "other_load_cores": (machine - sum(spent_all.values())) / wall if wall else math.nan,
        "targets": {},
    }
    for name in names:
        values = sorted(latencies[name])
        row: dict[str, Any] = {
            "requests": len(values),
            "errors": errors[name],
            "error_samples": samples[name],
            "p50_ms": percentile(values, 50) / 1e6,
            "p99_ms": percentile(values, 99) / 1e6,
            "round_p50_median_ms": statistics.median(round_p50[name]),
            "round_p50s_ms": round_p50[name],
            "ttft_p50_ms": percentile(sorted(ttfts[name]), 50) / 1e6 if ttfts[name] else None,
            "per_chunk_p50_ms": statistics.median(per_chunk[name]) if per_chunk[name] else None,
        }
        for process, seconds in cpu[name].items():
            row[f"{process}_cpu_ms_per_request"] = seconds * 1000 / max(counted[name], 1)
        out["targets"][name] = row
    out["differences"] = differences(round_p50)
    return out


#: (name, minuend, subtrahend) of the per-round p50 differences.
PAIRS = (
    ("sessions - plain", "sessions", "plain"),
    ("sqlite - plain", "sqlite", "plain"),
    ("plain - envoy", "plain", "envoy"),
    ("sessions - envoy", "sessions", "envoy"),
    ("sessions~ - plain~", "sessions~", "plain~"),
    ("sqlite~ - plain~", "sqlite~", "plain~"),
    ("plain~ - envoy~", "plain~", "envoy~"),
    ("hello - forwarded", "hello", "forwarded"),
)


def differences(round_p50: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """Median and quartiles over rounds of each round's p50 difference (same round)."""
    out = {}
    for label, left, right in PAIRS:
        if not round_p50.get(left) or not round_p50.get(right):
            continue
        diffs = sorted(a - b for a, b in zip(round_p50[left], round_p50[right], strict=False))
        out[label] = {
            "median_ms": statistics.median(diffs),
            "q1_ms": percentile(diffs, 25),
            "q3_ms": percentile(diffs, 75),
        }
    return out


# --------------------------------------------------------------------------------------------
# In-process: no gRPC, no Envoy


HOST = {"instance": "openai", "schema": "openai-chat"}
_ANSWER_HEADERS = {
    ":status": "200",
    "x-envoy-upstream-service-time": "1",
    "content-type": "application/json",
}


def _answer(text: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 60, "completion_tokens": 64, "total_tokens": 124},
        }
    ).encode()


class InProcess:
    """One in-process App per variant, and one ROUTER exchange driven without gRPC."""

    def __init__(self, base: Mapping[str, Any], workdir: Path, expected_text: str) -> None:
        from extproc.config import build_config
        from extproc.processing import App
        from extproc.processing.factory import Processors

        self.apps: dict[str, Any] = {}
        self.processors: dict[str, Any] = {}
        for variant in VARIANTS:
            raw = sessions_config(base, variant, workdir)
            if variant == "sqlite":
                path = workdir / "sessions-inprocess.sqlite"
                for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    stale.unlink(missing_ok=True)
                raw["sessions"] = {**raw["sessions"], "sqlite_path": str(path)}
            app = App(build_config(raw, env={}))
            self.apps[variant] = app
            self.processors[variant] = Processors(app)
        self.answer = _answer(expected_text)
        self.count = 0

    def headers(self, session: str | None) -> dict[str, str]:
        self.count += 1
        return self.headers_for(session, self.count)

    @staticmethod
    def headers_for(session: str | None, number: int) -> dict[str, str]:
        """What Envoy sends the ROUTER role for a client's small chat request."""
        headers = {
            ":method": "POST",
            ":path": CHAT_PATH,
            ":authority": "127.0.0.1",
            "authorization": f"Bearer {CLIENT_KEY}",
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": "llm-proxy-bench/1",
            "x-request-id": f"bench-{number}",
        }
        if session is not None:
            headers["x-session-id"] = session
        return headers

    async def exchange(self, variant: str, body: bytes, session: str | None) -> str:
        """One whole ROUTER exchange; returns ``forwarded`` or ``answered`` (by the proxy)."""
        from extproc.processing import Continue, Reply

        router = self.processors[variant].router()
        action: Any = router.request_headers(self.headers(session), False)
        if inspect.isawaitable(action):
            action = await action
        action = router.request_body(body, True)
        if inspect.isawaitable(action):
            action = await action
        if isinstance(action, Reply):
            router.close()
            if action.status != 200:
                raise RuntimeError(f"in-process {variant}: {action.status} {action.body[:200]!r}")
            return "answered"
        assert isinstance(action, Continue), action
        router.response_headers(dict(_ANSWER_HEADERS), False, HOST)
        router.response_body(self.answer, True)
        router.close()
        return "forwarded"

    async def drain(self, variant: str) -> None:
        """Let the background bookkeeping the exchange scheduled run to its end.

        Two loop turns finish a memory store's write (its coroutines never
        suspend); an SQLite write waits for the store's thread.
        """
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        book = self.apps[variant].sessions
        if book is not None:
            await book.drain()

    async def close(self) -> None:
        for app in self.apps.values():
            if app.sessions is not None:
                await app.sessions.close()


def _clock() -> tuple[int, int]:
    return time.perf_counter_ns(), time.process_time_ns()


async def _interleaved(
    works: Mapping[str, Callable[[], Any]],
    repeat: int,
    drains: Mapping[str, Callable[[], Any]],
) -> dict[str, dict[str, float]]:
    """Median µs of each ``await works[name]()`` (request path) and of ``drains[name]()``.

    The works run in turn, one of each per iteration, so drift hits them alike.
    Figures: ``wall_us`` / ``cpu_us`` (process CPU) of the request path, and
    ``bookkeeping_*`` of the background work it left (the session write).
    """
    samples: dict[str, dict[str, list[int]]] = {
        name: {"wall": [], "cpu": [], "bk_wall": [], "bk_cpu": []} for name in works
    }
    warmup = max(10, repeat // 20)
    for i in range(warmup + repeat):
        for name, work in works.items():
            w0, c0 = _clock()
            await work()
            w1, c1 = _clock()
            await drains[name]()
            w2, c2 = _clock()
            if i >= warmup:
                row = samples[name]
                row["wall"].append(w1 - w0)
                row["cpu"].append(c1 - c0)
                row["bk_wall"].append(w2 - w1)
                row["bk_cpu"].append(c2 - c1)
    return {
        name: {
            "wall_us": statistics.median(row["wall"]) / 1000,
            "cpu_us": statistics.median(row["cpu"]) / 1000,
            "bookkeeping_wall_us": statistics.median(row["bk_wall"]) / 1000,
            "bookkeeping_cpu_us": statistics.median(row["bk_cpu"]) / 1000,
        }
        for name, row in samples.items()
    }


async def inprocess_figures(
    base: Mapping[str, Any], workdir: Path, expected_text: str, repeat: int
) -> dict[str, Any]:
    """CPU of the stages without gRPC or Envoy (see the module docstring)."""
    runner = InProcess(base, workdir, expected_text)
    small = chat_body(MODEL, stream=False)
    hello = hello_body(MODEL)
    big = _agent_body()
    out: dict[str, Any] = {"repeat": repeat, "agent_request_bytes": len(big)}

    def exchange(variant: str, body: bytes, session: str, outcome: str) -> Callable[[], Any]:
        async def one() -> None:
            got = await runner.exchange(variant, body, session)
            assert got == outcome, (variant, got)

        return one

    def drain(variant: str) -> Callable[[], Any]:
        async def one() -> None:
            await runner.drain(variant)

        return one

    drains = {v: drain(v) for v in VARIANTS}
    try:
        out["exchange"] = {}
        for label, body, count in (("small", small, repeat), ("agent_100kb", big, repeat // 4)):
            works = {v: exchange(v, body, f"inproc-{v}-{label}", "forwarded") for v in VARIANTS}
            out["exchange"][label] = await _interleaved(works, count, drains)
        out["stages"] = await _stage_figures(runner, small, big, repeat)
        works = {
            "answered": exchange("sessions", hello, "inproc-hello", "answered"),
            "forwarded": exchange("sessions", small, "inproc-forwarded", "forwarded"),
        }
        out["hello"] = await _interleaved(
            works, repeat, {"answered": drains["sessions"], "forwarded": drains["sessions"]}
        )
        out["grpc"] = await grpc_figures(base, expected_text, max(200, repeat // 2))
    finally:
        await runner.close()
    return out


#: The variants of the gRPC-level figure: config overrides, and whether the
#: per-request background session write is switched off (on the App instance).
GRPC_VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    "plain": (
        {
            "sessions": {"enabled": False},
            "interactive": {"enabled": False},
            "dedup": {"enabled": False},
        },
        False,
    ),
    "sessions": ({}, False),
    "sessions, no session write": ({}, True),
    "sessions stage only": (
        {"interactive": {"enabled": False}, "dedup": {"enabled": False}},
        False,
    ),
    "interactive only": ({"sessions": {"enabled": False}, "dedup": {"enabled": False}}, False),
}


async def grpc_figures(
    base: Mapping[str, Any], expected_text: str, repeat: int
) -> dict[str, dict[str, float]]:
    """Process CPU of one ROUTER exchange over a real grpc.aio channel, per variant.

    One server per variant in this process and a client beside them: the four
    messages of a small non-streaming request (request headers with
    ``x-session-id``, body, answer headers, answer body) on one ext_proc
    stream, the variants interleaved. The client's share is the same for all,
    so the differences are the server's: the stages, the gRPC messages, and
    the event-loop turns of the background session write (``sessions, no
    session write`` switches ``SessionBook.after_request`` off on that App).
    """
    import grpc
    from google.protobuf import struct_pb2

    from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
    from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
    from extproc.config import build_config
    from extproc.processing import App
    from extproc.server import start_grpc_server

    def headers(pairs: Mapping[str, str]) -> Any:
        message = pb.HttpHeaders()
        for key, value in pairs.items():
            header = message.headers.headers.add()
            header.key, header.raw_value = key, value.encode()
        return message

    host = struct_pb2.Struct()
    host.update(
        {
            "xds.upstream_host_metadata": 'filter_metadata { key: "llm" value { fields { key: '
            '"instance" value { string_value: "openai" } } fields { key: "schema" value { '
            'string_value: "openai-chat" } } } } '
        }
    )
    answer_headers = pb.ProcessingRequest(response_headers=headers(_ANSWER_HEADERS))
    answer_headers.attributes["envoy.filters.http.ext_proc"].CopyFrom(host)
    messages = [
        pb.ProcessingRequest(request_headers=headers({**InProcess.headers_for("bench-grpc", 0)})),
        pb.ProcessingRequest(
            request_body=pb.HttpBody(body=chat_body(MODEL, stream=False), end_of_stream=True)
        ),
        answer_headers,
        pb.ProcessingRequest(
            response_body=pb.HttpBody(body=_answer(expected_text), end_of_stream=True)
        ),
    ]
    servers, channels, stubs, apps = [], [], {}, []
    try:
        for name, (overrides, no_write) in GRPC_VARIANTS.items():
            port = free_port()
            app = App(build_config({**base, **overrides, "grpc_port": port}, env={}))
            if no_write and app.sessions is not None:
                app.sessions.after_request = lambda *args, **kwargs: None  # type: ignore[method-assign]
            apps.append(app)
            servers.append(await start_grpc_server(app, "127.0.0.1", port))
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            channels.append(channel)
            stubs[name] = pb_grpc.ExternalProcessorStub(channel)  # type: ignore[no-untyped-call]

        async def exchange(stub: Any) -> None:
            call = stub.Process()
            for message in messages:
                await call.write(message)
                await call.read()
            await call.done_writing()
            await call.read()
            await asyncio.sleep(0)
            await asyncio.sleep(0)

        samples: dict[str, list[int]] = {name: [] for name in stubs}
        warmup = max(20, repeat // 20)
        for i in range(warmup + repeat):
            for name, stub in stubs.items():
                started = time.process_time_ns()
                await exchange(stub)
                if i >= warmup:
                    samples[name].append(time.process_time_ns() - started)
    finally:
        for channel in channels:
            await channel.close()
        for server in servers:
            await server.stop(None)
        for app in apps:
            if app.sessions is not None:
                await app.sessions.close()
    plain = statistics.median(samples["plain"])
    return {
        name: {
            "cpu_us": statistics.median(values) / 1000,
            "over_plain_us": (statistics.median(values) - plain) / 1000,
        }
        for name, values in samples.items()
    }


def _agent_body() -> bytes:
    """The ~100 KB coding-agent conversation of section 7, as a Chat Completions request."""
    from bench.translation import agent_conversation
    from extproc.codecs import get_codec
    from extproc.codecs.base import RequestMeta

    anthropic, chat = get_codec("anthropic"), get_codec("openai-chat")
    canonical = anthropic.decode_request(agent_conversation(), RequestMeta())
    data = json.loads(chat.encode_request(canonical, MODEL).body)
    data.pop("stream", None)
    data.pop("stream_options", None)
    return json.dumps(data, separators=(",", ":")).encode()


async def _stage_figures(
    runner: InProcess, small: bytes, big: bytes, repeat: int
) -> dict[str, Any]:
    """The hooks (request headers, request, tool check, answer filter, end) of each
    stage that the sessions and interactive switches add, alone, on a decoded request.

    Every stage of the ``sessions`` pipeline runs, in order, as it would; only
    the measured stage's hooks are timed.
    """
    from extproc.codecs import get_codec
    from extproc.codecs.base import RequestMeta
    from extproc.pipeline import RequestContext

    app = runner.apps["sessions"]
    plain = {s.name for s in runner.apps["plain"].pipeline.stages}
    stages = list(app.pipeline.stages)
    measured = [s for s in stages if s.name not in plain]
    codec = get_codec("openai-chat")
    out: dict[str, Any] = {}
    for label, body in (("small", small), ("agent_100kb", big)):
        data = json.loads(body)
        headers = {"x-session-id": f"stages-{label}", "user-agent": "llm-proxy-bench/1"}

        def fresh(
            data: dict[str, Any] = data, headers: dict[str, str] = headers
        ) -> tuple[Any, Any]:
            request = codec.decode_request(json.loads(json.dumps(data)), RequestMeta())
            ctx = RequestContext(
                request_id="bench",
                frontend="openai-chat",
                method="POST",
                path=CHAT_PATH,
                headers=dict(headers),
                client_key=CLIENT_KEY,
            )
            ctx.status = 200
            return ctx, request

        rows: dict[str, Any] = {}
        count = repeat if label == "small" else repeat // 4
        for target in measured:
            samples: list[int] = []
            for i in range(count + 20):
                ctx, request = fresh()
                elapsed = 0
                for stage in stages:
                    started = time.perf_counter_ns()
                    stage.on_request_headers(ctx, ctx.headers)
                    if stage is target:
                        elapsed += time.perf_counter_ns() - started
                for stage in stages:
                    started = time.perf_counter_ns()
                    outcome = stage.on_request(ctx, request)
                    if inspect.isawaitable(outcome):
                        outcome = await outcome
                    if stage is target:
                        elapsed += time.perf_counter_ns() - started
                    if outcome is not None:
                        raise RuntimeError(f"stage {stage.name} answered: {outcome!r:.200}")
                for stage in stages:
                    started = time.perf_counter_ns()
                    stage.tool_check(ctx, request)
                    stage.answer_filter(ctx, request)
                    stage.on_end(ctx)
                    if stage is target:
                        elapsed += time.perf_counter_ns() - started
                await runner.drain("sessions")
                if i >= 20:
                    samples.append(elapsed)
            rows[target.name] = statistics.median(samples) / 1000
        out[label] = rows
    return out


#: Entry points whose inclusive time the profile summary lists: (label, functions, file part);
#: a stage module's hooks are summed.
_HOOKS = ("on_request_headers", "on_request", "tool_check", "answer_filter", "on_end")
PROFILE_ENTRIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("stages/sessions.py hooks", _HOOKS, "stages/sessions.py"),
    ("stages/interactive.py hooks", _HOOKS, "stages/interactive.py"),
    ("stages/dedup.py hooks", _HOOKS, "stages/dedup.py"),
    ("stages/sandbox.py hooks", _HOOKS, "stages/sandbox.py"),
    ("stages/compression.py hooks", _HOOKS, "stages/compression.py"),
    ("session write (SessionBook._after)", ("_after",), "sessions/session.py"),
    ("stage timing (_Phase.__exit__)", ("__exit__",), "observe/telemetry.py"),
    ("Pipeline.answer", ("answer",), "pipeline/runner.py"),
    ("RouterProcessor.request_headers", ("request_headers",), "processing/router.py"),
)


def profile_inprocess(
    base: Mapping[str, Any], workdir: Path, expected_text: str, iterations: int = 3000
) -> str:
    """cProfile of the in-process exchange, ``sessions`` against ``plain``: where time goes.

    Lists, in µs per request (inflated by the profiler, so read them as shares):
    the entry points of the session code, and the functions whose own time
    grows most from ``plain`` to ``sessions`` (bookkeeping included).
    """
    runner = InProcess(base, workdir, expected_text)
    body = chat_body(MODEL, stream=False)

    async def both() -> dict[str, pstats.Stats]:
        """Both variants profiled in alternating slices of 100 exchanges (drift hits both)."""
        profilers = {v: cProfile.Profile() for v in ("plain", "sessions")}
        try:
            for variant in profilers:
                for _ in range(50):
                    await runner.exchange(variant, body, f"profile-{variant}")
                    await runner.drain(variant)
            for _ in range(iterations // 100):
                for variant, profiler in profilers.items():
                    profiler.enable()
                    for _ in range(100):
                        await runner.exchange(variant, body, f"profile-{variant}")
                        await runner.drain(variant)
                    profiler.disable()
            return {v: pstats.Stats(p) for v, p in profilers.items()}
        finally:
            await runner.close()

    stats = asyncio.run(both())
    table = {v: _by_function(s) for v, s in stats.items()}
    iterations = iterations // 100 * 100
    per = 1e6 / iterations
    lines = [
        f"cProfile, {iterations} in-process exchanges per variant (µs per request; the",
        "profiler inflates small calls, read these as shares of the difference):",
        f"  function calls per request: plain {_calls(stats['plain']) / iterations:.0f}, "
        f"sessions {_calls(stats['sessions']) / iterations:.0f}",
        "",
        "  inclusive time of the entry points         calls/req   plain  sessions",
    ]
    for label, funcs, part in PROFILE_ENTRIES:
        row = {v: _entry(table[v], funcs, part) for v in table}
        calls = row["sessions"][0] / iterations
        lines.append(
            f"  {label:<42} {calls:>9.1f}  {row['plain'][2] * per:>6.1f}  "
            f"{row['sessions'][2] * per:>8.1f}"
        )
    lines += ["", f"  {'own time that grows most, sessions - plain':<58} calls/req  +µs/req"]
    growth = []
    for key, (calls, own, _cum) in table["sessions"].items():
        before = table["plain"].get(key, (0, 0.0, 0.0))
        growth.append((own - before[1], (calls - before[0]) / iterations, key))
    growth.sort(reverse=True)
    for extra, calls, key in growth[:15]:
        lines.append(f"  {key[:58]:<58} {calls:>+9.1f}  {extra * per:>+7.1f}")
    return "\n".join(lines)


def _by_function(stats: pstats.Stats) -> dict[str, tuple[int, float, float]]:
    """``file-tail:line(function)`` -> (calls, own seconds, inclusive seconds)."""
    out: dict[str, tuple[int, float, float]] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, func), (_cc, calls, own, cum, _callers) in raw.items():
        tail = "/".join(Path(filename).parts[-2:]) if filename != "~" else "builtin"
        out[f"{tail}:{line}({func})"] = (calls, own, cum)
    return out


def _entry(
    table: Mapping[str, tuple[int, float, float]], funcs: Sequence[str], part: str
) -> tuple[int, float, float]:
    calls, own, cum = 0, 0.0, 0.0
    for key, (c, o, i) in table.items():
        if key.startswith(part) and any(key.endswith(f"({func})") for func in funcs):
            calls, own, cum = calls + c, own + o, cum + i
    return calls, own, cum


def _calls(stats: pstats.Stats) -> int:
    return int(stats.total_calls)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Report


def render(section: Mapping[str, Any]) -> str:
    rows = section["targets"]
    diffs = section["differences"]
    lines = [
        "== 10. Sessions and in-chat commands on the hot path " + "=" * 46,
        f"concurrency 1, {section['rounds']} rounds; in each: Envoy alone and the three "
        f"proxies, {section['requests_per_round']} requests back to back each, in turn;",
        f"the same four alternated request by request, random order, 3 ms idle before each "
        f"(name~, {section['requests_per_round'] // 2} each);",
        "'!/hello' (hello) alternated likewise with a forwarded request (forwarded) to the "
        "sessions proxy; streams;",
        "every request carries x-session-id; safety stages at their defaults in every proxy;",
        "plain = sessions, interactive, dedup off; sessions = all three on (memory store);",
        "sqlite = the same with the SQLite store",
        f"busy cores {section['busy_cores']:.2f}, other load {section['other_load_cores']:.2f}",
        "",
        "target     requests  errors  p50 ms  p99 ms  median round p50  ÷ plain  ÷ Envoy  "
        "CPU/req: extproc  Envoy  TTFT p50  per chunk",
        "---------  --------  ------  ------  ------  ----------------  -------  -------  "
        "----------------  -----  --------  ---------",
    ]
    for name, row in rows.items():
        extproc = row.get("extproc_cpu_ms_per_request")
        envoy = row.get("envoy_cpu_ms_per_request")
        mark = "~" if name.endswith("~") else ""
        median = row["round_p50_median_ms"]
        ratios = ["-", "-"]
        if name.rstrip("~") not in ("hello", "forwarded", "envoy"):
            for i, ref in enumerate((f"plain{mark}", f"envoy{mark}")):
                if ref in rows and name != ref:
                    ratios[i] = f"{median / rows[ref]['round_p50_median_ms']:.2f}"
        lines.append(
            f"{name:<9}  {row['requests']:>8}  {row['errors']:>6}  {row['p50_ms']:>6.3f}  "
            f"{row['p99_ms']:>6.3f}  {median:>16.3f}  {ratios[0]:>7}  {ratios[1]:>7}  "
            f"{_num(extproc, 3):>16}  {_num(envoy, 3):>5}  "
            f"{_num(row.get('ttft_p50_ms'), 3):>8}  {_num(row.get('per_chunk_p50_ms'), 4):>9}"
        )
    for name, row in rows.items():
        if row["error_samples"]:
            lines.append(f"  {name} errors, e.g.: {row['error_samples'][0][:160]}")
    lines += ["", "per-round p50 differences (same round), median [quartiles]:"]
    for label, values in diffs.items():
        lines.append(
            f"  {label:<19} {values['median_ms']:>+7.3f} ms  "
            f"[{values['q1_ms']:+.3f}, {values['q3_ms']:+.3f}]"
        )
    plain, sess = rows["plain"], rows["sessions"]
    for process in ("extproc", "envoy"):
        key = f"{process}_cpu_ms_per_request"
        if key in plain and key in sess:
            lines.append(
                f"  {process} CPU per request, sessions - plain: {sess[key] - plain[key]:+.3f} ms"
            )
    cost = diffs["sessions - plain"]["median_ms"]
    lines += [
        "",
        "bar (sessions issue), sessions over plain, median of the per-round p50 differences:",
        f"{'PASS' if cost <= REQUEST_BAR_MS else 'FAIL'}  non-streaming p50 {cost:+.3f} ms "
        f"(limit +{REQUEST_BAR_MS} ms; back to back)",
    ]
    if "sessions~ - plain~" in diffs:
        alt = diffs["sessions~ - plain~"]["median_ms"]
        lines.append(
            f"{'PASS' if alt <= REQUEST_BAR_MS else 'FAIL'}  non-streaming p50 {alt:+.3f} ms "
            "(alternated, idle gap: the request path alone; informational)"
        )
    inproc = section.get("inprocess")
    if inproc:
        lines += ["", *render_inprocess(inproc)]
    if section.get("profile"):
        lines += ["", section["profile"]]
    return "\n".join(lines)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_inprocess(inproc: Mapping[str, Any]) -> list[str]:
    lines = [
        "in-process (no gRPC, no Envoy), median µs, variants interleaved: one whole ROUTER",
        "exchange (request headers, body, answer headers, answer body), and the background",
        "session write it leaves (bookkeeping, off the request path):",
        "request      variant   path wall  path CPU  over plain  bookkeeping CPU  total over plain",
    ]
    for label, rows in inproc["exchange"].items():
        base = rows["plain"]["cpu_us"] + rows["plain"]["bookkeeping_cpu_us"]
        for variant, v in rows.items():
            total = v["cpu_us"] + v["bookkeeping_cpu_us"]
            lines.append(
                f"{label:<11}  {variant:<8}  {v['wall_us']:>9.1f}  {v['cpu_us']:>8.1f}  "
                f"{v['cpu_us'] - rows['plain']['cpu_us']:>+10.1f}  "
                f"{v['bookkeeping_cpu_us']:>15.1f}  {total - base:>+16.1f}"
            )
    lines.append("")
    lines.append(
        "the hooks (request headers, request, tool check, answer filter, end) of each stage "
        "the switches add, alone, median µs:"
    )
    for label, rows in inproc["stages"].items():
        parts = ", ".join(f"{name} {value:.1f}" for name, value in rows.items())
        lines.append(f"  {label:<12} {parts}; sum {sum(rows.values()):.1f}")
    if "grpc" in inproc:
        lines += [
            "",
            "one exchange over a real grpc.aio channel (4 messages, client in the same process),",
            "median process CPU µs, variants interleaved:",
        ]
        for name, values in inproc["grpc"].items():
            lines.append(
                f"  {name:<28} {values['cpu_us']:>8.1f}  "
                f"{values['over_plain_us']:>+8.1f} over plain"
            )
    hello = inproc["hello"]
    lines += [
        "",
        "command-only '!/hello' answered in-process vs a forwarded request (sessions proxy):",
        f"  answered {hello['answered']['cpu_us']:.1f} µs CPU, "
        f"forwarded {hello['forwarded']['cpu_us']:.1f} µs CPU "
        f"(+ {hello['forwarded']['bookkeeping_cpu_us']:.1f} µs bookkeeping)",
    ]
    return lines


# --------------------------------------------------------------------------------------------
# Command line


def run_section(
    stack: contextlib.ExitStack,
    logs: Path,
    base_config: Mapping[str, Any],
    envoy: Target,
    envoy_pid: int,
    expected_text: str,
    *,
    rounds: int,
    per_round: int,
    streams_per_round: int,
    extra_pids: Mapping[str, int],
    inprocess_repeat: int = 2000,
) -> dict[str, Any]:
    """Start the three proxies, measure the five targets, add the in-process figures."""
    arms = start_arms(stack, logs, base_config, envoy, envoy_pid)
    asyncio.run(_wait_until_serving(arms, expected_text))
    all_pids = dict(extra_pids)
    for name, arm in arms.items():
        for process, pid in arm.pids.items():
            all_pids[f"{name}-{process}"] = pid
    section = asyncio.run(
        measure(
            arms,
            expected_text,
            rounds=rounds,
            per_round=per_round,
            streams_per_round=streams_per_round,
            all_pids={k: v for k, v in all_pids.items() if not k.startswith("hello-")},
        )
    )
    section["inprocess"] = asyncio.run(
        inprocess_figures(base_config, logs, expected_text, inprocess_repeat)
    )
    section["costs"] = {
        "request_p50_ms": section["differences"]["sessions - plain"]["median_ms"],
        "bar_ms": REQUEST_BAR_MS,
    }
    return section


async def _wait_until_serving(arms: Mapping[str, Arm], expected_text: str) -> None:
    for name, arm in arms.items():
        target = arm.target
        body = hello_body(MODEL) if target.hello else chat_body(MODEL, stream=False)
        deadline = time.monotonic() + 30
        while True:
            probe = await run_sequential(
                target,
                target.request(body, stream=False),
                1,
                phase="probe",
                sampler=None,
                expected_text=expected_text,
                timeout_s=5.0,
            )
            if not probe.errors:
                break
            if time.monotonic() > deadline:
                raise StartupError(f"{name} does not answer correctly: {probe.error_samples}")
            await asyncio.sleep(0.2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sessions",
        description="Sessions + in-chat commands over the plain proxy and Envoy alone, "
        "interleaved, at concurrency 1.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (30; quick 12)")
    parser.add_argument(
        "--requests", type=int, help="requests per target and round (120; quick 60)"
    )
    parser.add_argument("--streams", type=int, help="streams per target per round (4; quick 3)")
    parser.add_argument("--repeat", type=int, help="in-process repetitions (2000; quick 800)")
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process path")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    rounds = args.rounds or (12 if quick else 30)
    per_round = args.requests or (60 if quick else 120)
    streams = args.streams if args.streams is not None else (3 if quick else 4)
    repeat = args.repeat or (800 if quick else 2000)
    out_dir = args.out.parent
    logs = out_dir / "logs-sessions"
    logs.mkdir(parents=True, exist_ok=True)
    from tests.fakes.openai_upstream import default_answer

    answer_chars, chunk_chars = 256, 4
    expected_text = default_answer("bench", MODEL, answer_chars)
    print(
        f"bench.sessions: {rounds} rounds x {per_round} requests + {streams} streams per "
        f"target; in-process x{repeat}; logs in {logs}",
        flush=True,
    )
    try:
        with contextlib.ExitStack() as stack:
            fake, fake_port, _control = start_fake(
                stack,
                logs,
                api_key=PROVIDER_KEY,
                answer_chars=answer_chars,
                chunk_chars=chunk_chars,
            )
            base = proxy_config(fake_port, PROVIDER_KEY)
            envoy = start_baseline_envoy(stack, logs, base, find_envoy_binary())
            envoy_target = Target("envoy", "127.0.0.1", base["port"], CHAT_PATH, PROVIDER_KEY)
            section = run_section(
                stack,
                logs,
                base,
                envoy_target,
                envoy.pid,
                expected_text,
                rounds=rounds,
                per_round=per_round,
                streams_per_round=streams,
                extra_pids={"fake": fake.pid, "loadgen": os.getpid()},
                inprocess_repeat=repeat,
            )
    except StartupError as exc:
        print(f"\nBENCHMARK BROKEN: {exc}", flush=True)
        return 1
    cost = section["costs"]["request_p50_ms"]
    if args.profile or cost > REQUEST_BAR_MS:
        section["profile"] = profile_inprocess(base, logs, expected_text)
    document = {
        "settings": {
            "quick": quick,
            "rounds": rounds,
            "requests_per_round": per_round,
            "streams_per_round": streams,
            "inprocess_repeat": repeat,
        },
        "python": sys.version.split()[0],
        "loadavg_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "sessions": section,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_finite(document), indent=2) + "\n")
    print(render(section), flush=True)
    print(f"\nreport written to {args.out}", flush=True)
    errors = sum(row["errors"] for row in section["targets"].values())
    if errors:
        print(f"!!! {errors} requests failed validation: exit code 2 !!!", flush=True)
        return 2
    return 0


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
