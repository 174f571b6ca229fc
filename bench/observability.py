"""The cost of wire capture (and of the rest of observability) on the hot path.

Three proxies run side by side against the same fake upstream, with the same
config except for observability, and Envoy alone beside them:

* ``proxy``: the benchmark's proxy (metrics on, as by default; capture off);
* ``capture``: the same with wire capture on (CBOR files in the run's directory);
* ``all``: capture, usage accounting (SQLite) and tracing (spans created, not
  exported) on.

The targets are measured in interleaved rounds (A B C D, then B C D A, ...) so
that drift on a shared machine hits all of them alike. The figure of merit is
the proxy's *added* latency over Envoy alone, p50, at concurrency 1; the floor
is that capture grows it by at most 10 %.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from bench.load import PhaseResult, Target, chat_body, run_sequential
from bench.stats import percentile

#: Wire capture may grow the proxy's added p50 latency by at most this share.
CAPTURE_FLOOR = 0.10


def observability_config(base: Mapping[str, Any], workdir: Any, variant: str) -> dict[str, Any]:
    """``base`` (the benchmark proxy's config) with the observability of ``variant``."""
    config = dict(base)
    config["capture"] = {"enabled": True, "directory": str(workdir / f"captures-{variant}")}
    if variant == "all":
        config["usage"] = {
            "enabled": True,
            "database": f"sqlite:///{workdir / 'usage-bench.sqlite'}",
            "prices": {"*": {"input": 1.0, "output": 2.0}},
        }
        config["tracing"] = {"enabled": True}
    return config


async def measure(
    targets: Mapping[str, Target],
    expected_text: str,
    requests: int,
    streams: int,
    rounds: int = 5,
    bodies: tuple[bytes, bytes] | None = None,
    reference: str = "proxy",
) -> dict[str, Any]:
    """Interleaved rounds of non-streaming and streaming requests at concurrency 1.

    ``bodies``: the (non-streaming, streaming) request bodies (default: ``chat_body``);
    ``reference``: the target whose added latency the others' growth is relative to.
    """
    names = list(targets)
    latencies: dict[str, list[int]] = {name: [] for name in names}
    ttfts: dict[str, list[int]] = {name: [] for name in names}
    per_chunk: dict[str, list[float]] = {name: [] for name in names}
    errors = dict.fromkeys(names, 0)
    plain, streamed = bodies or (
        chat_body("gpt-4o-mini", stream=False),
        chat_body("gpt-4o-mini", stream=True),
    )
    per_round, streams_per_round = max(1, requests // rounds), max(1, streams // rounds)
    for round_no in range(rounds):
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        for name in order:
            target = targets[name]
            result = await run_sequential(
                target,
                target.request(plain, stream=False),
                per_round,
                phase="observability-latency",
                sampler=None,
                expected_text=expected_text,
                warmup=10,
            )
            latencies[name] += result.latencies_ns
            errors[name] += result.errors
        for name in order:
            target = targets[name]
            stream = await run_sequential(
                target,
                target.request(streamed, stream=True),
                streams_per_round,
                phase="observability-stream",
                sampler=None,
                expected_text=expected_text,
                stream=True,
                warmup=3,
            )
            errors[name] += stream.errors
            _collect_stream(stream, ttfts[name], per_chunk[name])
    out: dict[str, Any] = {"targets": {}}
    for name in names:
        values = sorted(latencies[name])
        out["targets"][name] = {
            "requests": len(values),
            "errors": errors[name],
            "p50_ms": percentile(values, 50) / 1e6,
            "p99_ms": percentile(values, 99) / 1e6,
            "ttft_p50_ms": percentile(sorted(ttfts[name]), 50) / 1e6 if ttfts[name] else 0.0,
            "per_chunk_p50_ms": statistics.median(per_chunk[name]) if per_chunk[name] else 0.0,
        }
    base = out["targets"]["envoy"]
    added = {
        name: {
            "p50_ms": row["p50_ms"] - base["p50_ms"],
            "p99_ms": row["p99_ms"] - base["p99_ms"],
            "ttft_p50_ms": row["ttft_p50_ms"] - base["ttft_p50_ms"],
            "per_chunk_p50_ms": row["per_chunk_p50_ms"] - base["per_chunk_p50_ms"],
        }
        for name, row in out["targets"].items()
        if name != "envoy"
    }
    out["added"] = added
    base_added = added[reference]["p50_ms"]
    out["growth"] = {
        name: (values["p50_ms"] / base_added - 1) if base_added > 0 else float("nan")
        for name, values in added.items()
        if name != reference
    }
    return out


def _collect_stream(result: PhaseResult, ttfts: list[int], per_chunk: list[float]) -> None:
    for sample in result.streams:
        ttfts.append(sample.ttft_ns)
        if sample.content_chunks:
            per_chunk.append(sample.total_ns / sample.content_chunks / 1e6)


def table(section: Mapping[str, Any]) -> list[str]:
    """The rows of an interleaved measurement: one line per target, added over Envoy alone."""
    rows = section["targets"]
    added = section["added"]
    lines = [
        "target    requests  errors   p50 ms   p99 ms   added p50   TTFT p50   per chunk p50",
        "--------  --------  ------  -------  -------  ----------  ---------  --------------",
    ]
    for name, row in rows.items():
        extra = added.get(name, {}).get("p50_ms")
        added_text = f"{extra:>+10.3f}" if extra is not None else f"{'-':>10}"
        lines.append(
            f"{name:<8}  {row['requests']:>8}  {row['errors']:>6}  {row['p50_ms']:>7.3f}  "
            f"{row['p99_ms']:>7.3f}  {added_text}  {row['ttft_p50_ms']:>9.3f}  "
            f"{row['per_chunk_p50_ms']:>14.4f}"
        )
    return lines


def render(section: Mapping[str, Any]) -> str:
    lines = [
        "== 8. Observability: wire capture on the hot path " + "=" * 49,
        "concurrency 1, interleaved rounds; proxy = metrics on, capture off (the default);",
        "capture = + wire capture; all = + capture, usage (SQLite), tracing (not exported)",
        *table(section),
    ]
    growth = section["growth"]
    lines += [
        "",
        "growth of the proxy's added p50 latency over Envoy alone:",
        *(f"  {name}: {value * 100:+.1f} %" for name, value in growth.items()),
        "",
        "floor (observability issue):",
        f"{'PASS' if growth['capture'] <= CAPTURE_FLOOR else 'FAIL'}  wire capture grows the "
        f"added p50 latency by {growth['capture'] * 100:+.1f} % (limit "
        f"{CAPTURE_FLOOR * 100:.0f} %)",
    ]
    return "\n".join(lines)
