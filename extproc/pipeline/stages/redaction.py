"""Secret redaction, both directions.

Before a request goes upstream, every place the model reads — system, user
and assistant text, tool-call arguments, tool results, reasoning without a
replay signature, and parts the canonical model keeps verbatim (Responses
input items, Gemini parts) — has its secrets replaced by a placeholder that
names the kind and is stable per secret (``[REDACTED:openai-key:3f9a1c2b]``),
so the model can still refer to "the key". Answers get the same treatment
before the client sees them: text and reasoning stream through a bounded
hold (a secret split across chunks is still caught), and tool-call arguments
are redacted once complete.

Reasoning parts that carry a provider's replay signature are left as they
are: the provider verifies them byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from extproc.canonical import (
    CanonicalRequest,
    ImagePart,
    Message,
    OpaquePart,
    Part,
    ReasoningDelta,
    ReasoningPart,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from extproc.pipeline.answer import AnswerFilter, Emit
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import RequestOutcome, Stage
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.pipeline.toolgate import Rewrite, ToolCheck, ToolVerdict
from extproc.safety.secrets import Redactor, StreamRedactor

__all__ = ["RedactionStage"]

#: ``count(direction, n)``: secrets redacted in requests or answers.
Counter = Callable[[str, int], None]


def _no_count(direction: str, n: int) -> None:
    return None


class RedactionStage(Stage):
    name = "redaction"

    def __init__(
        self,
        redactor: Redactor,
        *,
        requests: bool = True,
        answers: bool = True,
        policies: KeyPolicies | None = None,
        count: Counter = _no_count,
    ) -> None:
        self._redactor = redactor
        self._requests = requests
        self._answers = answers
        self._policies = policies
        self._count = count

    def _off(self, ctx: RequestContext) -> bool:
        return self._policies is not None and self._policies.disabled(ctx, self.name)

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> RequestOutcome:
        if not self._requests or self._off(ctx):
            return None
        found = 0
        for message in request.messages:
            found += self._message(message)
        if found:
            self._count("request", found)
        return None

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter | None:
        if not self._answers or self._off(ctx):
            return None
        return _AnswerRedaction(self._redactor, self._count)

    def tool_check(self, ctx: RequestContext, request: CanonicalRequest) -> ToolCheck | None:
        if not self._answers or self._off(ctx) or not request.tools:
            return None
        return _ArgumentRedaction(self._redactor, self._count)

    # -- requests ----------------------------------------------------------------

    def _message(self, message: Message) -> int:
        found = 0
        content = message.content
        for i, part in enumerate(content):
            new, n = self._part(part)
            if n:
                content[i] = new
                found += n
        return found

    def _part(self, part: Part) -> tuple[Part, int]:
        redactor = self._redactor
        if isinstance(part, TextPart):
            text, n = redactor.redact_text(part.text)
            return (TextPart(text=text, extra=part.extra), n) if n else (part, 0)
        if isinstance(part, ToolCallPart):
            arguments, n = redactor.redact_json_text(part.arguments)
            if not n:
                return part, 0
            return ToolCallPart(
                id=part.id, name=part.name, arguments=arguments, extra=part.extra
            ), n
        if isinstance(part, ToolResultPart):
            found = 0
            content: list[TextPart | ImagePart] = []
            for item in part.content:
                if isinstance(item, TextPart):
                    text, n = redactor.redact_text(item.text)
                    if n:
                        item = TextPart(text=text, extra=item.extra)
                        found += n
                content.append(item)
            if not found:
                return part, 0
            return (
                ToolResultPart(
                    tool_call_id=part.tool_call_id,
                    content=content,
                    is_error=part.is_error,
                    name=part.name,
                    extra=part.extra,
                ),
                found,
            )
        if isinstance(part, ReasoningPart):
            if part.signature is not None or part.redacted is not None or not part.text:
                return part, 0  # replayed byte for byte to the provider that signed it
            text, n = redactor.redact_text(part.text)
            if not n:
                return part, 0
            return ReasoningPart(text=text, provider=part.provider, extra=part.extra), n
        if isinstance(part, OpaquePart):
            data, n = _redact_value(redactor, part.data)
            return (OpaquePart(protocol=part.protocol, data=data), n) if n else (part, 0)
        return part, 0


def _redact_value(redactor: Redactor, value: Any) -> tuple[Any, int]:
    """Every string inside a JSON value, redacted (images' base64 data is not text)."""
    if isinstance(value, str):
        text, n = redactor.redact_text(value)
        return text, n
    if isinstance(value, list):
        found = 0
        out = []
        for item in value:
            new, n = _redact_value(redactor, item)
            out.append(new)
            found += n
        return (out, found) if found else (value, 0)
    if isinstance(value, dict):
        found = 0
        result: dict[str, Any] = {}
        for key, item in value.items():
            if key in ("data", "image_url", "file_data") and isinstance(item, str):
                result[key] = item  # inline binary
                continue
            new, n = _redact_value(redactor, item)
            result[key] = new
            found += n
        return (result, found) if found else (value, 0)
    return value, 0


# -- answers -----------------------------------------------------------------------


class _AnswerRedaction(AnswerFilter):
    """Text and reasoning of one answer, each through its own bounded hold."""

    name = "redaction"

    def __init__(self, redactor: Redactor, count: Counter) -> None:
        self._text = StreamRedactor(redactor)
        self._reasoning = StreamRedactor(redactor)
        self._count = count

    @property
    def holding(self) -> bool:
        return self._text.held > 0 or self._reasoning.held > 0

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        start = 0
        if not self.holding:
            texts: list[str] = []
            last_text = 0
            reasoning = False
            for i, event in enumerate(events):
                if isinstance(event, TextDelta):
                    texts.append(event.text)
                    last_text = i
                elif isinstance(event, ReasoningDelta) and event.text:
                    reasoning = True  # event by event below
                    break
            if not reasoning:
                if not texts or self._text.pass_whole("".join(texts), final=self.complete):
                    return None  # no secret, nothing held: the events pass as they are
                if len(texts) > 1 and self._text.pass_whole("".join(texts[:-1])):
                    # Usually only the last delta's end may still grow into a secret:
                    # what comes before it passes as it is, in one scan.
                    start = last_text
        out: list[StreamEvent] | None = None
        for i in range(start, len(events)):
            event = events[i]
            new: list[StreamEvent] = [event]
            if isinstance(event, TextDelta):
                released = self._released(self._reasoning, reasoning=True)
                text = self._text.feed(event.text)
                if released or text != event.text:
                    new = [*released, *([TextDelta(text)] if text else [])]
            elif isinstance(event, ReasoningDelta) and event.text and event.signature is None:
                released = self._released(self._text, reasoning=False)
                text = self._reasoning.feed(event.text)
                if released or text != event.text:
                    new = [*released, *([ReasoningDelta(text=text)] if text else [])]
            elif self.holding:
                # Anything else (a tool call, a signature, the end) comes after the
                # held text: release it first, in order (no secret spans them).
                new = [
                    *self._released(self._reasoning, reasoning=True),
                    *self._released(self._text, reasoning=False),
                    event,
                ]
            if out is None and new != [event]:
                out = list(events[:i])  # the first change: from here on, build the output
            if out is not None:
                out.extend(new)
        return None if out is None else Emit(out)

    def _released(self, channel: StreamRedactor, *, reasoning: bool) -> list[StreamEvent]:
        """What ``channel`` holds, redacted, as events (empty when it holds nothing)."""
        if not channel.held:
            return []
        rest = channel.finish()
        if not rest:
            return []
        return [ReasoningDelta(text=rest)] if reasoning else [TextDelta(rest)]

    def on_flush(self) -> Emit | None:
        out: list[StreamEvent] = []
        reasoning = self._reasoning.finish()
        if reasoning:
            out.append(ReasoningDelta(text=reasoning))
        text = self._text.finish()
        if text:
            out.append(TextDelta(text))
        found = self._text.redacted + self._reasoning.redacted
        if found:
            self._count("answer", found)
            self._text.redacted = self._reasoning.redacted = 0
        return Emit(out) if out else None


class _ArgumentRedaction:
    name = "redaction"

    def __init__(self, redactor: Redactor, count: Counter) -> None:
        self._redactor = redactor
        self._count = count

    def check(self, call: ToolCallPart) -> ToolVerdict | None:
        arguments, n = self._redactor.redact_json_text(call.arguments)
        if not n:
            return None
        self._count("answer", n)
        return Rewrite(arguments)
