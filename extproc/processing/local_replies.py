"""Envoy's own replies (no upstream answered) as canonical errors."""

from __future__ import annotations

from extproc.canonical import CanonicalError

__all__ = ["local_reply_error"]

_LOCAL_REPLIES = {
    "no healthy upstream": (
        "no backend is available for this model: every target is failing or unhealthy"
    ),
    "upstream request timeout": "the backend did not answer in time",
    "stream timeout": "the backend stopped sending (idle timeout)",
}


def local_reply_error(status: int, body: bytes, retry_after: str | None) -> CanonicalError:
    """An Envoy local reply (no upstream host answered) as a canonical error."""
    text = body.decode("utf-8", "replace").strip()
    message = _LOCAL_REPLIES.get(text)
    if message is None:
        if text.startswith("upstream connect error"):
            message = f"the backend could not be reached ({text})"
        elif status == 413:
            message = "the request body is larger than the proxy accepts"
        else:
            message = text or f"the proxy answered HTTP {status}"
    kinds = {
        400: ("invalid_request_error", "invalid_request"),
        404: ("invalid_request_error", "not_found"),
        413: ("invalid_request_error", "request_too_large"),
        429: ("rate_limit_error", "rate_limit_exceeded"),
        503: ("service_unavailable", "no_backend_available"),
        504: ("timeout_error", "upstream_timeout"),
    }
    kind, code = kinds.get(status, ("api_error", "proxy_error"))
    return CanonicalError(
        status=status, message=message, type=kind, code=code, retry_after=retry_after
    )
