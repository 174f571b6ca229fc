"""Placeholders that replace secrets: ``[REDACTED:openai-key:3f9a1c2b]``.

The 8 hex characters are an HMAC-SHA256 of the secret under a key that never
leaves the process: the same secret gets the same placeholder (a model can
tell two mentions of one key apart from two different keys), and the secret
cannot be recovered from it. No rule matches a placeholder, so redacting
redacted text changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from extproc.safety.secrets.scanner import Finding

__all__ = ["PLACEHOLDER_PREFIX", "Placeholders"]

PLACEHOLDER_PREFIX = "[REDACTED:"

#: One random key per process, shared by every :class:`Placeholders` built without one.
_PROCESS_KEY = secrets.token_bytes(32)
_KIND_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _clean_kind(kind: str) -> str:
    """``kind`` restricted to letters, digits, ``-`` and ``_`` (at most 40 characters)."""
    cleaned = "".join(c if c in _KIND_CHARS else "-" for c in kind[:40])
    return cleaned or "secret"


class Placeholders:
    """Makes placeholders and replaces findings with them.

    ``key`` is the HMAC key; without one, the per-process random key is used.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = _PROCESS_KEY if key is None else key

    def placeholder(self, kind: str, secret: str) -> str:
        """``[REDACTED:<kind>:<8 hex>]`` for ``secret``: stable for one key, not reversible."""
        digest = hmac.new(
            self._key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).hexdigest()
        return f"{PLACEHOLDER_PREFIX}{_clean_kind(kind)}:{digest[:8]}]"

    def redact(self, text: str, findings: Sequence[Finding]) -> str:
        """``text`` with each finding's span replaced (findings sorted, non-overlapping)."""
        if not findings:
            return text
        parts: list[str] = []
        last = 0
        for finding in findings:
            parts.append(text[last : finding.start])
            parts.append(self.placeholder(finding.kind, text[finding.start : finding.end]))
            last = finding.end
        parts.append(text[last:])
        return "".join(parts)
