"""Google API errors <-> canonical errors.

Shape: ``{"error": {"code": <http status>, "message": ..., "status": "<RPC code>",
"details": [...]}}`` (also seen wrapped in a one-element array). Reading:

* ``message`` as is; ``code`` = the RPC status name (``RESOURCE_EXHAUSTED``...);
  ``type`` from the HTTP status (400 ``invalid_request_error``, 401
  ``authentication_error``, 403 ``permission_error``, 404 ``not_found_error``, 413
  ``request_too_large``, 429 ``rate_limit_error``, 503 ``overloaded_error``, 504
  ``timeout_error``, other 5xx ``api_error``); ``param`` = the first
  ``BadRequest.fieldViolations[].field``;
* ``retry_after`` = the ``retry-after`` header, else ``RetryInfo.retryDelay``
  rounded up to whole seconds (``"37.2s"`` -> ``"38"``);
* any other body (HTML from a load balancer, nothing) -> a message quoting at
  most 200 characters of it.

Writing: ``code`` = the status the client gets (529 -> 503), ``status`` = the
canonical ``code`` when it is an RPC status name, else the name for the HTTP
status (400 ``INVALID_ARGUMENT``, 401 ``UNAUTHENTICATED``, 403
``PERMISSION_DENIED``, 404 ``NOT_FOUND``, 409 ``ABORTED``, 429
``RESOURCE_EXHAUSTED``, 499 ``CANCELLED``, 500 ``INTERNAL``, 501 ``UNIMPLEMENTED``,
502/503/529 ``UNAVAILABLE``, 504 ``DEADLINE_EXCEEDED``, other 4xx
``FAILED_PRECONDITION``, other 5xx ``INTERNAL``); ``details`` carry an
``ErrorInfo`` with the proxy's own code, a ``BadRequest`` field violation for
``param`` and a ``RetryInfo`` for a ``retry_after`` in seconds.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from extproc.canonical import CanonicalError
from extproc.codecs.gemini.wire import decoder, encoder

_TYPE_PREFIX = "type.googleapis.com/google.rpc."
RPC_STATUSES = frozenset(
    {
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
    }
)
_STATUS_BY_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    529: "UNAVAILABLE",
}
_TYPE_BY_HTTP = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")


def client_status(status: int) -> int:
    """Gemini clients know 503 for overload, not Anthropic's 529."""
    return 503 if status == 529 else status


def rpc_status(status: int) -> str:
    if status in _STATUS_BY_HTTP:
        return _STATUS_BY_HTTP[status]
    return "FAILED_PRECONDITION" if status < 500 else "INTERNAL"


def error_type(status: int) -> str:
    return _TYPE_BY_HTTP.get(status, "api_error" if status >= 500 else "invalid_request_error")


def decode_error(status: int, body: bytes, retry_after: str | None) -> CanonicalError:
    """Read an error answer; tolerate anything."""
    try:
        data: Any = decoder.decode(body) if body else None
    except msgspec.DecodeError:
        data = None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    message = ""
    code: str | None = None
    param: str | None = None
    if isinstance(err, dict):
        message = str(err.get("message") or "")
        if isinstance(err.get("status"), str) and err["status"]:
            code = err["status"]
        details = err.get("details")
        if isinstance(details, list):
            param = _field_violation(details)
            if retry_after is None:
                retry_after = _retry_delay(details)
    elif isinstance(err, str):
        message = err
    if not message:
        snippet = body[:200].decode("utf-8", "replace").strip()
        message = f"upstream answered HTTP {status}" + (f": {snippet}" if snippet else "")
    return CanonicalError(
        status=status,
        message=message,
        type=error_type(status),
        code=code,
        param=param,
        retry_after=retry_after,
    )


def _detail(details: list[Any], kind: str) -> dict[str, Any] | None:
    for detail in details:
        if isinstance(detail, dict) and detail.get("@type") == _TYPE_PREFIX + kind:
            return detail
    return None


def _field_violation(details: list[Any]) -> str | None:
    bad = _detail(details, "BadRequest")
    violations = bad.get("fieldViolations") if bad else None
    if isinstance(violations, list) and violations and isinstance(violations[0], dict):
        field = violations[0].get("field")
        return field if isinstance(field, str) else None
    return None


def _retry_delay(details: list[Any]) -> str | None:
    info = _detail(details, "RetryInfo")
    delay = info.get("retryDelay") if info else None
    match = _DELAY.match(delay) if isinstance(delay, str) else None
    return str(math.ceil(float(match.group(1)))) if match else None


def error_body(error: CanonicalError) -> dict[str, Any]:
    status = client_status(error.status)
    code = error.code
    details: list[dict[str, Any]] = []
    if code and code not in RPC_STATUSES:
        details.append({"@type": _TYPE_PREFIX + "ErrorInfo", "reason": code, "domain": "proxy"})
    if error.param:
        violation = {"field": error.param, "description": error.message}
        details.append({"@type": _TYPE_PREFIX + "BadRequest", "fieldViolations": [violation]})
    if error.retry_after and _SECONDS.match(error.retry_after):
        details.append({"@type": _TYPE_PREFIX + "RetryInfo", "retryDelay": f"{error.retry_after}s"})
    body: dict[str, Any] = {
        "code": status,
        "message": error.message,
        "status": code if code in RPC_STATUSES else rpc_status(status),
    }
    if details:
        body["details"] = details
    return {"error": body}


def encode_error(error: CanonicalError) -> bytes:
    return encoder.encode(error_body(error))
