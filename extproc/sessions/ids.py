"""Which conversation a request belongs to, and the ids of its two legs.

The proxy is a back-to-back user agent for sessions: the client's own
conversation id (the A-leg, as each client sends it) is turned into the
proxy's A-leg session id, scoped by the client key so the same id sent with
two keys names two sessions. Toward providers only B-leg ids go out: a fresh
one per request (and per attempt in the ``x-session-id`` header), never the
client's id. docs/sessions.md lists what each client sends.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extproc.canonical import CanonicalRequest, TextPart

__all__ = [
    "CLIENT_SESSION_HEADERS",
    "PROXY_ANSWER_PREFIX",
    "SESSION_ECHO_HEADERS",
    "ClientSession",
    "a_leg_id",
    "answer_key",
    "b_leg_id",
    "client_session",
    "header_session",
    "heuristic_session",
    "parent_alias",
]

#: Request headers that carry a client's session id, in order of preference
#: (what each agent sends: docs/sessions.md). None reaches a provider.
CLIENT_SESSION_HEADERS: tuple[str, ...] = (
    "x-session-id",
    # Claude Code: a UUID per run (kept by --continue).
    "x-claude-code-session-id",
    # Codex: a UUIDv7 per run (kept by ``exec resume``); also in thread-id.
    "session-id",
    "thread-id",
    "session_id",
    "conversation_id",
    # Gemini CLI sends no session id, only its installation id: one
    # installation is one session.
    "x-gemini-api-privileged-user-id",
)

#: Further client headers that repeat the session id (or an installation id)
#: and are removed before a provider sees the request.
SESSION_ECHO_HEADERS: tuple[str, ...] = (
    "x-client-request-id",
    "x-codex-window-id",
    "x-codex-turn-metadata",
)

#: Ids of answers the proxy gave itself (in-chat commands). A Responses client
#: continuing such an answer (``previous_response_id``) continues the
#: provider's chain from before it.
PROXY_ANSWER_PREFIX = "proxy-"


def answer_key(response_id: str) -> str:
    """The id an answer is linked under, from the id a client saw.

    A Responses client sees ``resp_proxy_<id>`` for answers that came from
    elsewhere (another provider's answer, the proxy's own).
    """
    return response_id.removeprefix("resp_proxy_")


def parent_alias(answer_id: str) -> str:
    """The store alias under which a proxy answer's provider-side parent is kept."""
    return f"parent:{answer_id}"


#: Claude Code's ``metadata.user_id``: ``user_<hash>_account_<uuid>_session_<uuid>``.
_CLAUDE_USER_ID = re.compile(r"_session_([0-9A-Fa-f-]{8,64})$")
_MAX_ID = 256


@dataclass(frozen=True, slots=True)
class ClientSession:
    """The session id a client sent, and where it was found."""

    id: str
    source: str


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:_MAX_ID]
    return None


def _from_user_id(value: Any) -> str | None:
    """Claude Code's session inside ``metadata.user_id`` (plain or JSON-encoded)."""
    text = _text(value)
    if text is None:
        return None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return _text(data.get("session_id")) if isinstance(data, dict) else None
    found = _CLAUDE_USER_ID.search(text)
    return found.group(1) if found else None


def header_session(headers: Mapping[str, str], header: str | None = None) -> ClientSession | None:
    """The client's session id from its headers (the configured one first)."""
    if header is not None and (value := _text(headers.get(header))):
        return ClientSession(value, f"header {header}")
    for name in CLIENT_SESSION_HEADERS:
        if value := _text(headers.get(name)):
            return ClientSession(value, f"header {name}")
    return None


def client_session(
    headers: Mapping[str, str], request: CanonicalRequest, header: str | None = None
) -> ClientSession | None:
    """The client's own session id: headers first, then body fields."""
    found = header_session(headers, header)
    if found is not None:
        return found
    if request.protocol == "anthropic" and (value := _from_user_id(request.user)):
        # Claude Code's metadata.user_id (the Anthropic codec reads it into ``user``).
        return ClientSession(value, "body metadata.user_id")
    extra = request.extra
    if value := _text(extra.get("session_id")):
        return ClientSession(value, "body session_id")
    metadata = extra.get("metadata")
    if isinstance(metadata, dict):
        if value := _from_user_id(metadata.get("user_id")):
            return ClientSession(value, "body metadata.user_id")
        if value := _text(metadata.get("session_id")):
            return ClientSession(value, "body metadata.session_id")
    if value := _text(extra.get("prompt_cache_key")):
        return ClientSession(value, "body prompt_cache_key")
    return None


def heuristic_session(request: CanonicalRequest) -> ClientSession | None:
    """The opt-in grouping: the conversation's first user message names it."""
    for message in request.messages:
        if message.role != "user":
            continue
        text = "".join(p.text for p in message.content if isinstance(p, TextPart))
        if text:
            digest = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
            return ClientSession(f"first-message-{digest}", "heuristic")
    return None


def a_leg_id(owner: str, client_id: str) -> str:
    """The proxy's session id: stable for (owner, client id), distinct across owners."""
    digest = hashlib.blake2b(f"{owner}\0{client_id}".encode(), digest_size=12).hexdigest()
    return f"sess-{digest}"


def b_leg_id(request_id: str = "") -> str:
    """The provider-side id of one request: ``leg-<Envoy's request id>``.

    Envoy's upstream filters send ``<b-leg>-<attempt>`` as ``x-session-id``
    per attempt; body fields carry the request's B-leg. Without a request id
    (tests, tools), a random one.
    """
    return f"leg-{request_id or secrets.token_hex(16)}"
