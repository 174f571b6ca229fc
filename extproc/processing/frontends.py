"""Client-facing endpoints: which method and path mean what, in which dialect.

* openai-chat: ``POST /v1/chat/completions``; ``GET /v1/models[/{id}]``.
* openai-responses: ``POST /v1/responses``; ``POST /v1/responses/input_tokens``.
* anthropic: ``POST /anthropic/v1/messages`` (also ``/v1/messages``, e.g. on
  the dedicated Anthropic listener); ``.../messages/count_tokens``;
  ``GET /anthropic/v1/models[/{id}]``.
* gemini: ``POST /v1beta/models/{model}:generateContent``,
  ``:streamGenerateContent``, ``:countTokens`` (also under ``/v1/``);
  ``GET /v1beta/models[/{model}]``.

The proxy's own admin endpoints answer JSON with OpenAI-shaped errors:
``GET /v1/usage/stats`` and ``GET /v1/usage/recent`` (usage accounting),
``GET /v1/diagnostics`` and ``POST /v1/diagnostics/backends/{instance}/reactivate``
(routing and health), ``POST /v1/admin/reload`` (re-read the config). ``GET /ready``
is the readiness probe (no key).

``GET /v1/models`` is shared by three SDKs; the dialect follows the client:
``x-goog-api-key`` or ``?key=`` means Gemini, ``anthropic-version`` means
Anthropic, anything else OpenAI. A trailing ``?beta=true`` (Claude Code) and
other query parameters are ignored for matching.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from extproc.errors import MethodNotAllowed, NotFound

EndpointKind = Literal["generate", "count_tokens", "list_models", "get_model", "admin", "ready"]

OPENAI_CHAT = "openai-chat"
OPENAI_RESPONSES = "openai-responses"
ANTHROPIC = "anthropic"
GEMINI = "gemini"


@dataclass(frozen=True)
class Endpoint:
    kind: EndpointKind
    #: The codec (wire protocol) of the client.
    protocol: str
    methods: frozenset[str]
    #: Values taken from the path (Gemini: ``model`` and ``action``).
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    kind: EndpointKind
    protocol: str | None  # None: decided by the client's headers
    methods: frozenset[str]


_POST = frozenset({"POST"})
_GET = frozenset({"GET"})
_GEMINI_ACTIONS = {
    "generateContent": "generate",
    "streamGenerateContent": "generate",
    "countTokens": "count_tokens",
}

_ROUTES: list[_Route] = [
    # Readiness probe (no key: probes have none); /health is Envoy's own.
    _Route(re.compile(r"^/ready/?$"), "ready", OPENAI_CHAT, _GET),
    _Route(re.compile(r"^/v1/(?P<admin>admin/reload)/?$"), "admin", OPENAI_CHAT, _POST),
    _Route(re.compile(r"^/v1/(?P<admin>usage/(?:stats|recent))/?$"), "admin", OPENAI_CHAT, _GET),
    _Route(re.compile(r"^/v1/(?P<admin>diagnostics)/?$"), "admin", OPENAI_CHAT, _GET),
    _Route(re.compile(r"^/v1/(?P<admin>diagnostics/sessions)/?$"), "admin", OPENAI_CHAT, _GET),
    _Route(
        re.compile(r"^/v1/(?P<admin>diagnostics/backends)/(?P<instance>[^/]+)/reactivate/?$"),
        "admin",
        OPENAI_CHAT,
        _POST,
    ),
    _Route(re.compile(r"^(?:/v1)?/chat/completions/?$"), "generate", OPENAI_CHAT, _POST),
    _Route(
        re.compile(r"^(?:/v1)?/responses/input_tokens/?$"), "count_tokens", OPENAI_RESPONSES, _POST
    ),
    _Route(re.compile(r"^(?:/v1)?/responses/?$"), "generate", OPENAI_RESPONSES, _POST),
    _Route(
        re.compile(r"^(?:/anthropic)?/v1/messages/count_tokens/?$"),
        "count_tokens",
        ANTHROPIC,
        _POST,
    ),
    _Route(re.compile(r"^(?:/anthropic)?/v1/messages/?$"), "generate", ANTHROPIC, _POST),
    _Route(re.compile(r"^/anthropic/v1/models/?$"), "list_models", ANTHROPIC, _GET),
    _Route(re.compile(r"^/anthropic/v1/models/(?P<model>.+)$"), "get_model", ANTHROPIC, _GET),
    _Route(
        # The action follows the last ':' (a proxy model may be "instance:model").
        re.compile(r"^/v1(?:beta)?/models/(?P<model>.+):(?P<action>[A-Za-z]+)$"),
        "generate",
        GEMINI,
        _POST,
    ),
    _Route(re.compile(r"^/v1beta/models/?$"), "list_models", GEMINI, _GET),
    _Route(re.compile(r"^/v1beta/models/(?P<model>[^:]+)$"), "get_model", GEMINI, _GET),
    _Route(re.compile(r"^(?:/v1)?/models/?$"), "list_models", None, _GET),
    _Route(re.compile(r"^(?:/v1)?/models/(?P<model>.+)$"), "get_model", None, _GET),
]


def dialect_for(path: str, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """The client's dialect judged from path and headers (for errors, model lists)."""
    if path.startswith("/anthropic/") or "anthropic-version" in headers:
        return ANTHROPIC
    if path.startswith("/v1beta/") or "x-goog-api-key" in headers or "key" in query:
        return GEMINI
    if path.startswith(("/v1/responses", "/responses")):
        return OPENAI_RESPONSES
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if re.match(r"^/v1/models/[^/]+:", path):
        return GEMINI
    return OPENAI_CHAT


def match_endpoint(
    method: str,
    path: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    available: frozenset[str],
) -> Endpoint:
    """Classify a request; raise NotFound / MethodNotAllowed (in its dialect).

    ``path`` is the path without its query string; ``available`` the
    protocols that have a codec.
    """
    for route in _ROUTES:
        found = route.pattern.match(path)
        if found is None:
            continue
        if "action" in found.groupdict() and method != "POST":
            continue  # GET /v1/models/openai:gpt-4o is a model id, not a Gemini method
        protocol = route.protocol or dialect_for(path, headers, query)
        params = {k: v for k, v in found.groupdict().items() if v is not None}
        kind = route.kind
        if protocol == GEMINI and "action" in params:
            action_kind = _GEMINI_ACTIONS.get(params["action"])
            if action_kind is None:
                raise NotFound(f"unknown Gemini method {params['action']!r}", code="unknown_url")
            kind = action_kind  # type: ignore[assignment]
        if protocol not in available:
            break
        if method not in route.methods:
            raise MethodNotAllowed(
                f"method {method} is not allowed on {path}; use {', '.join(sorted(route.methods))}",
                headers={"allow": ", ".join(sorted(route.methods))},
            )
        return Endpoint(kind, protocol, route.methods, params)
    raise NotFound(f"unknown path {path!r}", code="unknown_url")
