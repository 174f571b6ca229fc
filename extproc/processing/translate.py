"""Streaming translation: provider stream bytes -> client stream bytes.

Per body chunk Envoy sends, :meth:`StreamTranslator.feed` returns the bytes
of the complete client events it could produce (possibly none). When both
sides speak the same protocol and no stage changed an event, the provider's
raw event bytes go out unchanged.

A provider that finishes without reporting usage (some OpenAI-compatible
servers ignore ``stream_options.include_usage``) gets the proxy's estimate
reported in its place: input from the request, output from what streamed.
"""

from __future__ import annotations

from collections.abc import Callable

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
    Usage,
    UsageReport,
)
from extproc.codecs import StreamDecoder, StreamEncoder
from extproc.pipeline import AnswerChain, EndAnswer


class StreamTranslator:
    __slots__ = (
        "_chain",
        "_decoder",
        "_encoder",
        "_input_estimate",
        "_output_bytes",
        "_same",
        "ended",
        "events",
        "failure",
        "finish_reason",
        "response_id",
        "response_model",
        "text",
        "usage",
    )

    def __init__(
        self,
        decoder: StreamDecoder,
        encoder: StreamEncoder,
        same_protocol: bool,
        chain: AnswerChain | None = None,
        input_estimate: Callable[[], int] = lambda: 0,
        collect_text: bool = False,
    ) -> None:
        self._decoder = decoder
        self._encoder = encoder
        self._same = same_protocol
        self._chain = chain
        #: Set when the answer ended before the provider's stream did (a stage
        #: ended it, or the proxy failed): nothing more is read or sent.
        self.ended: EndAnswer | None = None
        self._input_estimate = input_estimate
        self._output_bytes = 0
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        #: The provider's error event, or the cut the stream ended with.
        self.failure: CanonicalError | None = None
        self.response_id = ""
        self.response_model = ""
        #: Wire events decoded from the provider.
        self.events = 0
        #: The answer's text, kept only when asked (content recording).
        self.text: list[str] | None = [] if collect_text else None

    def feed(self, chunk: bytes) -> bytes:
        if self.ended is not None:
            return b""
        return self._translate(self._decoder.feed(chunk))

    def finish(self) -> bytes:
        if self.ended is not None:
            return b""
        tail = self._translate(self._decoder.finish())
        if self.ended is not None:
            return tail
        if self._chain is not None:
            held = self._chain.finish()
            if held:
                tail += self._emit(held)
        if self.failure is None and self.finish_reason is None:
            # No finish reason: the encoder ends the client's stream with an error.
            self.failure = CanonicalError(
                502,
                "the provider's stream ended before the answer was complete",
                code="upstream_stream_truncated",
            )
        if self.usage is None and self.finish_reason is not None:
            tail += self._encoder.encode([self._estimated_usage()])
        return tail + self._encoder.finish()

    def _estimated_usage(self) -> UsageReport:
        self.usage = Usage(
            input_tokens=self._input_estimate(), output_tokens=(self._output_bytes + 3) // 4
        )
        return UsageReport(self.usage)

    def error(self, error: CanonicalError) -> bytes:
        """End the client stream with an error event; nothing more is read."""
        if self.ended is not None:
            return b""
        self.ended = EndAnswer(reason="error")
        self.failure = error
        return self._encoder.error(error)

    def _translate(self, decoded: list[tuple[bytes, list[StreamEvent]]]) -> bytes:
        if not decoded:
            return b""
        self.events += len(decoded)
        chain = self._chain
        if chain is None:
            out: list[bytes] = []
            for raw, events in decoded:
                sent, estimated = self._account(events)
                out.append(self._send([(raw, events)], sent, changed=estimated))
            return b"".join(out)
        # The stages see the chunk's events at once (one pass, not one per wire
        # event): a chunk they leave alone still goes out as the provider's bytes.
        events = [event for _, group in decoded for event in group]
        sent, changed = chain.feed(events)
        if chain.ended is not None:
            return self._end_early(sent, chain.ended)
        # While something is held, raw events would overtake it.
        changed = changed or chain.holding
        sent, estimated = self._account(sent)
        return self._send(decoded, sent, changed=changed or estimated)

    def _send(
        self,
        decoded: list[tuple[bytes, list[StreamEvent]]],
        sent: list[StreamEvent],
        *,
        changed: bool,
    ) -> bytes:
        """The provider's raw bytes where they may pass, else ``sent`` encoded."""
        encoder = self._encoder
        if not self._same or changed:
            # Even an empty list: an encoder that follows the provider's own
            # events (Responses) must learn that the stream diverged from them.
            return encoder.encode(sent)
        out: list[bytes] = []
        for at, (raw, events) in enumerate(decoded):
            if not encoder.can_pass_through(events):
                rest = [event for _, group in decoded[at:] for event in group]
                out.append(encoder.encode(rest))
                break
            encoder.observe(events, raw)
            out.append(raw)
        return b"".join(out)

    def _emit(self, events: list[StreamEvent]) -> bytes:
        return self._encoder.encode(self._account(events)[0])

    def _end_early(self, events: list[StreamEvent], end: EndAnswer) -> bytes:
        """A stage ended the answer: close the client's stream properly."""
        self.ended = end
        body = self._encoder.encode(self._account(events)[0])
        if self.failure is None and not any(isinstance(e, StreamError) for e in events):
            if self.usage is None:
                body += self._encoder.encode([self._estimated_usage()])
            body += self._encoder.encode([StreamEnd()])
        return body + self._encoder.finish()

    def _account(self, events: list[StreamEvent]) -> tuple[list[StreamEvent], bool]:
        """Record what ``events`` say; return them, with estimated usage added when due
        (and whether it was)."""
        for event in events:
            if isinstance(event, TextDelta | ReasoningDelta):
                self._output_bytes += len(event.text.encode())
                if self.text is not None and isinstance(event, TextDelta):
                    self.text.append(event.text)
            elif isinstance(event, ToolCallDelta):
                self._output_bytes += len(event.arguments.encode())
            elif isinstance(event, UsageReport):
                self.usage = event.usage
            elif isinstance(event, Finish):
                self.finish_reason = event.reason
            elif isinstance(event, StreamStart):
                self.response_id = event.id
                self.response_model = event.model
            elif isinstance(event, StreamError):
                self.failure = event.error
            elif isinstance(event, StreamEnd) and self.usage is None:
                if self.finish_reason is not None:
                    at = events.index(event)
                    return [*events[:at], self._estimated_usage(), *events[at:]], True
                break
        return events, False
