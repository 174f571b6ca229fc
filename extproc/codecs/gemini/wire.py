"""Gemini wire vocabulary shared by the codec's modules.

Rules (WIRE_FORMATS §4, §5):

* Requests are parsed with the protobuf JSON mapping, which accepts both the
  lowerCamelCase names and the proto snake_case names at every level (the
  official Python SDK itself sends ``inlineData: {"mime_type": ...}`` and
  ``thinkingConfig: {"thinking_budget": ...}``). :func:`get` reads either
  spelling; encoders always write lowerCamelCase.
* Fields the canonical model has no home for are kept verbatim (as the client
  spelled them) in ``extra`` and re-emitted only to a Gemini backend.
* Finish reasons: ``STOP`` -> ``stop`` (``tool_calls`` when the answer holds
  function calls; Gemini has no tool-call reason), ``MAX_TOKENS`` -> ``length``,
  the safety family (``SAFETY``, ``RECITATION``, ``BLOCKLIST``,
  ``PROHIBITED_CONTENT``, ``SPII``, ``IMAGE_*`` but ``IMAGE_OTHER``/``NO_IMAGE``)
  -> ``content_filter``, anything else (tool-call errors, ``LANGUAGE``,
  ``OTHER``, unknown values) -> ``other``. Back: ``stop``/``tool_calls`` ->
  ``STOP``, ``length`` -> ``MAX_TOKENS``, ``content_filter`` -> ``SAFETY``,
  ``error``/``other`` -> ``OTHER``; a native value kept from a Gemini answer wins
  when it maps to the same canonical reason.
* Usage: canonical input = ``promptTokenCount`` (cached included) +
  ``toolUsePromptTokenCount``; cached = ``cachedContentTokenCount``; output =
  ``candidatesTokenCount + thoughtsTokenCount``; reasoning =
  ``thoughtsTokenCount``. Back: ``candidatesTokenCount`` = output - reasoning,
  ``totalTokenCount`` = input + output; zero counts other than the prompt and the
  total are left out, as the service does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import msgspec

from extproc.canonical import FinishReason, Usage

PROTOCOL = "gemini"

#: ``CanonicalResponse.extra`` key holding Gemini-only answer fields.
EXTRA_KEY = "gemini"
#: ``Message.extra`` key: this message continues the previous message's Gemini
#: content (one content decoded into several canonical messages).
SAME_CONTENT = "sameContent"

encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder()

_UPPER = re.compile(r"([A-Z])")


@cache
def snake(name: str) -> str:
    """The proto snake_case spelling of a lowerCamelCase field name."""
    return _UPPER.sub(lambda m: "_" + m.group(1).lower(), name)


@cache
def camel(name: str) -> str:
    """The lowerCamelCase spelling of a (possibly snake_case) field name."""
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def get(obj: Mapping[str, Any], name: str) -> Any:
    """Field ``name`` (lowerCamelCase) in either spelling; None when absent."""
    value = obj.get(name)
    if value is None:
        other = snake(name)
        if other != name:
            value = obj.get(other)
    return value


def has(obj: Mapping[str, Any], name: str) -> bool:
    return name in obj or snake(name) in obj


def names(*fields: str) -> frozenset[str]:
    """Both spellings of each lowerCamelCase field name."""
    return frozenset(f for name in fields for f in (name, snake(name)))


def rest(obj: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """The fields of ``obj`` outside ``known`` (possibly empty)."""
    return {k: v for k, v in obj.items() if k not in known}


def dumps(value: Any) -> str:
    """Compact JSON text."""
    return encoder.encode(value).decode()


def int_of(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# -- finish reasons ------------------------------------------------------------------------

_FINISH_IN: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
}
_FINISH_OUT: dict[str, str] = {
    "stop": "STOP",
    "tool_calls": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
    "error": "OTHER",
    "other": "OTHER",
}


def finish_in(value: Any, has_calls: bool) -> FinishReason | None:
    """A ``finishReason`` as a canonical finish reason (None when absent)."""
    if not isinstance(value, str) or not value:
        return None
    reason = _FINISH_IN.get(value.upper(), "other")
    return "tool_calls" if reason == "stop" and has_calls else reason


def finish_out(value: FinishReason | None, native: Any = None) -> str:
    """A canonical finish reason as a ``finishReason``; ``native`` wins when equivalent."""
    reason = value or "stop"
    if isinstance(native, str) and finish_in(native, reason == "tool_calls") == reason:
        return native
    return _FINISH_OUT.get(reason, "OTHER")


# -- usage ---------------------------------------------------------------------------------


def usage_in(raw: Any) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    thoughts = int_of(get(raw, "thoughtsTokenCount"))
    return Usage(
        input_tokens=int_of(get(raw, "promptTokenCount"))
        + int_of(get(raw, "toolUsePromptTokenCount")),
        output_tokens=int_of(get(raw, "candidatesTokenCount")) + thoughts,
        cached_input_tokens=int_of(get(raw, "cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def usage_out(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {"promptTokenCount": usage.input_tokens}
    if usage.cached_input_tokens:
        out["cachedContentTokenCount"] = usage.cached_input_tokens
    candidates = max(usage.output_tokens - usage.reasoning_tokens, 0)
    if candidates:
        out["candidatesTokenCount"] = candidates
    if usage.reasoning_tokens:
        out["thoughtsTokenCount"] = usage.reasoning_tokens
    out["totalTokenCount"] = usage.input_tokens + usage.output_tokens
    return out


# -- tool arguments ------------------------------------------------------------------------


def args_text(value: Any) -> str:
    """``functionCall.args`` (an object, or absent) as canonical JSON text."""
    return dumps(value if value is not None else {})


def args_object(arguments: str) -> dict[str, Any]:
    """Canonical JSON text as ``functionCall.args``: ``""`` -> ``{}``; text that is not a
    JSON object -> ``{"_raw_arguments": text}`` (docs/translation.md)."""
    if not arguments.strip():
        return {}
    try:
        value = decoder.decode(arguments)
    except msgspec.DecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}
