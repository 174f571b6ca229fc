"""The grpc.aio server that hosts the ext_proc servicer."""

from __future__ import annotations

import logging

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from extproc.processing import App
from extproc.processing.factory import Processors
from extproc.processing.observer import CaptureSink
from extproc.server.attempt_log import AttemptLogService
from extproc.server.servicer import ExternalProcessor

log = logging.getLogger(__name__)

#: Headroom over the largest body for headers and protobuf framing.
_MESSAGE_SLACK = 1024 * 1024


def max_message_bytes(app: App) -> int:
    """Largest gRPC message either side may send: a whole body plus headers."""
    limits = app.config.limits
    return max(limits.max_request_bytes, limits.max_response_bytes) * 2 + _MESSAGE_SLACK


async def start_grpc_server(
    app: App, host: str, port: int, capture_sink: CaptureSink | None = None
) -> grpc.aio.Server:
    """Start serving ext_proc on ``host:port``; raise OSError if it cannot bind.

    This is where the per-stream processors are wired: ``capture_sink`` receives
    what the roles (or the observer filters) record when capture is on.
    """
    limit = max_message_bytes(app)
    server = grpc.aio.server(
        options=[
            # A stale second server must not silently share the port.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
    )
    pb_grpc.add_ExternalProcessorServicer_to_server(  # type: ignore[no-untyped-call]
        ExternalProcessor(Processors(app, capture_sink)), server
    )
    # Envoy's attempt log (every upstream attempt's status) for the health board.
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        AttemptLogService(app.health), server
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {address} (in use?)")
    await server.start()
    log.info("ext_proc gRPC server listening on %s", address)
    return server
