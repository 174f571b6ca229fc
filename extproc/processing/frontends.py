"""Client-facing endpoints: which path and method means what, in which dialect."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from extproc.errors import MethodNotAllowed, NotFound

EndpointKind = Literal["generate", "list_models", "get_model"]


@dataclass(frozen=True)
class Endpoint:
    kind: EndpointKind
    #: The codec (wire protocol) of the client.
    protocol: str
    methods: frozenset[str]
    model: str | None = None


_OPENAI = "openai-chat"
_TABLE: list[tuple[re.Pattern[str], EndpointKind, str, frozenset[str]]] = [
    (re.compile(r"^(?:/v1)?/chat/completions/?$"), "generate", _OPENAI, frozenset({"POST"})),
    (re.compile(r"^(?:/v1)?/models/?$"), "list_models", _OPENAI, frozenset({"GET"})),
    (re.compile(r"^(?:/v1)?/models/(?P<model>.+)$"), "get_model", _OPENAI, frozenset({"GET"})),
]


def protocol_for_path(path: str) -> str:
    """The dialect for errors about ``path`` before an endpoint matched."""
    return _OPENAI


def match_endpoint(method: str, path: str) -> Endpoint:
    """Classify a request; raise NotFound / MethodNotAllowed in its dialect."""
    bare = path.split("?", 1)[0]
    for pattern, kind, protocol, methods in _TABLE:
        found = pattern.match(bare)
        if found is None:
            continue
        if method not in methods:
            raise MethodNotAllowed(
                f"method {method} is not allowed on {bare}; use {', '.join(sorted(methods))}",
                headers={"allow": ", ".join(sorted(methods))},
            )
        model = found.groupdict().get("model")
        return Endpoint(kind, protocol, methods, model)
    raise NotFound(f"unknown path {bare!r}", code="unknown_url")
