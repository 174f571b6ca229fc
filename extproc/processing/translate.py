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
from extproc.pipeline import Pipeline, RequestContext


class StreamTranslator:
    __slots__ = (
        "_ctx",
        "_decoder",
        "_encoder",
        "_input_estimate",
        "_output_bytes",
        "_pipeline",
        "_same",
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
        pipeline: Pipeline,
        ctx: RequestContext,
        input_estimate: Callable[[], int] = lambda: 0,
        collect_text: bool = False,
    ) -> None:
        self._decoder = decoder
        self._encoder = encoder
        self._same = same_protocol
        self._pipeline = pipeline if pipeline.inspects_stream else None
        self._ctx = ctx
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
        return self._translate(self._decoder.feed(chunk))

    def finish(self) -> bytes:
        tail = self._translate(self._decoder.finish())
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
        """End the client stream with an error event."""
        return self._encoder.error(error)

    def _translate(self, decoded: list[tuple[bytes, list[StreamEvent]]]) -> bytes:
        if not decoded:
            return b""
        out: list[bytes] = []
        encoder = self._encoder
        self.events += len(decoded)
        for raw, events in decoded:
            if self._pipeline is not None:
                changed = self._pipeline.stream_events(self._ctx, events)
            else:
                changed = events
            for event in changed:
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
                        at = changed.index(event)
                        changed = [*changed[:at], self._estimated_usage(), *changed[at:]]
                    break
            if self._same and changed is events and encoder.can_pass_through(events):
                encoder.observe(events, raw)
                out.append(raw)
            else:
                out.append(encoder.encode(changed))
        return b"".join(out)
