"""Load phases over :mod:`bench.httpclient`: sequential latency, closed-loop throughput, streams.

Every phase measures first and validates afterwards, outside the timed window: status 200, a
body that parses with the expected answer, and for streams SSE framing that ends with
``data: [DONE]``. Failures are counted and a few of them kept as samples for the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from time import perf_counter_ns
from typing import Any

from bench.httpclient import HttpConnection, ProtocolError, Response, build_request, connect
from bench.procs import CpuSampler

#: Kept per phase so a broken run can say what went wrong.
MAX_ERROR_SAMPLES = 5

SYSTEM_PROMPT = (
    "You are a concise assistant embedded in a code editor. Answer in plain text, "
    "cite file paths when you refer to code, and never invent APIs."
)
USER_PROMPT = (
    "In one short paragraph: what does the retry policy in our Envoy config do when the "
    "upstream answers 503, and is the request body replayed on the next attempt?"
)


def chat_body(model: str, *, stream: bool) -> bytes:
    """A realistic small Chat Completions request (system + user message, sampling settings)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT},
        ],
        "temperature": 0.2,
        "max_tokens": 512,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Target:
    """Where one benchmark target listens and what its clients send."""

    name: str
    host: str
    port: int
    path: str
    api_key: str
    #: Ask for this model instead of the phase's (the proxy's failover pool).
    model: str | None = None
    #: The client's dialect: "openai" (Chat Completions) or "anthropic" (Messages;
    #: the same request, translated by the proxy to the OpenAI-compatible backend).
    dialect: str = "openai"

    def request(self, body: bytes, *, stream: bool) -> bytes:
        if self.model is not None:
            data = json.loads(body)
            data["model"] = self.model
            body = json.dumps(data, separators=(",", ":")).encode()
        headers = {
            "authorization": f"Bearer {self.api_key}",
            "accept": "text/event-stream" if stream else "application/json",
            "user-agent": "llm-proxy-bench/1",
        }
        path = self.path
        if self.dialect == "anthropic":
            body = anthropic_body(body)
            path = "/anthropic/v1/messages"
            headers = {
                "x-api-key": self.api_key,
                "anthropic-version": "2023-06-01",
                "accept": headers["accept"],
                "user-agent": headers["user-agent"],
            }
        return build_request(self.host, self.port, path, body, headers)

    def check(self, response: Response, expected_text: str) -> str | None:
        if self.dialect == "anthropic":
            return check_anthropic_json(response, expected_text)
        return check_json(response, expected_text)

    def analyze(self, response: Response, expected_text: str) -> StreamSample | str:
        if self.dialect == "anthropic":
            return analyze_stream(response, expected_text, anthropic=True)
        return analyze_stream(response, expected_text)


def anthropic_body(chat_body: bytes) -> bytes:
    """The same request as an Anthropic Messages body (system hoisted, max_tokens kept)."""
    data = json.loads(chat_body)
    system = [m["content"] for m in data["messages"] if m["role"] == "system"]
    body: dict[str, Any] = {
        "model": data["model"],
        "max_tokens": data.get("max_tokens", 512),
        "system": "\n\n".join(system),
        "messages": [m for m in data["messages"] if m["role"] != "system"],
        "temperature": data.get("temperature", 1),
    }
    if data.get("stream"):
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class StreamSample:
    ttft_ns: int  # request sent -> first non-empty content delta arrived
    total_ns: int  # request sent -> end of the chunked body
    content_chunks: int  # SSE events with non-empty content
    http_chunks: int  # HTTP chunks the client received
    first_to_last_ns: int  # first -> last content delta
    gaps_ns: list[int]  # arrival gaps between consecutive content deltas


@dataclass
class PhaseResult:
    """One phase against one target."""

    target: str
    phase: str
    concurrency: int
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    wall_ns: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    streams: list[StreamSample] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    #: Envoy counters that moved during the phase (the proxy's ext_proc traffic).
    envoy_counters: dict[str, int] = field(default_factory=dict)

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(message)

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / (self.wall_ns / 1e9) if self.wall_ns else 0.0


# --------------------------------------------------------------------------------------------
# Validation


def _excerpt(data: bytes, limit: int = 200) -> str:
    return data[:limit].decode("utf-8", "replace")


def check_json(response: Response, expected_text: str) -> str | None:
    """None when ``response`` is a 200 chat completion whose content is ``expected_text``."""
    body = response.full_body()
    if response.status != 200:
        return f"status {response.status}: {_excerpt(body)}"
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"bad JSON body ({exc!r}): {_excerpt(body)}"
    if content != expected_text:
        return f"unexpected content {content!r:.120}"
    return None


def check_anthropic_json(response: Response, expected_text: str) -> str | None:
    """None when ``response`` is a 200 Anthropic message whose text is ``expected_text``."""
    body = response.full_body()
    if response.status != 200:
        return f"status {response.status}: {_excerpt(body)}"
    try:
        content = json.loads(body)["content"][0]["text"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"bad JSON body ({exc!r}): {_excerpt(body)}"
    if content != expected_text:
        return f"unexpected content {content!r:.120}"
    return None


def _sse_data(event: bytes) -> bytes | None:
    """The ``data`` of one SSE event (lines joined by LF), None when it has none."""
    lines = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines) if lines else None


def analyze_stream(
    response: Response, expected_text: str, *, anthropic: bool = False
) -> StreamSample | str:
    """Times of one SSE stream, or why it is not a valid Chat Completions stream.

    ``anthropic``: an Anthropic Messages stream instead (text deltas, ends with
    ``message_stop``).
    """
    if response.status != 200:
        return f"status {response.status}: {_excerpt(response.full_body())}"
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return f"content-type {response.headers.get('content-type')!r}"
    if response.chunks is None:
        return "stream body is not chunked"
    pending = b""
    done = False
    first = last = 0
    parts: list[str] = []
    arrivals: list[int] = []
    for arrived, data in response.chunks:
        pending = (pending + data).replace(b"\r\n", b"\n")
        while (end := pending.find(b"\n\n")) >= 0:
            event, pending = pending[:end], pending[end + 2 :]
            payload = _sse_data(event)
            if payload is None:
                continue
            if done:
                return "data after [DONE]"
            if payload == b"[DONE]":
                done = True
                continue
            try:
                chunk = json.loads(payload)
            except ValueError:
                return f"event is not JSON: {_excerpt(payload)}"
            if "error" in chunk:
                return f"error event: {_excerpt(payload)}"
            if anthropic:
                if chunk.get("type") == "message_stop":
                    done = True
                delta = chunk.get("delta") or {}
                contents = [delta.get("text")] if delta.get("type") == "text_delta" else []
            else:
                contents = [
                    (choice.get("delta") or {}).get("content")
                    for choice in chunk.get("choices") or ()
                ]
            for content in contents:
                if content:
                    parts.append(content)
                    arrivals.append(arrived)
                    first = first or arrived
                    last = arrived
    if pending.strip():
        return f"stream ends inside an event: {_excerpt(pending)}"
    if not done:
        return "stream did not end with data: [DONE]"
    text = "".join(parts)
    if text != expected_text:
        return f"unexpected streamed text {text!r:.120}"
    return StreamSample(
        ttft_ns=first - response.t_sent,
        total_ns=response.t_done - response.t_sent,
        content_chunks=len(parts),
        http_chunks=len(response.chunks),
        first_to_last_ns=last - first,
        gaps_ns=[later - earlier for earlier, later in pairwise(arrivals)],
    )


# --------------------------------------------------------------------------------------------
# Running requests


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    """No garbage-collector pauses in the load generator during a timed window."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


class _Client:
    """Connections to one target, with reconnects and a watchdog for stuck requests."""

    def __init__(self, target: Target, timeout_s: float) -> None:
        self.target = target
        self.timeout_ns = int(timeout_s * 1e9)
        self.connections: set[HttpConnection] = set()
        self.failures: list[str] = []

    async def connect(self) -> HttpConnection | None:
        try:
            conn = await connect(self.target.host, self.target.port)
        except OSError as exc:
            self.failures.append(f"connect: {exc}")
            await asyncio.sleep(0.05)
            return None
        self.connections.add(conn)
        return conn

    def drop(self, conn: HttpConnection) -> None:
        conn.close()
        self.connections.discard(conn)

    async def send(
        self, conn: HttpConnection | None, request: bytes
    ) -> tuple[HttpConnection | None, Response | None]:
        """One request; a failure is recorded and the connection replaced."""
        if conn is None or conn.closed:
            if conn is not None:
                self.drop(conn)
            conn = await self.connect()
            if conn is None:
                return None, None
        try:
            response = await conn.send(request)
        except (OSError, ConnectionError, ProtocolError, TimeoutError) as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            self.drop(conn)
            return None, None
        if not response.keep_alive:
            self.drop(conn)
            return None, response
        return conn, response

    async def watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = perf_counter_ns()
            for conn in list(self.connections):
                since = conn.outstanding_since
                if since and now - since > self.timeout_ns:
                    conn.abort(f"no complete response after {self.timeout_ns / 1e9:.0f}s")

    def close(self) -> None:
        for conn in list(self.connections):
            self.drop(conn)


Validator = Callable[[Response], str | None]


def _record(
    result: PhaseResult, client: _Client, responses: list[Response], check: Validator
) -> None:
    result.requests = len(responses) + len(client.failures)
    for failure in client.failures:
        result.error(failure)
    for response in responses:
        problem = check(response)
        if problem is None:
            result.latencies_ns.append(response.latency_ns)
        else:
            result.error(problem)


async def run_sequential(
    target: Target,
    request: bytes,
    count: int,
    *,
    phase: str,
    sampler: CpuSampler | None,
    expected_text: str,
    stream: bool = False,
    warmup: int = 0,
    timeout_s: float = 30.0,
) -> PhaseResult:
    """``count`` requests one after another on one keep-alive connection (concurrency 1)."""
    client = _Client(target, timeout_s)
    watchdog = asyncio.ensure_future(client.watchdog())
    result = PhaseResult(target.name, phase, 1)
    try:
        conn = await client.connect()
        for _ in range(warmup):
            conn, _response = await client.send(conn, request)
        client.failures.clear()
        responses: list[Response] = []
        with _quiet_gc():
            before = sampler.snapshot() if sampler else {}
            started = perf_counter_ns()
            for _ in range(count):
                conn, response = await client.send(conn, request)
                if response is not None:
                    responses.append(response)
            result.wall_ns = perf_counter_ns() - started
            if sampler:
                result.cpu_s = sampler.delta(before, sampler.snapshot())
    finally:
        watchdog.cancel()
        client.close()
    if stream:
        result.requests = len(responses) + len(client.failures)
        for failure in client.failures:
            result.error(failure)
        for response in responses:
            sample = target.analyze(response, expected_text)
            if isinstance(sample, str):
                result.error(sample)
            else:
                result.streams.append(sample)
                result.latencies_ns.append(sample.total_ns)
    else:
        _record(result, client, responses, lambda r: target.check(r, expected_text))
    return result


async def run_closed_loop(
    target: Target,
    request: bytes,
    concurrency: int,
    duration_s: float,
    *,
    phase: str,
    sampler: CpuSampler | None,
    expected_text: str,
    warmup_per_worker: int = 5,
    timeout_s: float = 30.0,
) -> PhaseResult:
    """``concurrency`` workers, one connection each, sending back to back for ``duration_s``."""
    client = _Client(target, timeout_s)
    watchdog = asyncio.ensure_future(client.watchdog())
    result = PhaseResult(target.name, phase, concurrency)
    per_worker: list[list[Response]] = [[] for _ in range(concurrency)]
    deadline = 0

    async def worker(conn: HttpConnection | None, out: list[Response]) -> None:
        while perf_counter_ns() < deadline:
            conn, response = await client.send(conn, request)
            if response is not None:
                out.append(response)

    async def warm(conn: HttpConnection | None) -> HttpConnection | None:
        for _ in range(warmup_per_worker):
            conn, _response = await client.send(conn, request)
        return conn

    try:
        conns = await asyncio.gather(*(client.connect() for _ in range(concurrency)))
        conns = await asyncio.gather(*(warm(conn) for conn in conns))
        client.failures.clear()
        with _quiet_gc():
            before = sampler.snapshot() if sampler else {}
            started = perf_counter_ns()
            deadline = started + int(duration_s * 1e9)
            await asyncio.gather(
                *(worker(conn, out) for conn, out in zip(conns, per_worker, strict=True))
            )
            result.wall_ns = perf_counter_ns() - started
            if sampler:
                result.cpu_s = sampler.delta(before, sampler.snapshot())
    finally:
        watchdog.cancel()
        client.close()
    responses = [response for out in per_worker for response in out]
    _record(result, client, responses, lambda r: target.check(r, expected_text))
    return result
