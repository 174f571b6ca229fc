"""The proxy's own CPU per request, without gRPC or Envoy: the ext_proc messages of one
request fed to the servicer's dispatch in-process, as Envoy would send them.

``python -m bench.exchange_cost [--variant proxy|all] [--kind json|stream] [--requests N]
[--profile]``

Builds the application from the same config as :mod:`bench.floor` (metrics on, usage
accounting to a temporary database), then for each request: request headers, request body,
response headers (with the chosen host's metadata, as Envoy's ``response_attributes`` carry
it), response body (the floor upstream's answer, JSON or one SSE chunk), each parsed from
its protobuf bytes and each reply serialized, as on the wire. Prints µs per request (median
of five batches) and per message kind; ``--profile`` adds cProfile's top functions.

This is the figure the floor bench's proxy - floor difference is made of, minus gRPC's own
per-message cost; it is steady enough to compare two commits on a busy machine.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.floor import (
    CHAT_PATH,
    PROXY_MODELS,
    _json_answer,
    _sse_answer,
    all_stages,
    backend_config,
    request_headers,
)
from bench.load import chat_body
from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc.config import build_config
from extproc.internalapi import EXT_PROC_FILTER, HOST_METADATA_ATTRIBUTE
from extproc.observe.telemetry import Telemetry
from extproc.processing import App
from extproc.processing.factory import Processors
from extproc.server.servicer import _dispatch, to_response

__all__ = ["main"]

KINDS = ("request_headers", "request_body", "response_headers", "response_body")


def _headers(message: Any, pairs: dict[str, str]) -> None:
    for key, value in pairs.items():
        header = message.headers.headers.add()
        header.key = key
        header.raw_value = value.encode()


def _messages(kind: str, index: int) -> list[bytes]:
    """One request's ProcessingRequests, serialized."""
    model = PROXY_MODELS[kind]
    body = chat_body(model, stream=kind == "stream")
    first = pb.ProcessingRequest()
    _headers(
        first.request_headers,
        {
            ":method": "POST",
            ":path": CHAT_PATH,
            ":authority": "127.0.0.1",
            ":scheme": "http",
            "x-request-id": f"00000000-0000-4000-8000-{index:012d}",
            "content-length": str(len(body)),
            **request_headers(kind),
        },
    )
    second = pb.ProcessingRequest()
    second.request_body.body = body
    second.request_body.end_of_stream = True
    third = pb.ProcessingRequest()
    stream = kind == "stream"
    answer = (_sse_answer() if stream else _json_answer()).encode()
    _headers(
        third.response_headers,
        {
            ":status": "200",
            "content-type": "text/event-stream" if stream else "application/json",
            "x-envoy-upstream-service-time": "0",
            "x-envoy-attempt-count": "1",
            **({} if stream else {"content-length": str(len(answer))}),
        },
    )
    instance = "stream" if stream else "openai"
    fields = f'fields {{ key: "instance" value {{ string_value: "{instance}" }} }} '
    fields += 'fields { key: "schema" value { string_value: "openai-chat" } }'
    third.attributes[EXT_PROC_FILTER].fields[
        HOST_METADATA_ATTRIBUTE
    ].string_value = f'filter_metadata {{ key: "llm" value {{ {fields} }} }}'
    fourth = pb.ProcessingRequest()
    fourth.response_body.body = answer
    fourth.response_body.end_of_stream = True
    return [m.SerializeToString() for m in (first, second, third, fourth)]


def _one(processors: Processors, wire: Sequence[bytes], spent: dict[str, float]) -> None:
    processor = processors.router(())
    for kind, data in zip(KINDS, wire, strict=True):
        t0 = time.perf_counter()
        request = pb.ProcessingRequest.FromString(data)
        action = _dispatch(processor, request.WhichOneof("request"), request)
        assert not hasattr(action, "__await__"), "an async stage: not measured here"
        to_response(kind, action).SerializeToString()
        spent[kind] += time.perf_counter() - t0
    processor.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.exchange_cost", description=__doc__)
    parser.add_argument("--variant", choices=("proxy", "all"), default="proxy")
    parser.add_argument("--kind", choices=("json", "stream"), default="json")
    parser.add_argument("--requests", type=int, default=4000, help="per batch (4000)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-exchange-") as tmp:
        raw = backend_config([1, 2])
        if args.variant == "all":
            raw = all_stages(raw, Path(tmp))
        raw["usage"] = {"database": f"sqlite:///{tmp}/usage.db"}
        raw["metrics"] = {"port": 0}
        config = build_config(raw, env={})
        telemetry = Telemetry.from_config(config)
        app = App(config, telemetry)
        processors = Processors(app)
        wires = [_messages(args.kind, i) for i in range(args.requests)]
        # The answer must translate: check one request's replies before timing.
        probe = processors.router(())
        for kind, data in zip(KINDS, wires[0], strict=True):
            request = pb.ProcessingRequest.FromString(data)
            reply = to_response(kind, _dispatch(probe, kind, request))  # type: ignore[arg-type]
            if reply.WhichOneof("response") != kind:
                raise SystemExit(f"{kind}: unexpected reply {reply}")
        probe.close()
        for wire in wires[:200]:  # warm-up
            _one(processors, wire, dict.fromkeys(KINDS, 0.0))
        batches: list[dict[str, float]] = []
        profiler = cProfile.Profile() if args.profile else None
        for _batch in range(5):
            spent = dict.fromkeys(KINDS, 0.0)
            if profiler is not None:
                profiler.enable()
            for wire in wires:
                _one(processors, wire, spent)
            if profiler is not None:
                profiler.disable()
            batches.append(spent)
        if telemetry.usage is not None:
            telemetry.usage.close()
    per = {k: statistics.median(b[k] for b in batches) / args.requests * 1e6 for k in KINDS}
    total = statistics.median(sum(b.values()) for b in batches) / args.requests * 1e6
    print(
        f"{args.variant} {args.kind}: {total:.1f} µs per request ("
        + ", ".join(f"{k} {v:.1f}" for k, v in per.items())
        + ")"
    )
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(35)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
