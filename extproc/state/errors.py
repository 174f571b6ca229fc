"""Errors of the shared state, as one small hierarchy.

None of them reaches a client: the request path never waits for the shared
state, and a failing Redis degrades to local state.
"""

from __future__ import annotations

__all__ = ["RecordError", "SharedStateError", "SharedStateUnavailable"]


class SharedStateError(Exception):
    """Base class: something about the shared state went wrong."""


class SharedStateUnavailable(SharedStateError):
    """The shared store (Redis) cannot be reached or refused a command."""


class RecordError(SharedStateError):
    """A change record could not be encoded, or one received could not be decoded."""
