"""Sessions, B2BUA-style: the A-leg toward the client, a B-leg per request toward providers.

The client's conversation id (header or body field, docs/sessions.md) is
scoped by the client key (``local`` in single-user mode) into the A-leg
session id; its stored state is loaded for the other stages. Before the
request goes upstream, the body fields that carry the client's ids are
replaced or removed: providers see B-leg ids only (the ROUTER role removes
the session headers and sends ``x-session-id: <b-leg>-<attempt>``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Mapping

from extproc.canonical import CanonicalRequest
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import RequestOutcome, Stage
from extproc.sessions.ids import (
    PROXY_ANSWER_PREFIX,
    ClientSession,
    a_leg_id,
    answer_key,
    b_leg_id,
    client_session,
    header_session,
    heuristic_session,
    parent_alias,
)
from extproc.sessions.session import Session, SessionBook

__all__ = ["ProviderLegStage", "SessionStage"]

_HEADER_CLIENT = "sessions.header_client"
#: Client dialects that continue a conversation from an answer's id (a Responses
#: ``previous_response_id``): only their answer ids are linked to the session.
CONTINUES_BY_ANSWER_ID = frozenset({"openai-responses"})


class SessionStage(Stage):
    name = "sessions"

    def __init__(
        self,
        book: SessionBook,
        *,
        header: str | None = None,
        heuristic: bool = False,
        multi_user: bool = False,
    ) -> None:
        self._book = book
        self._header = header
        self._heuristic = heuristic
        self._multi_user = multi_user

    def on_request_headers(self, ctx: RequestContext, headers: Mapping[str, str]) -> None:
        """A session id in the headers names the A-leg already: a request refused
        before its body is read (invalid JSON...) is still filed under it."""
        client = header_session(ctx.headers, self._header)
        if client is not None:
            ctx.session_id = ctx.a_leg = a_leg_id(self._owner(ctx), client.id)
            ctx.state[_HEADER_CLIENT] = client

    def _owner(self, ctx: RequestContext) -> str:
        return (ctx.client_key_id if self._multi_user else None) or "local"

    def on_request(
        self, ctx: RequestContext, request: CanonicalRequest
    ) -> RequestOutcome | Awaitable[RequestOutcome]:
        owner = self._owner(ctx)
        client = ctx.state.get(_HEADER_CLIENT) or client_session(ctx.headers, request, self._header)
        chained = request.extra.get("previous_response_id")
        # The answer a Responses client continues (linked to its session).
        previous = answer_key(chained) if isinstance(chained, str) and chained else None
        proxied = previous is not None and previous.startswith(PROXY_ANSWER_PREFIX)
        if client is not None and not proxied:
            previous = None
        book = self._book
        if not book.immediate:
            return self._later(ctx, request, owner, client, previous, proxied)
        if proxied:
            assert previous is not None
            _resume_chain(request, book.resolve_now(parent_alias(previous)))
        found = book.resolve_now(previous) if previous is not None and client is None else None
        session = self._session(owner, client, found, request, ctx.request_id, ctx.a_leg)
        book.load_now(session)
        self._begin(ctx, request, session, owner)
        return None

    async def _later(
        self,
        ctx: RequestContext,
        request: CanonicalRequest,
        owner: str,
        client: ClientSession | None,
        previous: str | None,
        proxied: bool,
    ) -> RequestOutcome:
        if proxied:
            assert previous is not None
            _resume_chain(request, await self._book.resolve(parent_alias(previous)))
        found = (
            await self._book.resolve(previous) if previous is not None and client is None else None
        )
        session = self._session(owner, client, found, request, ctx.request_id)
        await self._book.load(session)
        self._begin(ctx, request, session, owner)
        return None

    def _session(
        self,
        owner: str,
        client: ClientSession | None,
        chained: str | None,
        request: CanonicalRequest,
        request_id: str,
        known: str | None = None,
    ) -> Session:
        if chained is not None:
            # A Responses chain: the session that produced that answer.
            return Session(
                id=chained,
                owner=owner,
                client=ClientSession(chained, "previous_response_id chain"),
                b_leg=b_leg_id(request_id),
            )
        if client is None and self._heuristic:
            client = heuristic_session(request)
        session_id = (known or a_leg_id(owner, client.id)) if client is not None else _isolated_id()
        return Session(id=session_id, owner=owner, client=client, b_leg=b_leg_id(request_id))

    def _begin(
        self, ctx: RequestContext, request: CanonicalRequest, session: Session, owner: str
    ) -> None:
        if session.state is not None and session.state.owner != owner:
            # Never honoured across client keys (a chain id another key learned).
            session = Session(id=_isolated_id(), owner=owner, client=None, b_leg=session.b_leg)
        ctx.session = session
        ctx.a_leg = session.id
        # Records (usage, captures, spans) name sessions the client named; a
        # one-request session is no grouping worth recording.
        ctx.session_id = None if session.isolated else session.id
        if ctx.span.recording and not session.isolated:
            ctx.span.set_attribute("llm_proxy.session.id", session.id)

    def on_end(self, ctx: RequestContext) -> None:
        session = ctx.session
        if session is None:
            return
        # Only a Responses client continues an answer by its id (previous_response_id);
        # linking every other dialect's answer ids would only fill the alias index
        # (one entry a request, up to 4 x max_sessions) with ids nobody resolves.
        response_id = ctx.response_id if ctx.frontend in CONTINUES_BY_ANSWER_ID else None
        if ctx.state.get("interactive") == "answered":
            # A command answered by the proxy: a Responses client continuing it
            # joins this session, and the provider's chain resumes before it.
            if response_id:
                self._book.link_answer(session, response_id, ctx.state.get("chain_parent"))
            return
        route = None
        if ctx.route is not None:
            route = ctx.route.cluster + (f" ({ctx.model})" if ctx.model else "")
        self._book.after_request(session, route=route, response_id=response_id)


class ProviderLegStage(Stage):
    """The B2BUA's provider side: the client's ids in the body become B-leg ids.

    Runs right before routing, after every stage that reads the request as the
    client sent it (request dedup fingerprints it with the client's fields).
    """

    name = "provider_leg"
    #: A few dict operations: not worth a phase (histogram sample) per request.
    timed = False

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> RequestOutcome:
        if ctx.session is not None:
            _to_provider(request, ctx.session)
        return None


def _resume_chain(request: CanonicalRequest, parent: str | None) -> None:
    """``previous_response_id`` named a proxy answer: the provider's chain goes on
    from the answer before it (or starts afresh when there was none)."""
    if parent:
        request.extra["previous_response_id"] = parent
    else:
        request.extra.pop("previous_response_id", None)


def _isolated_id() -> str:
    return f"sess-{secrets.token_hex(12)}"


def _to_provider(request: CanonicalRequest, session: Session) -> None:
    """Replace or remove the body fields that carry the client's ids (same-protocol targets)."""
    if request.protocol == "anthropic" and request.user:
        # Anthropic ``metadata.user_id`` (decoded into ``user``): Claude Code puts its
        # device and session ids there.
        request.user = session.b_leg
    extra = request.extra
    if not extra:
        return
    extra.pop("session_id", None)
    # Codex's analytics: session, thread, installation and turn ids.
    extra.pop("client_metadata", None)
    metadata = extra.get("metadata")
    if isinstance(metadata, dict) and ("user_id" in metadata or "session_id" in metadata):
        metadata = dict(metadata)
        if "user_id" in metadata:
            metadata["user_id"] = session.b_leg
        metadata.pop("session_id", None)
        extra["metadata"] = metadata
    if isinstance(extra.get("prompt_cache_key"), str):
        # A cache key, not a session id: stable per session (provider prompt
        # caching keeps working) and derived from the A-leg, never the client's id.
        digest = hashlib.blake2b(f"cache\0{session.id}".encode(), digest_size=16).hexdigest()
        extra["prompt_cache_key"] = f"pck-{digest}"
