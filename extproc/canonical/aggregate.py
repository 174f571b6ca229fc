"""Convert between a complete answer and its stream of events."""

from __future__ import annotations

from collections.abc import Iterable

from extproc.canonical.events import (
    Finish,
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from extproc.canonical.model import (
    CanonicalResponse,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
)


def aggregate_events(events: Iterable[StreamEvent]) -> CanonicalResponse:
    """Fold a stream into the answer it spells (text, reasoning, tool calls)."""
    response = CanonicalResponse(id="", model="")
    text: list[str] = []
    reasoning: list[str] = []
    signature: str | None = None
    redacted: list[str] = []
    calls: dict[int, ToolCallPart] = {}
    for event in events:
        if isinstance(event, StreamStart):
            response.id, response.model, response.created = event.id, event.model, event.created
            response.protocol = event.protocol
        elif isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            reasoning.append(event.text)
            signature = event.signature or signature
            if event.redacted is not None:
                redacted.append(event.redacted)
        elif isinstance(event, ToolCallStart):
            calls[event.index] = ToolCallPart(id=event.id, name=event.name)
        elif isinstance(event, ToolCallDelta):
            call = calls.setdefault(event.index, ToolCallPart(id=f"call_{event.index}", name=""))
            call.arguments += event.arguments
        elif isinstance(event, Finish):
            response.finish_reason = event.reason
            response.stop_sequence = event.stop_sequence
        elif isinstance(event, UsageReport):
            response.usage = event.usage
    content: list[Part] = []
    provider = response.protocol
    content.extend(ReasoningPart(redacted=data, provider=provider) for data in redacted)
    if any(reasoning) or signature:
        content.append(
            ReasoningPart(text="".join(reasoning), signature=signature, provider=provider)
        )
    if text:
        content.append(TextPart(text="".join(text)))
    content.extend(calls[i] for i in sorted(calls))
    response.content = content
    return response


def response_events(response: CanonicalResponse) -> list[StreamEvent]:
    """The events a stream of ``response`` would carry, in order."""
    events: list[StreamEvent] = [
        StreamStart(
            id=response.id,
            model=response.model,
            created=response.created,
            protocol=response.protocol,
        )
    ]
    index = 0
    for part in response.content:
        if isinstance(part, ReasoningPart):
            if part.redacted is not None:
                events.append(ReasoningDelta(redacted=part.redacted))
            else:
                events.append(ReasoningDelta(text=part.text, signature=part.signature))
        elif isinstance(part, TextPart):
            events.append(TextDelta(part.text))
        elif isinstance(part, ToolCallPart):
            events.append(ToolCallStart(index=index, id=part.id, name=part.name))
            if part.arguments:
                events.append(ToolCallDelta(index=index, arguments=part.arguments))
            index += 1
    if response.finish_reason is not None:
        events.append(Finish(response.finish_reason, stop_sequence=response.stop_sequence))
    if response.usage is not None:
        events.append(UsageReport(response.usage))
    events.append(StreamEnd())
    return events
