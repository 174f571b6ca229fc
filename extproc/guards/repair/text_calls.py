"""Tool calls a model wrote as text, turned into calls of the request's tools.

Models that fail to use native tool calling write the call into their answer
instead. :func:`extract_text_calls` finds those calls, for declared tools
only, in the shapes models actually produce:

* JSON in a markdown fence (info string empty, ``json``, ``xml``,
  ``tool_call``... never ``python``): ``{"name": N, "arguments": {...}}``,
  ``{"tool": N, "parameters"|"args"|"input": {...}}``, OpenAI's
  ``{"type": "function", "function": {"name", "arguments"}}``, a list of
  them, or several one per line (see :mod:`.shapes`); read leniently
  (json_repair) because the fence is explicit;
* the same JSON bare, when it is the whole message or its tail (strict JSON);
* Cline/Roo/Kilo XML, the tool's name as the tag: ``<read_file><path>a.py
  </path></read_file>`` (values are text, or JSON when the tool's schema
  types the parameter as a number, boolean, object or array);
* Anthropic's ``<function_calls><invoke name="X"><parameter name="p">v
  </parameter></invoke></function_calls>`` (several invokes, several calls);
* ``TOOL CALL: name {json}`` lines;
* leaked native formats: ``<tool_call>{json}</tool_call>`` (Qwen/Hermes),
  ``<|python_tag|>{json}`` (Llama 3.1), ``[TOOL_CALLS][...]`` (Mistral),
  DeepSeek's ``<|tool_calls_begin|>`` tokens (fullwidth bars, U+2581
  underscores).

Everything else stays text: a fenced JSON example whose ``name`` is not a
declared tool, a tool *definition*, tags of unknown names, prose that
mentions ``<read_file>``, anything inside a code fence.

Cost: linear in the text (see :mod:`.scanner`); texts over
:data:`MAX_TEXT_BYTES` are not examined.

Streaming (:class:`TextCallSniffer`)
    Fed text deltas, it emits text as soon as it cannot be part of a call
    and holds it from the first place a call might start. Decisions, as
    early as the text allows:

    * a fence whose info string is not JSON-ish (```` ```python ````) is
      released when its first line is complete, and one whose first
      content line does not start with ``{``, ``[`` or ``<`` when that
      character arrives: code answers stream with a one-line delay;
    * a JSON-ish fence is held until its closing fence, then released
      unless it is calls;
    * ``{`` or ``[`` is held until the value ends or stops looking like JSON
      (``{x``, ``[link]``, a string running past its line), then released
      unless it is calls *and* nothing but whitespace follows (so a JSON
      object inside prose is held only while it is written);
    * ``<`` is held only while it is a prefix of a call tag; after
      ``<read_file>`` the next non-blank character must be ``<``; then it
      is held until the closing tag.

    Once a call is certain, everything after it is held to the end (prose
    after a call belongs after it). Holds are bounded by ``max_hold``
    characters (default 64 KiB, counted from where the hold starts): a
    longer hold gives up, releases everything unchanged and stops looking
    for the rest of the answer. Emitted text is always the input, byte for
    byte, and which text is emitted and which calls come out do not depend
    on how the answer was chunked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from extproc.guards.repair.model import TextCall, TextCalls
from extproc.guards.repair.scanner import Openers, Scanner, Span, Status, collect
from extproc.guards.repair.shapes import ToolSet

__all__ = [
    "DEFAULT_MAX_HOLD",
    "MAX_TEXT_BYTES",
    "TextCall",
    "TextCallSniffer",
    "TextCalls",
    "extract_text_calls",
]

#: Texts longer than this (UTF-8 bytes) are not examined.
MAX_TEXT_BYTES = 256 * 1024
#: The sniffer's default bound on held text (characters).
DEFAULT_MAX_HOLD = 64 * 1024
#: Holds longer than this are rescanned in batches (see :class:`TextCallSniffer`).
_BATCH_FROM = 4096
#: Characters that may matter to the scan in the middle of a line.
_TRIGGER = re.compile(r"[<{\[\n]")

Tools = Mapping[str, Mapping[str, Any] | None]


def _too_big(text: str, limit: int) -> bool:
    if len(text) > limit:
        return True
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


def _assemble(text: str, spans: list[Span], before: str = "") -> TextCalls | None:
    pieces = [before]
    calls: list[TextCall] = []
    pos = 0
    for start, end, found in spans:
        pieces.append(text[pos:start])
        calls.extend(found)
        pos = end
    pieces.append(text[pos:])
    if not calls:
        return None
    return TextCalls(tuple(calls), "\n\n".join(p.strip() for p in pieces if p.strip()))


def extract_text_calls(text: str, tools: Tools) -> TextCalls | None:
    """The calls of declared ``tools`` (name -> parameters schema) written in ``text``.

    ``None`` when the text holds none (or is over :data:`MAX_TEXT_BYTES`).
    """
    if not tools or not text or _too_big(text, MAX_TEXT_BYTES):
        return None
    toolset = ToolSet(tools)
    return _assemble(text, collect(text, toolset, Openers(toolset)))


class TextCallSniffer:
    """Streaming front of :func:`extract_text_calls` (see the module docstring).

    ``feed(delta)`` returns the text safe to emit now (possibly ``""``);
    ``finish()`` returns the text still held and, when it holds calls, the
    calls with the prose of the held part (``TextCalls.text``). The caller
    emits the held text when the calls are ``None``, and the calls plus
    ``TextCalls.text`` otherwise. With no tools the sniffer holds nothing.

    Cost: each character is scanned once. While a long hold is pending
    (over :data:`_BATCH_FROM` characters) deltas are batched and scanned
    when they add up to a sixteenth of the hold, so a hold is not copied
    once per delta; that may delay a release by that much, never change it.
    """

    def __init__(self, tools: Tools, *, max_hold: int = DEFAULT_MAX_HOLD) -> None:
        if max_hold < 1:
            raise ValueError("max_hold must be positive")
        self._tools = ToolSet(tools)
        self._openers = Openers(self._tools)
        self._max_hold = max_hold
        self._scanner = Scanner(self._tools, self._openers, stop_at_call=True, max_view=max_hold)
        self._buf = ""
        #: Deltas not yet appended to ``_buf`` (batched during long holds).
        self._tail: list[str] = []
        self._tail_len = 0
        #: ``_buf[:_sent]`` has been emitted.
        self._sent = 0
        #: Where the first certain call starts (in ``_buf``), once found.
        self._call_at: int | None = None
        self._call_line_start = False
        self._passthrough = not tools
        self._finished = False

    @property
    def holding(self) -> bool:
        """Whether text fed so far is being held back."""
        return not self._passthrough and (len(self._buf) > self._sent or self._tail_len > 0)

    def feed(self, delta: str) -> str:
        if self._finished:
            raise RuntimeError("TextCallSniffer.feed after finish")
        if self._passthrough:
            return delta
        if not delta:
            return ""
        if self._passes(delta):
            return delta
        self._tail.append(delta)
        self._tail_len += len(delta)
        if self._call_at is not None:
            if len(self._buf) + self._tail_len - self._call_at > self._max_hold:
                return self._give_up()
            return ""
        candidate = self._scanner.candidate
        if candidate is not None:
            held = len(self._buf) - candidate.start
            if held > _BATCH_FROM and self._tail_len < held // 16:
                return ""
        self._flush()
        status, safe = self._scanner.run(self._buf, eof=False)
        return self._settle(status, safe)

    def finish(self) -> tuple[str, TextCalls | None]:
        if self._finished:
            raise RuntimeError("TextCallSniffer.finish called twice")
        self._finished = True
        if self._passthrough:
            return "", None
        self._flush()
        held = self._buf[self._sent :]
        if self._call_at is None:
            status, safe = self._scanner.run(self._buf, eof=True)
            if status is not Status.CALL:
                return held, None
            self._call_at, self._call_line_start = safe, self._scanner.candidate_line_start
        if len(self._buf) - self._call_at > self._max_hold:
            return held, None
        tail = self._buf[self._call_at :]
        spans = collect(tail, self._tools, self._openers, line_start=self._call_line_start)
        return held, _assemble(tail, spans, self._buf[self._sent : self._call_at])

    def _passes(self, delta: str) -> bool:
        """Fast path: nothing pending and ``delta`` cannot start anything (prose, code)."""
        scanner = self._scanner
        if self._call_at is not None or scanner.candidate is not None or self._tail:
            return False
        if not scanner.pos == len(self._buf) == self._sent:
            return False
        if scanner.code is not None:
            return scanner.code_mid_line and "\n" not in delta
        return not scanner.line_start and _TRIGGER.search(delta) is None

    def _flush(self) -> None:
        if self._tail:
            self._buf += "".join(self._tail)
            self._tail.clear()
            self._tail_len = 0

    def _settle(self, status: Status, safe: int) -> str:
        if status is Status.OVERFLOW:
            return self._give_up()
        safe = max(safe, self._sent)
        out = self._buf[self._sent : safe]
        self._sent = safe
        if status is Status.CALL:
            self._call_at, self._call_line_start = safe, self._scanner.candidate_line_start
            if len(self._buf) - safe > self._max_hold:
                return out + self._give_up()
            return out
        if self._scanner.candidate is None:
            drop = min(self._scanner.pos, self._sent)
            if drop:
                self._buf = self._buf[drop:]
                self._sent -= drop
                self._scanner.shift(drop)
        return out

    def _give_up(self) -> str:
        self._flush()
        out = self._buf[self._sent :]
        self._buf, self._sent = "", 0
        self._passthrough = True
        return out
