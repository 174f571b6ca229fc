"""One request's view of its session, and the book that loads and saves sessions.

A :class:`Session` is what the stages of one request see: the A-leg id, the
B-leg id of this request, and the stored state (settings from in-chat
commands, counters, the failover list...). The :class:`SessionBook` reads
and writes states through a :class:`~extproc.sessions.store.SessionStore`:
changes a command makes are written (compare-and-set) before the command is
answered; per-request bookkeeping (counters, the last route, response-id
links) is written off the hot path, and a failing store degrades to "no
memory", never to a failed request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from extproc.sessions.ids import ClientSession, answer_key, parent_alias
from extproc.sessions.state import SessionState
from extproc.sessions.store import (
    ImmediateReads,
    SessionStore,
    SessionStoreError,
    update,
    update_now,
)

__all__ = ["Session", "SessionBook"]

log = logging.getLogger(__name__)

_EMPTY: Mapping[str, Any] = {}


@dataclass
class Session:
    """The session of one request."""

    #: The A-leg id (echoed to the client as ``x-b2bua-session-id``).
    id: str
    #: The client key id, or ``local`` in single-user mode.
    owner: str
    #: The id the client sent (None: an isolated, one-request session).
    client: ClientSession | None
    #: This request's provider-side id.
    b_leg: str
    #: The stored state (None: nothing stored yet).
    state: SessionState | None = None

    @property
    def isolated(self) -> bool:
        """No client session id: nothing is remembered beyond this request."""
        return self.client is None

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.state.settings if self.state is not None else _EMPTY

    def setting(self, name: str, default: Any = None) -> Any:
        return self.settings.get(name, default)

    def new_state(self) -> SessionState:
        client = self.client.id if self.client is not None else None
        return SessionState.new(self.id, self.owner, client_session=client)


class SessionBook:
    """Loads and saves sessions; owns the background writes."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self._pending: set[asyncio.Task[Any]] = set()
        #: The store reads without waiting (in memory): no event-loop hop per request.
        self._now = store if isinstance(store, ImmediateReads) else None

    @property
    def immediate(self) -> bool:
        return self._now is not None

    def load_now(self, session: Session) -> None:
        """:meth:`load` for an :attr:`immediate` store."""
        assert self._now is not None
        if not session.isolated:
            session.state = self._now.get_now(session.id)

    def resolve_now(self, alias: str) -> str | None:
        assert self._now is not None
        return self._now.resolve_now(alias)

    async def load(self, session: Session) -> None:
        """Read the stored state (a store failure leaves the session without memory)."""
        if session.isolated:
            return
        try:
            session.state = await self.store.get(session.id)
        except SessionStoreError as exc:
            log.warning("session store unavailable (%s): %s runs without memory", exc, session.id)

    async def resolve(self, alias: str) -> str | None:
        try:
            return await self.store.resolve(alias)
        except SessionStoreError as exc:
            log.warning("session store unavailable (%s)", exc)
            return None

    async def change(
        self, session: Session, mutate: Callable[[SessionState], None]
    ) -> SessionState:
        """Apply ``mutate`` to the stored state (compare-and-set); the session sees the result.

        An isolated session changes only for this request.
        """
        if session.isolated:
            state = session.state or session.new_state()
            mutate(state)
            session.state = state
            return state
        stored = await update(self.store, session.id, mutate, create=session.new_state)
        assert stored is not None
        session.state = stored
        return stored

    async def forget(self, session: Session) -> bool:
        session.state = None
        if session.isolated:
            return False
        return await self.store.delete(session.id)

    def record(self, session: Session, mutate: Callable[[SessionState], None]) -> None:
        """Apply ``mutate`` to the stored state off the hot path (failures are logged)."""
        if session.isolated:
            return
        if self._now is not None:
            try:
                update_now(self._now, session.id, mutate, create=session.new_state)
            except SessionStoreError as exc:
                log.warning("session %s: change not saved: %s", session.id, exc)
            return
        self._background(self._record(session, mutate))

    async def _record(self, session: Session, mutate: Callable[[SessionState], None]) -> None:
        try:
            await update(self.store, session.id, mutate, create=session.new_state)
        except SessionStoreError as exc:
            log.warning("session %s: change not saved: %s", session.id, exc)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work.close()
            return
        task = loop.create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def link_answer(self, session: Session, answer_id: str, parent: str | None) -> None:
        """A proxy answer's id joins the session; its parent continues the provider's chain."""
        now = self._now
        if now is None:
            self._background(self._link_answer(session.id, answer_id, parent))
            return
        now.link_now(answer_key(answer_id), session.id)
        if parent:
            now.link_now(parent_alias(answer_key(answer_id)), parent)

    async def _link_answer(self, session_id: str, answer_id: str, parent: str | None) -> None:
        try:
            await self.store.link(answer_key(answer_id), session_id)
            if parent:
                await self.store.link(parent_alias(answer_key(answer_id)), parent)
        except SessionStoreError as exc:
            log.warning("session %s: answer link not saved: %s", session_id, exc)

    def after_request(
        self, session: Session, *, route: str | None, response_id: str | None
    ) -> None:
        """Per-request bookkeeping, written off the hot path.

        An isolated session stores nothing, but its answer's id is linked, so a
        Responses request continuing it (``previous_response_id``) joins it.
        """
        if session.isolated and not response_id:
            return
        now = self._now
        if now is not None:
            # In memory: a few microseconds, cheaper than a task on the event loop.
            try:
                if not session.isolated:
                    update_now(now, session.id, _counted(route), create=session.new_state)
                if response_id:
                    now.link_now(answer_key(response_id), session.id)
            except SessionStoreError as exc:
                log.warning("session %s: bookkeeping not saved: %s", session.id, exc)
            return
        self._background(self._after(session, route, response_id))

    async def _after(self, session: Session, route: str | None, response_id: str | None) -> None:
        try:
            if not session.isolated:
                await update(self.store, session.id, _counted(route), create=session.new_state)
            if response_id:
                await self.store.link(answer_key(response_id), session.id)
        except SessionStoreError as exc:
            log.warning("session %s: bookkeeping not saved: %s", session.id, exc)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for the background writes (shutdown, tests)."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)

    async def close(self) -> None:
        await self.drain()
        await self.store.close()


def _counted(route: str | None) -> Callable[[SessionState], None]:
    """The per-request bookkeeping: one more request, the route it took."""

    def count(state: SessionState) -> None:
        state.counters["requests"] = state.counters.get("requests", 0) + 1
        if route is not None:
            state.last_route = route

    return count
