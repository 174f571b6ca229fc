"""OpenAI Responses SSE streams (a provider's ``response.*`` events) -> canonical events.

Mapping rules (one list of canonical events per wire event, kept with its raw
bytes for same-protocol pass-through):

* ``response.created`` -> ``StreamStart`` (id, model, ``created_at``);
  ``in_progress`` / ``queued`` and unknown events -> nothing.
* ``output_item.added`` of a ``function_call`` -> ``ToolCallStart`` with the
  next canonical tool index (0, 1, ...) and id = ``call_id``; the item's
  ``output_index`` and ``id`` both find that index again for later events.
* ``output_text.delta`` and ``refusal.delta`` -> ``TextDelta``;
  ``function_call_arguments.delta`` -> ``ToolCallDelta``;
  ``reasoning_summary_text.delta`` and ``reasoning_text.delta`` ->
  ``ReasoningDelta`` (a new summary part after earlier reasoning text is
  preceded by a blank line, as in the non-streamed answer).
* ``*.done`` events and ``output_item.done`` supply only what the deltas did
  not (servers that send whole items); the terminal event's ``output`` does
  the same for items never streamed at all.
* ``response.completed`` / ``incomplete`` -> ``Finish`` (status mapping of
  ``common``), ``UsageReport``, ``StreamEnd``; ``response.failed`` ->
  ``StreamError`` from ``response.error`` (unless an ``error`` event came
  first), ``UsageReport``, ``StreamEnd``.
* ``error`` events, flat (documented) or nested (observed) -> ``StreamError``.
* Replay tokens (``encrypted_content``) are not put on stream events: canonical
  stream events carry no provider, and another dialect would hand them to its
  clients as its own signatures. They reach a Responses client through
  pass-through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from extproc.canonical import (
    CanonicalError,
    Finish,
    ReasoningDelta,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from extproc.codecs.openai_responses.common import (
    PROTOCOL,
    as_dict,
    failure_error,
    finish_from_status,
    stream_error,
    usage_in,
)
from extproc.codecs.sse import SseEvent, SseParser

_decoder = msgspec.json.Decoder()
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_LIFECYCLE = _TERMINAL | {"response.created", "response.in_progress", "response.queued"}


@dataclass
class _Item:
    """What the decoder knows of one output item of the provider."""

    kind: str
    tool_index: int = -1  # the canonical tool index of a function call
    text: str = ""  # text, arguments or reasoning streamed so far


class ResponsesStreamDecoder:
    """Provider ``response.*`` SSE stream -> canonical events."""

    def __init__(self) -> None:
        self._parser = SseParser()
        self._started = False
        self._ended = False
        self._errored = False
        self._items: dict[int, _Item] = {}  # by output_index
        self._by_id: dict[str, int] = {}  # item id -> output_index
        self._tools = 0
        self._reasoning_seen = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, list[StreamEvent]]]:
        return [(ev.raw, self._decode(ev)) for ev in self._parser.feed(chunk)]

    def finish(self) -> list[tuple[bytes, list[StreamEvent]]]:
        return [(ev.raw, self._decode(ev)) for ev in self._parser.finish()]

    # -- dispatch ------------------------------------------------------------

    def _decode(self, ev: SseEvent) -> list[StreamEvent]:
        if ev.data == b"[DONE]":
            return []  # not sent by the Responses API; tolerated
        try:
            data = _decoder.decode(ev.data)
        except msgspec.DecodeError:
            return [
                StreamError(CanonicalError(502, "the provider sent invalid JSON in its stream"))
            ]
        if not isinstance(data, dict):
            return []
        kind = data.get("type")
        if not isinstance(kind, str):
            kind = ev.event or ""
        events: list[StreamEvent] = []
        if kind == "error":
            self._errored = True
            return [StreamError(stream_error(data))]
        if kind in _LIFECYCLE:
            self._start(as_dict(data.get("response")), events)
        if kind in _TERMINAL:
            self._terminal(kind, as_dict(data.get("response")), events)
        elif kind == "response.output_item.added":
            self._item_added(data, events)
        elif kind == "response.output_item.done":
            self._item_done(data, events)
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            self._text(data, "message", events, TextDelta)
        elif kind in ("response.output_text.done", "response.refusal.done"):
            self._text_done(data, "text" if kind.endswith("text.done") else "refusal", events)
        elif kind == "response.function_call_arguments.delta":
            self._arguments(data, events)
        elif kind == "response.function_call_arguments.done":
            self._arguments_done(data, events)
        elif kind == "response.reasoning_summary_part.added":
            item = self._item(data, "reasoning")
            if self._reasoning_seen and not item.text.endswith("\n\n"):
                item.text += "\n\n"
                events.append(ReasoningDelta(text="\n\n"))
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            self._text(data, "reasoning", events, _reasoning)
        return events

    # -- lifecycle -----------------------------------------------------------

    def _start(self, response: dict[str, Any], events: list[StreamEvent]) -> None:
        if self._started:
            return
        self._started = True
        created = response.get("created_at")
        events.append(
            StreamStart(
                id=str(response.get("id") or ""),
                model=str(response.get("model") or ""),
                created=int(created) if isinstance(created, int | float) else 0,
                protocol=PROTOCOL,
            )
        )

    def _terminal(self, kind: str, response: dict[str, Any], events: list[StreamEvent]) -> None:
        if self._ended:
            return
        self._ended = True
        output = response.get("output")
        for index, item in enumerate(output if isinstance(output, list) else []):
            if isinstance(item, dict) and index not in self._items:
                self._item_added({"output_index": index, "item": item}, events)
                self._item_done({"output_index": index, "item": item}, events)
        usage = usage_in(response.get("usage"))
        if kind == "response.failed":
            if not self._errored:
                self._errored = True
                events.append(StreamError(failure_error(response.get("error"))))
        else:
            has_calls = self._tools > 0
            status = "incomplete" if kind == "response.incomplete" else "completed"
            details = response.get("incomplete_details")
            reason = finish_from_status(status, details, has_calls)
            events.append(Finish(reason or "other"))
        if usage is not None:
            events.append(UsageReport(usage))
        events.append(StreamEnd())

    # -- items ---------------------------------------------------------------

    def _item(self, data: dict[str, Any], kind: str) -> _Item:
        """The item an event refers to (by ``output_index``, else ``item_id``)."""
        index = data.get("output_index")
        if not isinstance(index, int):
            item_id = str(data.get("item_id"))
            index = self._by_id.setdefault(item_id, -1 - len(self._by_id))
        item = self._items.get(index)
        if item is None:
            item = self._items[index] = _Item(kind)
        return item

    def _item_added(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        raw = as_dict(data.get("item"))
        kind = str(raw.get("type") or "")
        index = data.get("output_index")
        if not isinstance(index, int):
            index = len(self._items)
        if index in self._items:
            return
        item = self._items[index] = _Item(kind)
        if isinstance(raw.get("id"), str):
            self._by_id[raw["id"]] = index
        if kind == "function_call":
            self._start_call(item, raw, events)
            arguments = raw.get("arguments")
            if isinstance(arguments, str) and arguments:
                item.text = arguments
                events.append(ToolCallDelta(index=item.tool_index, arguments=arguments))

    def _start_call(self, item: _Item, raw: dict[str, Any], events: list[StreamEvent]) -> None:
        item.kind = "function_call"
        item.tool_index = self._tools
        self._tools += 1
        call_id = raw.get("call_id") or raw.get("id") or f"call_{item.tool_index}"
        events.append(
            ToolCallStart(index=item.tool_index, id=str(call_id), name=str(raw.get("name") or ""))
        )

    def _item_done(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        raw = as_dict(data.get("item"))
        kind = raw.get("type")
        item = self._item(data, str(kind or ""))
        if kind == "function_call":
            if item.tool_index < 0:
                self._start_call(item, raw, events)
            self._complete(item, raw.get("arguments"), events)
        elif kind == "message" and not item.text:
            content = raw.get("content")
            for part in content if isinstance(content, list) else []:
                text = as_dict(part).get("text", as_dict(part).get("refusal"))
                if isinstance(text, str) and text:
                    item.text += text
                    events.append(TextDelta(text))
        elif kind == "reasoning" and not item.text:
            summary = raw.get("summary") or raw.get("content")
            texts = [as_dict(s).get("text") for s in (summary if isinstance(summary, list) else [])]
            text = "\n\n".join(t for t in texts if isinstance(t, str) and t)
            if text:
                item.text = text
                self._reasoning_seen = True
                events.append(_reasoning(text))

    def _complete(self, item: _Item, full: Any, events: list[StreamEvent]) -> None:
        """Arguments only a ``.done`` event (or the whole item) carried."""
        if isinstance(full, str) and full and not item.text:
            item.text = full
            events.append(ToolCallDelta(index=item.tool_index, arguments=full))

    # -- deltas --------------------------------------------------------------

    def _text(
        self,
        data: dict[str, Any],
        kind: str,
        events: list[StreamEvent],
        make: Callable[[str], StreamEvent],
    ) -> None:
        delta = data.get("delta")
        if not isinstance(delta, str) or not delta:
            return
        item = self._item(data, kind)
        item.text += delta
        if kind == "reasoning":
            self._reasoning_seen = True
        events.append(make(delta))

    def _text_done(self, data: dict[str, Any], field: str, events: list[StreamEvent]) -> None:
        item = self._item(data, "message")
        full = data.get(field)
        if isinstance(full, str) and full and not item.text:
            item.text = full
            events.append(TextDelta(full))

    def _arguments(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        delta = data.get("delta")
        if not isinstance(delta, str):
            return
        item = self._item(data, "function_call")
        if item.tool_index < 0:
            raw = {"id": data.get("item_id"), "name": ""}
            self._start_call(item, raw, events)
        if delta:
            item.text += delta
            events.append(ToolCallDelta(index=item.tool_index, arguments=delta))

    def _arguments_done(self, data: dict[str, Any], events: list[StreamEvent]) -> None:
        item = self._item(data, "function_call")
        if item.tool_index < 0:
            raw = {"id": data.get("item_id"), "name": data.get("name") or ""}
            self._start_call(item, raw, events)
        self._complete(item, data.get("arguments"), events)


def _reasoning(text: str) -> ReasoningDelta:
    return ReasoningDelta(text=text)
