"""Shared Anthropic Messages vocabulary: stop reasons, usage, error types, tool ids and inputs.

Mapping rules (WIRE_FORMATS §5.5, §5.6, §5.10; docs/translation.md):

* ``stop_reason`` -> canonical finish: ``end_turn`` and ``stop_sequence`` -> ``stop``,
  ``max_tokens`` and ``model_context_window_exceeded`` -> ``length``, ``tool_use`` ->
  ``tool_calls``, ``refusal`` -> ``content_filter``, ``pause_turn`` and anything unknown ->
  ``other``. Back: ``stop`` -> ``stop_sequence`` when a stop sequence is known, else
  ``end_turn``; ``length`` -> ``max_tokens``; ``tool_calls`` -> ``tool_use``;
  ``content_filter`` -> ``refusal``; ``error``/``other`` -> ``end_turn``. A native value kept
  from an Anthropic answer wins when it maps to the same canonical reason.
* Usage: canonical input = ``input_tokens + cache_creation_input_tokens +
  cache_read_input_tokens``, cached = cache reads, cache writes = cache creation, reasoning =
  ``output_tokens_details.thinking_tokens``. Back: ``input_tokens`` = input - cached - writes.
* Error ``type`` by status: 401 authentication, 402 billing, 403 permission, 404 not found,
  413 ``request_too_large``, 429 rate limit, 503/529 overloaded, 504 timeout; otherwise a known
  Anthropic type is kept, else ``invalid_request_error`` (4xx) or ``api_error`` (5xx).
* Tool ids sent to Anthropic (or shown to its clients) match ``^[a-zA-Z0-9_-]+$``: any other
  character becomes ``_`` (deterministic, so calls and results still pair up).
* Tool arguments (JSON text) -> ``input`` object: empty -> ``{}``; not valid JSON (or, for
  another protocol's call, not an object) -> ``{"_raw_arguments": text}``.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from extproc.canonical import CanonicalError, FinishReason, Usage

PROTOCOL = "anthropic"
PATH = "/messages"

#: ``CanonicalRequest.hints`` keys (same-protocol fidelity only).
HINT_BETA = "anthropic-beta"
HINT_VERSION = "anthropic-version"
HINT_THINKING_TYPE = "thinking_type"
FORWARDED_HEADERS = (HINT_BETA, HINT_VERSION)

#: ``CanonicalResponse.extra`` key holding Anthropic-only answer fields.
EXTRA_KEY = "anthropic"

encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder()

_FINISH_IN: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "other",
}
_FINISH_OUT: dict[str, str] = {
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
    "other": "end_turn",
}

ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "timeout_error",
        "api_error",
        "overloaded_error",
    }
)
_TYPE_BY_STATUS = {
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


# -- stop reasons --------------------------------------------------------------------------


def finish_in(value: Any) -> FinishReason | None:
    """Canonical finish reason of an Anthropic ``stop_reason`` (None stays None)."""
    if value is None:
        return None
    return _FINISH_IN.get(str(value), "other")


def stop_reason_out(
    reason: FinishReason | None, stop_sequence: str | None, native: Any = None
) -> str:
    """Anthropic ``stop_reason`` for a canonical finish (``native``: the provider's own)."""
    if isinstance(native, str) and finish_in(native) == (reason or "stop"):
        return native
    if reason is None or reason == "stop":
        return "stop_sequence" if stop_sequence else "end_turn"
    return _FINISH_OUT.get(reason, "end_turn")


# -- usage ---------------------------------------------------------------------------------


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_in(raw: Any) -> Usage | None:
    """Canonical usage of an Anthropic ``usage`` object (cache reads/writes are input)."""
    if not isinstance(raw, dict):
        return None
    cache_read = _int(raw.get("cache_read_input_tokens"))
    cache_write = _int(raw.get("cache_creation_input_tokens"))
    details = raw.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=_int(raw.get("input_tokens")) + cache_read + cache_write,
        output_tokens=_int(raw.get("output_tokens")),
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=_int(thinking),
    )


def usage_out(usage: Usage) -> dict[str, Any]:
    """Anthropic ``usage`` of canonical usage (``input_tokens`` excludes cache reads/writes)."""
    out: dict[str, Any] = {
        "input_tokens": max(
            usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens, 0
        ),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


# -- errors --------------------------------------------------------------------------------


def error_type_for(status: int) -> str:
    """The Anthropic error type a status implies when nothing better is known."""
    fixed = _TYPE_BY_STATUS.get(status)
    if fixed is not None:
        return fixed
    return "api_error" if status >= 500 or status < 400 else "invalid_request_error"


def status_for(error_type: str) -> int:
    """The HTTP status an in-band error of ``error_type`` stands for."""
    return _STATUS_BY_TYPE.get(error_type, 500)


def client_error_type(error: CanonicalError) -> str:
    """The ``error.type`` an Anthropic client gets for ``error``."""
    fixed = _TYPE_BY_STATUS.get(error.status)
    if fixed is not None:
        return fixed
    if error.type in ERROR_TYPES:
        return error.type
    return error_type_for(error.status)


def error_body(error: CanonicalError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` for ``error``."""
    return {"type": "error", "error": {"type": client_error_type(error), "message": error.message}}


# -- tool ids and inputs -------------------------------------------------------------------


def tool_id(value: str) -> str:
    """A tool-use id Anthropic accepts (``^[a-zA-Z0-9_-]+$``); valid ids are unchanged."""
    return _BAD_ID_CHARS.sub("_", value) or "toolu_missing"


def tool_input(arguments: str, *, same: bool) -> Any:
    """The ``input`` object of a call whose arguments are ``arguments`` (JSON text)."""
    if not arguments.strip():
        return {}
    try:
        value = decoder.decode(arguments)
    except msgspec.DecodeError:
        return {"_raw_arguments": arguments}
    if not isinstance(value, dict) and not same:
        return {"_raw_arguments": arguments}
    return value


def tool_arguments(value: Any) -> str:
    """Canonical arguments (JSON text) of an Anthropic ``input`` value."""
    return encoder.encode(value).decode()


def rest(obj: dict[str, Any], known: frozenset[str]) -> dict[str, Any] | None:
    """The fields of ``obj`` outside ``known`` (kept as ``extra``), or None."""
    if obj.keys() <= known:
        return None
    return {k: v for k, v in obj.items() if k not in known}
