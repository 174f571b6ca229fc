"""Apply selector URI parameters (``gpt-4o?temperature=0.5``) to a request.

Known names set canonical fields, so they work for every backend schema;
other names are sent to the backend verbatim (``passthrough``), because the
user addressed them to that backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from extproc.canonical import CanonicalRequest, Reasoning
from extproc.errors import InvalidRequest


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"model parameter {name!r} must be a number", param="model")
    return float(value)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(
            f"model parameter {name!r} must be a non-negative integer", param="model"
        )
    return value


def _set_reasoning(req: CanonicalRequest, value: Any) -> None:
    req.reasoning = Reasoning(effort=str(value)) if req.reasoning is None else req.reasoning
    req.reasoning.effort = str(value)


def _max_tokens(field: str) -> Callable[[CanonicalRequest, Any], None]:
    def apply(req: CanonicalRequest, value: Any) -> None:
        req.max_output_tokens = _integer(field, value)
        # The user named the wire field: keep it for OpenAI-compatible targets.
        req.hints["max_tokens_field"] = field

    return apply


def _set_stop(req: CanonicalRequest, value: Any) -> None:
    req.stop = [str(value)]


_APPLY: dict[str, Callable[[CanonicalRequest, Any], None]] = {
    "temperature": lambda r, v: setattr(r, "temperature", _number("temperature", v)),
    "top_p": lambda r, v: setattr(r, "top_p", _number("top_p", v)),
    "presence_penalty": lambda r, v: setattr(r, "presence_penalty", _number("presence_penalty", v)),
    "frequency_penalty": lambda r, v: setattr(
        r, "frequency_penalty", _number("frequency_penalty", v)
    ),
    "seed": lambda r, v: setattr(r, "seed", _integer("seed", v)),
    "max_tokens": _max_tokens("max_tokens"),
    "max_completion_tokens": _max_tokens("max_completion_tokens"),
    "max_output_tokens": lambda r, v: setattr(
        r, "max_output_tokens", _integer("max_output_tokens", v)
    ),
    "reasoning_effort": _set_reasoning,
    "stop": _set_stop,
}

#: Fields a parameter may never override (they define the exchange itself).
_FORBIDDEN = frozenset({"model", "messages", "stream", "stream_options", "tools", "input"})


def apply_params(req: CanonicalRequest, params: Mapping[str, Any]) -> None:
    for name, value in params.items():
        if name in _FORBIDDEN:
            raise InvalidRequest(f"model parameter {name!r} cannot be overridden", param="model")
        setter = _APPLY.get(name)
        if setter is not None:
            setter(req, value)
        else:
            req.passthrough[name] = value
