"""Secret redaction for text the proxy records (span content, logs).

Two rules, both applied: every secret the proxy knows (provider keys, proxy
API keys, admin keys) is replaced wherever it appears, and text shaped like a
well-known credential (OpenAI/Anthropic ``sk-`` keys, Google API keys, AWS
access keys, GitHub and Slack tokens, JWTs, bearer tokens, PEM private keys)
is replaced too. A replacement names the kind: ``[REDACTED:openai-key]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["PATTERNS", "Redactor"]

#: Credential shapes: (kind, regular expression).
PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "private-key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
    ),
    ("anthropic-key", r"\bsk-ant-[A-Za-z0-9_\-]{16,}"),
    ("openai-key", r"\bsk-[A-Za-z0-9_\-]{16,}"),
    ("google-api-key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    ("aws-access-key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github-token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b"),
    ("slack-token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ("bearer-token", r"(?<=[Bb][Ee][Aa][Rr][Ee][Rr] )[A-Za-z0-9._~+/\-]{16,}=*"),
)


class Redactor:
    """Replaces known secrets and credential-shaped text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)
        parts = [f"(?P<known>{'|'.join(re.escape(s) for s in known)})"] if known else []
        parts += [f"(?P<{kind.replace('-', '_')}>{rx})" for kind, rx in PATTERNS]
        self._rx = re.compile("|".join(parts))

    def __call__(self, text: str) -> str:
        if not text:
            return text
        return self._rx.sub(_replacement, text)


def _replacement(match: re.Match[str]) -> str:
    kind = match.lastgroup or "secret"
    if kind == "known":
        kind = "secret"
    return f"[REDACTED:{kind.replace('_', '-')}]"
