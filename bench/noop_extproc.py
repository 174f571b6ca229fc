"""A no-op ext_proc server: the floor any ext_proc service in Python pays on the proxy's path.

``python -m bench.noop_extproc --port P --cluster instance/a [--route /sse/=instance/s]
[--stream-mode full_duplex]``

A grpc.aio server with the same generated protos as the proxy (``extproc/_pb``) and the same
server options. Every ``ProcessingRequest`` gets the minimal reply for its kind, so Envoy
continues unchanged, with the only work the proxy's own Envoy config makes unavoidable:

* ROUTER role, request headers: a header mutation setting the cluster header the proxy's
  routes match on (:data:`extproc.internalapi.CLUSTER_HEADER`) and ``clear_route_cache``, as
  the proxy does (the cluster by ``:path`` prefix, ``--route PREFIX=CLUSTER``, else
  ``--cluster``); for paths under an ``--alike PREFIX``, also the mark the proxy sets on
  requests to a pool whose hosts all get the same request (Envoy then skips the UPSTREAM
  role's stream, as for the proxy);
* ROUTER role, response headers of a ``200 text/event-stream``: the body mode the proxy
  switches a stream to (``--stream-mode``: ``full_duplex``, the default proxy with answer
  stages, or ``streamed``), ``content-length`` removed as the proxy does; in full-duplex mode
  each body chunk is sent back unchanged (Envoy forwards only what the processor returns);
* everything else (request body, UPSTREAM role messages, a JSON answer's body): an empty
  reply of the message's kind.

The role is told apart as the proxy does it: only the UPSTREAM filter sends attributes on
its first message. Envoy's attempt log (OTLP ``LogsService.Export``) is answered and
dropped. The server counts streams and messages; it prints the counts when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from extproc._pb.envoy.config.core.v3 import base_pb2
from extproc._pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from extproc.internalapi import CLUSTER_HEADER, HOSTS_ALIKE_HEADER

__all__ = ["NoopProcessor", "main", "serve"]

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_STREAMED = processing_mode_pb2.ProcessingMode.STREAMED
_FULL_DUPLEX = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED
_SEND = processing_mode_pb2.ProcessingMode.SEND
#: The proxy's limit for a small config: a whole body plus headers, both ways.
_MESSAGE_LIMIT = 64 * 1024 * 1024


def _header(header_map: Any, name: str) -> str:
    for header in header_map.headers:
        if header.key == name:
            raw = header.raw_value
            return raw.decode("utf-8", "replace") if raw else str(header.value)
    return ""


class NoopProcessor(pb_grpc.ExternalProcessorServicer):
    """Answers every message with the minimal reply; see the module docstring."""

    def __init__(
        self,
        cluster: str,
        routes: Sequence[tuple[str, str]],
        stream_mode: str,
        alike: Sequence[str] = (),
    ) -> None:
        self.cluster = cluster
        self.routes = list(routes)
        self.alike = tuple(alike)
        self.full_duplex = stream_mode == "full_duplex"
        self.streams = 0
        self.messages = 0

    def _cluster_for(self, path: str) -> str:
        for prefix, cluster in self.routes:
            if path.startswith(prefix):
                return cluster
        return self.cluster

    async def Process(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        self.streams += 1
        upstream: bool | None = None
        duplex = False
        async for request in request_iterator:
            self.messages += 1
            kind = request.WhichOneof("request")
            if upstream is None:
                upstream = bool(request.attributes)
            response = pb.ProcessingResponse()
            if upstream:
                getattr(response, kind).SetInParent()
            elif kind == "request_headers":
                common = response.request_headers.response
                option = common.header_mutation.set_headers.add()
                option.header.key = CLUSTER_HEADER
                path = _header(request.request_headers.headers, ":path")
                option.header.raw_value = self._cluster_for(path).encode()
                option.append_action = _OVERWRITE
                if self.alike and path.startswith(self.alike):
                    mark = common.header_mutation.set_headers.add()
                    mark.header.key = HOSTS_ALIKE_HEADER
                    mark.header.raw_value = b"1"
                    mark.append_action = _OVERWRITE
                common.clear_route_cache = True
            elif kind == "response_headers":
                headers = request.response_headers.headers
                if _header(headers, ":status") == "200" and _header(
                    headers, "content-type"
                ).startswith("text/event-stream"):
                    mutation = response.response_headers.response.header_mutation
                    mutation.remove_headers.extend(["content-length", "content-encoding"])
                    if self.full_duplex:
                        duplex = True
                        response.mode_override.response_body_mode = _FULL_DUPLEX
                        response.mode_override.response_trailer_mode = _SEND
                    else:
                        response.mode_override.response_body_mode = _STREAMED
                else:
                    response.response_headers.SetInParent()
            elif kind == "response_body" and duplex:
                streamed = response.response_body.response.body_mutation.streamed_response
                streamed.body = request.response_body.body
                streamed.end_of_stream = request.response_body.end_of_stream
            else:
                getattr(response, kind).SetInParent()
            yield response


class NoopLogs(logs_service_pb2_grpc.LogsServiceServicer):
    """Envoy's attempt log: answered, dropped."""

    def __init__(self) -> None:
        self.exports = 0

    async def Export(self, request: Any, context: Any) -> Any:
        self.exports += 1
        return logs_service_pb2.ExportLogsServiceResponse()


async def serve(
    host: str,
    port: int,
    cluster: str,
    routes: Sequence[tuple[str, str]],
    stream_mode: str,
    alike: Sequence[str] = (),
) -> None:
    """Serve until SIGTERM or SIGINT; print the message counts then."""
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
            ("grpc.max_send_message_length", _MESSAGE_LIMIT),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
    )
    processor = NoopProcessor(cluster, routes, stream_mode, alike)
    logs = NoopLogs()
    pb_grpc.add_ExternalProcessorServicer_to_server(processor, server)  # type: ignore[no-untyped-call]
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(logs, server)  # type: ignore[no-untyped-call]
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    print(f"noop ext_proc listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1.0)
    print(
        f"noop ext_proc: {processor.streams} streams, {processor.messages} messages, "
        f"{logs.exports} log exports",
        flush=True,
    )


def _route(text: str) -> tuple[str, str]:
    prefix, sep, cluster = text.partition("=")
    if not sep or not prefix.startswith("/") or not cluster:
        raise argparse.ArgumentTypeError(f"expected PREFIX=CLUSTER, got {text!r}")
    return prefix, cluster


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noop_extproc", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cluster", required=True, help="the cluster header's default value")
    parser.add_argument(
        "--route",
        type=_route,
        action="append",
        default=[],
        help="PREFIX=CLUSTER: requests whose :path starts with PREFIX go to CLUSTER",
    )
    parser.add_argument("--stream-mode", choices=["full_duplex", "streamed"], default="full_duplex")
    parser.add_argument(
        "--alike",
        action="append",
        default=[],
        help="PREFIX: requests under it go to a pool whose hosts get the same request",
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(args.host, args.port, args.cluster, args.route, args.stream_mode, args.alike)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
