"""Model selectors: how a request (or config) names what should answer it.

Grammar (this module parses; :mod:`extproc.routing.resolver` decides)::

    selector   := target [ "?" params ]
    target     := backend ":" model      (":" before the first "/", if any)
                | model                  ("gpt-4o", "vendor/model", "vendor/model:variant")
    backend    := family | family "." N  ("openai", "openai.1")
    params     := URI query (key=value&...), percent-decoded; values that parse
                  as JSON scalars (numbers, true/false/null) become those

Examples: ``openai:gpt-4o``, ``openai.1:gpt-4o``, ``gpt-4o``,
``meta-llama/llama-3-70b``, ``qwen/qwen3:free`` (model only),
``openrouter:qwen/qwen3:free`` (backend ``openrouter``),
``gpt-4o?temperature=0.5&max_tokens=100``.

The routing operators ``|`` (failover), ``^`` (weighted) and ``!`` (racing)
are reserved; a literal ``!`` in a parameter value is written ``%21``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from extproc.errors import InvalidRequest

_OPERATORS = "|^!"


@dataclass(frozen=True)
class Selector:
    model: str
    backend: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        head = f"{self.backend}:{self.model}" if self.backend else self.model
        return head + (
            "?" + "&".join(f"{k}={v}" for k, v in self.params.items()) if self.params else ""
        )


def parse_selector(text: str) -> Selector:
    """Parse ``text`` or raise :class:`InvalidRequest` saying what is wrong."""
    raw = text.strip()
    if not raw:
        raise InvalidRequest("the model selector is empty", param="model", code="invalid_model")
    head, _, query = raw.partition("?")
    for op in _OPERATORS:
        if op in head:
            raise InvalidRequest(
                f"model selector {raw!r} uses the routing operator {op!r}, which this proxy "
                "does not support yet",
                param="model",
                code="invalid_model",
            )
    backend: str | None = None
    model = head
    colon, slash = head.find(":"), head.find("/")
    if colon >= 0 and (slash < 0 or colon < slash):
        backend, model = head[:colon], head[colon + 1 :]
        if not backend:
            raise InvalidRequest(
                f"model selector {raw!r} has an empty backend before ':'",
                param="model",
                code="invalid_model",
            )
    if not model:
        raise InvalidRequest(
            f"model selector {raw!r} names no model", param="model", code="invalid_model"
        )
    return Selector(model=model, backend=backend, params=_parse_params(query, raw))


def _parse_params(query: str, raw: str) -> dict[str, Any]:
    if not query:
        return {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InvalidRequest(
            f"model selector {raw!r} has malformed parameters after '?'",
            param="model",
            code="invalid_model",
        ) from None
    return {key: _scalar(value) for key, value in pairs}


def _scalar(value: str) -> Any:
    if value in {"true", "false"}:
        return value == "true"
    if value == "null":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value
