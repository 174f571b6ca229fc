"""The cost of translation: an Anthropic client on an OpenAI-compatible backend.

Two measurements, in the same run as the rest of the benchmark:

* through the running proxy: the same request sent by an OpenAI Chat client
  (same protocol: decoded, raw bytes passed through) and by an Anthropic
  client (translated both ways), non-streaming latency and streaming
  per-chunk time at concurrency 1, against the same fake backend;
* in-process, without gRPC or Envoy: the CPU time of translating one request
  of a ~100 KB agent conversation (JSON parse, decode, encode), and of
  translating one streamed chunk, beside the same-protocol path.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

from bench.load import PhaseResult, Target, chat_body, run_sequential
from bench.stats import percentile

TOOL = {
    "name": "read_file",
    "description": "Read a file of the repository and return its text.",
    "input_schema": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "lines": {"type": "integer"}},
        "required": ["path"],
    },
}
FILE_TEXT = (
    "def handler(event, context):\n    # Parse the request and dispatch it.\n"
    "    payload = json.loads(event['body'])\n    return route(payload)\n"
) * 12


def agent_conversation(target_bytes: int = 100_000) -> dict[str, Any]:
    """An Anthropic Messages request shaped like a coding agent's, about ``target_bytes``."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Find where requests are routed and explain it."}
    ]
    turn = 0
    while len(json.dumps(messages)) < target_bytes:
        call_id = f"toolu_{turn:024d}"
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": f"Reading file number {turn} to follow the call."},
                    {
                        "type": "tool_use",
                        "id": call_id,
                        "name": "read_file",
                        "input": {"path": f"src/module_{turn}.py", "lines": 200},
                    },
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call_id, "content": FILE_TEXT}],
            }
        )
        turn += 1
    return {
        "model": "openai:gpt-4o-mini",
        "max_tokens": 4096,
        "system": [{"type": "text", "text": "You are a coding agent. " * 40}],
        "messages": messages,
        "tools": [TOOL] * 8,
        "stream": True,
    }


def _p50_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1000


def request_translation_cpu(iterations: int = 200) -> dict[str, Any]:
    """CPU per request for a ~100 KB conversation: translated vs same protocol."""
    from extproc.codecs import get_codec
    from extproc.codecs.base import RequestMeta

    anthropic, chat = get_codec("anthropic"), get_codec("openai-chat")
    anthropic_wire = json.dumps(agent_conversation()).encode()
    canonical = anthropic.decode_request(json.loads(anthropic_wire), RequestMeta())
    chat_wire = chat.encode_request(canonical, "gpt-4o-mini").body
    meta = RequestMeta()

    def translated() -> None:
        request = anthropic.decode_request(json.loads(anthropic_wire), meta)
        chat.encode_request(request, "gpt-4o-mini")

    def same_protocol() -> None:
        request = chat.decode_request(json.loads(chat_wire), meta)
        chat.encode_request(request, "gpt-4o-mini")

    results: dict[str, Any] = {
        "anthropic_request_bytes": len(anthropic_wire),
        "chat_request_bytes": len(chat_wire),
        "messages": len(canonical.messages),
    }
    for name, work in (("translated", translated), ("same_protocol", same_protocol)):
        for _ in range(10):
            work()
        samples = []
        for _ in range(iterations):
            started = perf_counter_ns()
            work()
            samples.append(perf_counter_ns() - started)
        samples.sort()
        results[name] = {
            "p50_ms": _p50_us(samples) / 1000,
            "p99_ms": percentile(samples, 99) / 1e6,
        }
    return results


def chunk_translation_cpu(chunks: int = 64, repeat: int = 200) -> dict[str, Any]:
    """CPU per streamed chunk: OpenAI stream -> Anthropic client vs -> OpenAI client."""
    from extproc.codecs import get_codec
    from extproc.codecs.base import ResponseContext

    envelope = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
    }
    events = [
        dict(
            envelope,
            choices=[
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        )
    ]
    events += [
        dict(envelope, choices=[{"index": 0, "delta": {"content": "word"}, "finish_reason": None}])
        for _ in range(chunks)
    ]
    events.append(dict(envelope, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    wire = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
    chat, anthropic = get_codec("openai-chat"), get_codec("anthropic")
    ctx = ResponseContext(request_model="gpt-4o-mini", estimated_input_tokens=100)

    def run(target: Any, same: bool) -> int:
        decoder, encoder = chat.stream_decoder(), target.stream_encoder(ctx)
        started = perf_counter_ns()
        for chunk in wire:
            for raw, decoded in decoder.feed(chunk):
                if same and encoder.can_pass_through(decoded):
                    encoder.observe(decoded, raw)
                else:
                    encoder.encode(decoded)
        encoder.finish()
        return perf_counter_ns() - started

    result: dict[str, Any] = {"chunks": len(wire)}
    for name, target, same in (("to_anthropic", anthropic, False), ("same_protocol", chat, True)):
        samples = sorted(run(target, same) for _ in range(repeat))
        result[name] = {"per_chunk_us": _p50_us(samples) / len(wire)}
    return result


async def through_proxy(
    proxy_port: int,
    api_key: str,
    model: str,
    expected_text: str,
    requests: int,
    streams: int,
    pace: Callable[[bool], None] | None = None,
    paced_streams: int = 0,
) -> dict[str, Any]:
    """The same requests from an OpenAI and an Anthropic client, through the proxy."""
    targets = {
        "openai": Target("openai", "127.0.0.1", proxy_port, "/v1/chat/completions", api_key),
        "anthropic": Target("anthropic", "127.0.0.1", proxy_port, "", api_key, dialect="anthropic"),
    }
    out: dict[str, Any] = {}
    plain, streamed = chat_body(model, stream=False), chat_body(model, stream=True)
    for name, target in targets.items():
        latency = await run_sequential(
            target,
            target.request(plain, stream=False),
            requests,
            phase="translation-latency",
            sampler=None,
            expected_text=expected_text,
            warmup=min(50, requests),
        )
        stream = await run_sequential(
            target,
            target.request(streamed, stream=True),
            streams,
            phase="translation-stream",
            sampler=None,
            expected_text=expected_text,
            stream=True,
            warmup=min(10, streams),
        )
        out[name] = {"latency": _summary(latency), "stream": _stream_summary(stream)}
    if pace is not None and paced_streams:
        # Every event crosses ext_proc on its own: per-chunk cost is not amortised.
        pace(True)
        try:
            for name, target in targets.items():
                paced = await run_sequential(
                    target,
                    target.request(streamed, stream=True),
                    paced_streams,
                    phase="translation-paced",
                    sampler=None,
                    expected_text=expected_text,
                    stream=True,
                    warmup=3,
                )
                out[name]["paced"] = _stream_summary(paced)
        finally:
            pace(False)
    openai_, anthropic_ = out["openai"], out["anthropic"]
    out["added"] = {
        "p50_ms": anthropic_["latency"]["p50_ms"] - openai_["latency"]["p50_ms"],
        "p99_ms": anthropic_["latency"]["p99_ms"] - openai_["latency"]["p99_ms"],
        "per_chunk_p50_ms": anthropic_["stream"]["per_chunk_p50_ms"]
        - openai_["stream"]["per_chunk_p50_ms"],
        "ttft_p50_ms": anthropic_["stream"]["ttft_p50_ms"] - openai_["stream"]["ttft_p50_ms"],
    }
    if "paced" in anthropic_:
        out["added"]["paced_gap_p50_ms"] = (
            anthropic_["paced"]["gap_p50_ms"] - openai_["paced"]["gap_p50_ms"]
        )
    return out


def _summary(result: PhaseResult) -> dict[str, Any]:
    values = sorted(result.latencies_ns)
    return {
        "errors": result.errors,
        "p50_ms": percentile(values, 50) / 1e6,
        "p99_ms": percentile(values, 99) / 1e6,
    }


def _stream_summary(result: PhaseResult) -> dict[str, Any]:
    totals = sorted(s.total_ns for s in result.streams)
    ttfts = sorted(s.ttft_ns for s in result.streams)
    chunks = statistics.median(s.content_chunks for s in result.streams) if result.streams else 0
    total_p50 = percentile(totals, 50) / 1e6 if totals else 0.0
    gaps = sorted(g for s in result.streams for g in s.gaps_ns)
    return {
        "gap_p50_ms": percentile(gaps, 50) / 1e6 if gaps else 0.0,
        "gap_p99_ms": percentile(gaps, 99) / 1e6 if gaps else 0.0,
        "errors": result.errors,
        "total_p50_ms": total_p50,
        "ttft_p50_ms": percentile(ttfts, 50) / 1e6 if ttfts else 0.0,
        "content_chunks": chunks,
        "per_chunk_p50_ms": total_p50 / chunks if chunks else 0.0,
    }


def render(section: dict[str, Any]) -> str:
    proxy = section["through_proxy"]
    cpu = section["request_cpu"]
    chunk = section["chunk_cpu"]
    lines = [
        "== 7. Translation: an Anthropic client on the OpenAI-compatible backend " + "=" * 26,
        "through the proxy, concurrency 1 (OpenAI client = same protocol, passed through):",
        "metric                      openai client  anthropic client   added",
        "--------------------------  -------------  ----------------  -------",
    ]
    for label, key, part in (
        ("non-streaming p50 (ms)", "p50_ms", "latency"),
        ("non-streaming p99 (ms)", "p99_ms", "latency"),
        ("stream TTFT p50 (ms)", "ttft_p50_ms", "stream"),
        ("stream total p50 (ms)", "total_p50_ms", "stream"),
        ("stream per chunk p50 (ms)", "per_chunk_p50_ms", "stream"),
    ):
        a, b = proxy["openai"][part][key], proxy["anthropic"][part][key]
        lines.append(f"{label:<26}  {a:>13.3f}  {b:>16.3f}  {b - a:>+7.3f}")
    if "paced" in proxy["anthropic"]:
        for label, key in (
            ("paced gap p50 (ms)", "gap_p50_ms"),
            ("paced gap p99 (ms)", "gap_p99_ms"),
        ):
            a, b = proxy["openai"]["paced"][key], proxy["anthropic"]["paced"][key]
            lines.append(f"{label:<26}  {a:>13.3f}  {b:>16.3f}  {b - a:>+7.3f}")
    lines += [
        "",
        f"in-process, one request of a {cpu['anthropic_request_bytes'] / 1000:.0f} KB agent "
        f"conversation ({cpu['messages']} messages), parse + decode + encode:",
        f"  translated (anthropic -> openai-chat): p50 {cpu['translated']['p50_ms']:.3f} ms, "
        f"p99 {cpu['translated']['p99_ms']:.3f} ms",
        f"  same protocol (openai-chat -> openai-chat): "
        f"p50 {cpu['same_protocol']['p50_ms']:.3f} ms, p99 {cpu['same_protocol']['p99_ms']:.3f} ms",
        f"in-process, per streamed chunk ({chunk['chunks']} chunks): to an Anthropic client "
        f"{chunk['to_anthropic']['per_chunk_us']:.1f} us, same protocol "
        f"{chunk['same_protocol']['per_chunk_us']:.1f} us",
        "",
        "floor (translation issue):",
        _verdict(
            "streaming translation adds per chunk at p50 over same-protocol streaming"
            + (" (paced: every event on its own)" if "paced_gap_p50_ms" in proxy["added"] else ""),
            proxy["added"].get("paced_gap_p50_ms", proxy["added"]["per_chunk_p50_ms"]),
            0.5,
        ),
        _verdict(
            "per-request translation of a ~100 KB conversation at p50",
            cpu["translated"]["p50_ms"],
            5.0,
        ),
    ]
    return "\n".join(lines)


def _verdict(label: str, measured: float, limit: float) -> str:
    state = "PASS" if measured <= limit else "FAIL"
    return f"{state}  {label}: {measured:+.3f} ms (limit {limit} ms)"
