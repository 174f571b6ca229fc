"""The attempt log: every upstream attempt's status, from Envoy, for the health board.

Envoy's router writes one OpenTelemetry log record per upstream attempt (its
``upstream_log``, see ``_attempt_log`` in extproc/envoy_config/bootstrap.py)
and streams them in batches to this LogsService on the extproc's own gRPC
port. Each record names the instance (the host's ``llm`` metadata), the
status and the ``retry-after`` header; the health board
(:mod:`extproc.routing.health`) learns from every attempt, retried ones
included, without an ext_proc message on the request path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

if TYPE_CHECKING:
    from extproc.routing.health import HealthBoard

log = logging.getLogger(__name__)

#: Envoy writes "-" for a field it has no value for.
_NONE = "-"


class AttemptLogService(logs_service_pb2_grpc.LogsServiceServicer):
    """Receives Envoy's attempt records and reports each to the health board."""

    def __init__(self, health: HealthBoard) -> None:
        self.health = health
        self.records = 0

    async def Export(self, request: Any, context: Any) -> Any:
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    self.records += 1
                    self._report({a.key: a.value.string_value for a in record.attributes})
        return logs_service_pb2.ExportLogsServiceResponse()

    def _report(self, fields: dict[str, str]) -> None:
        instance = fields.get("instance", _NONE)
        try:
            status = int(fields.get("status", "0"))
        except ValueError:
            return
        if instance in ("", _NONE) or status <= 0:
            return  # no host chosen, or no answer (reset, timeout: Envoy's business)
        retry_after = fields.get("retry_after")
        self.health.observe(
            instance,
            status,
            retry_after=None if retry_after in (None, "", _NONE) else retry_after,
        )


__all__ = ["AttemptLogService"]
