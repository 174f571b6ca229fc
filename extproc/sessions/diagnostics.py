"""``GET /v1/diagnostics/sessions``: the sessions the proxy remembers."""

from __future__ import annotations

from typing import Any

from extproc.errors import InvalidRequest
from extproc.sessions.session import SessionBook
from extproc.sessions.state import SessionState

__all__ = ["sessions_report"]

MAX_LIMIT = 1000


def _entry(state: SessionState) -> dict[str, Any]:
    return {
        "id": state.id,
        "owner": state.owner,
        "client_session": state.client_session,
        "created": state.created,
        "updated": state.updated,
        "requests": state.counters.get("requests", 0),
        "counters": dict(state.counters),
        "settings": dict(state.settings),
        "oneoff": state.oneoff,
        "route": list(state.route),
        "last_route": state.last_route,
    }


async def sessions_report(
    book: SessionBook, store_kind: str, query: dict[str, str]
) -> dict[str, Any]:
    """Most recently used first; ``?limit=N`` (default 100), ``?owner=key-…`` filters."""
    try:
        limit = int(query.get("limit", "100"))
    except ValueError:
        raise InvalidRequest("limit must be a whole number", param="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}", param="limit")
    owner = query.get("owner")
    states = await book.store.list(MAX_LIMIT if owner else limit)
    if owner:
        states = [s for s in states if s.owner == owner][:limit]
    return {"store": store_kind, "count": len(states), "sessions": [_entry(s) for s in states]}
