"""The rewrite engines: rule compilation, whole-text and streamed rewriting, think splitting."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from extproc.rewrite import (
    RuleError,
    StreamRewriter,
    TextRewriter,
    TextRule,
    ThinkSplitter,
    split_think,
)

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    _HYPOTHESIS = True
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    _HYPOTHESIS = False


def _replace(rule_id: str, find: str, replacement: str) -> TextRule:
    return TextRule(id=rule_id, action="replace", find=find, replacement=replacement)


def _regex(rule_id: str, pattern: str, replacement: str, max_match: int) -> TextRule:
    return TextRule(
        id=rule_id,
        action="replace",
        pattern=pattern,
        replacement=replacement,
        max_match=max_match,
    )


def _bound(rewriter: TextRewriter) -> int:
    return sum(r.hold for r in rewriter.replacements)


def _stream(rewriter: TextRewriter, pieces: Sequence[str]) -> str:
    stream = StreamRewriter(rewriter)
    bound = _bound(rewriter)
    out = []
    for piece in pieces:
        out.append(stream.feed(piece))
        assert stream.held <= bound
    out.append(stream.flush())
    assert stream.held == 0
    return "".join(out)


def _splits(text: str) -> list[list[str]]:
    """Every split in two and in three (for short texts), and one character at a time."""
    size = len(text)
    splits = [[text[:i], text[i:]] for i in range(size + 1)]
    if size <= 24:
        for i, j in itertools.combinations(range(size + 1), 2):
            splits.append([text[:i], text[i:j], text[j:]])
    splits.append(list(text))
    return splits


def _check_stream(rewriter: TextRewriter, text: str) -> None:
    expected = rewriter.apply(text)
    for pieces in _splits(text):
        assert _stream(rewriter, pieces) == expected, pieces


# --- compiling rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (TextRule(id="r1", action="replace"), "exactly one of find and pattern"),
        (
            TextRule(id="r2", action="replace", find="a", pattern="a"),
            "exactly one of find and pattern",
        ),
        (TextRule(id="r3", action="replace", find=""), "find is empty"),
        (TextRule(id="r4", action="replace", pattern="(unclosed"), "invalid pattern"),
        (TextRule(id="r5", action="replace", pattern=r"a(?=b)"), "invalid pattern"),
        (TextRule(id="r6", action="replace", pattern="x*"), "matches the empty string"),
        (TextRule(id="r7", action="replace", pattern="a", max_match=0), "max_match"),
        (
            TextRule(id="r8", action="replace", pattern="(a)", replacement=r"\2"),
            "unknown group",
        ),
        (
            TextRule(id="r9", action="replace", pattern="(a)", replacement=r"\g<nope>"),
            "unknown group",
        ),
        (
            TextRule(id="r10", action="replace", pattern="(a)", replacement=r"\q"),
            "bad escape",
        ),
        (
            TextRule(id="r11", action="replace", pattern="(a)", replacement=r"\g<1"),
            "unterminated",
        ),
        (TextRule(id="r12", action="replace", find="a", text="x"), "no text"),
        (TextRule(id="r13", action="prepend"), "needs text"),
        (TextRule(id="r14", action="append", text="x", find="a"), "text only"),
        (TextRule(id="r15", action="prepend", text="x", pattern="a"), "text only"),
        (TextRule(id="", action="prepend", text="x"), "no id"),
    ],
)
def test_invalid_rules_raise_with_the_rule_id(rule: TextRule, message: str) -> None:
    with pytest.raises(RuleError, match=message) as info:
        TextRewriter([rule])
    if rule.id:
        assert repr(rule.id) in str(info.value)


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(RuleError, match="duplicate"):
        TextRewriter([_replace("a", "x", "y"), _replace("a", "z", "w")])


def test_rule_error_is_a_value_error() -> None:
    assert issubclass(RuleError, ValueError)


# --- whole texts -------------------------------------------------------------------


def test_literal_replace_all_occurrences_in_rule_order() -> None:
    rewriter = TextRewriter([_replace("a", "cat", "dog"), _replace("b", "dog", "wolf")])
    assert rewriter.apply("cat and dog, catcat") == "wolf and wolf, wolfwolf"


def test_literal_replace_is_non_overlapping_leftmost() -> None:
    rewriter = TextRewriter([_replace("a", "aa", "X")])
    assert rewriter.apply("aaaaa") == "XXa" == "aaaaa".replace("aa", "X")


def test_literal_replacement_is_verbatim() -> None:
    rewriter = TextRewriter([_replace("a", "x", r"\1\n")])
    assert rewriter.apply("axb") == "a\\1\\nb"


def test_regex_replace_with_groups() -> None:
    rewriter = TextRewriter(
        [
            _regex("num", r"(\d+)-(\d+)", r"\2-\1", 32),
            _regex("name", r"(?P<first>[A-Z])\w+ (?P<last>[A-Z]\w+)", r"\g<last>, \g<first>.", 64),
        ]
    )
    assert rewriter.apply("Ada Lovelace 12-34 x 5-6") == "Lovelace, A. 34-12 x 6-5"


def test_regex_replacement_escapes_and_whole_match() -> None:
    rewriter = TextRewriter([_regex("r", "b+", r"[\g<0>]\\\n\t", 8)])
    assert rewriter.apply("abbc") == "a[bb]\\\n\tc"


def test_regex_replacement_keeps_non_ascii_text() -> None:
    rewriter = TextRewriter([_regex("r", "(é+)", "«\\1»", 8)])
    assert rewriter.apply("caféé ok") == "caf«éé» ok"


def test_regex_unmatched_optional_group_is_empty() -> None:
    rewriter = TextRewriter([_regex("r", "a(x)?b", r"<\1>", 3)])
    assert rewriter.apply("ab axb") == "<> <x>"


def test_regex_empty_matches_in_context_are_ignored() -> None:
    rewriter = TextRewriter([_regex("r", r"q|\b", "Q", 1)])
    assert rewriter.apply("a q b") == "a Q b"


def test_prepend_and_append_in_rule_order_after_replaces() -> None:
    rewriter = TextRewriter(
        [
            TextRule(id="p1", action="prepend", text="[1]"),
            TextRule(id="a1", action="append", text="(a)"),
            _replace("r", "[1]", "one"),
            TextRule(id="p2", action="prepend", text="[2]"),
            TextRule(id="a2", action="append", text="(b)"),
        ]
    )
    assert rewriter.apply("x [1]") == "[1][2]x one(a)(b)"
    assert rewriter.apply("") == "[1][2](a)(b)"


def test_fast_path_returns_the_same_object() -> None:
    text = "".join(["nothing ", "to see here"])
    rewriter = TextRewriter([_replace("a", "secret", "x"), _regex("b", r"\d{3}", "#", 3)])
    assert rewriter.apply(text) is text
    assert TextRewriter([]).apply(text) is text
    assert TextRewriter([]).empty
    assert not rewriter.empty


def test_stream_returns_the_delta_itself_when_nothing_changes() -> None:
    stream = StreamRewriter(TextRewriter([_replace("a", "secret", "x")]))
    delta = "".join(["plain ", "text"])
    assert stream.feed(delta) is delta


# --- streams -----------------------------------------------------------------------

_LITERAL = TextRewriter(
    [_replace("a", "secret", "[S]"), _replace("b", "aab", "<>"), _replace("c", "<>x", "!")]
)
_REGEX = TextRewriter(
    [
        _regex("num", r"(\d{1,3})-(\d{1,3})", r"\2-\1", 7),
        _regex("word", r"\bfoo\b", "FOO", 3),
        _regex("end", r"end$", "END", 3),
        _regex("line", r"(?m)^hi", "HI", 2),
        _regex("nb", r"a\B", "\u03b1", 1),
        _regex("alt", r"ab\B|a", "_", 2),
    ]
)
_MIXED = TextRewriter(
    [
        TextRule(id="p", action="prepend", text=">> "),
        _replace("a", "cat", "dog"),
        _regex("b", r"d(o{1,4})g", r"D\1G", 6),
        TextRule(id="s", action="append", text=" <<"),
    ]
)
_TEXTS = [
    "",
    "a",
    "secret",
    "a secret and a secre and secretsecret",
    "aaab aab aaaab <>x aab x",
    "12-345 foo food foo. 1-2 hi\nhi there end",
    "xfoo foo_ foo ab abc a b aa end",
    "the end",
    "hi hi\nhi",
    "cat catcat dooog scat doooooog",
    "\u03b1\u03b1 secret é 1-2",
]


@pytest.mark.parametrize("rewriter", [_LITERAL, _REGEX, _MIXED], ids=["literal", "regex", "mixed"])
@pytest.mark.parametrize("text", _TEXTS)
def test_stream_equals_whole_text_on_every_split(rewriter: TextRewriter, text: str) -> None:
    _check_stream(rewriter, text)


def test_stream_examples() -> None:
    assert _stream(_LITERAL, ["a sec", "ret"]) == "a [S]"
    assert _stream(_REGEX, ["fo", "o", "d ", "foo"]) == "food FOO"
    assert _stream(_REGEX, ["the en", "d"]) == "the END"
    assert _stream(_REGEX, ["end", "s"]) == "ends"


def test_literal_stream_holds_only_a_prefix_of_find() -> None:
    stream = StreamRewriter(TextRewriter([_replace("a", "secret", "[S]")]))
    assert stream.feed("hello se") == "hello "
    assert stream.held == 2
    assert stream.feed("x") == "sex"
    assert stream.held == 0
    assert stream.feed("no match here") == "no match here"
    assert stream.feed("secre") == ""
    assert stream.held == 5
    assert stream.feed("t!") == "[S]!"
    assert stream.flush() == ""


def test_regex_stream_holds_at_most_max_match() -> None:
    stream = StreamRewriter(TextRewriter([_regex("d", r"\d{2,4}", "#", 4)]))
    out = [stream.feed(char) for char in "x" * 50]
    assert stream.held == 4
    out.append(stream.feed("12"))
    assert stream.held <= 4
    out.append(stream.feed("345 tail"))
    assert stream.held <= 4
    out.append(stream.flush())
    assert "".join(out) == "x" * 50 + "#5 tail"


def test_long_deltas_keep_the_hold_bounded() -> None:
    rewriter = _MIXED
    stream = StreamRewriter(rewriter)
    for _ in range(200):
        stream.feed("cat dooog " * 7)
        assert stream.held <= _bound(rewriter)


def test_prepend_comes_before_the_first_text_even_when_held() -> None:
    rewriter = TextRewriter(
        [
            TextRule(id="p", action="prepend", text="P: "),
            _replace("a", "secret", "[S]"),
            TextRule(id="s", action="append", text=" :A"),
        ]
    )
    stream = StreamRewriter(rewriter)
    assert stream.feed("") == ""
    assert stream.feed("sec") == "P: "
    assert stream.feed("re") == ""
    assert stream.feed("t ok") == "[S] ok"
    assert stream.flush() == " :A"


def test_flush_without_text_gives_prepend_and_append_and_resets() -> None:
    rewriter = TextRewriter(
        [
            TextRule(id="p", action="prepend", text="P"),
            TextRule(id="s", action="append", text="A"),
        ]
    )
    stream = StreamRewriter(rewriter)
    assert stream.flush() == "PA" == rewriter.apply("")
    assert stream.feed("x") == "Px"
    assert stream.flush() == "A"
    assert stream.feed("y") == "Py"


def test_regex_context_across_deltas() -> None:
    # ``\b`` and ``^`` see the text already emitted, not a fresh start.
    rewriter = TextRewriter([_regex("w", r"\bfoo", "F", 3), _regex("s", r"^x", "X", 1)])
    pieces = ["x", "y" * 10, "foo", " ", "foo", "x"]
    assert (
        _stream(rewriter, pieces)
        == rewriter.apply("".join(pieces))
        == "X" + "y" * 10 + "foo F" + "x"
    )


if _HYPOTHESIS:
    _FINDS = ["secret", "aab", "<>x", "12-3", "foo", "end", "hi", "cat", "dooog"]
    _ALPHABET = st.sampled_from([*_FINDS, "a", "b", "<", ">", "x", " ", "\n", "1", "-", "é"])

    @st.composite
    def _split_text(draw: st.DrawFn) -> tuple[str, list[str]]:
        text = "".join(draw(st.lists(_ALPHABET, max_size=30)))
        cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=8)))
        bounds = [0, *cuts, len(text)]
        return text, [text[i:j] for i, j in itertools.pairwise(bounds)]

    @settings(max_examples=300, deadline=None)
    @given(_split_text())
    def test_stream_invariant_random(case: tuple[str, list[str]]) -> None:
        text, pieces = case
        for rewriter in (_LITERAL, _REGEX, _MIXED):
            assert _stream(rewriter, pieces) == rewriter.apply(text)


# --- think splitting ---------------------------------------------------------------


def _split_stream(pieces: Sequence[str], *, opened: bool = False) -> tuple[str, str, int]:
    splitter = ThinkSplitter(opened=opened)
    visible: list[str] = []
    reasoning: list[str] = []
    max_held = 0
    segments = []
    for piece in pieces:
        segments.extend(splitter.feed(piece))
        max_held = max(max_held, splitter.held)
    segments.extend(splitter.flush())
    for kind, text in segments:
        assert text
        (reasoning if kind == "reasoning" else visible).append(text)
    return "".join(visible), "".join(reasoning), max_held


_THINK_CASES = [
    ("<think>plan</think>\n\nAnswer", ("Answer", "plan")),
    ("<thinking>a <b> c</thinking> done", ("done", "a <b> c")),
    ("pre <think>one</think> mid <think>two</think>\n end", ("pre mid end", "onetwo")),
    ("<think>never closed <thin", ("", "never closed <thin")),
    ("<thing> is not a tag, <b>bold</b> <thin", ("<thing> is not a tag, <b>bold</b> <thin", "")),
    ("<think>x</thinking> still</think>y", ("y", "x</thinking> still")),
    ("<THINK>upper</THINK>", ("<THINK>upper</THINK>", "")),
    ("no tags at all", ("no tags at all", "")),
    ("<think></think>  \n", ("", "")),
    ("<<think>>x</think>< /think>", ("<< /think>", ">x")),
    ("a</think>b", ("a</think>b", "")),
    ("<think>r</think>\n\n<think>s</think>\n t", ("t", "rs")),
]


@pytest.mark.parametrize(("text", "expected"), _THINK_CASES)
def test_split_think_whole(text: str, expected: tuple[str, str]) -> None:
    assert split_think(text) == expected


@pytest.mark.parametrize(("text", "expected"), _THINK_CASES)
def test_think_splitter_every_split(text: str, expected: tuple[str, str]) -> None:
    for pieces in _splits(text):
        visible, reasoning, max_held = _split_stream(pieces)
        assert (visible, reasoning) == expected, pieces
        assert max_held < len("</thinking>")


def test_think_tag_split_across_deltas() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("Hi <thi") == [("text", "Hi ")]
    assert splitter.held == 4
    assert splitter.feed("nk>why") == [("reasoning", "why")]
    assert splitter.reasoning
    assert splitter.feed(" so</th") == [("reasoning", " so")]
    assert splitter.feed("ink>") == []
    assert splitter.feed("\n") == []
    assert splitter.feed("\nok") == [("text", "ok")]
    assert splitter.flush() == []


def test_think_false_prefix_is_released_unchanged() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("a <thin") == [("text", "a ")]
    assert splitter.feed("g> b") == [("text", "<thing> b")]
    assert splitter.feed("<b") == [("text", "<b")]
    assert splitter.feed("<") == []
    assert splitter.feed("b>x") == [("text", "<b>x")]


def test_think_unclosed_is_reasoning_on_flush() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<think>deep </thi") == [("reasoning", "deep ")]
    assert splitter.flush() == [("reasoning", "</thi")]
    assert not splitter.reasoning


def test_think_segments_are_merged_per_kind() -> None:
    splitter = ThinkSplitter()
    out = splitter.feed("a<think>b</think>c<think></think>d")
    assert out == [("text", "a"), ("reasoning", "b"), ("text", "cd")]


def test_think_opened_starts_in_reasoning() -> None:
    assert split_think("plan</think>\n\nanswer", opened=True) == ("answer", "plan")
    assert split_think("plan</thinking>answer", opened=True) == ("answer", "plan")
    text = "r1</think> a <think>r2</think>b"
    for pieces in _splits(text):
        assert _split_stream(pieces, opened=True)[:2] == ("a b", "r1r2")
