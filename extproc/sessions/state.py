"""Per-session state: a msgspec struct with a JSON wire form and a cheap deep copy.

The store errors live here (the lowest layer) so that :func:`decode_state`
can raise them; :mod:`extproc.sessions.store` re-exports them.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

__all__ = [
    "SessionState",
    "SessionStoreError",
    "VersionConflict",
    "copy_state",
    "decode_state",
    "encode_state",
]


class SessionStoreError(Exception):
    """A session store failed, or stored data could not be decoded."""


class VersionConflict(SessionStoreError):
    """A compare-and-set write found another version (or presence) than expected."""


class SessionState(msgspec.Struct, kw_only=True):
    """Everything the proxy remembers about one client session (the A-leg)."""

    id: str
    owner: str
    client_session: str | None = None
    created: float
    updated: float
    version: int = 0
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    oneoff: str | None = None
    route: list[str] = msgspec.field(default_factory=list)
    counters: dict[str, int] = msgspec.field(default_factory=dict)
    last_route: str | None = None
    steering: dict[str, float] = msgspec.field(default_factory=dict)
    marks: dict[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def new(
        cls,
        id: str,
        owner: str,
        client_session: str | None = None,
        now: float | None = None,
    ) -> SessionState:
        """A fresh, never-stored state (``version`` 0) created at ``now``."""
        stamp = time.time() if now is None else now
        return cls(id=id, owner=owner, client_session=client_session, created=stamp, updated=stamp)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SessionState)


def encode_state(state: SessionState) -> bytes:
    """The state as JSON bytes."""
    try:
        return _encoder.encode(state)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SessionStoreError(f"cannot encode session {state.id!r}: {exc}") from exc


def decode_state(data: bytes) -> SessionState:
    """A state from :func:`encode_state` bytes; :class:`SessionStoreError` if invalid."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise SessionStoreError(f"invalid session state: {exc}") from exc


_CONTAINERS = (dict, list)


def _copy_value(value: Any) -> Any:
    """A deep copy of JSON-like data (dicts and lists copied, scalars shared)."""
    if isinstance(value, dict):
        return {k: _copy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_value(v) for v in value]
    return value


def _copy_dict(mapping: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a dict; a plain ``copy()`` when every value is a scalar."""
    for v in mapping.values():
        if isinstance(v, _CONTAINERS):
            return {k: _copy_value(v) for k, v in mapping.items()}
    return mapping.copy()


def copy_state(
    state: SessionState, *, version: int | None = None, updated: float | None = None
) -> SessionState:
    """A copy sharing no dict or list with ``state``, optionally restamped."""
    new = msgspec.structs.replace(
        state,
        settings=_copy_dict(state.settings),
        route=state.route.copy(),
        counters=state.counters.copy(),
        steering=state.steering.copy(),
        marks=_copy_dict(state.marks),
    )
    if version is not None:
        new.version = version
    if updated is not None:
        new.updated = updated
    return new
