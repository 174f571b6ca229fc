"""Secret detection: recall and false positives on the corpora, scanner, placeholders, redactor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extproc.safety.secrets import (
    BUILTIN_RULES,
    LITERAL_RULE_ID,
    Finding,
    Placeholders,
    Redactor,
    SecretRule,
    SecretScanner,
)

CORPUS = Path(__file__).parent / "corpus"
#: Every fake secret in the positive corpus carries one of these, and nothing else does.
MARKERS = ("FAKE", "EXAMPLE", "0000")


def positive_samples() -> list[tuple[str, str]]:
    """``(kind, text)`` pairs of secrets_positive.txt (``#`` lines are comments)."""
    samples = []
    for line in (CORPUS / "secrets_positive.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            kind, text = line.split("\t", 1)
            samples.append((kind, text))
    return samples


def benign_samples() -> list[str]:
    text = (CORPUS / "secrets_benign.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(SecretScanner(), Placeholders(b"test-key"))


# --- corpora -------------------------------------------------------------------------


def test_corpora_are_big_enough() -> None:
    assert len(positive_samples()) >= 60
    assert len(benign_samples()) >= 100


def test_recall_on_positive_corpus_is_total(redactor: Redactor) -> None:
    samples = positive_samples()
    missed = []
    for kind, text in samples:
        findings = redactor.scanner.find(text)
        redacted, count = redactor.redact_text(text)
        if (
            kind not in {f.kind for f in findings}
            or count != len(findings)
            or any(marker in redacted for marker in MARKERS)
        ):
            missed.append((kind, text, findings, redacted))
    recall = 1 - len(missed) / len(samples)
    assert recall == 1.0, f"recall {recall:.1%}, missed: {missed}"


def test_no_false_positive_on_benign_corpus(redactor: Redactor) -> None:
    flagged = []
    for text in benign_samples():
        for finding in redactor.scanner.find(text):
            flagged.append((finding.rule_id, text[finding.start : finding.end], text))
    assert flagged == [], f"{len(flagged)} false positives: {flagged}"


def test_every_builtin_kind_has_a_positive_sample() -> None:
    kinds = {kind for kind, _ in positive_samples()}
    assert {rule.kind for rule in BUILTIN_RULES} <= kinds


def test_rule_ids_are_unique() -> None:
    ids = [rule.id for rule in BUILTIN_RULES]
    assert len(ids) == len(set(ids))


# --- scanner ---------------------------------------------------------------------------


def spans(scanner: SecretScanner, text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in scanner.find(text)]


OPENAI = "sk-FAKE0000FAKE0000FAKET3BlbkFJEXAMPLE0EXAMPLE0EXAM"
GITHUB = "ghp_FAKE0000ExampleFAKE0000ExampleFAKE00"


def test_group_selects_only_the_secret() -> None:
    scanner = SecretScanner()
    assert spans(scanner, "postgres://app:FAKEpass0000@db:5432/app") == [
        ("connection-password", "FAKEpass0000")
    ]
    assert spans(scanner, 'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"') == [
        ("aws-secret-key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    ]


def test_findings_are_sorted_with_offsets_in_characters() -> None:
    scanner = SecretScanner()
    text = f"héllo 🔑 {GITHUB} naïve {OPENAI} ünd AKIAIOSFODNN7EXAMPLE"
    findings = scanner.find(text)
    assert [text[f.start : f.end] for f in findings] == [GITHUB, OPENAI, "AKIAIOSFODNN7EXAMPLE"]
    assert [f.kind for f in findings] == ["github-token", "openai-key", "aws-access-key-id"]


def test_lone_surrogates_do_not_break_the_scanner() -> None:
    text = f"\ud800 {GITHUB} \udfff"
    assert spans(SecretScanner(), text) == [("github-token", GITHUB)]


def test_look_alikes_are_not_secrets() -> None:
    scanner = SecretScanner()
    for text in (
        "sk-learn",
        "task-abcdefghijklmnopqrstuvwxyz0123456789",
        "sk-learn-tutorial-for-beginners-with-many-words",
        "AIza" + "x" * 34,  # too short
        "ghp_" + "A1" * 17,  # too short
        "AKIAIOSFODNN7EXAMPLEX",  # too long
    ):
        assert scanner.find(text) == [], text


def test_literal_secrets() -> None:
    scanner = SecretScanner(
        rules=(),
        literals=[
            ("provider-key", "upstream-key.+*?(x)"),
            ("client-key", "client-0123456789"),
            ("client-key", "client-0123456789-long"),
            ("short", "1234567"),
        ],
    )
    text = "a upstream-key.+*?(x) b client-0123456789-long c client-0123456789 d 1234567"
    assert spans(scanner, text) == [
        ("provider-key", "upstream-key.+*?(x)"),
        ("client-key", "client-0123456789-long"),
        ("client-key", "client-0123456789"),
    ]
    assert {f.rule_id for f in scanner.find(text)} == {LITERAL_RULE_ID}


def test_many_literals() -> None:
    literals = [("client-key", f"client-key-{i:06d}-FAKE") for i in range(5000)]
    scanner = SecretScanner(literals=literals)
    text = "x client-key-004321-FAKE y client-key-999999-FAKE"
    assert spans(scanner, text) == [("client-key", "client-key-004321-FAKE")]


def test_allow_list_drops_full_matches_only() -> None:
    scanner = SecretScanner(allow=[r"AKIA[A-Z0-9]*EXAMPLE", r"ghp_FAKE.*"])
    text = f"AKIAIOSFODNN7EXAMPLE {GITHUB} AKIAFAKE0000EXAMPLX1"
    assert spans(scanner, text) == [("aws-access-key-id", "AKIAFAKE0000EXAMPLX1")]


def test_allowed_finding_does_not_hide_an_overlapping_one() -> None:
    rules = [
        SecretRule("long", "long", r"secret-[a-z]+-[0-9]+"),
        SecretRule("short", "short", r"secret-[a-z]+"),
    ]
    scanner = SecretScanner(rules, allow=["secret-abc-[0-9]+"])
    assert spans(scanner, "secret-abc-123") == [("short", "secret-abc")]


def test_overlap_keeps_earliest_then_longest() -> None:
    rules = [
        SecretRule("b", "b", r"bbbb"),
        SecretRule("a-short", "a", r"abb"),
        SecretRule("a-long", "a-long", r"abbbb"),
    ]
    assert spans(SecretScanner(rules), "xabbbbx bbbb") == [("a-long", "abbbb"), ("b", "bbbb")]


def test_same_span_takes_the_earlier_rule() -> None:
    key = "sk-ant-api03-" + "FAKE0000" * 12 + "AA"
    assert spans(SecretScanner(), key) == [("anthropic-key", key)]


@pytest.mark.parametrize(
    ("what", "kwargs"),
    [
        ("allow", {"allow": ["ok", "(unclosed"]}),
        ("rule", {"rules": [SecretRule("bad", "bad", "a{2,1}")]}),
        ("ignore", {"rules": [SecretRule("bad", "bad", "abc", ignore="[z-a]")]}),
    ],
)
def test_invalid_patterns_raise_value_error_naming_them(
    what: str, kwargs: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match=what) as info:
        SecretScanner(**kwargs)  # type: ignore[arg-type]
    assert any(p in str(info.value) for p in ("(unclosed", "a{2,1}", "[z-a]"))


def test_rule_group_out_of_range() -> None:
    with pytest.raises(ValueError, match="group 2"):
        SecretScanner([SecretRule("g", "g", "(a)b", group=2)])


def test_pathological_user_pattern_is_linear() -> None:
    # exponential for a backtracking engine; RE2 answers in one pass
    text = "a" * 50_000 + "!"
    evil = SecretScanner([SecretRule("evil", "evil", r"(a+)+$")], allow=[r"(a|aa)+$"])
    assert evil.find(text) == []
    matching = SecretScanner([SecretRule("evil", "evil", r"(a+)+!")])
    assert matching.find(text) == [Finding(0, 50_001, "evil", "evil")]


def test_big_benign_text_has_no_finding() -> None:
    lines = benign_samples()
    text = ""
    while len(text) < 200_000:
        text += "\n".join(lines) + "\n"
    scanner = SecretScanner()
    assert scanner.find(text) == []
    middle = len(text) // 2
    with_secret = text[:middle] + f" {GITHUB} " + text[middle:]
    assert scanner.find(with_secret) == [
        Finding(middle + 1, middle + 1 + len(GITHUB), "github-token", "github-token")
    ]


def test_private_key_blocks() -> None:
    scanner = SecretScanner()
    body = "MIIEowIBAAKCAQEAFAKE0000EXAMPLE0000KEYDATA\nabc+/=\n"
    block = f"-----BEGIN RSA PRIVATE KEY-----\n{body}-----END RSA PRIVATE KEY-----"
    assert spans(scanner, f"key:\n{block}\nafter") == [("private-key", block)]
    crlf = block.replace("\n", "\r\n")
    assert spans(scanner, crlf) == [("private-key", crlf)]
    unclosed = f"-----BEGIN PRIVATE KEY-----\n{body}more"
    assert spans(scanner, f"paste: {unclosed}") == [("private-key", unclosed)]
    escaped = json.dumps(block)[1:-1]
    assert "\\n" in escaped
    assert spans(scanner, f'{{"k": "{escaped}"}}') == [("private-key", escaped)]
    prose = "a key file starts with -----BEGIN RSA PRIVATE KEY----- and ends with the END line"
    assert scanner.find(prose) == []


# --- placeholders ----------------------------------------------------------------------------


def test_placeholder_shape_stability_and_keying() -> None:
    one, other = Placeholders(b"k1"), Placeholders(b"k2")
    first = one.placeholder("openai-key", OPENAI)
    assert first.startswith("[REDACTED:openai-key:") and first.endswith("]")
    assert len(first.rsplit(":", 1)[1]) == 9  # 8 hex + "]"
    assert first == one.placeholder("openai-key", OPENAI)
    assert first != one.placeholder("openai-key", OPENAI + "x")
    assert first != other.placeholder("openai-key", OPENAI)
    assert OPENAI not in first
    # without a key: one random key per process
    assert Placeholders().placeholder("k", OPENAI) == Placeholders().placeholder("k", OPENAI)


def test_placeholder_kind_is_sanitized() -> None:
    assert (
        Placeholders(b"k").placeholder("my kind]:x", "secret").startswith("[REDACTED:my-kind--x:")
    )


def test_placeholders_never_match_a_rule(redactor: Redactor) -> None:
    for rule in BUILTIN_RULES:
        for secret in (OPENAI, "x", "0000"):
            placeholder = redactor.placeholders.placeholder(rule.kind, secret)
            assert redactor.scanner.find(placeholder) == []
            assert redactor.scanner.find(f"postgres://u:{placeholder}@h") == []
            assert redactor.scanner.find(f"aws_secret_access_key = {placeholder}") == []
            assert redactor.scanner.find(f"jdbc:mysql://h/db?password={placeholder}") == []
            assert redactor.scanner.find(f"Authorization: Bearer {placeholder}") == []


def test_redacting_twice_changes_nothing(redactor: Redactor) -> None:
    for _, text in positive_samples():
        once, count = redactor.redact_text(text)
        assert count >= 1
        assert redactor.redact_text(once) == (once, 0)


# --- redactor ----------------------------------------------------------------------------------


def test_redact_text(redactor: Redactor) -> None:
    text = f"a {OPENAI} b {OPENAI} c {GITHUB}"
    redacted, count = redactor.redact_text(text)
    placeholder = redactor.placeholders.placeholder("openai-key", OPENAI)
    assert count == 3
    assert redacted == (
        f"a {placeholder} b {placeholder} c "
        f"{redactor.placeholders.placeholder('github-token', GITHUB)}"
    )
    assert redactor.redact_text("nothing here") == ("nothing here", 0)


def test_redact_json_text(redactor: Redactor) -> None:
    pem = (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0FAKE0000EXAMPLE\n"
        "-----END PRIVATE KEY-----\n"
    )
    document = {
        "path": ".env",
        "content": f"OPENAI_API_KEY={OPENAI}\n",
        "nested": [{"key": pem, "n": 3, "ok": True, "none": None}],
        OPENAI: "keys are left alone",
        "unicode": "été",
    }
    text = json.dumps(document, indent=2)
    redacted, count = redactor.redact_json_text(text)
    assert count == 2
    parsed = json.loads(redacted)
    assert parsed["content"] == (
        f"OPENAI_API_KEY={redactor.placeholders.placeholder('openai-key', OPENAI)}\n"
    )
    assert parsed["nested"][0]["key"] == (
        redactor.placeholders.placeholder("private-key", pem.rstrip("\n")) + "\n"
    )
    assert parsed["nested"][0]["n"] == 3 and parsed[OPENAI] == "keys are left alone"
    assert "été" in redacted and "\n" not in redacted  # compact, non-ASCII kept


def test_redact_json_text_unchanged_returns_the_same_text(redactor: Redactor) -> None:
    text = '{ "a" : [1, 2.50, "x"] }'
    assert redactor.redact_json_text(text) == (text, 0)


def test_redact_json_text_falls_back_to_text(redactor: Redactor) -> None:
    text = f'{{"content": "{GITHUB}'  # truncated JSON
    redacted, count = redactor.redact_json_text(text)
    assert count == 1 and GITHUB not in redacted
    deep = "[" * 100_000 + f'"{GITHUB}"'
    redacted, count = redactor.redact_json_text(deep)
    assert count == 1 and GITHUB not in redacted


def test_top_level_json_string(redactor: Redactor) -> None:
    redacted, count = redactor.redact_json_text(json.dumps(GITHUB))
    assert count == 1
    assert json.loads(redacted) == redactor.placeholders.placeholder("github-token", GITHUB)


def test_user_rule_with_a_non_boundary_assertion() -> None:
    # the first match of all starts where \B needs the character before it
    scanner = SecretScanner([SecretRule("inner", "inner", r"\Bsecret[0-9]+")])
    assert spans(scanner, "xsecret123 secret456") == [("inner", "secret123")]
