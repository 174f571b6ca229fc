"""Where the proxy's own CPU goes on the floor's setup: py-spy on one extproc under wrk.

``python -m bench.floor_profile [--variant all|proxy] [--kind json|stream|pool]
[--load C] [--seconds S] [--top N] [--native]``

The same direct_response upstream and proxy configs as :mod:`bench.floor` (``all``: every
agent stage on); wrk drives one kind of request at one load while ``py-spy record --gil``
samples the extproc process. Prints the functions with the most samples (self and
inclusive) and writes the speedscope file under ``bench/results/`` for a closer look.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.floor import (
    CHAT_PATH,
    KINDS,
    PROXY_MODELS,
    all_stages,
    backend_config,
    check_answer,
    request_headers,
    start_upstream,
)
from bench.load import chat_body
from bench.procs import REPO, find_envoy_binary, start_proxy
from bench.profiling import PySpyRecorder, find_py_spy, summarize_speedscope
from bench.wrk import find_wrk, run_wrk, write_script

__all__ = ["main"]


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_profile", description=__doc__)
    parser.add_argument("--variant", choices=("all", "proxy"), default="all")
    parser.add_argument("--kind", choices=KINDS, default="json")
    parser.add_argument("--load", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--seconds", type=float, default=10.0, help="sampled seconds (10)")
    parser.add_argument("--top", type=int, default=25, help="functions listed (25)")
    parser.add_argument("--native", action="store_true", help="C frames too (slow)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    find_wrk()
    py_spy = find_py_spy()
    if py_spy is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    envoy_binary = find_envoy_binary()
    out = REPO / "bench" / "results" / f"floor-profile-{args.variant}-{args.kind}.speedscope"
    with (
        tempfile.TemporaryDirectory(prefix="bench-floor-profile-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        logs = Path(tmp)
        _upstream, ports = start_upstream(stack, logs, envoy_binary)
        config = backend_config(ports)
        if args.variant == "all":
            config = all_stages(config, logs)
        proxy, _envoy_pid = start_proxy(stack, logs, config, name=f"proxy-{args.variant}")
        body = chat_body(PROXY_MODELS[args.kind], stream=args.kind == "stream")
        problem = "not tried"
        for _attempt in range(50):  # health checks may still be settling
            problem = check_answer(config["port"], CHAT_PATH, args.kind, body) or ""
            if not problem:
                break
            time.sleep(0.1)
        if problem:
            print(f"validation failed: {problem}", file=sys.stderr)
            return 2
        script = write_script(logs, args.kind, body, request_headers(args.kind))
        url = f"http://127.0.0.1:{config['port']}{CHAT_PATH}"
        run_wrk(url, script, connections=args.load, seconds=2)  # warm-up
        with PySpyRecorder(py_spy, proxy.pid, out, native=args.native):
            result = run_wrk(url, script, connections=args.load, seconds=args.seconds)
    summary = summarize_speedscope(out, 500, top=args.top)
    requests = result.requests
    print(
        f"{args.variant} {args.kind} c={args.load}: {result.rps:.0f} req/s, p50 "
        f"{result.p50_ms:.3f} ms; {summary.samples} GIL samples at 500 Hz = "
        f"{summary.samples / 500 * 1000 / max(requests, 1):.3f} ms of Python per request"
    )
    for title, rows in (("self", summary.top_self), ("inclusive", summary.top_total)):
        print(f"\n{title}:")
        for name, count in rows:
            print(f"  {count / summary.samples:6.1%}  {name}")
    print(f"\nwrote {out}")
    (out.with_suffix(".json")).write_text(json.dumps(summary.as_json(), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
