"""Proxy keys: the configured set, checked in constant time.

An entry of the key ring is either a plain key or ``sha256:<64 hex digits>``,
the SHA-256 digest of the key in hex, so that configuration can hold hashes
instead of keys (:func:`hash_key` makes them). Any entry that starts with
``sha256:`` is read as a digest (hex digits in either case); a plain key cannot
start with ``sha256:``. Entries must be non-empty and must not start or end
with whitespace (the proxy strips the key a client presents, so such an entry
could never match).

:meth:`KeyRing.match` hashes the presented key once and compares that digest
with every stored digest (``hmac.compare_digest``), OR-ing the results: the
time taken does not depend on which entry matched, nor on whether one did.
It does depend on the number of entries, which is not secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

__all__ = ["HASH_PREFIX", "KeyRing", "hash_key"]

#: The prefix of a hashed entry.
HASH_PREFIX = "sha256:"
_HEX_DIGITS = 64
_HEX = frozenset("0123456789abcdefABCDEF")


def hash_key(key: str) -> str:
    """``sha256:<hex>`` for a key: what to put in configuration instead of the key."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _digest(entry: str, position: int) -> bytes:
    if not isinstance(entry, str):
        raise ValueError(f"key entry {position} must be a string, not {type(entry).__name__}")
    if not entry:
        raise ValueError(f"key entry {position} is empty")
    if entry != entry.strip():
        raise ValueError(
            f"key entry {position} starts or ends with whitespace (it could never match)"
        )
    if not entry.startswith(HASH_PREFIX):
        return hashlib.sha256(entry.encode("utf-8", "surrogatepass")).digest()
    digits = entry[len(HASH_PREFIX) :]
    if len(digits) != _HEX_DIGITS or not _HEX.issuperset(digits):
        # Never echo the entry: it may be a key with a typo.
        raise ValueError(
            f"key entry {position} starts with {HASH_PREFIX!r} but is not followed by "
            f"exactly {_HEX_DIGITS} hex digits (found {len(digits)} characters)"
        )
    return bytes.fromhex(digits)


class KeyRing:
    """The proxy keys clients may present (plain or ``sha256:`` entries)."""

    __slots__ = ("_digests",)

    def __init__(self, entries: Iterable[str]) -> None:
        if isinstance(entries, str):
            raise ValueError("KeyRing takes a list of keys, not one string")
        digests: dict[bytes, None] = {}
        for position, entry in enumerate(entries):
            digests[_digest(entry, position)] = None
        self._digests: tuple[bytes, ...] = tuple(digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._digests)} keys)"

    @property
    def ids(self) -> frozenset[str]:
        """The key ids of the entries (``extproc.pipeline.context.key_id``), hashed ones too."""
        return frozenset("key-" + digest.hex()[:12] for digest in self._digests)

    def match(self, presented: str) -> bool:
        """Whether ``presented`` is one of the keys, in time independent of which."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched
