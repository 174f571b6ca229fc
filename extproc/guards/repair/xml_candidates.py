"""Candidates for the tag-shaped call formats.

* :class:`XmlToolCandidate`: Cline/Roo/Kilo's prompt format, the tool's name
  as the tag and one child tag per parameter, values as raw text::

      <read_file>
      <path>src/main.py</path>
      </read_file>

* :class:`InvokeCandidate`: Anthropic's text format (``<function_calls>`` or
  its ``antml:``-prefixed spelling, or a bare ``<invoke>``)::

      <function_calls>
      <invoke name="Bash"><parameter name="command">ls</parameter></invoke>
      </function_calls>

* :class:`DeepSeekCandidate`: DeepSeek's tool-call tokens leaked as text
  (``<|tool_calls_begin|>`` ... ``<|tool_calls_end|>``, spelled with
  U+FF5C fullwidth bars and U+2581 for the underscores), V3/R1 style
  (``function<|tool_sep|>name`` then a fenced JSON) and V3.1 style
  (``name<|tool_sep|>{json}``).

Structure is strict: between the tags only whitespace, so prose that merely
mentions ``<read_file>`` stays prose. Values are typed by the tool's schema
(:func:`.shapes.typed_value`). A candidate waits for its closing tag; without
one at the end of the text it is no call.
"""

from __future__ import annotations

import re

from extproc.guards.repair import jsonfix
from extproc.guards.repair.candidates import Decision, Finder, skip_space
from extproc.guards.repair.model import TextCall
from extproc.guards.repair.shapes import (
    MAX_CALLS,
    TEXT_LENIENT_LIMIT,
    ToolSet,
    json_calls,
    xml_call,
)

_PARAM_TAG = re.compile(r"<([A-Za-z_][A-Za-z0-9_.\-]{0,63})>")
_ATTRIBUTE = r"""\s+name\s*=\s*(?:"([^"<>\n]{1,128})"|'([^'<>\n]{1,128})')\s*>"""
_INVOKE = re.compile(r"<(antml:)?invoke" + _ATTRIBUTE)
_PARAMETER = re.compile(r"<(antml:)?parameter" + _ATTRIBUTE)

_BAR, _LOW = "\uff5c", "\u2581"
DS_CALLS_BEGIN = f"<{_BAR}tool{_LOW}calls{_LOW}begin{_BAR}>"
DS_CALLS_END = f"<{_BAR}tool{_LOW}calls{_LOW}end{_BAR}>"
DS_CALL_BEGIN = f"<{_BAR}tool{_LOW}call{_LOW}begin{_BAR}>"
DS_CALL_END = f"<{_BAR}tool{_LOW}call{_LOW}end{_BAR}>"
DS_SEP = f"<{_BAR}tool{_LOW}sep{_BAR}>"


class _Closed:
    """Waiting for a closing tag, through the scan's shared :class:`Finder`."""

    __slots__ = ("_finder", "_search", "close")

    def __init__(self, close: str, search: int, finder: Finder) -> None:
        self.close = close
        self._search = search
        self._finder = finder

    def find(self, text: str, end: int) -> int:
        return self._finder.find(text, self.close, self._search, end)


def _params(text: str, pos: int, end: int) -> list[tuple[str, str]] | None:
    """``<p>value</p>`` children of ``text[pos:end]``, only whitespace between them.

    A value ends at the first ``</p>`` followed (after whitespace) by the end
    or another opening tag, so a value may contain its own closing tag as
    text when something else follows it (Cline's rule for file contents).
    """
    params: list[tuple[str, str]] = []
    while True:
        pos = skip_space(text, pos, end)
        if pos >= end:
            return params
        tag = _PARAM_TAG.match(text, pos, end)
        if tag is None or len(params) >= 64:
            return None
        close = f"</{tag.group(1)}>"
        search = tag.end()
        while True:
            found = text.find(close, search, end)
            if found < 0:
                return None
            after = skip_space(text, found + len(close), end)
            if after >= end or _PARAM_TAG.match(text, after, end):
                break
            search = found + 1
        params.append((tag.group(1), text[tag.end() : found]))
        pos = found + len(close)


class XmlToolCandidate:
    """``<tool>`` children ``</tool>`` for a declared ``tool`` (exact tag name)."""

    __slots__ = ("_closed", "_open_end", "_started", "_tool", "_tools", "start")

    def __init__(
        self, start: int, open_end: int, tool: str, tools: ToolSet, finder: Finder
    ) -> None:
        self.start = start
        self._open_end = open_end
        self._tool = tool
        self._tools = tools
        self._closed = _Closed(f"</{tool}>", open_end, finder)
        self._started = False

    def step(self, text: str, end: int, eof: bool) -> Decision | None:
        if not self._started:
            first = skip_space(text, self._open_end, end)
            if first >= end:
                return Decision(self._open_end) if eof else None
            if text[first] != "<":
                return Decision(self._open_end)
            self._started = True
        close_at = self._closed.find(text, end)
        if close_at < 0:
            return Decision(self._open_end) if eof else None
        span_end = close_at + len(self._tool) + 3
        params = _params(text, self._open_end, close_at)
        if params is None:
            return Decision(span_end)
        call = xml_call(self._tools, self._tool, params, "xml_tool", strict_empty=True)
        return Decision(span_end, (call,)) if call else Decision(span_end)


def _invokes(text: str, pos: int, end: int) -> list[tuple[str, list[tuple[str, str]]]] | None:
    """The ``<invoke>`` elements filling ``text[pos:end]`` (whitespace between)."""
    invokes: list[tuple[str, list[tuple[str, str]]]] = []
    while True:
        pos = skip_space(text, pos, end)
        if pos >= end:
            return invokes
        invoke = _INVOKE.match(text, pos, end)
        if invoke is None or len(invokes) >= MAX_CALLS:
            return None
        close = f"</{invoke.group(1) or ''}invoke>"
        params: list[tuple[str, str]] = []
        pos = invoke.end()
        while True:
            pos = skip_space(text, pos, end)
            if text.startswith(close, pos) and pos + len(close) <= end:
                pos += len(close)
                break
            param = _PARAMETER.match(text, pos, end)
            if param is None or len(params) >= 64:
                return None
            param_close = f"</{param.group(1) or ''}parameter>"
            found = text.find(param_close, param.end(), end)
            if found < 0:
                return None
            params.append((param.group(2) or param.group(3), text[param.end() : found]))
            pos = found + len(param_close)
        invokes.append((invoke.group(2) or invoke.group(3), params))


class InvokeCandidate:
    """``<function_calls>`` (optionally ``antml:``-prefixed) invokes, or one bare ``<invoke>``."""

    __slots__ = ("_body", "_closed", "_started", "_tools", "_wrapped", "start")

    def __init__(
        self, start: int, open_end: int, prefix: str, wrapped: bool, tools: ToolSet, finder: Finder
    ) -> None:
        self.start = start
        self._wrapped = wrapped
        self._tools = tools
        #: Where the invokes start: after the wrapper, or the ``<invoke`` itself.
        self._body = open_end if wrapped else start
        close = f"</{prefix}function_calls>" if wrapped else f"</{prefix}invoke>"
        self._closed = _Closed(close, open_end, finder)
        self._started = not wrapped

    def step(self, text: str, end: int, eof: bool) -> Decision | None:
        if not self._started:
            first = skip_space(text, self._body, end)
            if first >= end:
                return Decision(self._body) if eof else None
            if text[first] != "<":
                return Decision(self._body)
            self._started = True
        close_at = self._closed.find(text, end)
        resume = self._body if self._wrapped else self.start + 1
        if close_at < 0:
            return Decision(resume) if eof else None
        span_end = close_at + len(self._closed.close)
        invokes = _invokes(text, self._body, close_at if self._wrapped else span_end)
        if not invokes or (not self._wrapped and len(invokes) != 1):
            return Decision(span_end)
        calls: list[TextCall] = []
        for name, params in invokes:
            tool = self._tools.resolve(name)
            call = (
                None
                if tool is None
                else xml_call(self._tools, tool, params, "function_calls", strict_empty=False)
            )
            if call is None:
                return Decision(span_end)
            calls.append(call)
        return Decision(span_end, tuple(calls))


def _deepseek_arguments(text: str) -> dict[str, object] | None:
    body = text.strip()
    if body.startswith("```"):
        newline = body.find("\n")
        body = body[newline + 1 :] if newline >= 0 else ""
        if body.rstrip().endswith("```"):
            body = body.rstrip()[:-3]
    body = body.strip()
    if not body:
        return {}
    try:
        value = jsonfix.loads(body)
    except jsonfix.NotJson:
        try:
            value = jsonfix.lenient_loads(body, limit=TEXT_LENIENT_LIMIT)
        except jsonfix.NotJson:
            return None
    return value if isinstance(value, dict) else None


class DeepSeekCandidate:
    """DeepSeek's tool-call tokens, written out as text."""

    __slots__ = ("_closed", "_open_end", "_tools", "start")

    def __init__(self, start: int, open_end: int, tools: ToolSet, finder: Finder) -> None:
        self.start = start
        self._open_end = open_end
        self._tools = tools
        self._closed = _Closed(DS_CALLS_END, open_end, finder)

    def step(self, text: str, end: int, eof: bool) -> Decision | None:
        close_at = self._closed.find(text, end)
        if close_at < 0:
            if not eof:
                return None
            close_at = span_end = end
        else:
            span_end = close_at + len(DS_CALLS_END)
        calls = self._calls(text, self._open_end, close_at)
        return Decision(span_end, tuple(calls)) if calls else Decision(span_end)

    def _calls(self, text: str, pos: int, end: int) -> list[TextCall] | None:
        calls: list[TextCall] = []
        while True:
            pos = skip_space(text, pos, end)
            if pos >= end:
                return calls or None
            if not text.startswith(DS_CALL_BEGIN, pos) or len(calls) >= MAX_CALLS:
                return None
            pos += len(DS_CALL_BEGIN)
            sep = text.find(DS_SEP, pos, end)
            call_end = text.find(DS_CALL_END, pos, end)
            if sep < 0 or call_end < sep:
                return None
            kind = text[pos:sep].strip()
            rest = text[sep + len(DS_SEP) : call_end]
            if kind == "function":
                name, _, raw = rest.partition("\n")
            else:
                name, raw = kind, rest
            tool = self._tools.resolve(name.strip())
            arguments = _deepseek_arguments(raw)
            if tool is None or arguments is None:
                return None
            found = json_calls({"name": tool, "arguments": arguments}, self._tools, "deepseek")
            if not found:
                return None
            calls.extend(found)
            pos = call_end + len(DS_CALL_END)
