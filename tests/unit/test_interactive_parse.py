"""The in-chat command parser: extproc.interactive.parse (pure, no Envoy)."""

from __future__ import annotations

import itertools
import pickle

import pytest

from extproc.interactive import (
    MAX_ARGS_CHARS,
    MAX_COMMANDS,
    MAX_NAME_CHARS,
    Command,
    CommandSyntaxError,
    Scan,
    has_prefix,
    scan,
    strip_commands,
)


def only(text: str, prefix: str = "!/") -> Command:
    """The one well-formed command in ``text``."""
    result = scan(text, prefix)
    assert result.errors == ()
    assert len(result.commands) == 1, result.commands
    return result.commands[0]


def only_error(text: str, prefix: str = "!/") -> CommandSyntaxError:
    result = scan(text, prefix)
    assert result.commands == ()
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


def names(result: Scan) -> list[str]:
    return [c.name for c in result.commands]


# -- the documented examples -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "args", "kwargs"),
    [
        ("!/hello", "hello", (), ()),
        ("!/help(set)", "help", ("set",), ()),
        (
            "!/set(model=gpt-4o, temperature=0.2)",
            "set",
            (),
            (("model", "gpt-4o"), ("temperature", "0.2")),
        ),
        ("!/unset(temperature, model)", "unset", ("temperature", "model"), ()),
        ("!/oneoff(openai:gpt-4o-mini)", "oneoff", ("openai:gpt-4o-mini",), ()),
        (
            "!/backend(openai:gpt-4o|anthropic:claude-sonnet-4)",
            "backend",
            ("openai:gpt-4o|anthropic:claude-sonnet-4",),
            (),
        ),
        ("!/max", "max", (), ()),
        ("!/no-think", "no-think", (), ()),
        ("!/route-append(openai:gpt-4o)", "route-append", ("openai:gpt-4o",), ()),
        (
            '!/set(project-dir="/home/me/my project")',
            "set",
            (),
            (("project-dir", "/home/me/my project"),),
        ),
    ],
)
def test_examples(
    text: str, name: str, args: tuple[str, ...], kwargs: tuple[tuple[str, str], ...]
) -> None:
    result = scan(text)
    assert result.commands == (Command(name, args, kwargs, text, 0, len(text)),)
    assert result.errors == ()
    assert result.remainder == ""


def test_offsets_and_source_text_inside_prose() -> None:
    text = "Please  !/set(Model = gpt-4o ,  Project_Dir='/tmp' )  now."
    cmd = only(text)
    assert cmd.text == "!/set(Model = gpt-4o ,  Project_Dir='/tmp' )"
    assert text[cmd.start : cmd.end] == cmd.text
    assert cmd.kwargs == (("model", "gpt-4o"), ("project-dir", "/tmp"))
    assert scan(text).remainder == "Please now."


def test_names_are_lower_cased_and_keep_underscores() -> None:
    assert only("!/No_Think").name == "no_think"
    assert only("!/MAX").name == "max"
    assert only("!/a1-b_2").name == "a1-b_2"


def test_mixed_positional_and_keyword_arguments_in_order() -> None:
    cmd = only("!/x(a, k=1, b, K_2=2, k=3)")
    assert cmd.args == ("a", "b")
    assert cmd.kwargs == (("k", "1"), ("k-2", "2"), ("k", "3"))


def test_empty_argument_list() -> None:
    assert only("!/hello()").args == ()
    assert only("!/hello(  )").text == "!/hello(  )"


def test_values_keep_inner_spaces_and_equals_signs() -> None:
    cmd = only("!/set(system = be terse ,  q=a=b)")
    assert cmd.kwargs == (("system", "be terse"), ("q", "a=b"))
    # not a key: the text before "=" is not a name
    assert only("!/backend(gpt-4o?temperature=0.2)").args == ("gpt-4o?temperature=0.2",)
    assert only("!/backend(openai:gpt-4o?temperature=0.2)").args == (
        "openai:gpt-4o?temperature=0.2",
    )


# -- quoting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ('"plain"', "plain"),
        ("'single'", "single"),
        ('"a, b) c(d"', "a, b) c(d"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'it\'s'", "it's"),
        (r'"back\\slash"', "back\\slash"),
        (r'"C:\path\to"', r"C:\path\to"),  # other backslashes stay
        ('"it\'s"', "it's"),
        ("'say \"hi\"'", 'say "hi"'),
        ('""', ""),
        ('"  padded  "', "  padded  "),
        ('"!/max `code`"', "!/max `code`"),
    ],
)
def test_quoted_values(source: str, value: str) -> None:
    assert only(f"!/set(k={source})").kwargs == (("k", value),)
    assert only(f"!/say( {source} )").args == (value,)


def test_quote_inside_a_plain_value_is_literal() -> None:
    assert only("!/say(it's fine)").args == ("it's fine",)


def test_quoted_command_text_is_not_a_second_command() -> None:
    result = scan('!/set(system="use !/max and `!/x`") !/max')
    assert names(result) == ["set", "max"]
    assert result.commands[0].kwargs == (("system", "use !/max and `!/x`"),)


# -- nesting -----------------------------------------------------------------------


def test_nested_parentheses_and_brackets_in_plain_values() -> None:
    assert only("!/backend(a(b,c)|d, e)").args == ("a(b,c)|d", "e")
    assert only("!/backend(a[weight=2,first]^b[weight=1])").args == (
        "a[weight=2,first]^b[weight=1]",
    )
    assert only("!/x(f(g(h)), [1,[2]])").args == ("f(g(h))", "[1,[2]]")
    # an unmatched "]" is just a character
    assert only("!/x(a], b)").args == ("a]", "b")


def test_unclosed_nested_parenthesis() -> None:
    err = only_error("!/backend(a(b|c) and more")
    assert err.reason == "missing ')'"
    assert err.text == "!/backend(a(b|c) and more"


# -- code is not scanned -----------------------------------------------------------


def test_fenced_code_is_not_scanned() -> None:
    text = "Try this:\n```\n!/set(model=x)\n```\n!/max\n~~~text\n!/no-think\n~~~\nend"
    result = scan(text)
    assert names(result) == ["max"]
    assert result.remainder == "Try this:\n```\n!/set(model=x)\n```\n~~~text\n!/no-think\n~~~\nend"


def test_fence_details() -> None:
    # a longer closing fence closes; a shorter one does not
    assert names(scan("````\n!/a\n```\n!/b\n`````\n!/c")) == ["c"]
    # up to three spaces of indent
    assert names(scan("   ```\n!/a\n   ```\n!/b")) == ["b"]
    # a closing fence has nothing after it
    assert names(scan("```\n!/a\n``` x\n!/b\n```\n!/c")) == ["c"]
    # an unclosed fence runs to the end
    assert names(scan("!/a\n```python\n!/b\n!/c")) == ["a"]
    # tildes close tildes only
    assert names(scan("~~~\n!/a\n```\n!/b\n~~~\n!/c")) == ["c"]


def test_backticks_after_a_fence_marker_make_inline_code_not_a_fence() -> None:
    assert names(scan("```x``` !/a\n!/b")) == ["a", "b"]
    assert names(scan("```!/a``` !/b")) == ["b"]


def test_inline_code_is_not_scanned() -> None:
    result = scan("Type `!/set(model=x)` or ``!/max ` !/y`` to switch. !/hello")
    assert names(result) == ["hello"]
    assert result.remainder == "Type `!/set(model=x)` or ``!/max ` !/y`` to switch."


def test_inline_code_closes_on_a_run_of_the_same_length() -> None:
    # "``" opens, the single backticks inside do not close it
    assert names(scan("``a ` !/x ` b`` !/y")) == ["y"]
    # an unmatched run is literal text
    assert names(scan("it costs ` nothing !/x")) == ["x"]
    assert names(scan("`` !/x ` !/y")) == ["x", "y"]


def test_inline_code_spans_lines_but_not_paragraphs() -> None:
    assert names(scan("`a\n!/x b`")) == []
    assert names(scan("`a\n\n!/x b`")) == ["x"]
    assert names(scan("`a\n```\n!/y\n```\n!/x`")) == ["x"]


def test_a_command_that_holds_backticks_does_not_open_code() -> None:
    result = scan("!/set(k=`) then !/max `x`")
    assert names(result) == ["set", "max"]
    assert result.remainder == "then `x`"


# -- what is not a command ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "see http://x!/y",
        "a!/b",
        "(!/max)",
        '"!/max"',
        "x.!/max",
        "!/ hello",
        "!/(x)",
        "!/1st",
        "!/-x",
        "!/",
        "end !/",
        "!/!/x",
        "!/éclair",
    ],
)
def test_not_commands(text: str) -> None:
    result = scan(text)
    assert result == Scan((), (), text)
    assert result.remainder is text


def test_space_between_name_and_parenthesis_ends_the_command() -> None:
    result = scan("!/help (set)")
    assert result.commands == (Command("help", (), (), "!/help", 0, 6),)
    assert result.remainder == "(set)"


def test_whitespace_of_any_kind_before_the_prefix() -> None:
    assert names(scan("a\t!/x b\n!/y c\u00a0!/z")) == ["x", "y", "z"]


def test_commands_straight_after_each_other() -> None:
    result = scan("go !/max!/no-think(x)!/hello. Thanks")
    assert names(result) == ["max", "no-think", "hello"]
    assert result.remainder == "go. Thanks"


# -- malformed commands ------------------------------------------------------------


def test_unclosed_parenthesis() -> None:
    err = only_error("!/set(model=")
    assert str(err) == "!/set(model=: missing ')'"
    assert err.reason == "missing ')'"
    assert err.text == "!/set(model="
    assert (err.start, err.end) == (0, 12)
    assert isinstance(err, ValueError)


def test_unclosed_parenthesis_takes_the_rest_of_its_line_only() -> None:
    text = "Hi !/set(model=gpt-4o and then\nthe question"
    result = scan(text)
    assert [e.text for e in result.errors] == ["!/set(model=gpt-4o and then"]
    assert result.remainder == "Hi\nthe question"


def test_unterminated_quote() -> None:
    text = 'Hi !/set(system="be brief) please\r\nnext line'
    result = scan(text)
    assert result.commands == ()
    (err,) = result.errors
    assert err.reason == "unterminated quote"
    assert err.text == '!/set(system="be brief) please'
    assert str(err) == '!/set(system="be brief) please: unterminated quote'
    assert result.remainder == "Hi\r\nnext line"
    assert only_error("!/x('abc").reason == "unterminated quote"
    assert only_error('!/x("abc\\"').reason == "unterminated quote"


def test_arguments_too_long() -> None:
    fits = "!/x(" + "a" * MAX_ARGS_CHARS + ")"
    assert only(fits).args == ("a" * MAX_ARGS_CHARS,)
    quoted_fits = '!/x("' + "a" * (MAX_ARGS_CHARS - 2) + '")'
    assert len(only(quoted_fits).args[0]) == MAX_ARGS_CHARS - 2

    text = "before !/x(" + "a" * (MAX_ARGS_CHARS + 1) + ") after\nnext"
    result = scan(text)
    (err,) = result.errors
    assert err.reason == f"arguments longer than {MAX_ARGS_CHARS} characters"
    assert err.text.startswith("!/x(aaa") and err.text.endswith(") after")
    assert str(err).endswith(f"...: arguments longer than {MAX_ARGS_CHARS} characters")
    assert len(str(err)) < 120
    assert result.remainder == "before\nnext"

    err = only_error('!/x("' + "a" * MAX_ARGS_CHARS + '")')
    assert err.reason.startswith("arguments longer than")


def test_name_too_long() -> None:
    assert only("!/" + "a" * MAX_NAME_CHARS).name == "a" * MAX_NAME_CHARS
    err = only_error("x !/" + "a" * (MAX_NAME_CHARS + 1) + "(1) y")
    assert err.reason == f"command name longer than {MAX_NAME_CHARS} characters"
    assert scan("x !/" + "a" * (MAX_NAME_CHARS + 1) + "(1) y").remainder == "x y"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("!/unset(a,,b) rest", "empty argument"),
        ("!/unset(a, ) rest", "empty argument"),
        ("!/unset(,) rest", "empty argument"),
        ("!/set(model=) rest", "missing value for 'model'"),
        ("!/set(model= , x=1) rest", "missing value for 'model'"),
        ('!/set(k="a"b, x=1) rest', "unexpected text after a closing quote"),
    ],
)
def test_malformed_arguments_end_at_their_parenthesis(text: str, reason: str) -> None:
    result = scan(text)
    (err,) = result.errors
    assert err.reason == reason
    assert err.text == text.removesuffix(" rest")
    assert result.remainder == "rest"


def test_errors_and_commands_in_one_message() -> None:
    text = "Hello !/max, and !/set(model=\nthen !/oneoff(a:b) please\n!/unset(,)"
    result = scan(text)
    assert names(result) == ["max", "oneoff"]
    assert [e.reason for e in result.errors] == ["missing ')'", "empty argument"]
    assert result.remainder == "Hello, and\nthen please"


def test_too_many_commands() -> None:
    text = " ".join(f"!/c{i}" for i in range(MAX_COMMANDS + 3)) + " done"
    result = scan(text)
    assert names(result) == [f"c{i}" for i in range(MAX_COMMANDS)]
    assert [e.text for e in result.errors] == [
        f"!/c{i}" for i in range(MAX_COMMANDS, MAX_COMMANDS + 3)
    ]
    assert all(e.reason.startswith("too many commands") for e in result.errors)
    assert result.remainder == "done"


def test_malformed_commands_do_not_count_towards_the_limit() -> None:
    text = "!/bad( " + " ".join(f"\n!/c{i}" for i in range(MAX_COMMANDS))
    result = scan(text)
    assert len(result.commands) == MAX_COMMANDS
    assert len(result.errors) == 1


def test_syntax_error_pickles() -> None:
    err = only_error("!/set(model=")
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, CommandSyntaxError)
    assert (copy.reason, copy.text, copy.start, copy.end, str(copy)) == (
        err.reason,
        err.text,
        err.start,
        err.end,
        str(err),
    )


# -- several commands, custom prefixes ---------------------------------------------


def test_several_commands_with_prose_between() -> None:
    text = (
        "!/set(model=gpt-4o)\n"
        "Can you look at this?  !/no-think  It's short.\n"
        "  !/oneoff(openai:gpt-4o-mini)  \n"
        "Thanks !/max"
    )
    result = scan(text)
    assert names(result) == ["set", "no-think", "oneoff", "max"]
    assert result.remainder == "Can you look at this? It's short.\nThanks"
    assert [text[c.start : c.end] for c in result.commands] == [c.text for c in result.commands]


@pytest.mark.parametrize("prefix", ["@@", "/!", "#", "::cmd:"])
def test_custom_prefix(prefix: str) -> None:
    text = f"Hi {prefix}set(model=x) and a{prefix}b and !/max {prefix}"
    result = scan(text, prefix)
    assert [(c.name, c.kwargs) for c in result.commands] == [("set", (("model", "x"),))]
    assert result.remainder == f"Hi and a{prefix}b and !/max {prefix}"
    assert strip_commands(text, prefix) == result.remainder
    assert has_prefix(text, prefix)


def test_custom_prefix_overlapping_itself() -> None:
    assert names(scan("@@@x @@y", "@@")) == ["y"]
    assert names(scan("x /!/!a /!b", "/!")) == ["b"]


@pytest.mark.parametrize("prefix", ["", " ", "! /", "`", "\\", "a\n"])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        scan("text", prefix)
    with pytest.raises(ValueError, match="prefix"):
        strip_commands("text", prefix)
    with pytest.raises(ValueError, match="prefix"):
        has_prefix("text", prefix)


# -- the remainder -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "remainder"),
    [
        ("!/max", ""),
        ("  !/max  \n\n", ""),
        ("Hello\n!/max\nWorld", "Hello\nWorld"),
        ("Hello\n   !/max   \nWorld", "Hello\nWorld"),
        ("Hello\n\n!/max\n\nWorld", "Hello\n\n\nWorld"),
        ("Hello\n!/max !/no-think\nWorld", "Hello\nWorld"),
        ("!/max\nHello", "Hello"),
        ("Hello\n!/max", "Hello"),
        ("please !/max and go", "please and go"),
        ("please   !/max   and go", "please and go"),
        ("please\t!/max\tand go", "please and go"),
        ("!/max please", "please"),
        ("please !/max", "please"),
        ("use !/max.", "use."),
        ("use !/max, then !/no-think; ok?", "use, then; ok?"),
        ("(see !/help)", "(see)"),
        ("a !/x/b", "a /b"),
        ("a !/x`b`", "a `b`"),
        ("- item\n  - sub !/max here\n  - !/max sub2", "- item\n  - sub here\n  - sub2"),
        ("Hello\r\n!/max\r\nWorld", "Hello\r\nWorld"),
        ("Hello !/max\r\nWorld", "Hello\r\nWorld"),
        ("  lead\n!/max\ntrail  \n", "lead\ntrail"),
        ("    indented\n!/max", "indented"),
        ("```\ncode  \n```\n!/max\n", "```\ncode  \n```"),
    ],
)
def test_remainder(text: str, remainder: str) -> None:
    assert scan(text).remainder == remainder
    assert strip_commands(text) == remainder


def test_remainder_is_the_text_itself_when_nothing_is_removed() -> None:
    text = "  no commands here, only a!/b and `!/c`  "
    assert scan(text).remainder is text
    assert strip_commands(text) is text


def test_fast_path_returns_the_same_object() -> None:
    text = "  nothing to see here  \n"
    assert not has_prefix(text, "!/")
    assert strip_commands(text) is text
    result = scan(text)
    assert result == Scan((), (), text)
    assert result.remainder is text
    assert has_prefix("x !/y", "!/")
    assert has_prefix("x !/y")


def test_removal_does_not_create_a_code_fence() -> None:
    # without the escape, the remainder's first line would open a fence that the
    # original's "```" then closes, and "!/y" would become a command
    text = "!/x ```\n```\n!/y\n```"
    result = scan(text)
    assert names(result) == ["x"]
    assert result.remainder == "\\```\n```\n!/y\n```"
    assert scan(result.remainder).commands == ()
    # the same through the final strip of the first line's indent
    text = "    ```\n!/x\n```\n!/y\n```"
    assert scan(text).remainder == "\\```\n```\n!/y\n```"
    # and where the command held the backtick that kept the line from being a fence
    assert scan("``` !/set(x=`)\n```\n!/y\n```").remainder == "\\```\n```\n!/y\n```"


def test_removal_does_not_create_a_prefix() -> None:
    assert scan("a ! !/x/y").remainder == "a ! /y"
    assert scan("a / !/x!y", "/!").remainder == "a / !/x!y"  # "/!x" is not "/!" + name
    text = "a / /!x!b"
    result = scan(text, "/!")
    assert names(result) == ["x"]
    assert result.remainder == "a / !b"
    assert scan(result.remainder, "/!").commands == ()


# -- linear time -------------------------------------------------------------------

N = 200_000


def test_adversarial_open_parentheses() -> None:
    text = "!/a(" * (N // 4)
    result = scan(text)
    assert result.commands == ()
    (err,) = result.errors
    assert err.reason == f"arguments longer than {MAX_ARGS_CHARS} characters"
    assert err.text is not None and len(err.text) == len(text)
    assert result.remainder == ""


def test_adversarial_bare_prefixes() -> None:
    for text in ("!/" * (N // 2), " !/" * (N // 3), "!/ " * (N // 3), "a!/b" * (N // 4)):
        result = scan(text)
        assert (result.commands, result.errors) == ((), ())
        assert result.remainder is text


def test_adversarial_many_commands() -> None:
    result = scan(" !/a" * (N // 4))
    assert len(result.commands) == MAX_COMMANDS
    assert len(result.errors) == N // 4 - MAX_COMMANDS
    assert result.remainder == ""

    result = scan("!/a()" * (N // 5))
    assert len(result.commands) + len(result.errors) == N // 5
    assert result.remainder == ""


def test_adversarial_lines_of_unclosed_commands() -> None:
    text = "x !/a(b\n" * (N // 8)
    result = scan(text)
    assert len(result.errors) == N // 8
    assert result.remainder == "\n".join(["x"] * (N // 8))


def test_adversarial_quotes_and_backslashes() -> None:
    result = scan('!/a("' * (N // 5))
    assert len(result.errors) == 1 and result.remainder == ""
    result = scan('!/a("' + "\\" * N)
    assert [e.reason for e in result.errors] == [
        f"arguments longer than {MAX_ARGS_CHARS} characters"
    ]
    result = scan('!/a("' + '\\"' * (N // 2) + '")')
    assert result.errors[0].reason.startswith("arguments longer than")


def test_adversarial_long_name_and_nesting() -> None:
    assert only_error("!/" + "a" * N).reason.startswith("command name longer")
    assert only_error("!/a" + "(" * N).reason.startswith("arguments longer than")
    assert only_error("!/a(" + "[" * N + "]" * N + ")").reason.startswith("arguments longer")


def test_adversarial_backticks() -> None:
    # runs of every length up to ~630, none closed: each is literal, so every
    # command after them counts
    lengths = range(1, 600)
    text = "".join(" " + "`" * k + " !/a" for k in lengths)
    result = scan(text)
    assert len(result.commands) + len(result.errors) == len(lengths)
    # the same runs, each closed: all code
    text = "".join(" " + "`" * k + " !/a " + "`" * k for k in lengths)
    assert scan(text).remainder is text
    # many short spans
    assert len(scan("`x` !/a " * (N // 8)).errors) == N // 8 - MAX_COMMANDS
    # "``" pairs with the next "``" and "`" with the next "`": of every three
    # copies, the first's command is in ``...``, the third's in `...`
    triples = N // 27
    result = scan("`` !/a ` " * (3 * triples))
    assert len(result.commands) + len(result.errors) == triples


def test_adversarial_fences() -> None:
    text = "```\n!/a\n" * (N // 8)
    result = scan(text)
    assert len(result.commands) == MAX_COMMANDS
    assert len(result.errors) == N // 16 - MAX_COMMANDS
    text = "\n" * N + "!/a"
    assert scan(text).remainder == ""


# -- properties --------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ATOMS = st.sampled_from(
    [
        "!/",
        "!/x(",
        "!/a!/b",
        'k="v"',
        "    ",
        "\u2028",
        "!",
        "/",
        "@@",
        "a",
        "x",
        "max",
        "set",
        "k=",
        "=",
        "(",
        ")",
        "[",
        "]",
        ",",
        '"',
        "'",
        "\\",
        "`",
        "```",
        "~~~",
        " ",
        "   ",
        "\t",
        "\n",
        "\r\n",
        ".",
        ":",
        "é",
        "\u00a0",
    ]
)
_TEXT = st.lists(_ATOMS, max_size=40).map("".join) | st.text(max_size=60)


@settings(max_examples=600, deadline=None)
@given(text=_TEXT, prefix=st.sampled_from(["!/", "@@", "/!", "!", "/"]))
@example(text="!/x ```\n```\n!/y\n```", prefix="!/")
@example(text="a ! !/x/y", prefix="!/")
@example(text="!/x!/y", prefix="!/")
@example(text='!/x("a"', prefix="!/")
@example(text="    ```\n!/x\n```\n!/y\n```", prefix="!/")
def test_scan_properties(text: str, prefix: str) -> None:
    result = scan(text, prefix)
    for cmd in result.commands:
        assert text[cmd.start : cmd.end] == cmd.text
        assert cmd.text.startswith(prefix)
        assert "\n" not in cmd.text
    for err in result.errors:
        assert text[err.start : err.end] == err.text
        assert "\n" not in err.text
    spans = sorted(
        [(c.start, c.end) for c in result.commands] + [(e.start, e.end) for e in result.errors]
    )
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert len(result.commands) <= MAX_COMMANDS
    # the remainder holds no command, and scanning it again changes nothing
    again = scan(result.remainder, prefix)
    assert (again.commands, again.errors) == ((), ())
    assert again.remainder is result.remainder
    assert strip_commands(text, prefix) == result.remainder
    if not spans:
        assert result.remainder is text
