"""Secret redaction: known secrets and credential-shaped text (every value here is fake)."""

from __future__ import annotations

import re

import pytest

from extproc.observe.redact import PATTERNS, Redactor

FAKE_PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "ZmFrZS1rZXktbWF0ZXJpYWw=\nZmFrZQ==\n"
    "-----END RSA PRIVATE KEY-----"
)

#: (kind, a fake credential of that shape)
SHAPES = [
    ("openai-key", "sk-fake-0123456789abcdef"),
    ("openai-key", "sk-proj-fake_0123456789-abcdef"),
    ("anthropic-key", "sk-ant-fake-0123456789abcdef"),
    ("google-api-key", "AIza" + "FakeFakeFakeFakeFakeFakeFakeFakeFak"),
    ("aws-access-key", "AKIAFAKEFAKEFAKEFAKE"),
    ("aws-access-key", "ASIAFAKEFAKEFAKE0000"),
    ("github-token", "ghp_" + "fake" * 9),
    ("github-token", "github_pat_fake_fake_fake_fake_fake"),
    ("slack-token", "xoxb-0000-fake-fake-fake"),
    ("jwt", "eyJmYWtlIjoidHJ1ZSJ9.eyJzdWIiOiJmYWtlIn0.ZmFrZS1zaWduYXR1cmU"),
    ("private-key", FAKE_PEM),
]


@pytest.mark.parametrize(
    ("kind", "secret"), SHAPES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(SHAPES)]
)
def test_credential_shapes_are_replaced_by_their_kind(kind: str, secret: str) -> None:
    redact = Redactor()
    text = f"before {secret} after"
    assert redact(text) == f"before [REDACTED:{kind}] after"
    assert secret not in redact(text)


def test_every_pattern_kind_is_exercised() -> None:
    assert {kind for kind, _ in PATTERNS} == {kind for kind, _ in SHAPES} | {"bearer-token"}


def test_bearer_tokens_keep_the_scheme() -> None:
    redact = Redactor()
    assert (
        redact("Authorization: Bearer fake.token-0123456789abcdef==")
        == "Authorization: Bearer [REDACTED:bearer-token]"
    )
    assert redact("authorization: bearer fakefakefakefake0") == (
        "authorization: bearer [REDACTED:bearer-token]"
    )
    # too short to be a token
    assert redact("Bearer short") == "Bearer short"


def test_known_secrets_are_replaced_whatever_their_shape() -> None:
    provider = "sk-fake-provider-key-0000-alpha"  # credential-shaped, but known: "secret"
    odd = "fake(pass)+word.*"  # regular-expression metacharacters are literal
    redact = Redactor([provider, odd, "short"])
    assert redact(f"key={provider}; other={odd}") == (
        "key=[REDACTED:secret]; other=[REDACTED:secret]"
    )
    assert redact("fakeXpassXword") == "fakeXpassXword"
    # secrets shorter than 8 characters are not redacted (too many false hits)
    assert redact("a short answer") == "a short answer"


def test_a_longer_known_secret_wins_over_its_prefix() -> None:
    redact = Redactor(["fake-secret", "fake-secret-and-more"])
    assert redact("x fake-secret-and-more y fake-secret z") == (
        "x [REDACTED:secret] y [REDACTED:secret] z"
    )


def test_every_occurrence_is_replaced() -> None:
    redact = Redactor(["fake-known-value"])
    text = "fake-known-value sk-fake-0123456789abcdef fake-known-value sk-fake-0123456789abcdef"
    out = redact(text)
    assert out.count("[REDACTED:secret]") == 2
    assert out.count("[REDACTED:openai-key]") == 2
    assert not re.search(r"fake-known|sk-fake", out)


def test_text_without_secrets_is_unchanged() -> None:
    redact = Redactor(["fake-known-value"])
    for text in (
        "",
        "The quick brown fox.",
        "task-0123456789abcdef0123",  # "sk-" inside a word is not a key
        "sk-short",
        "Use the AKIA prefix for access keys.",
        "-----BEGIN PRIVATE KEY----- with no end",
        "été, naïve, 東京",
    ):
        assert redact(text) == text


def test_multiline_private_key_inside_a_message() -> None:
    redact = Redactor()
    text = f"Here is my key:\n{FAKE_PEM}\nThanks!"
    assert redact(text) == "Here is my key:\n[REDACTED:private-key]\nThanks!"
