"""Per-request context shared by the stages of one request."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from extproc.routing import RouteDecision, Selector


@dataclass
class RequestContext:
    request_id: str
    #: Client-facing protocol (codec name), e.g. ``openai-chat``.
    frontend: str
    method: str
    path: str
    #: Client request headers, lower-case names, credentials removed.
    headers: dict[str, str]
    #: The client's credential as presented (never logged, never forwarded).
    client_key: str | None = None
    selector: Selector | None = None
    route: RouteDecision | None = None
    started: float = field(default_factory=time.monotonic)
    #: Scratch space for stages, keyed by stage name.
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def client_key_id(self) -> str | None:
        """A stable, non-reversible id of the client key (for accounting and logs)."""
        if self.client_key is None:
            return None
        cached = self.state.get("_client_key_id")
        if cached is None:
            cached = self.state["_client_key_id"] = key_id(self.client_key)
        return str(cached)


def key_id(key: str) -> str:
    """A short, stable, non-reversible id for a client key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]
