"""The grpc.aio server that hosts the ext_proc servicer.

Beside ext_proc it serves Envoy's attempt log and the standard gRPC health
service, and counts the open ext_proc streams (:class:`ServingState`) so that a
stopping process can let them finish.
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2_grpc  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from extproc.processing import App
from extproc.processing.factory import Processors
from extproc.processing.observer import CaptureSink
from extproc.server.attempt_log import AttemptLogService
from extproc.server.servicer import ExternalProcessor
from extproc.server.serving_state import ServingState

__all__ = ["max_message_bytes", "start_grpc_server"]

log = logging.getLogger(__name__)

#: Headroom over the largest body for headers and protobuf framing.
_MESSAGE_SLACK = 1024 * 1024


def max_message_bytes(app: App) -> int:
    """Largest gRPC message either side may send: a whole body plus headers."""
    limits = app.config.limits
    return max(limits.max_request_bytes, limits.max_response_bytes) * 2 + _MESSAGE_SLACK


async def start_grpc_server(
    app: App,
    host: str,
    port: int,
    capture_sink: CaptureSink | None = None,
    state: ServingState | None = None,
    *,
    processors: Processors | None = None,
) -> grpc.aio.Server:
    """Start serving ext_proc on ``host:port``; raise OSError if it cannot bind.

    This is where the per-stream processors are wired: ``capture_sink`` receives
    what the roles (or the observer filters) record when capture is on.
    ``state`` (a fresh one when None) holds the health status, SERVING once
    this returns, and counts the open ext_proc streams. ``processors``: the
    per-stream factory to serve (the config reload installs new applications
    in it); built from ``app`` when None.
    """
    state = state if state is not None else ServingState()
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
        ExternalProcessor(processors or Processors(app, capture_sink), state), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(state.health, server)
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
    await state.mark_serving()
    log.info("ext_proc gRPC server listening on %s", address)
    return server
