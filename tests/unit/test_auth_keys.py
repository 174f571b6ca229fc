"""The key ring: plain and hashed entries, constant-time matching."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from extproc.auth import KeyRing, hash_key
from extproc.pipeline.context import key_id


def test_hash_key_is_sha256_hex() -> None:
    assert hash_key("secret") == "sha256:" + hashlib.sha256(b"secret").hexdigest()
    assert len(hash_key("x")) == len("sha256:") + 64


def test_plain_and_hashed_entries_match() -> None:
    ring = KeyRing(["plain-key", hash_key("hashed-key")])
    assert ring.match("plain-key")
    assert ring.match("hashed-key")
    assert not ring.match("other")
    assert not ring.match("")
    assert not ring.match(hash_key("hashed-key"))  # the hash is not the key
    assert len(ring) == 2


def test_hex_digits_in_either_case() -> None:
    ring = KeyRing(["sha256:" + hashlib.sha256(b"k").hexdigest().upper()])
    assert ring.match("k")


def test_duplicates_collapse() -> None:
    assert len(KeyRing(["k", "k", hash_key("k")])) == 1


def test_empty_ring_matches_nothing() -> None:
    ring = KeyRing([])
    assert not ring.match("anything")
    assert len(ring) == 0


@pytest.mark.parametrize(
    "entry",
    [
        "sha256:",
        "sha256:abc",
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "g" * 64,
        "sha256: " + "a" * 63,
    ],
)
def test_malformed_hashed_entries_are_rejected(entry: str) -> None:
    with pytest.raises(ValueError, match="hex digits") as error:
        KeyRing(["fine", entry])
    assert "entry 1" in str(error.value)
    assert entry not in str(error.value) or entry == "sha256:"


@pytest.mark.parametrize(("entry", "message"), [("", "empty"), (" key", "whitespace")])
def test_unusable_plain_entries_are_rejected(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyRing([entry])


def test_a_single_string_is_rejected() -> None:
    with pytest.raises(ValueError, match="list"):
        KeyRing("my-key")


def test_ids_match_the_request_context_key_ids() -> None:
    ring = KeyRing(["a", hash_key("b")])
    assert ring.ids == {key_id("a"), key_id("b")}


def test_match_compares_against_every_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", counting)
    entries = [f"key-{n}" for n in range(5)]
    ring = KeyRing(entries)
    for presented in [*entries, "wrong"]:
        calls.clear()
        ring.match(presented)
        assert len(calls) == len(entries), presented


def test_repr_never_shows_keys() -> None:
    assert "secret" not in repr(KeyRing(["secret"]))
