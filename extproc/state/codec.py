"""The wire form of one change: what is stored under a Redis key and published.

A change names its *kind* (``health``, ``lockout``, ``dedup``, ``session``,
``alias``), the *key* of the thing changed (an instance, a subject, a session
id), the replica that made it, and the *record*: a JSON object every kind
shapes itself, with two fields the transport reads:

* ``at``: wall-clock time of the change (epoch seconds: times cross processes,
  so never ``time.monotonic``);
* ``expires``: wall-clock time after which the record no longer matters (the
  Redis key's TTL), or ``None`` to keep it until deleted;
* ``gone: true`` marks a removal (a reactivated instance, a forgotten subject).

The same bytes are the value of the key and the pub/sub message, so a replica
that loads the snapshot and one that hears the message decode one format.
"""

from __future__ import annotations

from typing import Any

import msgspec

from extproc.state.errors import RecordError

__all__ = ["Change", "decode_change", "encode_change", "expires_at", "is_gone"]


class Change(msgspec.Struct, frozen=True):
    """One change of one replicated object."""

    #: The replica that made it (its own messages are ignored).
    origin: str
    kind: str
    key: str
    record: dict[str, Any]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Change)


def encode_change(change: Change) -> bytes:
    try:
        return _encoder.encode(change)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordError(f"cannot encode a {change.kind} change: {exc}") from exc


def decode_change(data: bytes | str) -> Change:
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RecordError(f"invalid change record: {exc}") from exc


def expires_at(record: dict[str, Any]) -> float | None:
    """When the record stops mattering (epoch seconds), or None: never."""
    value = record.get("expires")
    return float(value) if isinstance(value, int | float) else None


def is_gone(record: dict[str, Any]) -> bool:
    """The record removes what its key named."""
    return bool(record.get("gone"))
