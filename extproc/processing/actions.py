"""What a processor answers for one ext_proc message, free of protobuf.

The gRPC servicer turns these into ``ProcessingResponse`` messages; keeping
them plain makes processors testable without gRPC or Envoy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class Continue:
    """Go on, applying these mutations."""

    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    #: Replace the body (or, for a streamed chunk, this chunk) with these bytes.
    body: bytes | None = None
    #: Answer a headers message with a body (CONTINUE_AND_REPLACE).
    replace: bool = False
    clear_route_cache: bool = False
    #: From a response-headers reply: switch the response body to STREAMED
    #: (translate chunk by chunk), FULL_DUPLEX_STREAMED (chunk by chunk, and
    #: the proxy may end the answer itself) or NONE (it passes through unseen).
    response_body_mode: Literal["streamed", "full_duplex", "none"] | None = None
    #: A full-duplex body chunk: ``body`` is sent as this chunk, and True ends
    #: the client's answer here (Envoy then resets the upstream request).
    stream_end: bool | None = None
    dynamic_metadata: dict[str, dict[str, Any]] | None = None


@dataclass
class Reply:
    """Answer the client directly (an Envoy local reply)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    details: str = ""
    dynamic_metadata: dict[str, dict[str, Any]] | None = None


Action = Continue | Reply
