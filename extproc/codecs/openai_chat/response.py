"""OpenAI Chat Completions responses and errors <-> canonical."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from extproc.canonical import (
    CanonicalError,
    CanonicalResponse,
    FinishReason,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    Usage,
)

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

_FINISH_IN: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
_FINISH_OUT: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "error": "stop",
    "other": "stop",
}

# Error ``type`` values OpenAI clients know, by status.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class DecodeError(ValueError):
    """The provider's answer is not valid for this protocol."""


def finish_in(value: Any) -> FinishReason | None:
    if value is None:
        return None
    return _FINISH_IN.get(str(value), "other")


def finish_out(value: FinishReason | None) -> str | None:
    return None if value is None else _FINISH_OUT.get(value, "stop")


def usage_in(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens_details") or {}
    completion = raw.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=_int(raw.get("prompt_tokens")),
        output_tokens=_int(raw.get("completion_tokens")),
        cached_input_tokens=_int(prompt.get("cached_tokens") if isinstance(prompt, dict) else 0),
        cache_write_tokens=_int(
            prompt.get("cache_write_tokens") if isinstance(prompt, dict) else 0
        ),
        reasoning_tokens=_int(
            completion.get("reasoning_tokens") if isinstance(completion, dict) else 0
        ),
    )


def usage_out(usage: Usage) -> dict[str, Any]:
    prompt_details: dict[str, int] = {"cached_tokens": usage.cached_input_tokens}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def decode_response(body: bytes) -> CanonicalResponse:
    try:
        data = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"invalid JSON from provider: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise DecodeError("provider answer has no 'choices' array")
    content: list[Part] = []
    finish: FinishReason | None = None
    if data["choices"]:
        choice = data["choices"][0]
        if not isinstance(choice, dict) or not isinstance(choice.get("message") or {}, dict):
            raise DecodeError("provider answer has a malformed choice")
        message = choice.get("message") or {}
        calls = message.get("tool_calls") or []
        if not isinstance(calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("function") or {}, dict) for c in calls
        ):
            raise DecodeError("provider answer has malformed tool calls")
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            content.append(ReasoningPart(text=reasoning))
        text = message.get("content")
        if isinstance(text, str) and text:
            content.append(TextPart(text=text))
        for call in calls:
            function = call.get("function") or {}
            content.append(
                ToolCallPart(
                    id=str(call.get("id") or ""),
                    name=str(function.get("name") or ""),
                    arguments=str(function.get("arguments") or ""),
                )
            )
        finish = finish_in(choice.get("finish_reason"))
    return CanonicalResponse(
        protocol="openai-chat",
        id=str(data.get("id") or ""),
        model=str(data.get("model") or ""),
        created=_int(data.get("created")),
        content=content,
        finish_reason=finish,
        usage=usage_in(data.get("usage")),
    )


def encode_response(response: CanonicalResponse, request_model: str) -> bytes:
    text = "".join(p.text for p in response.content if isinstance(p, TextPart))
    calls = [
        {
            "id": p.id,
            "type": "function",
            "function": {"name": p.name, "arguments": p.arguments or "{}"},
        }
        for p in response.content
        if isinstance(p, ToolCallPart)
    ]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
    }
    reasoning = "".join(p.text for p in response.content if isinstance(p, ReasoningPart))
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    body: dict[str, Any] = {
        "id": response.id or "chatcmpl-proxy",
        "object": "chat.completion",
        "created": response.created or int(time.time()),
        "model": response.model or request_model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_out(response.finish_reason)
                or ("tool_calls" if calls else "stop"),
            }
        ],
    }
    if response.usage is not None:
        body["usage"] = usage_out(response.usage)
    return _encoder.encode(body)


# -- errors ------------------------------------------------------------------


def decode_error(status: int, body: bytes, retry_after: str | None) -> CanonicalError:
    """Read an error answer; tolerate anything (HTML from a load balancer...)."""
    message = ""
    kind = _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "api_error")
    code: str | None = None
    param: str | None = None
    try:
        data = _decoder.decode(body) if body else None
    except msgspec.DecodeError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or "")
        kind = str(err.get("type") or kind)
        code = str(err["code"]) if err.get("code") is not None else None
        param = str(err["param"]) if err.get("param") is not None else None
    elif isinstance(err, str):
        message = err
    elif isinstance(data, dict) and isinstance(data.get("message"), str):
        message = data["message"]
    if not message:
        snippet = body[:200].decode("utf-8", "replace").strip()
        message = f"upstream answered HTTP {status}" + (f": {snippet}" if snippet else "")
    return CanonicalError(
        status=status, message=message, type=kind, code=code, param=param, retry_after=retry_after
    )


def error_body(error: CanonicalError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.type if error.type else _TYPE_BY_STATUS.get(error.status, "api_error"),
            "param": error.param,
            "code": error.code,
        }
    }


def encode_error(error: CanonicalError) -> bytes:
    return _encoder.encode(error_body(error))
