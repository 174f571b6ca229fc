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

Routing expressions (:func:`parse_route`) join legs, each a selector with
optional annotations, with one operator::

    route      := leg ( op leg )*          one operator throughout
    op         := "|"   ordered failover    (a|b|c)
                | "^"   weighted choice     (a[weight=3]^b)
                | "!"   racing              (a!b, streaming requests)
    leg        := selector annotation*
    annotation := "[" item ("," item)* "]"
    item       := "weight=" N | "max_context=" N | "first"

A literal ``|``, ``^``, ``!``, ``[`` or ``]`` in a parameter value is
percent-encoded (``%7C``, ``%5E``, ``%21``, ``%5B``, ``%5D``).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal
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
                f"model selector {raw!r} uses the routing operator {op!r}, which is not "
                "allowed here (only in a model's routing expression)",
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


# -- routing expressions -------------------------------------------------------------

Operator = Literal["|", "^", "!"]
RouteKind = Literal["single", "failover", "weighted", "race"]
_KINDS: dict[str, RouteKind] = {"|": "failover", "^": "weighted", "!": "race"}
_ANNOTATIONS = re.compile(r"(\[[^\[\]]*\])+$")
MAX_LEGS = 16


@dataclass(frozen=True)
class Leg:
    """One alternative of a routing expression."""

    selector: Selector
    weight: int = 1
    #: Skip this leg when the request's estimated input tokens exceed this.
    max_context: int | None = None
    #: Take this leg for a conversation's first request.
    first: bool = False

    def __str__(self) -> str:
        notes = []
        if self.weight != 1:
            notes.append(f"weight={self.weight}")
        if self.max_context is not None:
            notes.append(f"max_context={self.max_context}")
        if self.first:
            notes.append("first")
        return str(self.selector) + (f"[{','.join(notes)}]" if notes else "")


@dataclass(frozen=True)
class Route:
    """A parsed routing expression: one leg, or legs joined by one operator."""

    kind: RouteKind
    legs: tuple[Leg, ...]

    def __str__(self) -> str:
        op = {"single": "", "failover": "|", "weighted": "^", "race": "!"}[self.kind]
        return op.join(str(leg) for leg in self.legs)


#: Expressions this long or shorter are parsed once (every request names one).
_CACHED_CHARS = 256


def parse_route(text: str) -> Route:
    """Parse a routing expression or raise :class:`InvalidRequest` saying what is wrong."""
    if len(text) <= _CACHED_CHARS:
        return _parse_route_cached(text)
    return _parse_route(text)


@functools.lru_cache(maxsize=1024)
def _parse_route_cached(text: str) -> Route:
    return _parse_route(text)


def _parse_route(text: str) -> Route:
    raw = text.strip()
    used = [op for op in _OPERATORS if op in raw]
    if len(used) > 1:
        raise InvalidRequest(
            f"model {raw!r} mixes the routing operators {' and '.join(used)}; use one per "
            "expression (name a route in routing.aliases to combine them)",
            param="model",
            code="invalid_model",
        )
    if not used:
        return Route("single", (_parse_leg(raw, raw, "single"),))
    op = used[0]
    kind = _KINDS[op]
    parts = raw.split(op)
    if len(parts) > MAX_LEGS:
        raise InvalidRequest(
            f"model {raw!r} has {len(parts)} legs; at most {MAX_LEGS}",
            param="model",
            code="invalid_model",
        )
    legs = tuple(_parse_leg(part, raw, kind) for part in parts)
    return Route(kind, legs)


def _parse_leg(text: str, raw: str, kind: RouteKind) -> Leg:
    part = text.strip()
    if not part:
        raise InvalidRequest(f"model {raw!r} has an empty leg", param="model", code="invalid_model")
    notes: dict[str, Any] = {}
    match = _ANNOTATIONS.search(part)
    if match is not None:
        for group in re.findall(r"\[([^\[\]]*)\]", match.group(0)):
            for item in group.split(","):
                _annotation(item.strip(), raw, kind, notes)
        part = part[: match.start()]
    if "[" in part or "]" in part:
        raise InvalidRequest(
            f"model {raw!r}: annotations go at the end of a leg, like 'model[weight=2]'",
            param="model",
            code="invalid_model",
        )
    return Leg(parse_selector(part), **notes)


def _annotation(item: str, raw: str, kind: RouteKind, notes: dict[str, Any]) -> None:
    name, sep, value = item.partition("=")
    name = name.strip()
    allowed = {"weighted": {"weight", "max_context", "first"}, "failover": {"max_context"}}.get(
        kind, set()
    )
    if name not in allowed:
        where = {"single": "a single model", "race": "a race"}.get(kind, f"a {kind} route")
        raise InvalidRequest(
            f"model {raw!r}: the annotation {name!r} does not apply to {where}"
            + (f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""),
            param="model",
            code="invalid_model",
        )
    if name == "first":
        if sep:
            raise InvalidRequest(
                f"model {raw!r}: 'first' takes no value", param="model", code="invalid_model"
            )
        notes["first"] = True
        return
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < (0 if name == "weight" else 1):
        raise InvalidRequest(
            f"model {raw!r}: {name} must be a whole number"
            + (" of 0 or more" if name == "weight" else " of 1 or more"),
            param="model",
            code="invalid_model",
        )
    notes[name] = number
