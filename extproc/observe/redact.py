"""Secret redaction for text the proxy records (span content, logs, provider errors).

Two rules, both applied: every secret the proxy knows (provider keys, proxy
API keys, admin keys) is replaced wherever it appears, and text shaped like a
well-known credential (OpenAI/Anthropic ``sk-`` keys, Google API keys, AWS
access keys, GitHub and Slack tokens, JWTs, bearer tokens, PEM private keys)
is replaced too. A replacement names the kind: ``[REDACTED:openai-key]``.

This is deliberately broader than the request/answer redaction stage
(:mod:`extproc.safety.secrets`): a false positive in a log costs nothing.
Matching uses RE2 (linear time), like every match on untrusted text.
"""

from __future__ import annotations

from collections.abc import Iterable

import re2

__all__ = ["PATTERNS", "Redactor"]

#: Credential shapes: (kind, RE2 pattern). A pattern's first group, when it has one, is the
#: secret (the rest is context that stays).
PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "private-key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)-----END [A-Z0-9 ]*PRIVATE KEY-----",
    ),
    ("anthropic-key", r"\bsk-ant-[A-Za-z0-9_\-]{16,}"),
    ("openai-key", r"\bsk-[A-Za-z0-9_\-]{16,}"),
    ("google-api-key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    ("aws-access-key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github-token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b"),
    ("slack-token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ("bearer-token", r"[Bb][Ee][Aa][Rr][Ee][Rr] ([A-Za-z0-9._~+/\-]{16,}=*)"),
)

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


class Redactor:
    """Replaces known secrets and credential-shaped text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)
        rules = [("secret", "|".join(re2.escape(s) for s in known))] if known else []
        rules += list(PATTERNS)
        self._kinds = [kind for kind, _ in rules]
        # One alternation: each rule one outer group, so the match tells which rule hit.
        self._rx = re2.compile("|".join(f"({pattern})" for _, pattern in rules), _OPTIONS)
        self._outer: list[int] = []
        group = 1
        for _, pattern in rules:
            self._outer.append(group)
            group += 1 + re2.compile(pattern, _OPTIONS).groups

    def __call__(self, text: str) -> str:
        if not text:
            return text
        return str(self._rx.sub(self._replacement, text))

    def _replacement(self, match: re2._Match[str]) -> str:
        for kind, group in zip(self._kinds, self._outer, strict=True):
            if match.group(group) is None:
                continue
            placeholder = f"[REDACTED:{kind}]"
            inner = group + 1
            if kind == "bearer-token" and match.group(inner) is not None:
                # Keep the scheme: only the token is the secret.
                whole = match.group(0)
                return whole[: match.start(inner) - match.start(0)] + placeholder
            return placeholder
        return "[REDACTED:secret]"
