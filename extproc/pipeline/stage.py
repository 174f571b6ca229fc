"""The stage contract.

A stage is a feature (access control, redaction, command protection...) as a
small object with optional hooks. Stages see the canonical model and the
request context only: never wire bytes, never gRPC.

Request side, per request:

* :meth:`Stage.on_request_headers` — before the body: reject early (raise a
  :class:`~extproc.errors.ProxyError`).
* :meth:`Stage.on_request` — the decoded request. Edit it in place (the
  request is always re-encoded for the provider, so every edit is honoured),
  and return ``None`` to continue, :class:`Respond` to answer the client
  without calling any backend (the proxy encodes the answer in the client's
  dialect, JSON or stream), or :class:`Reject` (or raise a ``ProxyError``) to
  refuse with an error in the client's dialect. It may be ``async`` when it
  does I/O; synchronous stages cost no event-loop hop.

Answer side, declared per request:

* :meth:`Stage.answer_filter` returns an :class:`~extproc.pipeline.answer.AnswerFilter`
  for this request, or ``None`` when the stage does not need this answer:
  when no stage needs it, the answer takes the pass-through fast path.
* :meth:`Stage.tool_check` returns a :class:`~extproc.pipeline.toolgate.ToolCheck`
  that sees each *complete* tool call of the answer (held until its
  arguments are whole), or ``None``.

Whole answers and streams go through the same filters (a whole answer is
turned into its events), so no feature is written twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from extproc.canonical import CanonicalRequest, CanonicalResponse
from extproc.errors import ProxyError
from extproc.pipeline.context import RequestContext

if TYPE_CHECKING:
    from extproc.pipeline.answer import AnswerFilter
    from extproc.pipeline.toolgate import ToolCheck

__all__ = ["Reject", "RequestOutcome", "Respond", "Stage"]


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer the client with ``response``; no backend is called."""

    response: CanonicalResponse


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the request with ``error`` (rendered in the client's dialect)."""

    error: ProxyError


#: What a request hook decides: ``None`` continues.
RequestOutcome: TypeAlias = Respond | Reject | None


class Stage:
    """Base class; override only the hooks a feature needs."""

    name: str = "stage"
    #: Time each hook call as a phase (``stage.<name>``: metrics and spans). Off
    #: for stages whose work is a few dict operations.
    timed: bool = True

    def on_request_headers(self, ctx: RequestContext, headers: Mapping[str, str]) -> None:
        """Before the body arrives: reject early (raise a ProxyError)."""

    def on_request(
        self, ctx: RequestContext, request: CanonicalRequest
    ) -> RequestOutcome | Awaitable[RequestOutcome]:
        """The decoded request: inspect, rewrite in place, answer or refuse."""
        return None

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter | None:
        """This request's answer filter, or None: the stage does not need the answer."""
        return None

    def tool_check(self, ctx: RequestContext, request: CanonicalRequest) -> ToolCheck | None:
        """A check of this request's answer's complete tool calls, or None."""
        return None

    def on_end(self, ctx: RequestContext) -> None:
        """The exchange is over (answer sent, or failed)."""
