"""The scan: where candidates start, code fences skipped, decisions applied.

:class:`Scanner` walks a text that may still be growing. Outside code it
starts a candidate (:mod:`.candidates`, :mod:`.xml_candidates`) at

* a line start (up to three spaces of indentation): a fence of three or more
  backticks or tildes, or ``TOOL CALL:`` / ``TOOL_CALL:`` (any case);
* ``{`` or ``[`` anywhere (bare JSON; ``[TOOL_CALLS]`` is Mistral's marker);
* ``<`` opening a declared tool's tag (``<read_file>``, exact name),
  ``<function_calls>`` (or ``antml:``-prefixed), ``<invoke name=...>``,
  ``<tool_call>``, ``<|python_tag|>`` or DeepSeek's ``<|tool_calls_begin|>``
  (spelled with fullwidth bars and U+2581 underscores).

A fence ruled out as a call is a code block: its lines are skipped up to the
closing fence, so nothing inside code is ever a call. Text before a pending
candidate or a possibly-incomplete trigger (``<rea``, a line holding only
two backticks) is *safe*: decided for good, whatever follows.

Every step moves forward: a candidate that decides "no call" names a resume
position after its start, and candidates resume their own scans, so a text
is scanned in linear time.
"""

from __future__ import annotations

import re
from enum import Enum

from extproc.guards.repair.candidates import (
    BareJsonCandidate,
    Candidate,
    DelimitedJsonCandidate,
    FenceCandidate,
    Finder,
    ToolCallLineCandidate,
    closing_fence,
)
from extproc.guards.repair.model import TextCall
from extproc.guards.repair.shapes import ToolSet
from extproc.guards.repair.xml_candidates import (
    DS_CALLS_BEGIN,
    DeepSeekCandidate,
    InvokeCandidate,
    XmlToolCandidate,
)

#: The next place a candidate may start: a bracket, or a line start whose
#: first character (after up to three spaces) may open a fence or a
#: ``TOOL CALL:`` line, or that the text so far ends in.
_NEXT = re.compile(r"[<{\[]|\n(?= {0,3}(?:[`~Tt]|\Z))")
#: What a bare JSON call must look like from its first bracket on (or the
#: text ends first): ``{`` then a key or ``}``; ``[`` then ``]`` or such an object.
_BRACE_START = re.compile(r'\{\s*(?:["}]|\Z)')
_BRACKET_START = re.compile(r'\[\s*(?:\]|\{\s*(?:["}]|\Z)|\Z)')
_TAG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,127}")
_PARTIAL_CLOSING = re.compile(r" {0,3}([`~]*)[ \t\r]*")
_TOOL_CALL_PREFIXES = ("tool call:", "tool_call:")

Span = tuple[int, int, tuple[TextCall, ...]]


class Status(Enum):
    #: Everything before the returned position is decided (nothing is a call yet).
    WAIT = "wait"
    #: A call starts at the returned position (``stop_at_call`` scanners stop there).
    CALL = "call"
    #: The candidate at the returned position needs more than ``max_view`` characters.
    OVERFLOW = "overflow"


class _NeedMore:
    pass


NEED_MORE = _NeedMore()


class Openers:
    """The tags and markers that may open a call, for one set of tools."""

    __slots__ = ("_kinds", "_prefixes", "_seconds")

    def __init__(self, tools: ToolSet) -> None:
        kinds: dict[str, tuple[str, str]] = {}
        for name in tools.schemas:
            if _TAG_NAME.fullmatch(name):
                kinds[f"<{name}>"] = ("xml", name)
        for prefix in ("", "antml:"):
            kinds[f"<{prefix}function_calls>"] = ("invoke", prefix)
            for space in " \t\n":
                kinds[f"<{prefix}invoke{space}"] = ("bare_invoke", prefix)
        kinds["<tool_call>"] = ("hermes", "")
        kinds["<|python_tag|>"] = ("python_tag", "")
        kinds[DS_CALLS_BEGIN] = ("deepseek", "")
        kinds["[TOOL_CALLS]"] = ("mistral", "")
        self._kinds = kinds
        self._prefixes = {opener[:n] for opener in kinds for n in range(1, len(opener) + 1)}
        self._seconds = frozenset(opener[1] for opener in kinds)

    def match(
        self, text: str, start: int, end: int, eof: bool
    ) -> tuple[str, str, int] | _NeedMore | None:
        """The opener at ``text[start:]``: its kind, argument and end; or NEED_MORE, or None.

        No opener is a prefix of another (each ends with ``>``, ``]`` or a
        space), so the first one found is the only one.
        """
        if start + 1 < end and text[start + 1] not in self._seconds:
            return None
        stop = start + 1
        while True:
            piece = text[start:stop]
            if piece not in self._prefixes:
                return None
            kind = self._kinds.get(piece)
            if kind is not None:
                return kind[0], kind[1], stop
            if stop >= end:
                return None if eof else NEED_MORE
            stop += 1


class Scanner:
    """One scan of a (growing) text; see the module docstring."""

    def __init__(
        self,
        tools: ToolSet,
        openers: Openers,
        *,
        stop_at_call: bool,
        max_view: int | None,
        line_start: bool = True,
        fences: bool = True,
    ) -> None:
        self.tools = tools
        self.openers = openers
        self.stop_at_call = stop_at_call
        self.max_view = max_view
        self.fences = fences
        #: Scan position (text before it is decided, or is code being skipped).
        self.pos = 0
        self.line_start = line_start
        #: Inside a code fence: its character and length.
        self.code: tuple[str, int] | None = None
        self.code_mid_line = False
        self.candidate: Candidate | None = None
        #: Whether the pending candidate starts at a line start.
        self.candidate_line_start = False
        #: Calls found: (start, end, calls).
        self.spans: list[Span] = []
        self.finder = Finder()

    def shift(self, offset: int) -> None:
        """The caller dropped ``offset`` characters from the text's front."""
        assert self.candidate is None and offset <= self.pos
        self.pos -= offset
        self.finder.clear()

    def run(self, text: str, eof: bool) -> tuple[Status, int]:
        end = len(text)
        while True:
            candidate = self.candidate
            if candidate is not None:
                view = end if self.max_view is None else min(end, candidate.start + self.max_view)
                decision = candidate.step(text, view, eof and view == end)
                if decision is None:
                    return (Status.OVERFLOW if view < end else Status.WAIT), candidate.start
                self.candidate = None
                if decision.calls:
                    self.spans.append((candidate.start, decision.end, decision.calls))
                    if self.stop_at_call:
                        self.pos = candidate.start
                        return Status.CALL, candidate.start
                self.pos = decision.end
                self.line_start = text[decision.end - 1] == "\n"
                if decision.code is not None:
                    self.code = decision.code
                    self.code_mid_line = not self.line_start
                continue
            if self.code is not None:
                if self._skip_code(text, end, eof):
                    return Status.WAIT, end
                continue
            pos = self.pos
            if pos >= end:
                return Status.WAIT, end
            if self.line_start:
                found = self._line_trigger(text, pos, end, eof)
                if found is NEED_MORE:
                    return Status.WAIT, pos
                self.line_start = False
                if isinstance(found, (FenceCandidate, ToolCallLineCandidate)):
                    self.candidate, self.candidate_line_start = found, True
                    continue
            hit = _NEXT.search(text, pos)
            if hit is None:
                self.pos = end
                return Status.WAIT, end
            at = hit.start()
            if text[at] == "\n":
                self.pos, self.line_start = at + 1, True
                continue
            started = self._char_trigger(text, at, end, eof)
            if started is NEED_MORE:
                self.pos = at
                return Status.WAIT, at
            if started is None:
                self.pos = at + 1
                continue
            assert not isinstance(started, _NeedMore)
            self.pos = at
            self.candidate, self.candidate_line_start = started, False

    def _skip_code(self, text: str, end: int, eof: bool) -> bool:
        """Skip code lines; False once the closing fence is passed, True to wait."""
        assert self.code is not None
        char, run = self.code
        while True:
            pos = self.pos
            if pos >= end:
                return True
            newline = text.find("\n", pos, end)
            if self.code_mid_line:
                if newline < 0:
                    self.pos = end
                    return True
                self.pos, self.code_mid_line = newline + 1, False
                continue
            if newline < 0 and not eof:
                partial = _PARTIAL_CLOSING.fullmatch(text, pos, end)
                if partial is not None and set(partial.group(1)) <= {char}:
                    return True  # may become the closing fence: wait here
                self.pos, self.code_mid_line = end, True
                return True
            line_end = newline if newline >= 0 else end
            if closing_fence(text, pos, line_end, char, run):
                self.code = None
                self.pos = newline + 1 if newline >= 0 else end
                self.line_start = newline >= 0
                return False
            self.pos = newline + 1 if newline >= 0 else end

    def _line_trigger(
        self, text: str, start: int, end: int, eof: bool
    ) -> Candidate | _NeedMore | None:
        at = start
        while at < end and at - start < 3 and text[at] == " ":
            at += 1
        if at >= end:
            return None if eof else NEED_MORE
        char = text[at]
        if char in "`~" and self.fences:
            run_end = at
            while run_end < end and text[run_end] == char:
                run_end += 1
            if run_end >= end and not eof:
                return NEED_MORE
            if run_end - at >= 3:
                return FenceCandidate(start, char, run_end - at, run_end, self.tools, self._subscan)
            return None
        if char in "Tt":
            head = text[at : at + 10].lower()
            if head in _TOOL_CALL_PREFIXES:
                return ToolCallLineCandidate(start, at + 10, self.tools)
            if (
                at + len(head) >= end
                and not eof
                and any(p.startswith(head) for p in _TOOL_CALL_PREFIXES)
            ):
                return NEED_MORE
        return None

    def _char_trigger(
        self, text: str, at: int, end: int, eof: bool
    ) -> Candidate | _NeedMore | None:
        char = text[at]
        if char == "{":
            return self._bare_json(text, at, end, _BRACE_START)
        opener = self.openers.match(text, at, end, eof)
        if isinstance(opener, _NeedMore):
            return NEED_MORE
        if opener is None:
            return self._bare_json(text, at, end, _BRACKET_START) if char == "[" else None
        kind, argument, open_end = opener
        tools = self.tools
        if kind == "xml":
            return XmlToolCandidate(at, open_end, argument, tools, self.finder)
        if kind == "invoke":
            return InvokeCandidate(at, open_end, argument, True, tools, self.finder)
        if kind == "bare_invoke":
            return InvokeCandidate(at, open_end, argument, False, tools, self.finder)
        if kind == "hermes":
            return DelimitedJsonCandidate(at, open_end, ("</tool_call>",), "hermes", tools)
        if kind == "python_tag":
            return DelimitedJsonCandidate(
                at, open_end, ("<|eom_id|>", "<|eot_id|>"), "python_tag", tools
            )
        if kind == "mistral":
            return DelimitedJsonCandidate(at, open_end, ("</s>",), "mistral", tools)
        return DeepSeekCandidate(at, open_end, tools, self.finder)

    def _bare_json(self, text: str, at: int, end: int, start: re.Pattern[str]) -> Candidate | None:
        """A bare JSON candidate, unless its first characters already rule it out.

        (The candidate would decide "no call" on those characters and resume
        inside them, where nothing can start a call: skipping it here is the
        same outcome, cheaper.)
        """
        if self.max_view is not None:
            end = min(end, at + self.max_view)  # see what the candidate would see
        if start.match(text, at, end) is None:
            return None
        return BareJsonCandidate(at, self.tools)

    def _subscan(self, content: str) -> list[TextCall] | None:
        """The calls filling ``content`` (a fence's body), or None if anything else is there."""
        return calls_only(content, self.tools, self.openers)


def collect(
    text: str, tools: ToolSet, openers: Openers, *, line_start: bool = True, fences: bool = True
) -> list[Span]:
    """Every call span in a complete ``text``."""
    scanner = Scanner(
        tools, openers, stop_at_call=False, max_view=None, line_start=line_start, fences=fences
    )
    scanner.run(text, eof=True)
    return scanner.spans


def calls_only(content: str, tools: ToolSet, openers: Openers) -> list[TextCall] | None:
    """The calls in ``content`` if nothing but whitespace surrounds them (no fences inside)."""
    spans = collect(content, tools, openers, fences=False)
    if not spans:
        return None
    pos = 0
    calls: list[TextCall] = []
    for start, end, found in spans:
        if content[pos:start].strip():
            return None
        calls.extend(found)
        pos = end
    return calls if not content[pos:].strip() else None
