"""Request dedup: an identical request of the same session within the window is refused.

Only sessions the client named (an id it sent) are deduplicated: without one,
every request is its own session. The refusal is a 429 with ``retry-after``
in the client's dialect.
"""

from __future__ import annotations

import hashlib
import math

import msgspec

from extproc.canonical import CanonicalRequest
from extproc.errors import DuplicateRequest
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import RequestOutcome, Stage
from extproc.sessions.dedup import DedupTable

__all__ = ["DedupStage"]

_encoder = msgspec.json.Encoder()
_KEY = "dedup"


def _fingerprint(request: CanonicalRequest) -> str:
    """What identifies a resend: the request without most of its history.

    A client's retry resends the same bytes; within one session two requests
    with the same model, settings, number of messages and the same last two
    messages are the same request. Hashing only those keeps the cost flat for
    long agent conversations (the whole of a 100 KB history took ~0.2 ms).
    """
    head = (
        request.model,
        request.stream,
        len(request.messages),
        request.temperature,
        request.top_p,
        request.max_output_tokens,
        len(request.tools or ()),
    )
    tail = request.messages[-2:]
    data = _encoder.encode(head) + _encoder.encode(tail)
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class DedupStage(Stage):
    name = "dedup"

    def __init__(self, table: DedupTable) -> None:
        self._table = table

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> RequestOutcome:
        session = ctx.session
        if session is None or session.isolated:
            return None
        digest = _fingerprint(request)
        key = f"{session.id}:{digest}"
        wait = self._table.admit(key)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise DuplicateRequest(
                "the same request of this session is still in flight (or just failed); "
                f"the proxy refused this duplicate: retry in {seconds} s if you still need it",
                headers={"retry-after": str(seconds)},
            )
        ctx.state[_KEY] = key
        return None

    def on_end(self, ctx: RequestContext) -> None:
        key = ctx.state.get(_KEY)
        if key is not None:
            self._table.done(key, ctx.status)
