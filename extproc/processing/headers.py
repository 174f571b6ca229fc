"""Header names the two roles agree on, and credential handling."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

#: Where clients put keys. The proxy reads them, then removes them: a
#: client's key never reaches a provider.
CLIENT_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization"}
)

#: Envoy's count of the attempts of a request (``include_attempt_count_in_response``).
ATTEMPT_COUNT_HEADER = "x-envoy-attempt-count"

#: Envoy's router adds this to every answer that came from an upstream (and
#: never to its own local replies).
UPSTREAM_MARK = "x-envoy-upstream-service-time"

#: Provider response headers that describe the provider account, not the
#: client's request; they are not passed on.
RESPONSE_HEADERS_TO_STRIP = frozenset(
    {
        "openai-organization",
        "openai-project",
        "anthropic-organization-id",
        "set-cookie",
        # Envoy's count of attempts (for capture and metrics, not clients).
        ATTEMPT_COUNT_HEADER,
    }
)


def query_key(path: str) -> str | None:
    """The ``key`` query parameter of a request path, decoded (Gemini clients send theirs there)."""
    _, _, query = path.partition("?")
    if "key=" not in query:
        return None
    return dict(parse_qsl(query, keep_blank_values=True)).get("key") or None


def client_key(headers: Mapping[str, str]) -> str | None:
    """The key a client presented, from whichever header its SDK uses."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        value = headers.get(name)
        if value:
            return value.strip()
    return None
