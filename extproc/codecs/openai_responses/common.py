"""Pieces shared by the OpenAI Responses request, response and stream modules.

Mapping rules kept here:

* **Usage.** ``input_tokens`` includes ``input_tokens_details.cached_tokens``
  (and ``cache_write_tokens``); ``output_tokens`` includes
  ``output_tokens_details.reasoning_tokens`` - the canonical convention, so the
  numbers are copied as they are. ``total_tokens`` is input + output.
* **Status.** Responses has no finish reason: ``completed`` is ``stop``, or
  ``tool_calls`` when the output holds ``function_call`` items; ``incomplete``
  with reason ``max_output_tokens`` is ``length``, with ``content_filter`` is
  ``content_filter`` (any other reason: ``other``); ``failed`` is ``error``;
  ``cancelled`` and unknown values are ``other``. Back: ``length`` and
  ``content_filter`` give ``incomplete`` with that reason, ``error`` gives
  ``failed``, everything else ``completed``.
* **Reasoning items.** A ``reasoning`` item becomes one ``ReasoningPart``
  whose text is the summary texts joined with a blank line (or, without a
  summary, the ``reasoning_text`` content); its ``id``, ``encrypted_content``
  and other fields stay in ``extra`` and the part is marked
  ``provider="openai-responses"`` - they are replay tokens, sent back only to
  a backend of this protocol.
* **Proxy-made ids.** Items the proxy invents for a client (an answer that
  came from another protocol, a re-encoded stream) get ids of the form
  ``<prefix>_proxy_<token>_<n>`` (``msg_``, ``fc_``, ``rs_``). Real OpenAI ids
  are hexadecimal after the prefix, so these never collide; when a client
  sends them back they are dropped (a reasoning item with such an id is not a
  replay token of any provider and is never sent upstream).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from extproc.canonical import CanonicalError, FinishReason, ReasoningPart, Usage

PROTOCOL = "openai-responses"
PATH = "/responses"

#: ``Message.extra`` key marking the system message decoded from ``instructions``.
INSTRUCTIONS_MARK = "responses_field"
INSTRUCTIONS_VALUE = "instructions"

_PROXY_ID = re.compile(r"^[A-Za-z]+_proxy_")

#: ``response.error.code`` values clients know (the SDK's enum, plus the codes
#: Codex acts on); anything else is replaced by one derived from the status.
KNOWN_FAILURE_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
        "context_length_exceeded",
        "insufficient_quota",
    }
)

# HTTP status for an in-band error, by its ``code`` / ``type``.
_STATUS_BY_CODE = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "too_many_requests": 429,
    "rate_limit_error": 429,
    "requests": 429,
    "tokens": 429,
    "invalid_prompt": 400,
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "server_is_overloaded": 503,
    "slow_down": 503,
    "overloaded_error": 503,
}


# -- small value helpers -------------------------------------------------------


def as_int(value: Any) -> int:
    """``value`` when it is an integer (not a bool), else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def rest(obj: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any] | None:
    """The fields of ``obj`` outside ``known``, or None when there are none."""
    out = {k: v for k, v in obj.items() if k not in known}
    return out or None


# -- ids -------------------------------------------------------------------------


def is_proxy_id(value: Any) -> bool:
    """True for an item id the proxy made up (see the module docstring)."""
    return isinstance(value, str) and _PROXY_ID.match(value) is not None


def response_id(source_id: str) -> str:
    """The Responses id of an answer: the provider's own ``resp_...`` id, or a proxy id."""
    if source_id.startswith("resp_"):
        return source_id
    token = re.sub(r"[^A-Za-z0-9_-]", "", source_id) or uuid.uuid4().hex
    return f"resp_proxy_{token}"


def item_token(resp_id: str) -> str:
    """The part of ``resp_id`` that makes proxy item ids unique per answer."""
    return resp_id.removeprefix("resp_").removeprefix("proxy_")


def proxy_item_id(prefix: str, token: str, index: int) -> str:
    return f"{prefix}_proxy_{token}_{index}"


# -- usage -----------------------------------------------------------------------


def usage_in(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    inputs = as_dict(raw.get("input_tokens_details"))
    outputs = as_dict(raw.get("output_tokens_details"))
    return Usage(
        input_tokens=as_int(raw.get("input_tokens")),
        output_tokens=as_int(raw.get("output_tokens")),
        cached_input_tokens=as_int(inputs.get("cached_tokens")),
        cache_write_tokens=as_int(inputs.get("cache_write_tokens")),
        reasoning_tokens=as_int(outputs.get("reasoning_tokens")),
    )


def usage_out(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


# -- status <-> finish reason ----------------------------------------------------


def finish_from_status(status: Any, details: Any, has_calls: bool) -> FinishReason | None:
    if status == "completed":
        return "tool_calls" if has_calls else "stop"
    if status == "incomplete":
        reason = as_dict(details).get("reason")
        if reason == "max_output_tokens":
            return "length"
        if reason == "content_filter":
            return "content_filter"
        return "other"
    if status == "failed":
        return "error"
    if status in ("in_progress", "queued", None):
        return None
    return "other"


def status_from_finish(reason: FinishReason | None) -> tuple[str, dict[str, str] | None]:
    """``status`` and ``incomplete_details`` of a Response for a canonical finish."""
    if reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    if reason == "error":
        return "failed", None
    return "completed", None


# -- errors ----------------------------------------------------------------------


def status_for(code: str | None, kind: str | None) -> int:
    for key in (code, kind):
        if key is not None and key in _STATUS_BY_CODE:
            return _STATUS_BY_CODE[key]
    return 500


def stream_error(data: Mapping[str, Any]) -> CanonicalError:
    """An ``error`` event: the documented flat shape or the observed nested one."""
    nested = data.get("error")
    source: Mapping[str, Any] = nested if isinstance(nested, dict) else data
    code = source.get("code")
    kind = source.get("type") if nested is not None else None
    param = source.get("param")
    message = source.get("message")
    code_text = str(code) if code is not None else None
    kind_text = str(kind) if isinstance(kind, str) and kind != "error" else None
    return CanonicalError(
        status=status_for(code_text, kind_text),
        message=str(message) if message else "the provider reported an error in its stream",
        type=kind_text or ("server_error" if status_for(code_text, None) >= 500 else "api_error"),
        code=code_text,
        param=str(param) if param is not None else None,
    )


def failure_error(raw: Any) -> CanonicalError:
    """The ``error`` of a ``failed`` Response."""
    error = as_dict(raw)
    code = error.get("code")
    code_text = str(code) if code is not None else "server_error"
    status = status_for(code_text, None)
    return CanonicalError(
        status=status,
        message=str(error.get("message") or "the provider reported that the response failed"),
        type="server_error" if status >= 500 else "invalid_request_error",
        code=code_text,
    )


def failure_code(error: CanonicalError) -> str:
    """``response.error.code`` for a failed Response (the SDK knows a fixed set)."""
    if error.code in KNOWN_FAILURE_CODES:
        return error.code
    if error.status == 429:
        return "rate_limit_exceeded"
    if 400 <= error.status < 500:
        return "invalid_prompt"
    return "server_error"


# -- reasoning items ---------------------------------------------------------------


def summary_for(text: str) -> list[dict[str, Any]]:
    """The summary list a reasoning text would be sent as."""
    return [{"type": "summary_text", "text": text}] if text else []


def reasoning_part(item: Mapping[str, Any]) -> ReasoningPart:
    """A ``reasoning`` item (request input or answer output) as a canonical part."""
    summary = item.get("summary")
    texts = [
        s["text"]
        for s in (summary if isinstance(summary, list) else [])
        if isinstance(s, dict) and isinstance(s.get("text"), str)
    ]
    if not texts:
        content = item.get("content")
        texts = [
            c["text"]
            for c in (content if isinstance(content, list) else [])
            if isinstance(c, dict) and isinstance(c.get("text"), str)
        ]
    text = "\n\n".join(texts)
    extra = {k: v for k, v in item.items() if k not in ("type", "summary")}
    if "summary" in item and summary != summary_for(text):
        extra["summary"] = summary  # not rebuilt exactly from the text: keep it verbatim
    if is_proxy_id(extra.get("id")):
        # Made up by the proxy for reasoning of another origin: no replay token.
        del extra["id"]
        return ReasoningPart(text=text, extra=extra or None)
    return ReasoningPart(text=text, provider=PROTOCOL, extra=extra or None)


def reasoning_item(part: ReasoningPart, item_id: str | None) -> dict[str, Any]:
    """A ``reasoning`` item for ``part``; replay fields only for this protocol's parts."""
    item: dict[str, Any] = {"type": "reasoning"}
    if item_id is not None:
        item["id"] = item_id
    own = part.provider == PROTOCOL and part.extra is not None
    extra = part.extra if own and part.extra is not None else {}
    item["summary"] = extra["summary"] if "summary" in extra else summary_for(part.text)
    for key, value in extra.items():
        if key not in ("id", "summary"):
            item[key] = value
    return item
