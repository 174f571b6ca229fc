"""Per-session state and its async stores (in-memory and SQLite); pure library code."""

from extproc.sessions.sqlite_store import SQLiteSessionStore
from extproc.sessions.state import (
    SessionState,
    SessionStoreError,
    VersionConflict,
    copy_state,
    decode_state,
    encode_state,
)
from extproc.sessions.store import MemorySessionStore, SessionStore, update

__all__ = [
    "MemorySessionStore",
    "SQLiteSessionStore",
    "SessionState",
    "SessionStore",
    "SessionStoreError",
    "VersionConflict",
    "copy_state",
    "decode_state",
    "encode_state",
    "update",
]
