"""The incremental SSE parser and encoder, and chunking-independence of the Chat stream decoder."""

from __future__ import annotations

import itertools
import json
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.canonical import StreamEvent
from extproc.canonical.aggregate import aggregate_events
from extproc.codecs.openai_chat import ChatStreamDecoder
from extproc.codecs.sse import MAX_EVENT_BYTES, SseError, SseEvent, SseParser, encode_event
from tests.codecs.conftest import PROPERTY_SETTINGS

LINE_ENDS = (b"\n", b"\r\n", b"\r")


def parse(chunks: Iterable[bytes], max_event_bytes: int = MAX_EVENT_BYTES) -> list[SseEvent]:
    parser = SseParser(max_event_bytes)
    events: list[SseEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events + parser.finish()


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --------------------------------------------------------------------------------------------
# Line ends and fields


@pytest.mark.parametrize("eol", LINE_ENDS, ids=["LF", "CRLF", "CR"])
def test_line_ends(eol: bytes) -> None:
    stream = b"data: one" + eol + eol + b"data: two" + eol + eol
    events = parse([stream])
    assert [e.data for e in events] == [b"one", b"two"]
    assert [e.raw for e in events] == [b"data: one" + eol + eol, b"data: two" + eol + eol]
    assert all(e.event is None for e in events)


def test_mixed_line_ends_in_one_stream() -> None:
    stream = b"data: a\r\n\r\ndata: b\n\ndata: c\r\rdata: d\r\n\n"
    assert [e.data for e in parse([stream])] == [b"a", b"b", b"c", b"d"]


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b"data: x", b"x"),
        (b"data:x", b"x"),
        (b"data:  x", b" x"),
        (b"data:", b""),
        (b"data: ", b""),
        (b"data", b""),
        (b"data: a: b", b"a: b"),
        (b"data: [DONE]", b"[DONE]"),
    ],
)
def test_data_field_forms(line: bytes, data: bytes) -> None:
    (event,) = parse([line + b"\n\n"])
    assert event.data == data


def test_comments_are_ignored() -> None:
    stream = b": keep-alive\n\n:\n\ndata: x\n: inside an event\n\n: trailing\n\n"
    (event,) = parse([stream])
    assert event.data == b"x"
    assert event.raw == b"data: x\n: inside an event\n\n"


def test_multi_line_data_is_joined_with_newlines() -> None:
    (event,) = parse([b'data: {\r\ndata:  "a": 1\r\ndata: }\r\n\r\n'])
    assert event.data == b'{\n "a": 1\n}'


def test_event_field_and_its_reset_between_events() -> None:
    stream = b"event: message_start\ndata: {}\n\ndata: plain\n\nevent:ping\ndata: 1\n\n"
    events = parse([stream])
    assert [(e.event, e.data) for e in events] == [
        ("message_start", b"{}"),
        (None, b"plain"),
        ("ping", b"1"),
    ]


def test_event_with_only_an_event_field_is_dispatched_with_empty_data() -> None:
    (event,) = parse([b"event: ping\n\n"])
    assert (event.event, event.data) == ("ping", b"")


def test_unknown_fields_are_ignored_but_kept_in_raw() -> None:
    stream = b"id: 7\nretry: 1000\nfoo: bar\n\nid: 8\ndata: x\n\n"
    (event,) = parse([stream])
    assert event.data == b"x"
    assert event.raw == b"id: 8\ndata: x\n\n"


def test_non_utf8_event_name_does_not_fail() -> None:
    (event,) = parse([b"event: \xff\xfe\ndata: x\n\n"])
    assert event.event == "\ufffd\ufffd"


# --------------------------------------------------------------------------------------------
# Incremental feeding and finish()


@pytest.mark.parametrize("tail", [b"", b"\n", b"\r\n", b"\r"], ids=["none", "LF", "CRLF", "CR"])
def test_event_without_trailing_blank_line_is_flushed_by_finish(tail: bytes) -> None:
    parser = SseParser()
    assert parser.feed(b"data: first\n\ndata: last" + tail) == [
        SseEvent(data=b"first", raw=b"data: first\n\n")
    ]
    # The raw bytes of an unterminated last event get their blank line, so a
    # pass-through client can still end the event.
    terminated = b"data: last" + (tail * 2 if tail else b"\n\n")
    assert parser.finish() == [SseEvent(data=b"last", raw=terminated)]
    assert parser.finish() == []


def test_finish_without_pending_event_returns_nothing() -> None:
    parser = SseParser()
    assert parser.feed(b"data: x\n\n: comment") != []
    assert parser.finish() == []


def test_cr_then_lf_split_across_chunks_is_one_line_end() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r") == []
    assert parser.feed(b"\n") == [SseEvent(data=b"a", raw=b"data: a\r\n\r\n")]


def test_cr_only_stream_fed_in_pieces() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\r") == []  # might still be "\r\n"
    assert parser.feed(b"data: b\r\r") == [SseEvent(data=b"a", raw=b"data: a\r\r")]
    assert parser.finish() == [SseEvent(data=b"b", raw=b"data: b\r\r")]


def test_split_inside_a_utf8_character() -> None:
    payload = json.dumps({"text": "maré — 潮汐 🌊"}, ensure_ascii=False).encode()
    stream = b"data: " + payload + b"\n\n"
    start = stream.index("🌊".encode())
    for cut in range(start, start + 5):
        (event,) = parse([stream[:cut], stream[cut:]])
        assert event.data == payload
        assert json.loads(event.data)["text"].endswith("🌊")


def test_raw_bytes_rebuild_the_stream_minus_comment_only_blocks() -> None:
    blocks = [
        b": hello\n\n",
        b"event: a\r\ndata: 1\r\n\r\n",
        b"data: 2\n: note\ndata: 3\n\n",
        b":keep-alive\r\r",
        b"id: 4\rdata: 4\r\r",
        b"data: [DONE]\n\n",
    ]
    stream = b"".join(blocks)
    events = parse([stream])
    assert b"".join(e.raw for e in events) == b"".join(
        b for i, b in enumerate(blocks) if i not in (0, 3)
    )
    for cut in range(len(stream) + 1):
        assert parse([stream[:cut], stream[cut:]]) == events


# --------------------------------------------------------------------------------------------
# Size bound


def test_size_bound_on_an_incomplete_event() -> None:
    parser = SseParser(max_event_bytes=64)
    parser.feed(b"data: " + b"x" * 40)
    with pytest.raises(SseError):
        parser.feed(b"x" * 40)


def test_size_bound_on_an_event_that_arrives_whole() -> None:
    """The bound must not depend on how the bytes were chunked."""
    with pytest.raises(SseError):
        parse([b"data: " + b"x" * 100 + b"\n\n"], max_event_bytes=64)
    with pytest.raises(SseError):
        parse([b"data: ok\n\ndata: " + b"x" * 100 + b"\n\ndata: ok\n\n"], max_event_bytes=64)


def test_size_bound_is_per_event_not_per_stream() -> None:
    stream = b"".join(b"data: " + b"%02d" % i + b"x" * 40 + b"\n\n" for i in range(50))
    assert len(stream) > 64 * 10
    events = parse([stream], max_event_bytes=64)
    assert len(events) == 50
    events = parse(split_at(stream, range(0, len(stream), 7)), max_event_bytes=64)
    assert len(events) == 50


def test_event_exactly_at_the_bound_is_accepted() -> None:
    stream = b"data: " + b"x" * 56 + b"\n\n"
    assert len(stream) == 64
    assert [e.data for e in parse([stream], max_event_bytes=64)] == [b"x" * 56]


def test_sse_error_is_a_value_error() -> None:
    assert issubclass(SseError, ValueError)


# --------------------------------------------------------------------------------------------
# encode_event


def test_encode_event_forms() -> None:
    assert encode_event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_event(b"x", "ping") == b"event: ping\ndata: x\n\n"
    assert encode_event(b"a\nb\n") == b"data: a\ndata: b\ndata: \n\n"
    assert encode_event(b"") == b"data: \n\n"
    assert encode_event("é".encode(), "naïve") == "event: naïve\ndata: é\n\n".encode()


@pytest.mark.parametrize(
    ("data", "event"),
    [(b"x", None), (b" leading space", "e"), (b"a\n\nb", None), (b"", "only-name"), (b"\n", None)],
)
def test_encode_event_round_trips_through_the_parser(data: bytes, event: str | None) -> None:
    encoded = encode_event(data, event)
    assert parse([encoded]) == [SseEvent(data=data, event=event, raw=encoded)]


# --------------------------------------------------------------------------------------------
# Properties: any chunking gives the same events as the whole stream


@dataclass(frozen=True)
class Block:
    """One generated SSE block: an event, or (``data is None``) a comment-only block."""

    data: bytes | None
    event: str | None
    comment: bytes | None
    field: bytes | None


json_text = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
).map(lambda v: json.dumps(v, ensure_ascii=False))
# Any text without CR (SSE cannot carry a lone CR in data; LF becomes several data lines).
free_text = st.text(st.characters(codec="utf-8", exclude_characters="\r"))
line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"))
payloads = (json_text | free_text).map(lambda s: s.encode("utf-8", "surrogatepass"))
blocks = st.builds(
    Block,
    data=st.none() | payloads,
    event=st.none() | line_text.filter(bool),
    comment=st.none() | line_text.map(lambda s: b": " + s.encode()),
    field=st.none() | st.sampled_from([b"id: 42", b"retry: 3000", b"x-unknown: 1"]),
)


def render(items: Sequence[Block], eol: bytes, final_blank_line: bool) -> bytes:
    out = b""
    for item in items:
        if item.data is None:
            out += (item.comment or b":") + b"\n\n"
            continue
        if item.comment is not None:
            out += item.comment + b"\n"
        if item.field is not None:
            out += item.field + b"\n"
        out += encode_event(item.data, item.event)
    if not final_blank_line and out.endswith(b"\n\n"):
        out = out[:-1]
    return out.replace(b"\n", eol)


@PROPERTY_SETTINGS
@given(
    items=st.lists(blocks, max_size=8),
    eol=st.sampled_from(LINE_ENDS),
    final_blank_line=st.booleans(),
    data=st.data(),
)
def test_any_chunking_yields_the_same_events(
    items: list[Block], eol: bytes, final_blank_line: bool, data: st.DataObject
) -> None:
    stream = render(items, eol, final_blank_line)
    whole = parse([stream])
    expected = [(b.data, b.event) for b in items if b.data is not None]
    assert [(e.data, e.event) for e in whole] == expected
    # Raw bytes are exact: joined, they rebuild the stream minus its comment-only blocks.
    raws = [render([b], eol, True) for b in items if b.data is not None]
    # An unterminated last event is completed with a blank line (in its own
    # line-end style): raw bytes are exact otherwise.
    assert [e.raw for e in whole] == raws
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts")
    assert parse(split_at(stream, cuts)) == whole
    assert parse([stream[i : i + 1] for i in range(len(stream))]) == whole


# -- the Chat Completions stream decoder -------------------------------------------------------


@dataclass(frozen=True)
class Call:
    name: str
    fragments: tuple[str, ...]


unicode_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
calls = st.builds(
    Call,
    name=st.text(string.ascii_letters + "_", min_size=1, max_size=12),
    fragments=st.lists(unicode_text, max_size=4).map(tuple),
)


def chunk_block(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def chat_transcript(
    reasoning: Sequence[str],
    text: Sequence[str],
    tool_calls: Sequence[Call],
    usage: bool,
    keep_alive: bool,
) -> bytes:
    head = {
        "id": "chatcmpl-Pr0p",
        "object": "chat.completion.chunk",
        "created": 1767226200,
        "model": "gpt-4.1-2025-04-14",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return chunk_block({**head, "choices": [choice]})

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"reasoning_content": r}) for r in reasoning]
    if keep_alive:
        out.append(b": keep-alive\n\n")
    out += [chunk({"content": t}) for t in text]
    for index, call in enumerate(tool_calls):
        first = {"index": index, "id": f"call_{index:04d}", "type": "function"}
        out.append(chunk({"tool_calls": [{**first, "function": {"name": call.name}}]}))
        for fragment in call.fragments:
            delta = {"index": index, "function": {"arguments": fragment}}
            out.append(chunk({"tool_calls": [delta]}))
    out.append(chunk({}, "tool_calls" if tool_calls else "stop"))
    if usage:
        numbers = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        out.append(chunk_block({**head, "choices": [], "usage": numbers}))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def decode(chunks: Iterable[bytes]) -> list[tuple[bytes, Any]]:
    decoder = ChatStreamDecoder()
    out: list[tuple[bytes, list[StreamEvent]]] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    out += decoder.finish()
    return [(raw, msgspec.to_builtins(events)) for raw, events in out]


@PROPERTY_SETTINGS
@given(
    reasoning=st.lists(unicode_text, max_size=3),
    text=st.lists(unicode_text, max_size=4),
    tool_calls=st.lists(calls, max_size=3),
    usage=st.booleans(),
    keep_alive=st.booleans(),
    eol=st.sampled_from(LINE_ENDS),
    data=st.data(),
)
def test_chat_stream_decoder_is_independent_of_chunking(
    reasoning: list[str],
    text: list[str],
    tool_calls: list[Call],
    usage: bool,
    keep_alive: bool,
    eol: bytes,
    data: st.DataObject,
) -> None:
    stream = chat_transcript(reasoning, text, tool_calls, usage, keep_alive).replace(b"\n", eol)
    whole = decode([stream])
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=16), label="cuts")
    assert decode(split_at(stream, cuts)) == whole

    events = msgspec.convert([e for _, group in whole for e in group], list[StreamEvent])
    answer = msgspec.to_builtins(aggregate_events(events))
    content = answer.get("content", [])
    if reasoning:
        assert content.pop(0) == {
            "type": "reasoning",
            "text": "".join(reasoning),
            "provider": "openai-chat",
        }
    if text:
        assert content.pop(0) == {"type": "text", "text": "".join(text)}
    assert content == [
        {"type": "tool_call", "id": f"call_{i:04d}", "name": c.name}
        | ({"arguments": "".join(c.fragments)} if c.fragments else {})
        for i, c in enumerate(tool_calls)
    ]
    assert answer["finish_reason"] == ("tool_calls" if tool_calls else "stop")
    assert ("usage" in answer) is usage
