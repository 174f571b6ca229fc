"""Per-request context shared by the stages of one request."""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from extproc.canonical import Usage
from extproc.observe.tracing import NO_SPAN, RequestSpan
from extproc.routing import RouteDecision

if TYPE_CHECKING:
    from extproc.sessions.session import Session


@dataclass
class Overrides:
    """What the session (in-chat commands) asks of this request.

    Routing applies them: a static route beats the session's route, and the
    session's parameters beat a selector's URI parameters and the request body.
    """

    #: A routing expression in place of the request's model.
    route: str | None = None
    #: Why (``session model``, ``one-off``...), for routing reasons and ``!/hello``.
    why: str = ""
    #: Canonical parameters (``temperature``, ``top_p``, ``reasoning_effort``...).
    params: dict[str, Any] = field(default_factory=dict)
    #: A reasoning preset name (``max``, ``no-think``...).
    preset: str | None = None
    #: Thinking budget in tokens.
    thinking_budget: int | None = None


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
    route: RouteDecision | None = None
    started: float = field(default_factory=time.monotonic)
    #: Wall clock at the start (seconds since the epoch), for records.
    started_wall: float = field(default_factory=time.time)
    #: Scratch space for stages, keyed by stage name.
    state: dict[str, Any] = field(default_factory=dict)
    #: The request's trace span (a shared no-op span when tracing is off).
    span: RequestSpan = NO_SPAN
    #: The session id records carry: the A-leg id once the sessions stage ran
    #: (the client's ``x-session-id`` when sessions are off).
    session_id: str | None = None
    #: The conversation this request belongs to (set by the sessions stage).
    session: Session | None = None
    #: What the session asks of this request (applied by routing).
    overrides: Overrides = field(default_factory=Overrides)
    #: The A-leg session id echoed to the client (known from the headers, or once
    #: the sessions stage ran; an isolated session's too).
    a_leg: str | None = None
    #: Input tokens context compression saved on this request (estimated).
    tokens_saved: int = 0
    #: The client's one-off ``x-llm-route`` header (honoured only when allowed).
    route_header: str | None = None

    # What happened, filled in by the ROUTER role as the exchange goes on and
    # read by the observability stages at the end.

    #: The model the client named, before routing.
    requested_model: str | None = None
    #: The model asked of the provider (the pool endpoint's, when it names one).
    model: str | None = None
    #: The backend instance whose answer reached the client (None: no upstream answer).
    backend: str | None = None
    #: The HTTP status sent to the client (0 until known).
    status: int = 0
    streamed: bool = False
    #: Monotonic time of the first answer bytes sent to the client, for streams.
    first_output: float | None = None
    finished: float | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    response_id: str | None = None
    response_model: str | None = None
    #: Attempts Envoy made (1 unless it retried) and, when known, their instances.
    attempts: int = 0
    attempt_backends: list[str] = field(default_factory=list)
    #: The answer came from a provider (not from Envoy or the proxy itself).
    from_provider: bool = False
    #: The proxy's own error code when the proxy answered with an error.
    error_code: str | None = None
    error_message: str | None = None

    @property
    def client_key_id(self) -> str | None:
        """A stable, non-reversible id of the client key (for accounting and logs)."""
        if self.client_key is None:
            return None
        cached = self.state.get("_client_key_id")
        if cached is None:
            cached = self.state["_client_key_id"] = key_id(self.client_key)
        return str(cached)

    @property
    def duration(self) -> float:
        """Seconds from the request headers to the end (or to now, while running)."""
        return (self.finished or time.monotonic()) - self.started

    @property
    def ttft(self) -> float | None:
        """Seconds to the first streamed answer bytes, for streamed answers."""
        return None if self.first_output is None else self.first_output - self.started


@functools.lru_cache(maxsize=1024)
def key_id(key: str) -> str:
    """A short, stable, non-reversible id for a client key (cached: keys repeat)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]
