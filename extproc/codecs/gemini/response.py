"""Gemini ``GenerateContentResponse`` <-> canonical answers.

Decoding (a provider's answer): the first candidate (``index`` 0) is the
answer; its parts map as in :mod:`extproc.codecs.gemini.parts`; function calls
without an ``id`` get ``call_<responseId>_<n>`` (unique per answer, so a later
result pairs with the right call); ``finishReason`` and ``usageMetadata`` map as
in :mod:`extproc.codecs.gemini.wire`. A prompt blocked before any candidate
(``promptFeedback.blockReason``) is an empty answer with finish reason
``content_filter``. Gemini-only fields (the native ``finishReason``, other
candidate fields such as ``safetyRatings``/``citationMetadata``, and
``promptFeedback``) are kept in ``extra["gemini"]`` for Gemini clients.

Encoding (for Gemini clients): one candidate with role ``model`` and the
answer's parts (Gemini's own opaque parts, e.g. ``executableCode``, included):
reasoning as ``thought: true`` text parts (the signature only
when the reasoning came from Gemini), text parts (with a Gemini
``thoughtSignature`` kept in ``extra``), whole ``functionCall`` parts with
``args`` objects and the canonical call ``id`` (so a client that echoes it
pairs results exactly), inline images. ``finishReason`` is mapped (tool calls
-> ``STOP``), ``usageMetadata`` converted, ``modelVersion`` is the answer's model
(else the requested one), ``responseId`` the answer's id.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec

from extproc.canonical import (
    CanonicalResponse,
    ImagePart,
    OpaquePart,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
)
from extproc.codecs.gemini.parts import call_out, decode_part, image_out, text_out, thought_out
from extproc.codecs.gemini.wire import (
    EXTRA_KEY,
    PROTOCOL,
    decoder,
    encoder,
    finish_in,
    finish_out,
    get,
    names,
    rest,
    usage_in,
    usage_out,
)
from extproc.errors import InvalidRequest

_CANDIDATE_FIELDS = names("content", "finishReason", "index")
_RESPONSE_FIELDS = names("candidates", "usageMetadata", "modelVersion", "responseId")
#: Part-level ``extra`` keys a Gemini client may see on answers from any backend.
ANSWER_PART_KEYS = frozenset({"thoughtSignature"})


class DecodeError(ValueError):
    """The provider's answer is not a valid ``GenerateContentResponse``."""


def new_response_id() -> str:
    return secrets.token_urlsafe(16)


def decode_response(body: bytes) -> CanonicalResponse:
    try:
        data = decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"invalid JSON from provider: {exc}") from None
    if not isinstance(data, dict) or "error" in data:
        raise DecodeError("provider answer is not a GenerateContentResponse")
    return response_from(data)


def response_from(data: dict[str, Any]) -> CanonicalResponse:
    """A decoded ``GenerateContentResponse`` object as a canonical answer."""
    response_id = get(data, "responseId")
    response_id = response_id if isinstance(response_id, str) else ""
    model = get(data, "modelVersion")
    response = CanonicalResponse(
        id=response_id,
        model=model if isinstance(model, str) else "",
        usage=None,
        protocol=PROTOCOL,
    )
    kept: dict[str, Any] = {}
    candidate = candidate_of(data)
    if candidate is not None:
        response.content = answer_parts(candidate, response_id or new_response_id())
        has_calls = any(isinstance(p, ToolCallPart) for p in response.content)
        native = get(candidate, "finishReason")
        response.finish_reason = finish_in(native, has_calls)
        if isinstance(native, str):
            kept["finishReason"] = native
        other = rest(candidate, _CANDIDATE_FIELDS)
        if other:
            kept["candidate"] = other
    elif blocked(data):
        response.finish_reason = "content_filter"
    response.usage = usage_in(get(data, "usageMetadata"))
    other = rest(data, _RESPONSE_FIELDS)
    if other:
        kept["response"] = other
    if kept:
        response.extra[EXTRA_KEY] = kept
    return response


def candidate_of(data: dict[str, Any]) -> dict[str, Any] | None:
    """The candidate with ``index`` 0 (a missing index means 0)."""
    candidates = get(data, "candidates")
    if candidates is None:
        return None
    if not isinstance(candidates, list):
        raise DecodeError("provider answer has a malformed 'candidates' field")
    for candidate in candidates:
        if not isinstance(candidate, dict):
            raise DecodeError("provider answer has a malformed candidate")
        if (get(candidate, "index") or 0) == 0:
            return candidate
    return None


def blocked(data: dict[str, Any]) -> bool:
    feedback = get(data, "promptFeedback")
    return isinstance(feedback, dict) and get(feedback, "blockReason") is not None


def candidate_parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = get(candidate, "content")
    if content is None:
        return []
    parts = get(content, "parts") if isinstance(content, dict) else None
    if parts is None and isinstance(content, dict):
        return []
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise DecodeError("provider answer has malformed content parts")
    return parts


def answer_parts(candidate: dict[str, Any], response_id: str, first_call: int = 0) -> list[Part]:
    """The canonical parts of a candidate; calls without id get ``call_<id>_<n>``."""
    out: list[Part] = []
    calls = first_call
    for j, part in enumerate(candidate_parts(candidate)):
        try:
            decoded = decode_part(part, f"parts[{j}]", f"call_{response_id}_{calls}")
        except InvalidRequest as exc:
            raise DecodeError(f"provider answer has a malformed part: {exc.message}") from None
        if isinstance(decoded, ToolCallPart):
            calls += 1
        out.append(decoded)
    return out


# -- encoding ------------------------------------------------------------------------------


def encode_response(response: CanonicalResponse, request_model: str) -> bytes:
    kept = response.extra.get(EXTRA_KEY)
    kept = kept if isinstance(kept, dict) else {}
    parts = [p for p in (answer_part_out(part) for part in response.content) if p is not None]
    candidate: dict[str, Any] = {}
    filtered = response.finish_reason == "content_filter"
    if parts or not filtered:
        candidate["content"] = {"role": "model", "parts": parts or [{"text": ""}]}
    candidate["finishReason"] = finish_out(response.finish_reason, kept.get("finishReason"))
    candidate["index"] = 0
    if isinstance(kept.get("candidate"), dict):
        candidate.update(kept["candidate"])
    body: dict[str, Any] = {"candidates": [candidate]}
    if response.usage is not None:
        body["usageMetadata"] = usage_out(response.usage)
    body["modelVersion"] = response.model or request_model
    body["responseId"] = response.id or new_response_id()
    if isinstance(kept.get("response"), dict):
        for key, value in kept["response"].items():
            body.setdefault(key, value)
    return encoder.encode(body)


def answer_part_out(part: Part) -> dict[str, Any] | None:
    """One canonical answer part for a Gemini client (None: nothing to show)."""
    if isinstance(part, TextPart):
        return text_out(part, ANSWER_PART_KEYS)
    if isinstance(part, ToolCallPart):
        return call_out(part, ANSWER_PART_KEYS, with_id=True)
    if isinstance(part, ReasoningPart):
        gemini = part.provider == PROTOCOL
        if not part.text and not (gemini and part.signature):
            return None
        return thought_out(part, frozenset(), signed=gemini)
    if isinstance(part, ImagePart) and part.data is not None:
        return image_out(part, ANSWER_PART_KEYS, "content")
    if isinstance(part, OpaquePart) and part.protocol == PROTOCOL and isinstance(part.data, dict):
        return part.data
    return None
