"""Errors the proxy raises, as one hierarchy.

Every error carries the HTTP status and a stable machine-readable ``code``;
codecs turn it into the client's own dialect (OpenAI, Anthropic, Gemini).
Messages never contain credentials.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Base class: an error that becomes an HTTP answer to the client."""

    status: int = 500
    error_type: str = "server_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = dict(headers or {})


class InvalidRequest(ProxyError):
    """400: the request is malformed or violates the protocol."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(ProxyError):
    """401: missing or wrong proxy key (multi-user mode)."""

    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ProxyError):
    """403: the proxy's policy forbids this (a blocked command, tool or model)."""

    status = 403
    error_type = "permission_error"
    code = "forbidden"


class TooManyAttempts(ProxyError):
    """429: too many failed authentication attempts; wait ``retry-after`` seconds."""

    status = 429
    error_type = "rate_limit_error"
    code = "too_many_auth_failures"


class DuplicateRequest(ProxyError):
    """429: the same request of the same session is in flight (or just failed)."""

    status = 429
    error_type = "rate_limit_error"
    code = "duplicate_request"


class LoopRefused(ProxyError):
    """409: the agent repeats the same tool call; the proxy stopped the loop."""

    status = 409
    error_type = "invalid_request_error"
    code = "tool_loop"


class NotFound(ProxyError):
    """404: unknown path, model, backend or instance."""

    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(ProxyError):
    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(ProxyError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class BackendUnavailable(ProxyError):
    """503: every backend that could answer is disabled or cooling down."""

    status = 503
    error_type = "server_error"
    code = "backend_unavailable"


class BackendRateLimited(ProxyError):
    """429: every backend that could answer is cooling down after a rate limit."""

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limited"


class ConfigError(Exception):
    """The configuration is invalid; raised at startup, never per request."""
