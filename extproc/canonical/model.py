"""The canonical model of a chat exchange.

Every wire protocol decodes into these types and encodes from them, so N
frontends and M backend schemas need N + M codecs, not N x M translators.
They are :mod:`msgspec` structs: typed, cheap to build, and encoded to JSON
fast, because the canonical request crosses Envoy between the two ext_proc
roles as JSON (see :class:`Envelope`).

Fidelity rules:

* ``extra`` fields hold what the source protocol sent that the canonical
  model has no field for. They are re-emitted only when the target speaks the
  same protocol (``protocol``), so same-protocol traffic loses nothing.
* ``passthrough`` holds fields the user addressed to the backend explicitly
  (URI parameters of a model selector); every target encoder emits them.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error", "other"]


class TextPart(msgspec.Struct, tag="text", omit_defaults=True):
    text: str
    #: Source-protocol fields of the part (e.g. ``cache_control``); same protocol only.
    extra: dict[str, Any] | None = None


class ImagePart(msgspec.Struct, tag="image", omit_defaults=True):
    """An image, by URL (``http(s):`` or ``data:``) or as base64 data."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None
    extra: dict[str, Any] | None = None


class ToolCallPart(msgspec.Struct, tag="tool_call", omit_defaults=True):
    id: str
    name: str
    #: The arguments as JSON text, exactly as the model produced them.
    arguments: str = ""
    #: Source-protocol fields of the call (e.g. a provider's replay token).
    extra: dict[str, Any] | None = None


class ToolResultPart(msgspec.Struct, tag="tool_result", omit_defaults=True):
    tool_call_id: str
    content: list[TextPart | ImagePart] = msgspec.field(default_factory=list)
    is_error: bool = False
    name: str | None = None
    #: Source-protocol fields of the result; same protocol only.
    extra: dict[str, Any] | None = None


class ReasoningPart(msgspec.Struct, tag="reasoning", omit_defaults=True):
    """Reasoning/thinking output; replay tokens are valid only for ``provider``.

    ``provider`` is the wire protocol that produced it (``anthropic``,
    ``gemini``, ``openai-responses``...). Encoders for another protocol drop
    ``signature``/``redacted`` (replay tokens never cross providers) and
    apply their documented rule to the text.
    """

    text: str = ""
    signature: str | None = None
    redacted: str | None = None
    provider: str | None = None
    #: Source-protocol fields (e.g. a Responses reasoning item's id).
    extra: dict[str, Any] | None = None


class OpaquePart(msgspec.Struct, tag="opaque", omit_defaults=True):
    """A content part the canonical model does not know, kept verbatim.

    Re-emitted only to a target of the same ``protocol``; other encoders
    apply their documented rule (drop or reject).
    """

    protocol: str
    data: Any


Part = TextPart | ImagePart | ToolCallPart | ToolResultPart | ReasoningPart | OpaquePart


class Message(msgspec.Struct, omit_defaults=True):
    role: Role
    content: list[Part] = msgspec.field(default_factory=list)
    name: str | None = None
    #: The source protocol sent the content as a plain string.
    plain: bool = False
    extra: dict[str, Any] | None = None


class Tool(msgspec.Struct, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    #: A tool of a kind the canonical model does not know (hosted tools,
    #: custom tools), kept verbatim for a target of the source protocol.
    opaque: dict[str, Any] | None = None
    #: Source-protocol fields of a known tool; same protocol only.
    extra: dict[str, Any] | None = None


class ToolChoice(msgspec.Struct, omit_defaults=True):
    mode: Literal["auto", "none", "required", "tool"]
    name: str | None = None


class Reasoning(msgspec.Struct, omit_defaults=True):
    """Reasoning controls: an effort level and/or a token budget.

    ``enabled`` is an explicit switch (Anthropic ``thinking.type``, Gemini
    budget 0); ``include_thoughts`` asks for visible reasoning (Anthropic
    thinking blocks, Gemini ``includeThoughts``, Responses ``summary``).
    """

    effort: str | None = None
    budget_tokens: int | None = None
    summary: str | None = None
    enabled: bool | None = None
    include_thoughts: bool | None = None


class ResponseFormat(msgspec.Struct, omit_defaults=True):
    """Structured output: plain text, any JSON object, or a JSON Schema."""

    type: Literal["text", "json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None
    strict: bool | None = None


class CanonicalRequest(msgspec.Struct, omit_defaults=True):
    """A generation request, independent of any wire protocol."""

    protocol: str
    model: str
    messages: list[Message] = msgspec.field(default_factory=list)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    reasoning: Reasoning | None = None
    response_format: ResponseFormat | None = None
    stream: bool = False
    #: The client asked for usage in the stream (OpenAI ``include_usage``).
    include_usage: bool = False
    user: str | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    passthrough: dict[str, Any] = msgspec.field(default_factory=dict)
    #: Small hints for same-protocol fidelity (e.g. which max-tokens field).
    hints: dict[str, str] = msgspec.field(default_factory=dict)


class Usage(msgspec.Struct, omit_defaults=True):
    """Token counts; ``input_tokens`` includes cached, ``output`` includes reasoning."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class CanonicalResponse(msgspec.Struct, omit_defaults=True):
    id: str
    model: str
    #: The wire protocol the answer was decoded from (replay tokens' owner).
    protocol: str | None = None
    created: int = 0
    content: list[Part] = msgspec.field(default_factory=list)
    finish_reason: FinishReason | None = None
    #: The stop sequence that ended the answer, when the provider says.
    stop_sequence: str | None = None
    usage: Usage | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class CanonicalError(msgspec.Struct, omit_defaults=True):
    """An error answer, from a provider, Envoy or the proxy itself."""

    status: int
    message: str
    type: str = "api_error"
    code: str | None = None
    param: str | None = None
    retry_after: str | None = None


class Envelope(msgspec.Struct, omit_defaults=True):
    """What the ROUTER role hands the UPSTREAM role, through Envoy, as JSON.

    ``model`` is the model to ask for when the chosen endpoint does not name
    one itself (pool endpoints do).
    """

    request: CanonicalRequest
    model: str | None = None
    request_id: str = ""
    v: int = 1
