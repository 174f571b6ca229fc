"""Streaming translation: provider stream bytes -> client stream bytes.

Per body chunk Envoy sends, :meth:`StreamTranslator.feed` returns the bytes
of the complete client events it could produce (possibly none). When both
sides speak the same protocol and no stage changed an event, the provider's
raw event bytes go out unchanged.
"""

from __future__ import annotations

from extproc.canonical import CanonicalError, Finish, StreamEvent, Usage, UsageReport
from extproc.codecs import StreamDecoder, StreamEncoder
from extproc.pipeline import Pipeline, RequestContext


class StreamTranslator:
    __slots__ = ("_ctx", "_decoder", "_encoder", "_pipeline", "_same", "finish_reason", "usage")

    def __init__(
        self,
        decoder: StreamDecoder,
        encoder: StreamEncoder,
        same_protocol: bool,
        pipeline: Pipeline,
        ctx: RequestContext,
    ) -> None:
        self._decoder = decoder
        self._encoder = encoder
        self._same = same_protocol
        self._pipeline = pipeline if pipeline.inspects_stream else None
        self._ctx = ctx
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def feed(self, chunk: bytes) -> bytes:
        return self._translate(self._decoder.feed(chunk))

    def finish(self) -> bytes:
        return self._translate(self._decoder.finish()) + self._encoder.finish()

    def error(self, error: CanonicalError) -> bytes:
        """End the client stream with an error event."""
        return self._encoder.error(error)

    def _translate(self, decoded: list[tuple[bytes, list[StreamEvent]]]) -> bytes:
        if not decoded:
            return b""
        out: list[bytes] = []
        encoder = self._encoder
        for raw, events in decoded:
            if self._pipeline is not None:
                changed = self._pipeline.stream_events(self._ctx, events)
            else:
                changed = events
            for event in changed:
                if isinstance(event, UsageReport):
                    self.usage = event.usage
                elif isinstance(event, Finish):
                    self.finish_reason = event.reason
            if self._same and changed is events and encoder.can_pass_through(events):
                encoder.observe(events, raw)
                out.append(raw)
            else:
                out.append(encoder.encode(changed))
        return b"".join(out)
