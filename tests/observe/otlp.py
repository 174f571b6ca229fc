"""Tiny OTLP trace collectors for tests: OTLP/HTTP (the proxy's exporter) and OTLP/gRPC (Envoy's).

Both keep every span they receive, flattened into :class:`CollectedSpan`, and answer
success. They listen on 127.0.0.1 and are stopped by the test that started them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.harness import wait_for

__all__ = ["CollectedSpan", "OtlpGrpcCollector", "OtlpHttpCollector"]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


@dataclass(frozen=True)
class CollectedSpan:
    """One received span, ids as lower-case hex (``parent_id`` empty for a root)."""

    service_name: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    #: The OTLP ``Span.SpanKind`` number (1 internal, 2 server, 3 client).
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


def flatten(request: ExportTraceServiceRequest) -> list[CollectedSpan]:
    out = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                out.append(
                    CollectedSpan(
                        service_name=str(resource.get("service.name", "")),
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        resource=resource,
                    )
                )
    return out


class _Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[CollectedSpan] = []
        #: How many export requests arrived (and their paths, for OTLP/HTTP).
        self.paths: list[str] = []

    def add(self, path: str, request: ExportTraceServiceRequest) -> None:
        spans = flatten(request)
        with self._lock:
            self.paths.append(path)
            self._spans.extend(spans)

    def spans(self, trace_id: str | None = None) -> list[CollectedSpan]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def wait(
        self, predicate: Callable[[list[CollectedSpan]], bool], timeout: float = 10.0
    ) -> list[CollectedSpan]:
        wait_for(lambda: predicate(self.spans()), timeout, what="spans at the collector")
        return self.spans()


class OtlpHttpCollector(_Store):
    """``POST /v1/traces`` (protobuf) on a free port; ``endpoint`` is ``http://127.0.0.1:PORT``."""

    def __init__(self) -> None:
        super().__init__()
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                store.add(self.path, ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class OtlpGrpcCollector(_Store):
    """The OTLP ``TraceService`` over gRPC on a free port; ``address`` is ``127.0.0.1:PORT``."""

    def __init__(self) -> None:
        super().__init__()
        store = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(
                self, request: ExportTraceServiceRequest, context: Any
            ) -> trace_service_pb2.ExportTraceServiceResponse:
                store.add("Export", request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._server)  # type: ignore[no-untyped-call]
        self._port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._port}"

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(None)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
