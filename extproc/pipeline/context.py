"""Per-request context shared by the stages of one request."""

from __future__ import annotations

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
    #: A stable, non-reversible id of the client key (for accounting/logs).
    client_key_id: str | None = None
    selector: Selector | None = None
    route: RouteDecision | None = None
    started: float = field(default_factory=time.monotonic)
    #: Scratch space for stages, keyed by stage name.
    state: dict[str, Any] = field(default_factory=dict)
