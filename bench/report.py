"""Turn phase results into the report: numbers, comparisons, floor checks, and text tables.

The report is plain data (written as JSON); :func:`render` prints it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.load import PhaseResult
from bench.procs import MACHINE, REPO
from bench.stats import NS_PER_MS, median, percentile, summarize_ns

TARGETS = ("direct", "envoy", "proxy")

#: The milestone floor (ms): proxy over Envoy alone.
FLOOR_ADDED_P50_MS = 2.0
FLOOR_ADDED_P99_MS = 5.0
FLOOR_ADDED_PER_CHUNK_MS = 0.5

#: Which processes serve which target, in print order.
PROCESSES = {
    "direct": ("fake", "loadgen"),
    "envoy": ("envoy-baseline", "fake", "loadgen"),
    "proxy": ("extproc", "envoy-proxy", "fake", "loadgen"),
}

_NAN = math.nan
_REPO = re.escape(str(REPO) + "/")


def _cpu_per_request(result: PhaseResult, target: str) -> dict[str, float]:
    """CPU milliseconds per request for each process that serves ``target``, plus a total."""
    requests = max(result.requests, 1)
    out = {name: result.cpu_s.get(name, 0.0) * 1000 / requests for name in PROCESSES[target]}
    out["total"] = sum(out.values())
    return out


def _cores(result: PhaseResult) -> tuple[float, float]:
    """(cores busy in the benchmark's processes, cores busy in anything else on the machine)."""
    if not result.wall_ns:
        return _NAN, _NAN
    wall = result.wall_ns / 1e9
    ours = sum(v for k, v in result.cpu_s.items() if k != MACHINE)
    machine = result.cpu_s.get(MACHINE, _NAN)
    return ours / wall, max(0.0, machine - ours) / wall


def _ext_proc(counters: Mapping[str, int]) -> dict[str, Any] | None:
    """ext_proc streams and messages per client request, from the proxy Envoy's counters."""
    router = sum(v for k, v in counters.items() if k == "http.llm.ext_proc.streams_started")
    if not router:
        return None
    streams = sum(v for k, v in counters.items() if k.endswith("ext_proc.streams_started"))
    sent = sum(v for k, v in counters.items() if k.endswith("ext_proc.stream_msgs_sent"))
    return {
        "streams_per_request": streams / router,
        "messages_per_request": sent / router,
        "counters": dict(counters),
    }


def _phase_common(result: PhaseResult) -> dict[str, Any]:
    ours, others = _cores(result)
    return {
        "ext_proc": _ext_proc(result.envoy_counters),
        "requests": result.requests,
        "errors": result.errors,
        "error_samples": result.error_samples,
        "wall_s": result.wall_ns / 1e9,
        "cpu_s": result.cpu_s,
        "cpu_ms_per_request": _cpu_per_request(result, result.target),
        "busy_cores": ours,
        "other_load_cores": others,
    }


def latency_entry(result: PhaseResult) -> dict[str, Any]:
    return {**summarize_ns(result.latencies_ns), **_phase_common(result)}


def throughput_entry(result: PhaseResult) -> dict[str, Any]:
    summary = summarize_ns(result.latencies_ns)
    return {
        "concurrency": result.concurrency,
        "rps": result.rps,
        "p50": summary["p50"],
        "p99": summary["p99"],
        "mean": summary["mean"],
        **_phase_common(result),
    }


def stream_entry(result: PhaseResult, expected_chunks: int) -> dict[str, Any]:
    streams = result.streams
    ttft = summarize_ns([s.ttft_ns for s in streams])
    total = summarize_ns([s.total_ns for s in streams])
    body = summarize_ns([s.first_to_last_ns for s in streams])
    gaps = sorted(gap / NS_PER_MS for s in streams for gap in s.gaps_ns)
    common = _phase_common(result)
    return {
        "ttft_p50": ttft["p50"],
        "ttft_p99": ttft["p99"],
        "total_p50": total["p50"],
        "total_p99": total["p99"],
        "first_to_last_p50": body["p50"],
        "gap_p50": percentile(gaps, 50),
        "gap_p99": percentile(gaps, 99),
        "content_chunks_expected": expected_chunks,
        "content_chunks_median": median([s.content_chunks for s in streams]) if streams else _NAN,
        "http_chunks_median": median([s.http_chunks for s in streams]) if streams else _NAN,
        "per_chunk_p50": total["p50"] / expected_chunks,
        "cpu_ms_per_chunk": {
            name: value / expected_chunks for name, value in common["cpu_ms_per_request"].items()
        },
        **common,
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b else _NAN


def build(
    results: Mapping[str, Mapping[str, PhaseResult]],
    *,
    concurrencies: Sequence[int],
    expected_chunks: int,
) -> dict[str, Any]:
    """Per-target numbers, proxy-vs-envoy comparisons and the floor checks."""
    targets: dict[str, Any] = {}
    for name, phases in results.items():
        entry = {
            "latency_c1": latency_entry(phases["latency"]),
            "throughput": [throughput_entry(phases[f"c{c}"]) for c in concurrencies],
            "streaming_c1": stream_entry(phases["stream"], expected_chunks),
        }
        if "paced" in phases:
            entry["paced_streaming_c1"] = stream_entry(phases["paced"], expected_chunks)
        targets[name] = entry
    report: dict[str, Any] = {"targets": targets}
    if "proxy" in targets and "envoy" in targets:
        report["comparison"] = _compare(targets, expected_chunks)
        report["floor"] = _floor(report["comparison"])
    report["errors"] = sum(phase.errors for phases in results.values() for phase in phases.values())
    return report


def _stream_compare(proxy: Mapping[str, Any], envoy: Mapping[str, Any], chunks: int) -> Any:
    return {
        "ttft_added_ms": {
            "p50": proxy["ttft_p50"] - envoy["ttft_p50"],
            "p99": proxy["ttft_p99"] - envoy["ttft_p99"],
        },
        "total_added_p50_ms": proxy["total_p50"] - envoy["total_p50"],
        "total_added_p99_ms": proxy["total_p99"] - envoy["total_p99"],
        "added_per_chunk_p50_ms": (proxy["total_p50"] - envoy["total_p50"]) / chunks,
        "first_to_last_added_p50_ms": proxy["first_to_last_p50"] - envoy["first_to_last_p50"],
        "gap_added_ms": {
            "p50": proxy["gap_p50"] - envoy["gap_p50"],
            "p99": proxy["gap_p99"] - envoy["gap_p99"],
        },
        "cpu_ms_per_chunk_added": proxy["cpu_ms_per_chunk"]["total"]
        - envoy["cpu_ms_per_chunk"]["total"],
    }


def _compare(targets: Mapping[str, Any], chunks: int) -> dict[str, Any]:
    proxy, envoy = targets["proxy"], targets["envoy"]
    lat_p, lat_e = proxy["latency_c1"], envoy["latency_c1"]
    keys = ("p50", "p90", "p99", "mean")
    pairs = list(zip(proxy["throughput"], envoy["throughput"], strict=True))
    comparison: dict[str, Any] = {
        "latency_added_ms": {k: lat_p[k] - lat_e[k] for k in keys},
        "latency_ratio": {k: _ratio(lat_p[k], lat_e[k]) for k in keys},
        "throughput_ratio": {str(p["concurrency"]): _ratio(p["rps"], e["rps"]) for p, e in pairs},
        "throughput_added_p50_ms": {str(p["concurrency"]): p["p50"] - e["p50"] for p, e in pairs},
        "throughput_added_p99_ms": {str(p["concurrency"]): p["p99"] - e["p99"] for p, e in pairs},
        "streaming": _stream_compare(proxy["streaming_c1"], envoy["streaming_c1"], chunks),
    }
    if "paced_streaming_c1" in proxy and "paced_streaming_c1" in envoy:
        comparison["paced_streaming"] = _stream_compare(
            proxy["paced_streaming_c1"], envoy["paced_streaming_c1"], chunks
        )
    if "direct" in targets:
        direct = targets["direct"]
        comparison["envoy_over_direct_latency_added_ms"] = {
            k: lat_e[k] - direct["latency_c1"][k] for k in keys
        }
        comparison["envoy_over_direct_throughput_ratio"] = {
            str(e["concurrency"]): _ratio(e["rps"], d["rps"])
            for e, d in zip(envoy["throughput"], direct["throughput"], strict=True)
        }
    return comparison


def _floor(comparison: Mapping[str, Any]) -> list[dict[str, Any]]:
    checks = [
        (
            "non-streaming c=1: proxy adds at p50 over Envoy alone",
            comparison["latency_added_ms"]["p50"],
            FLOOR_ADDED_P50_MS,
        ),
        (
            "non-streaming c=1: proxy adds at p99 over Envoy alone",
            comparison["latency_added_ms"]["p99"],
            FLOOR_ADDED_P99_MS,
        ),
        (
            "streaming c=1: proxy adds per streamed chunk at p50",
            comparison["streaming"]["added_per_chunk_p50_ms"],
            FLOOR_ADDED_PER_CHUNK_MS,
        ),
    ]
    return [
        {
            "check": what,
            "measured_ms": value,
            "limit_ms": limit,
            "pass": bool(value <= limit),
            "over_by_ms": max(0.0, value - limit),
        }
        for what, value, limit in checks
    ]


# --------------------------------------------------------------------------------------------
# Text


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns right-aligned except the first, separated by two spaces."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for index, row in enumerate([header, *rows]):
        cells = [
            str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ms(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _signed(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.{digits}f}"


def _times(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}x"


def _section(title: str) -> str:
    return f"\n== {title} " + "=" * max(3, 96 - len(title))


def render_environment(env: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    lines = [_section("Environment")]
    lines += [f"{key:>18}: {value}" for key, value in env.items()]
    lines.append(_section("Settings"))
    lines += [f"{key:>18}: {value}" for key, value in settings.items()]
    return "\n".join(lines)


def _render_latency(targets: Mapping[str, Any], names: list[str], cmp: Mapping[str, Any]) -> str:
    n = targets[names[0]]["latency_c1"]["n"]
    out = [_section(f"1. Non-streaming latency, concurrency 1 (ms; {n} requests per target)")]
    header = ["metric", *names]
    if cmp:
        header += ["proxy-envoy", "proxy/envoy"]
    if "envoy_over_direct_latency_added_ms" in cmp:
        header.append("envoy-direct")
    rows = []
    for key in ("p50", "p90", "p99", "mean"):
        row = [key, *(_ms(targets[t]["latency_c1"][key]) for t in names)]
        if cmp:
            row += [_signed(cmp["latency_added_ms"][key]), _times(cmp["latency_ratio"][key])]
        if "envoy_over_direct_latency_added_ms" in cmp:
            row.append(_signed(cmp["envoy_over_direct_latency_added_ms"][key]))
        rows.append(row)
    out.append(table(header, rows))
    return "\n".join(out)


def _render_throughput(
    targets: Mapping[str, Any], names: list[str], cmp: Mapping[str, Any], duration: float
) -> str:
    out = [_section(f"2. Peak throughput, closed loop, {duration:g} s per concurrency")]
    header = ["conc"]
    for t in names:
        header += [f"{t} req/s", "p50", "p99"]
    if cmp:
        header += ["proxy/envoy", "+p50", "+p99"]
    rows = []
    for index, entry in enumerate(targets[names[0]]["throughput"]):
        conc = str(entry["concurrency"])
        row = [conc]
        for t in names:
            tp = targets[t]["throughput"][index]
            row += [f"{tp['rps']:.0f}", _ms(tp["p50"], 2), _ms(tp["p99"], 2)]
        if cmp:
            row += [
                _times(cmp["throughput_ratio"][conc]),
                _signed(cmp["throughput_added_p50_ms"][conc], 2),
                _signed(cmp["throughput_added_p99_ms"][conc], 2),
            ]
        rows.append(row)
    out.append(table(header, rows))
    out.append(
        "(latencies in ms; +p50/+p99 = proxy minus Envoy alone. Busy cores: CPU seconds of the\n"
        " benchmark's processes / wall seconds; other load: the rest of the machine meanwhile)"
    )
    rows = []
    for index, entry in enumerate(targets[names[0]]["throughput"]):
        row = [str(entry["concurrency"])]
        for t in names:
            tp = targets[t]["throughput"][index]
            row += [f"{tp['busy_cores']:.2f}", f"{tp['other_load_cores']:.2f}"]
        rows.append(row)
    header = ["conc"]
    for t in names:
        header += [f"{t} busy cores", "other load"]
    out.append(table(header, rows))
    return "\n".join(out)


def _render_stream(
    targets: Mapping[str, Any],
    names: list[str],
    cmp: Mapping[str, Any] | None,
    key: str,
    title: str,
) -> str:
    first = targets[names[0]][key]
    out = [
        _section(title),
        f"{first['requests']} streams per target, {first['content_chunks_expected']} content "
        "chunks each; times in ms from sending the request",
    ]
    header = [*["metric"], *names]
    if cmp:
        header.append("proxy-envoy")
    rows_spec: list[tuple[str, str, float | None]] = [
        ("TTFT p50", "ttft_p50", cmp["ttft_added_ms"]["p50"] if cmp else None),
        ("TTFT p99", "ttft_p99", cmp["ttft_added_ms"]["p99"] if cmp else None),
        ("total p50", "total_p50", cmp["total_added_p50_ms"] if cmp else None),
        ("total p99", "total_p99", cmp["total_added_p99_ms"] if cmp else None),
        ("per chunk p50 (total p50 / chunks)", "per_chunk_p50", None),
        ("first->last content p50", "first_to_last_p50", None),
        ("gap between content chunks p50", "gap_p50", cmp["gap_added_ms"]["p50"] if cmp else None),
        ("gap between content chunks p99", "gap_p99", cmp["gap_added_ms"]["p99"] if cmp else None),
    ]
    rows = []
    for label, field, added in rows_spec:
        row = [label, *(_ms(targets[t][key][field]) for t in names)]
        if cmp:
            row.append(_signed(added) if added is not None else "")
        rows.append(row)
    if cmp:
        rows[4][-1] = _signed(cmp["added_per_chunk_p50_ms"])
        rows[5][-1] = _signed(cmp["first_to_last_added_p50_ms"])
    extra: list[tuple[str, Callable[[Mapping[str, Any]], str], str]] = [
        ("content chunks (median)", lambda e: f"{e['content_chunks_median']:g}", ""),
        ("HTTP chunks received (median)", lambda e: f"{e['http_chunks_median']:g}", ""),
        (
            "CPU ms per chunk, all processes",
            lambda e: _ms(e["cpu_ms_per_chunk"]["total"]),
            _signed(cmp["cpu_ms_per_chunk_added"]) if cmp else "",
        ),
    ]
    for label, fmt, added_text in extra:
        row = [label, *(fmt(targets[t][key]) for t in names)]
        if cmp:
            row.append(added_text)
        rows.append(row)
    if "proxy" in names:
        proxy_cpu = targets["proxy"][key]["cpu_ms_per_chunk"]
        row = ["  of which extproc", *("" for _ in names[:-1]), _ms(proxy_cpu["extproc"])]
        rows.append([*row, ""] if cmp else row)
    out.append(table(header, rows))
    return "\n".join(out)


def _render_cpu(targets: Mapping[str, Any], names: list[str]) -> str:
    out = [_section("4. CPU time per request (ms of CPU; /proc/<pid>/stat utime+stime)")]
    some = targets[names[0]]
    phases: list[tuple[str, Any]] = [("non-stream c=1", lambda e: e["latency_c1"])]
    for index, tp in enumerate(some["throughput"]):
        phases.append((f"c={tp['concurrency']}", lambda e, i=index: e["throughput"][i]))
    phases.append(("stream c=1", lambda e: e["streaming_c1"]))
    if "paced_streaming_c1" in some:
        phases.append(("paced stream c=1", lambda e: e["paced_streaming_c1"]))
    for t in names:
        procs = [*PROCESSES[t], "total"]
        rows = []
        for label, pick in phases:
            entry = pick(targets[t])
            cpu = entry["cpu_ms_per_request"]
            rows.append([label, *(_ms(cpu[p]) for p in procs), f"{entry['other_load_cores']:.2f}"])
        out.append(f"\n{t}:")
        out.append(table(["phase", *procs, "other load (cores)"], rows))
    return "\n".join(out)


def _render_ext_proc(targets: Mapping[str, Any], cmp: Mapping[str, Any]) -> str:
    proxy = targets["proxy"]
    out = [_section("4b. ext_proc traffic of the proxy (Envoy admin counters)")]
    phases = [("non-stream c=1", proxy["latency_c1"])]
    phases += [(f"c={e['concurrency']}", e) for e in proxy["throughput"]]
    phases.append(("stream c=1", proxy["streaming_c1"]))
    if "paced_streaming_c1" in proxy:
        phases.append(("paced stream c=1", proxy["paced_streaming_c1"]))
    rows = []
    for label, entry in phases:
        ext = entry.get("ext_proc")
        if not ext:
            continue
        per_message = entry["cpu_ms_per_request"]["extproc"] / ext["messages_per_request"]
        rows.append(
            [
                label,
                f"{ext['streams_per_request']:.2f}",
                f"{ext['messages_per_request']:.2f}",
                _ms(per_message),
            ]
        )
    out.append(
        table(["phase", "gRPC streams/request", "messages/request", "extproc CPU ms/message"], rows)
    )
    latency_ext = proxy["latency_c1"].get("ext_proc")
    if latency_ext and cmp:
        added = cmp["latency_added_ms"]["p50"]
        messages = latency_ext["messages_per_request"]
        out.append(
            f"non-streaming c=1: {messages:.0f} sequential ext_proc round trips per request; "
            f"the added p50 of {added:.3f} ms is {added / messages:.3f} ms per round trip"
        )
    return "\n".join(out)


def _render_validation(report: Mapping[str, Any], names: list[str]) -> str:
    targets = report["targets"]
    out = [_section("5. Validation")]

    def entries(t: str) -> list[tuple[str, Any]]:
        found = [("non-stream c=1", targets[t]["latency_c1"])]
        found += [(f"c={e['concurrency']}", e) for e in targets[t]["throughput"]]
        found.append(("stream c=1", targets[t]["streaming_c1"]))
        if "paced_streaming_c1" in targets[t]:
            found.append(("paced stream c=1", targets[t]["paced_streaming_c1"]))
        return found

    if report["errors"]:
        out.append(
            f"!!! {report['errors']} REQUEST(S) FAILED VALIDATION: "
            "THESE NUMBERS ARE NOT TRUSTWORTHY !!!"
        )
        for t in names:
            for label, entry in entries(t):
                if entry["errors"]:
                    out.append(f"  {t} {label}: {entry['errors']} errors, e.g.")
                    out.extend(f"    - {sample}" for sample in entry["error_samples"])
    else:
        total = sum(entry["requests"] for t in names for _, entry in entries(t))
        out.append(
            f"all {total} measured responses valid "
            "(status 200, expected answer text, streams end with data: [DONE])"
        )
    return "\n".join(out)


def render(report: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    targets: Mapping[str, Any] = report["targets"]
    names = [name for name in TARGETS if name in targets]
    cmp: Mapping[str, Any] = report.get("comparison", {})
    out = [
        _render_latency(targets, names, cmp),
        _render_throughput(targets, names, cmp, settings["duration_s"]),
        _render_stream(
            targets,
            names,
            cmp.get("streaming"),
            "streaming_c1",
            "3. Streaming, concurrency 1, upstream sending as fast as it can",
        ),
    ]
    if "paced_streaming_c1" in targets[names[0]]:
        out.append(
            _render_stream(
                targets,
                names,
                cmp.get("paced_streaming"),
                "paced_streaming_c1",
                f"3b. Streaming, concurrency 1, upstream pausing {settings['paced_gap_ms']:g} ms "
                "between events",
            )
        )
    out.append(_render_cpu(targets, names))
    if "proxy" in targets and targets["proxy"]["latency_c1"].get("ext_proc"):
        out.append(_render_ext_proc(targets, cmp))
    out.append(_render_validation(report, names))
    if "floor" in report:
        out.append(_section("6. Milestone floor (proxy over Envoy alone; informational)"))
        for check in report["floor"]:
            verdict = "PASS" if check["pass"] else "FAIL"
            line = (
                f"{verdict}  {check['check']}: {check['measured_ms']:+.3f} ms "
                f"(limit {check['limit_ms']:g} ms)"
            )
            if not check["pass"]:
                line += f"  -> misses by {check['over_by_ms']:.3f} ms"
            out.append(line)
    return "\n".join(out)


def render_profile(profile: Mapping[str, Any]) -> str:
    out = [_section("7. Profile of the extproc process (py-spy --gil, proxy target)")]
    if "error" in profile:
        out.append(str(profile["error"]))
        return "\n".join(out)
    for run in profile["runs"]:
        summary = run["summary"]
        out.append(
            f"\n{run['phase']}: {run['requests']} requests in {run['wall_s']:.2f} s, "
            f"p50 {_ms(run['p50'])} ms, p99 {_ms(run['p99'])} ms while sampled; "
            f"extproc CPU {_ms(run['extproc_cpu_ms_per_request'])} ms/request"
        )
        seconds = summary["samples"] / max(summary["rate"], 1)
        out.append(
            f"{summary['samples']} samples holding the GIL at {summary['rate']} Hz "
            f"= {seconds:.2f} s of Python time, "
            f"{seconds * 1000 / max(run['requests'], 1):.3f} ms/request; "
            f"file: {summary['output']} (open in https://www.speedscope.app)"
        )
        samples = max(summary["samples"], 1)
        for title, key in (("self", "top_self"), ("inclusive", "top_total")):
            rows = [
                [f"{row['samples'] * 100 / samples:5.1f}%", _short(row["function"])]
                for row in summary[key]
            ]
            out.append(f"top functions by {title} time (share of GIL-holding samples):")
            out.append(table(["share", "function"], rows))
    return "\n".join(out)


_LONG_PATH = re.compile(r"\((?:[^()]*/site-packages/|[^()]*/lib/python3\.\d+/|" + _REPO + r")")


def _short(function: str, limit: int = 120) -> str:
    """Trim site-packages, stdlib and repository prefixes from the paths in the table."""
    function = _LONG_PATH.sub("(", function)
    return function if len(function) <= limit else function[: limit - 3] + "..."
