"""Candidates: one possible tool call in text, decided as the text grows.

The scanner (:mod:`.scanner`) starts a candidate where a call might begin (a
fence, ``{``, a ``TOOL CALL:`` line, a known tag) and calls
:meth:`Candidate.step` with the text so far. A candidate answers ``None``
(not decided yet: more text needed) or a :class:`Decision`: the calls and
where their span ends, or no calls and where scanning resumes.

Every candidate is *prefix-deterministic*: once it decides on some text, it
decides the same on any longer text. That is what makes the streaming
sniffer's result independent of how the text was chunked. Candidates keep
their progress between steps, so a growing text is scanned once.

The JSON shapes are here; the XML-like ones are in :mod:`.xml_candidates`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple, Protocol

from extproc.guards.repair import jsonfix
from extproc.guards.repair.jsonscan import JsonEnd, Scan
from extproc.guards.repair.model import TextCall
from extproc.guards.repair.shapes import MAX_CALLS, ToolSet, json_calls, json_text_calls

SPACE = re.compile(r"\s*")
_BLANK = re.compile(r"[ \t]*")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}")
_CLOSING_FENCE = re.compile(r" {0,3}([`~]{3,})[ \t\r]*")

#: Fence info strings whose content may be a call; any other (``python``,
#: ``bash``...) makes the fence a code block at once.
FENCE_INFOS = frozenset(
    {
        "",
        "json",
        "jsonc",
        "json5",
        "jsonl",
        "xml",
        "tool",
        "tool_call",
        "tool_calls",
        "tool_code",
        "tool_use",
        "function_call",
        "functions",
    }
)


class Finder:
    """``str.find`` over one growing text, remembering what was searched.

    Shared by all candidates of a scan: when many openers (``<read_file>``
    repeated) wait for the same closing tag, the text is searched once, not
    once per opener. Positions must stay valid: :meth:`clear` when the text's
    front is cut.
    """

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        #: needle -> (lo, found, hi): the first occurrence inside text[lo:hi] (or -1).
        self._memo: dict[str, tuple[int, int, int]] = {}

    def clear(self) -> None:
        self._memo.clear()

    def find(self, text: str, needle: str, start: int, end: int) -> int:
        """The first ``needle`` inside ``text[start:end]``, or -1."""
        lo, search_from = start, start
        memo = self._memo.get(needle)
        if memo is not None and memo[0] <= start:
            memo_lo, found, hi = memo
            if found >= start:
                return found if found + len(needle) <= end else -1
            if found < 0:
                if end <= hi:
                    return -1
                lo, search_from = memo_lo, max(start, hi - len(needle) + 1)
        found = text.find(needle, search_from, end)
        self._memo[needle] = (lo, found, end)
        return found


class Decision(NamedTuple):
    #: With calls: where their span ends. Without: where scanning resumes.
    end: int
    calls: tuple[TextCall, ...] = ()
    #: Without calls: the text from ``end`` on is inside a code fence
    #: (its character and length), whose content is not scanned.
    code: tuple[str, int] | None = None


class Candidate(Protocol):
    start: int

    def step(self, text: str, end: int, eof: bool) -> Decision | None:
        """Look at ``text[:end]`` (``eof``: nothing will follow)."""
        ...


def skip_space(text: str, pos: int, end: int) -> int:
    found = SPACE.match(text, pos, end)
    return found.end() if found else pos


def _blank(text: str, pos: int, end: int) -> int:
    found = _BLANK.match(text, pos, end)
    return found.end() if found else pos


def closing_fence(text: str, start: int, end: int, char: str, run: int) -> bool:
    """Whether ``text[start:end]`` (one line, no newline) closes a ``char * run`` fence."""
    found = _CLOSING_FENCE.fullmatch(text, start, end)
    if found is None:
        return False
    fence = found.group(1)
    return len(fence) >= run and fence == char * len(fence)


class FenceCandidate:
    """A fenced block: a call when its info string allows it and its content is calls.

    Decided early: an info string outside :data:`FENCE_INFOS`, or a first
    content line that does not start with ``{``, ``[`` or ``<``, makes it a
    code block at once (its text is released while it streams). Otherwise it
    waits for the closing fence (or the end of the text) and parses the
    content: JSON call shapes (leniently: the fence is explicit), or tags
    (handed to ``subscan``, which must find nothing but calls).
    """

    __slots__ = (
        "_char",
        "_content",
        "_info",
        "_phase",
        "_run",
        "_scan",
        "_subscan",
        "_tools",
        "start",
    )

    def __init__(
        self,
        start: int,
        char: str,
        run: int,
        info: int,
        tools: ToolSet,
        subscan: Callable[[str], list[TextCall] | None],
    ) -> None:
        self.start = start
        self._char, self._run, self._info = char, run, info
        self._tools, self._subscan = tools, subscan
        self._phase = 0
        self._content = self._scan = 0

    def step(self, text: str, end: int, eof: bool) -> Decision | None:
        if self._phase == 0:
            newline = text.find("\n", self._info, end)
            if newline < 0 and not eof:
                return None
            line_end = newline if newline >= 0 else end
            info = text[self._info : line_end].strip()
            if self._char == "`" and "`" in info:
                return Decision(self._info)  # inline code, not a fence
            content = newline + 1 if newline >= 0 else end
            word = info.split(None, 1)[0].lower().strip("{}.") if info else ""
            if word not in FENCE_INFOS:
                return Decision(content, code=(self._char, self._run))
            self._content = self._scan = content
            self._phase = 1
        if self._phase == 1:
            first = skip_space(text, self._scan, end)
            if first >= end:
                return Decision(end) if eof else None
            newline = text.rfind("\n", self._scan, first)
            line = newline + 1 if newline >= 0 else self._scan
            if text[first] == self._char:
                line_end = text.find("\n", first, end)
                if line_end < 0 and not eof:
                    return None
                line_end = line_end if line_end >= 0 else end
                if closing_fence(text, line, line_end, self._char, self._run):
                    return Decision(min(line_end + 1, end))  # empty block
            if text[first] not in "{[<":
                return Decision(self._content, code=(self._char, self._run))
            self._scan = line
            self._phase = 2
        while True:
            line = self._scan
            newline = text.find("\n", line, end)
            if newline < 0 and not eof:
                return None
            line_end = newline if newline >= 0 else end
            closed = closing_fence(text, line, line_end, self._char, self._run)
            if closed or newline < 0:
                body_end = line if closed else end
                calls = self._parse(text[self._content : body_end])
                if calls:
                    return Decision(line_end, tuple(calls))
                return Decision(newline + 1 if newline >= 0 else end)
            self._scan = newline + 1

    def _parse(self, content: str) -> list[TextCall] | None:
        body = content.strip()
        if not body:
            return None
        if body[0] in "{[":
            return json_text_calls(body, self._tools, "json_fence", lenient=True)
        if body[0] == "<":
            return self._subscan(body)
        return None


class BareJsonCandidate:
    """JSON call objects (or arrays of them) that are the tail of the text.

    Several values may follow each other (one call a line, or separated by
    ``,``/``;``); each must decode strictly and be all calls. Decided as no
    call as soon as a value is not JSON or not a call, or prose follows;
    decided as calls only at the end of the text.
    """

    __slots__ = (
        "_after",
        "_calls",
        "_last_end",
        "_separated",
        "_tools",
        "_value",
        "_value_start",
        "start",
    )

    def __init__(self, start: int, tools: ToolSet) -> None:
        self.start = start
        self._tools = tools
        self._value: JsonEnd | None = JsonEnd(start)
        self._value_start = start
        self._calls: list[TextCall] = []
        self._last_end = start
        self._after = start
        self._separated = False

    def step(self, text: str, end: int, eof: bool) -> Decision | None:
        while True:
            if self._value is not None:
                scan = self._value.advance(text, end)
                if scan is Scan.MORE:
                    return Decision(end) if eof else None
                if scan is Scan.BAD:
                    return Decision(max(self._value.pos, self.start + 1))
                value_end = self._value.pos
                self._value = None
                try:
                    value = jsonfix.loads(text[self._value_start : value_end])
                except jsonfix.NotJson:
                    return Decision(value_end)
                calls = json_calls(value, self._tools, "json")
                if calls is None or len(self._calls) + len(calls) > MAX_CALLS:
                    return Decision(value_end)
                self._calls.extend(calls)
                self._last_end = self._after = value_end
                self._separated = False
            pos = skip_space(text, self._after, end)
            if pos < end and text[pos] in ",;" and not self._separated:
                self._separated = True
                pos = skip_space(text, pos + 1, end)
            self._after = pos
            if pos >= end:
                return Decision(self._last_end, tuple(self._calls)) if eof else None
            if text[pos] not in "{[":
                return Decision(self._last_end)  # prose follows: not the tail
            self._value = JsonEnd(pos)
            self._value_start = pos


class ToolCallLineCandidate:
    """``TOOL CALL: name {json}`` (or ``name({json})``, or ``TOOL CALL: {call json}``).

    The line (the JSON may span lines) must end after the call.
    """

    __slots__ = (
        "_after",
        "_json_shape",
        "_paren",
        "_phase",
        "_prefix_end",
        "_tool",
        "_tools",
        "_value",
        "_value_start",
        "start",
    )

    def __init__(self, start: int, prefix_end: int, tools: ToolSet) -> None:
        self.start = start
        self._prefix_end = prefix_end
        self._tools = tools
        self._phase = 0
        self._tool = ""
        self._json_shape = False
        self._paren = False
        self._value = JsonEnd(prefix_end)
        self._value_start = self._after = prefix_end

    def _head(self, text: str, end: int, eof: bool) -> Decision | None:
        """Read up to the arguments' ``{`` (then phase 1), or decide, or wait."""
        at = _blank(text, self._prefix_end, end)
        if at >= end:
            return Decision(end) if eof else None
        if text[at] == "{":
            self._json_shape = True
            self._value, self._value_start = JsonEnd(at), at
            self._phase = 1
            return None
        name = _TOOL_NAME.match(text, at, end)
        if name is None:
            return Decision(at)
        if name.end() >= end and not eof:
            return None
        tool = self._tools.resolve(name.group())
        if tool is None:
            return Decision(name.end())
        at = _blank(text, name.end(), end)
        if at < end and text[at] == "(":
            self._paren = True
            at += 1
        at = skip_space(text, at, end)
        if at >= end:
            return Decision(end) if eof else None
        if text[at] != "{":
            return Decision(at)
        self._tool = tool
        self._value, self._value_start = JsonEnd(at), at
        self._phase = 1
        return None

    def step(self, text: str, end: int, eof: bool) -> Decision | None:
        if self._phase == 0:
            head = self._head(text, end, eof)
            if self._phase == 0:
                return head
        if self._phase == 1:
            scan = self._value.advance(text, end)
            if scan is Scan.MORE:
                return Decision(end) if eof else None
            if scan is Scan.BAD:
                return Decision(self._value.pos)
            self._after = self._value.pos
            self._phase = 2
        pos = _blank(text, self._after, end)
        if self._paren:
            if pos >= end:
                return Decision(end) if eof else None
            if text[pos] != ")":
                return Decision(pos)
            self._paren = False
            pos = _blank(text, pos + 1, end)
        self._after = pos
        if pos >= end and not eof:
            return None
        if pos < end and text[pos] not in "\r\n":
            return Decision(pos)
        calls = self._calls(text[self._value_start : self._value.pos])
        return Decision(pos, tuple(calls)) if calls else Decision(pos)

    def _calls(self, body: str) -> list[TextCall] | None:
        try:
            value = jsonfix.loads(body)
        except jsonfix.NotJson:
            return None
        if self._json_shape:
            return json_calls(value, self._tools, "tool_call_line")
        if not isinstance(value, dict) or not self._tools.plausible(self._tool, value):
            return None
        return [TextCall(self._tool, jsonfix.dumps(value), "tool_call_line")]


class DelimitedJsonCandidate:
    """JSON calls after an opening marker, up to a closing marker or the end.

    ``<tool_call>{...}</tool_call>`` (Hermes/Qwen), ``<|python_tag|>{...}``
    (Llama 3.1, ended by ``<|eom_id|>``/``<|eot_id|>`` or the text's end),
    ``[TOOL_CALLS][...]`` (Mistral). The content must start with ``{`` or
    ``[`` and is read leniently (the marker is explicit).
    """

    __slots__ = ("_closers", "_fmt", "_open_end", "_search", "_started", "_tools", "start")

    def __init__(
        self, start: int, open_end: int, closers: tuple[str, ...], fmt: str, tools: ToolSet
    ) -> None:
        self.start = start
        self._open_end = self._search = open_end
        self._closers = closers
        self._fmt = fmt
        self._tools = tools
        self._started = False

    def step(self, text: str, end: int, eof: bool) -> Decision | None:
        if not self._started:
            first = skip_space(text, self._open_end, end)
            if first >= end:
                return Decision(end) if eof else None
            if text[first] not in "{[":
                return Decision(self._open_end)
            self._started = True
        close_at, close_len = -1, 0
        for closer in self._closers:
            found = text.find(closer, self._search, end)
            if found >= 0 and (close_at < 0 or found < close_at):
                close_at, close_len = found, len(closer)
        if close_at < 0:
            if not eof:
                longest = max((len(c) for c in self._closers), default=1)
                self._search = max(self._open_end, end - longest + 1)
                return None
            close_at, span_end = end, end
        else:
            span_end = close_at + close_len
        body = text[self._open_end : close_at].strip()
        calls = json_text_calls(body, self._tools, self._fmt, lenient=True)
        return Decision(span_end, tuple(calls)) if calls else Decision(span_end)
