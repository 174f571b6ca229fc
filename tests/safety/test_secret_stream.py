"""Streaming redaction: any chunking gives the one-shot result, holds are bounded."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.safety.secrets import (
    Finding,
    Placeholders,
    Redactor,
    SecretScanner,
    StreamRedactor,
)
from extproc.safety.secrets.stream import _token_start, _word_like
from tests.safety.test_secret_rules import MARKERS, positive_samples

REDACTOR = Redactor(SecretScanner(), Placeholders(b"stream-test-key"))
POSITIVES = [text for _, text in positive_samples()]
GITHUB = "ghp_FAKE0000ExampleFAKE0000ExampleFAKE00"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PEM_BODY = "MIIEowIBAAKCAQEAFAKE0000EXAMPLE0000KEYDATA+/abc="


def stream(chunks: list[str], redactor: Redactor = REDACTOR, **kwargs: int) -> str:
    streamer = StreamRedactor(redactor, **kwargs)
    return "".join(streamer.feed(chunk) for chunk in chunks) + streamer.finish()


def split(text: str, points: list[int]) -> list[str]:
    cuts = sorted({min(max(p, 0), len(text)) for p in points})
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def check(text: str, chunks: list[str], prefix: str = "", suffix: str = "") -> None:
    assert "".join(chunks) == text
    expected, _ = REDACTOR.redact_text(text)
    secrets = [text[f.start : f.end] for f in REDACTOR.scanner.find(text)]
    out = stream(chunks)
    assert out == expected
    for secret in secrets:
        assert secret not in out
    assert out.startswith(prefix) and out.endswith(suffix)


def kept_suffix(line: str, suffix: str) -> str:
    """What survives of the text after ``line``: all of it, unless a key block is unfinished."""
    return "" if "-----BEGIN" in line and "-----END" not in line else suffix


WORDS = st.lists(
    st.sampled_from(
        ["the", "key", "is", "=", "value:", "sk-learn", "task-1", "é", "🔑", "{", '"x":', "\\n"]
    ),
    max_size=12,
)
SEPARATORS = st.sampled_from([" ", "\n", "  ", "\t", " \n"])


@st.composite
def framed_secret(draw: st.DrawFn) -> tuple[str, str, str]:
    """``(text, prefix, suffix)``: a positive sample between benign words (kept as they are)."""
    prefix = " ".join(draw(WORDS))
    suffix = " ".join(draw(WORDS))
    prefix = prefix + draw(SEPARATORS) if prefix else ""
    suffix = draw(SEPARATORS) + suffix if suffix else ""
    line = draw(st.sampled_from(POSITIVES))
    return prefix + line + suffix, prefix, kept_suffix(line, suffix)


@settings(max_examples=300, deadline=None)
@given(framed_secret(), st.integers(min_value=0, max_value=10_000))
def test_two_way_split(sample: tuple[str, str, str], at: int) -> None:
    text, prefix, suffix = sample
    check(text, split(text, [at % (len(text) + 1)]), prefix, suffix)


@settings(max_examples=300, deadline=None)
@given(
    framed_secret(), st.lists(st.integers(min_value=0, max_value=10_000), min_size=2, max_size=2)
)
def test_three_way_split(sample: tuple[str, str, str], at: list[int]) -> None:
    text, prefix, suffix = sample
    check(text, split(text, [a % (len(text) + 1) for a in at]), prefix, suffix)


@settings(max_examples=200, deadline=None)
@given(framed_secret(), st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_many_way_split(sample: tuple[str, str, str], at: list[int]) -> None:
    text, prefix, suffix = sample
    check(text, split(text, [a % (len(text) + 1) for a in at]), prefix, suffix)


@pytest.mark.parametrize("text", POSITIVES)
def test_one_char_at_a_time(text: str) -> None:
    framed = f"before {text}\nafter"
    check(framed, list(framed), "before ", kept_suffix(text, "\nafter"))


def test_exhaustive_two_way_splits_of_a_multi_secret_text() -> None:
    text = (
        f"aws_secret_access_key = {AWS_SECRET}\n"
        f"key: {GITHUB} and -----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n"
        "-----END RSA PRIVATE KEY----- then postgres://app:FAKEpass0000@db/app done"
    )
    for at in range(len(text) + 1):
        check(text, split(text, [at]))


# --- holding and bounds ------------------------------------------------------------------


def test_context_in_an_earlier_chunk_is_used() -> None:
    streamer = StreamRedactor(REDACTOR)
    first = streamer.feed("config:\n  aws_secret_access_key = ")
    assert first == "config:\n  aws_secret_access_key = "
    assert streamer.feed(AWS_SECRET[:10]) == ""
    assert streamer.held == 10
    rest = streamer.feed(AWS_SECRET[10:] + "\n") + streamer.finish()
    assert rest == REDACTOR.placeholders.placeholder("aws-secret-key", AWS_SECRET) + "\n"


def test_plain_text_flows_with_only_the_last_token_held() -> None:
    streamer = StreamRedactor(REDACTOR)
    # "wor" cannot grow into a secret: the chunk goes out whole, unchanged.
    chunk = "Hello wor"
    assert streamer.feed(chunk) is chunk
    assert streamer.held == 0
    # "sk" may become "sk-proj-...": held until the next chunk tells.
    assert streamer.feed("ld, ask sk") == "ld, ask "
    assert streamer.held == 2
    assert streamer.feed("etch, how ARe") == "sketch, how "
    assert streamer.finish() == "ARe"
    assert streamer.held == 0


def test_a_value_after_an_assignment_is_held() -> None:
    streamer = StreamRedactor(REDACTOR)
    assert streamer.feed("password = hun") == "password = "
    assert streamer.feed("ter2 ok") == "hunter2 "


def test_every_word_like_start_of_a_positive_sample_is_held() -> None:
    """The fast path emits a trailing word only when no secret starts so."""
    prefixes = REDACTOR.scanner.hold_prefixes
    assert prefixes is not None
    for text in POSITIVES:
        for finding in REDACTOR.scanner.find(text):
            before = text[: finding.start].rstrip()
            if before[-1:] in "=:\"'" or before[-6:].lower() == "bearer":
                continue  # a value after an assignment: held whatever it looks like
            if _token_start(text[: finding.start + 1]) != finding.start:
                continue  # starts mid-token after punctuation: the tail is not letters only
            token = text[finding.start : finding.end]
            for n in range(1, min(len(token), 17)):
                head = token[:n]
                if _word_like(head):
                    assert head in prefixes, (head, text)


def test_unchanged_text_is_returned_as_is() -> None:
    streamer = StreamRedactor(REDACTOR)
    chunk = "a sentence that ends with a space "
    assert streamer.feed(chunk) is chunk


def test_a_key_block_is_held_until_its_end_line() -> None:
    streamer = StreamRedactor(REDACTOR)
    out = streamer.feed("here:\n-----BEGIN RSA PRIVATE KEY-----\n")
    assert out == "here:\n"
    for _ in range(20):
        assert streamer.feed(PEM_BODY + "\n") == ""
    assert streamer.held > 20 * len(PEM_BODY)
    out += streamer.feed("-----END RSA PRIVATE KEY-----\nnext line") + streamer.finish()
    assert out.startswith("here:\n[REDACTED:private-key:")
    assert out.endswith("]\nnext line")
    assert not any(marker in out for marker in MARKERS)


def test_a_key_block_past_the_bound_is_redacted_whole() -> None:
    streamer = StreamRedactor(REDACTOR, max_token_hold=64, max_block_hold=512)
    out = streamer.feed("start -----BEGIN PRIVATE KEY-----\n")
    for _ in range(100):
        out += streamer.feed(PEM_BODY + "\n")
        assert streamer.held <= 512 + len(PEM_BODY) + 1
    out += streamer.feed("-----END PRIVATE KEY-----\nvisible again ")
    out += streamer.feed(f"and {GITHUB} too") + streamer.finish()
    assert out.startswith("start [REDACTED:private-key:")
    assert out.count("[REDACTED:private-key:") == 1
    assert out.endswith(
        "\nvisible again and " + REDACTOR.placeholders.placeholder("github-token", GITHUB) + " too"
    )
    assert not any(marker in out for marker in MARKERS)


def test_an_unfinished_key_block_is_redacted_at_finish() -> None:
    text = f"x -----BEGIN EC PRIVATE KEY-----\n{PEM_BODY}\n{PEM_BODY}"
    out = stream(list(text))
    assert out == REDACTOR.redact_text(text)[0]
    assert out.startswith("x [REDACTED:private-key:")


def test_a_begin_line_without_key_body_is_released() -> None:
    text = (
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgYm9keQ\n"
        "-----END CERTIFICATE-----\n"
    )
    streamer = StreamRedactor(REDACTOR)
    out = "".join(streamer.feed(c) for c in text)
    assert out == text  # all out before finish: nothing held for a certificate
    assert streamer.finish() == ""


def test_a_long_token_is_bounded_and_unchanged() -> None:
    blob = "QUJD" * 2000  # 8000 chars of base64, no whitespace
    streamer = StreamRedactor(REDACTOR, max_token_hold=256)
    out = ""
    for i in range(0, len(blob), 20):
        out += streamer.feed(blob[i : i + 20])
        assert streamer.held <= 256
    assert out + streamer.finish() == blob


def test_a_secret_longer_than_the_bound_is_redacted_and_swallowed() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJGQUtFIjoiRkFLRTAwMDAifQ." + "FAKE0000sig" * 60
    streamer = StreamRedactor(REDACTOR, max_token_hold=128)
    out = "".join(streamer.feed(c) for c in f"token {jwt} after")
    out += streamer.finish()
    assert out.startswith("token [REDACTED:jwt:")
    assert out.endswith("] after")
    assert "FAKE" not in out


def test_work_per_feed_is_bounded() -> None:
    """Each scan covers the lookbehind, the held text and the new chunk: never all the past."""
    sizes: list[int] = []
    scanner = SecretScanner()

    class Spy(SecretScanner):
        def find(self, text: str) -> list[Finding]:
            sizes.append(len(text))
            return scanner.find(text)

    redactor = Redactor(Spy(), REDACTOR.placeholders)
    line = f"some words, then a key {GITHUB} and more words after it\n"
    text = line * 500
    out = stream([text[i : i + 20] for i in range(0, len(text), 20)], redactor)
    assert out == REDACTOR.redact_text(text)[0]
    assert max(sizes) <= 128 + 64 + 20


def test_stream_of_redacted_text_is_unchanged() -> None:
    once, _ = REDACTOR.redact_text("\n".join(POSITIVES))
    assert stream([once[i : i + 7] for i in range(0, len(once), 7)]) == once


def test_tool_arguments_stream_with_json_escapes() -> None:
    arguments = json.dumps(
        {"path": ".env", "content": f"A=1\nGITHUB_TOKEN={GITHUB}\nB=2\n", "mode": "w"}
    )
    chunks = [arguments[i : i + 5] for i in range(0, len(arguments), 5)]
    out = stream(chunks)
    assert out == REDACTOR.redact_text(arguments)[0]
    assert json.loads(out)["content"] == (
        "A=1\nGITHUB_TOKEN=" + REDACTOR.placeholders.placeholder("github-token", GITHUB) + "\nB=2\n"
    )


def test_counts_redactions() -> None:
    streamer = StreamRedactor(REDACTOR)
    streamer.feed(f"{GITHUB} and {GITHUB} ")
    streamer.finish()
    assert streamer.redacted == 2


def test_bad_bounds() -> None:
    with pytest.raises(ValueError):
        StreamRedactor(REDACTOR, max_token_hold=8)
    with pytest.raises(ValueError):
        StreamRedactor(REDACTOR, max_token_hold=1024, max_block_hold=512)


# -- whole answers: nothing follows the text, so a token at its end is complete ------------


def _whole_answer_text(text: str) -> tuple[str, bool]:
    """``text`` as a whole answer through the redaction filter: the text, and whether the
    provider's answer object came back unchanged (its bytes may go out)."""
    from extproc.canonical import CanonicalResponse, TextPart
    from extproc.pipeline.answer import AnswerChain
    from extproc.pipeline.stages.redaction import _AnswerRedaction

    response = CanonicalResponse(id="r", model="m", content=[TextPart(text=text)])
    final, failure = AnswerChain([_AnswerRedaction(REDACTOR, lambda *_: None)]).whole(response)
    assert failure is None
    out = "".join(p.text for p in final.content if isinstance(p, TextPart))
    return out, final is response


@settings(max_examples=300, deadline=None)
@given(framed_secret())
def test_a_whole_answer_is_redacted_as_one_text(sample: tuple[str, str, str]) -> None:
    text, _prefix, _suffix = sample
    out, unchanged = _whole_answer_text(text)
    expected, found = REDACTOR.redact_text(text)
    assert out == expected
    assert unchanged == (found == 0)


@pytest.mark.parametrize(
    "text",
    [
        "set it with export OPENAI_API_KEY=",  # a value could follow in a stream: not here
        "the prefix alone: sk-",
        "Authorization: Bearer",
        "x" * 20_000,  # longer than any token hold
        "-----BEGIN",
    ],
)
def test_a_whole_answer_without_a_secret_goes_out_as_the_provider_sent_it(text: str) -> None:
    assert REDACTOR.redact_text(text)[1] == 0
    assert _whole_answer_text(text) == (text, True)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_secret_anywhere_in_a_long_whole_answer_is_redacted(where: str) -> None:
    filler = "lorem ipsum " * 2_000
    text = {"start": GITHUB + " " + filler, "middle": filler + GITHUB + " " + filler}.get(
        where, filler + GITHUB
    )
    out, unchanged = _whole_answer_text(text)
    assert GITHUB not in out and not unchanged
    assert out == REDACTOR.redact_text(text)[0]


# -- the answer filter: deltas in batches (a stream chunk carries several events) -----------


@settings(max_examples=300, deadline=None)
@given(
    framed_secret(),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=12),
)
def test_the_answer_filter_redacts_deltas_in_any_batches(
    sample: tuple[str, str, str], cuts: list[int], batch_sizes: list[int]
) -> None:
    from extproc.canonical import Finish, StreamEvent, TextDelta
    from extproc.pipeline.answer import AnswerChain
    from extproc.pipeline.stages.redaction import _AnswerRedaction

    text, _prefix, _suffix = sample
    deltas = split(text, [c % (len(text) + 1) for c in cuts])
    events: list[StreamEvent] = [TextDelta(d) for d in deltas if d]
    chain = AnswerChain([_AnswerRedaction(REDACTOR, lambda *_: None)])
    out: list[StreamEvent] = []
    at, sizes = 0, iter(batch_sizes * (len(events) + 1))
    while at < len(events):
        size = next(sizes)
        emitted, _changed = chain.feed(events[at : at + size])
        out += emitted
        at += size
    out += chain.feed([Finish("stop")])[0] + chain.finish()
    redacted = "".join(e.text for e in out if isinstance(e, TextDelta))
    assert redacted == REDACTOR.redact_text(text)[0]
    assert isinstance(out[-1], Finish)
