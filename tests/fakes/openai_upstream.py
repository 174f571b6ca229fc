"""A fake OpenAI-compatible Chat Completions provider for end-to-end tests and benchmarks.

The HTTP/1.1 server, request recording, scripted answers, fault knobs, control API and command
line are those of every fake (:mod:`tests.fakes.base`); this module speaks the protocol. It
follows ``WIRE_FORMATS.md`` section 1 (Chat Completions) and the fake-upstream checklist (5.11)
closely enough that the official ``openai`` SDK, and Envoy in front of it, take it for the real
thing:

* ``x-request-id``, ``openai-version`` and rate-limit headers on every response;
* non-streaming answers as ``application/json`` with ``content-length``;
* streaming answers as ``text/event-stream`` with ``transfer-encoding: chunked``, one SSE event
  per HTTP chunk, drained immediately: ``data:`` lines only, the full chunk envelope on every
  chunk, the role chunk first, content (or tool-call argument) fragments of ``chunk_chars``
  characters, a finish chunk with an empty ``delta``, a usage chunk (``choices: []``) only when
  ``stream_options.include_usage`` is true, then ``data: [DONE]``;
* OpenAI-shaped errors ``{"error": {"message", "type", "param", "code"}}`` and ``retry-after`` on
  429 and 503.

Endpoints, under ``path_prefix`` (default ``/v1``): ``POST {prefix}/chat/completions``,
``GET {prefix}/models`` and ``GET {prefix}/models/{id}``. Other paths answer 404, a known path
with the wrong method 405. Chat requests are validated like the real API: a JSON object with a
``model`` and a non-empty ``messages`` array, known roles, every assistant ``tool_calls`` id
answered by a ``tool`` message, ``stream`` a boolean, ``stream_options`` only with ``stream``.
With ``expected_api_key`` set, every request (health checks included) must carry
``Authorization: Bearer <key>`` or gets 401.

Answers: without a script the answer is ``f"{name} says hello to {model}"``, so a test can tell
which backend answered; ``answer_chars=N`` (``--answer-chars N``) stretches or cuts that default
answer to exactly N characters, so a benchmark's streams have N / ``chunk_chars`` content chunks.
``queue_response()`` scripts the next chat answers (text, tool calls, finish reason, usage
numbers). Usage is deterministic: prompt tokens are the length of the compact JSON of
``messages`` divided by 4, completion tokens the length of the output divided by 4.

Fault knobs (``set_fault(...)``; see :mod:`tests.fakes.base` for their semantics), with
``chat_only=True`` seen only by ``POST .../chat/completions``:

* ``status``: an OpenAI-shaped error body (401 ``invalid_api_key``, 429 ``rate_limit_exceeded``,
  500 ``server_error``, 503 overloaded; others generic). ``retry_after`` (seconds) overrides the
  ``retry-after`` header, which defaults to 1 on 429 and 503.
* ``delay``, ``reset``, ``refuse``, ``stall_after``, ``chunk_delay``: as for every fake.
* ``midstream_error`` (streams only): after N SSE events send
  ``data: {"error": {..., "type": "server_error"}}``, end the body and close the connection,
  without ``[DONE]``.

Command line (used by the benchmark)::

    python -m tests.fakes.openai_upstream --port 8001 --name alpha --control-port 8101
    python -m tests.fakes.openai_upstream --answer-chars 256 --chunk-chars 4  # 64-chunk streams

prints ``listening on PORT`` once ready. The control port serves a tiny JSON API:
``POST /faults`` (body: ``set_fault`` keyword arguments), ``DELETE /faults``, ``GET /faults``,
``GET /requests/count`` and ``DELETE /requests``.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from tests.fakes.base import (
    FAULT_KNOBS,
    REASONS,
    Exchange,
    FakeUpstream,
    HttpRequest,
    JSONDict,
    RecordedRequest,
    Route,
    ScriptedChatAnswer,
    SentResponse,
    StatusFault,
    default_answer,
    dumps,
    format_seconds,
    pieces,
    run_cli,
    start_control_server,
)

__all__ = [
    "DEFAULT_MODELS",
    "FAULT_KNOBS",
    "MODEL_CREATED",
    "SYSTEM_FINGERPRINT",
    "FakeOpenAI",
    "JSONDict",
    "RecordedRequest",
    "ScriptedResponse",
    "SentResponse",
    "default_answer",
    "main",
    "start_control_server",
]

DEFAULT_MODELS: Final = ("gpt-4o-mini", "gpt-4o")
SYSTEM_FINGERPRINT: Final = "fp_fake0c0ffee"
MODEL_CREATED: Final = 1_715_367_049

_DONE_EVENT: Final = b"data: [DONE]\n\n"
_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_KEY_HELP: Final = "You can find your API key at https://platform.openai.com/account/api-keys."
_STATIC_HEADERS: Final = (
    "openai-version: 2020-10-01\r\n"
    "x-ratelimit-limit-requests: 10000\r\n"
    "x-ratelimit-limit-tokens: 30000000\r\n"
    "x-ratelimit-remaining-requests: 9999\r\n"
    "x-ratelimit-remaining-tokens: 29999000\r\n"
    "x-ratelimit-reset-requests: 6ms\r\n"
    "x-ratelimit-reset-tokens: 2ms\r\n"
)


# --------------------------------------------------------------------------------------------
# Public value types


@dataclass(frozen=True, slots=True)
class ScriptedResponse(ScriptedChatAnswer):
    """A scripted chat answer; see ``FakeOpenAI.queue_response``."""

    #: Reasoning text, sent as ``reasoning_content`` the way OpenAI-compatible
    #: reasoning servers (DeepSeek, vLLM, llama.cpp) do; OpenAI itself never does.
    reasoning: str | None = None


# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class _ApiError:
    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    retry_after: float | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def body(self, _request_id: str = "") -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return dumps({"error": error}).encode()

    def response_headers(self) -> list[tuple[str, str]]:
        headers = list(self.headers)
        if self.retry_after is not None:
            headers.append(("retry-after", format_seconds(self.retry_after)))
        return headers


def _invalid(message: str, param: str | None = None, code: str | None = None) -> _ApiError:
    return _ApiError(400, message, "invalid_request_error", param, code)


def _mask_key(key: str) -> str:
    return f"{key[:3]}{'*' * max(len(key) - 7, 3)}{key[-4:]}" if len(key) > 8 else "***"


# --------------------------------------------------------------------------------------------
# Chat request validation


#: The answer to a body that is not a JSON object (also the Responses fake's).
_NOT_JSON: Final = _invalid(
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent "
    "was not valid JSON.)"
)


def _validate_chat(payload: Any) -> _ApiError | None:
    if not isinstance(payload, dict):
        return _NOT_JSON
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        return _invalid("you must provide a model parameter")
    error = _validate_messages(payload.get("messages"))
    if error is None:
        error = _validate_stream_flags(payload)
    return error


def _validate_messages(messages: Any) -> _ApiError | None:
    if messages is None:
        return _invalid(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(messages, list):
        kind = type(messages).__name__
        return _invalid(
            f"Invalid type for 'messages': expected an array, but got {kind} instead.",
            "messages",
            "invalid_type",
        )
    if not messages:
        return _invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
            "empty array instead.",
            "messages",
            "empty_array",
        )
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            return _invalid(
                f"Invalid value: {role!r}. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                f"messages[{index}].role",
                "invalid_value",
            )
    return _validate_tool_answers(messages)


def _tool_call_ids(message: JSONDict) -> list[str]:
    calls = message.get("tool_calls") if message.get("role") == "assistant" else None
    if not isinstance(calls, list):
        return []
    return [str(call.get("id")) for call in calls if isinstance(call, dict)]


def _validate_tool_answers(messages: list[JSONDict]) -> _ApiError | None:
    """Every assistant tool call must be answered by a tool message before the next turn."""
    pending: list[str] = []
    pending_at = -1
    for index, message in enumerate(messages):
        if message.get("role") == "tool":
            if message.get("tool_call_id") not in pending:
                return _invalid(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{index}].role",
                )
            pending.remove(message["tool_call_id"])
            continue
        if pending:
            break
        pending, pending_at = _tool_call_ids(message), index
    if not pending:
        return None
    return _invalid(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to "
        "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(pending),
        f"messages.[{pending_at}].role",
    )


def _validate_stream_flags(payload: JSONDict) -> _ApiError | None:
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        kind = type(stream).__name__
        return _invalid(
            f"Invalid type for 'stream': expected a boolean, but got {kind} instead.",
            "stream",
            "invalid_type",
        )
    if payload.get("stream_options") is not None and stream is not True:
        return _invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    return None


def _include_usage(payload: JSONDict) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# --------------------------------------------------------------------------------------------
# Answers and their wire encodings


@dataclass(frozen=True, slots=True)
class _ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class _Answer:
    id: str
    model: str
    created: int
    text: str | None
    tool_calls: tuple[_ToolCall, ...]
    finish_reason: str
    usage: JSONDict
    reasoning: str | None = None


def _usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> JSONDict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _completion_body(answer: _Answer) -> bytes:
    message: JSONDict = {
        "role": "assistant",
        "content": answer.text,
        "refusal": None,
        "annotations": [],
    }
    if answer.reasoning is not None:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in answer.tool_calls
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": answer.finish_reason,
    }
    body = {
        "id": answer.id,
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [choice],
        "usage": answer.usage,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    return dumps(body).encode()


class _ChunkEncoder:
    """Renders ``chat.completion.chunk`` SSE events sharing one envelope."""

    def __init__(self, answer: _Answer, include_usage: bool) -> None:
        envelope = dumps(
            {
                "id": answer.id,
                "object": "chat.completion.chunk",
                "created": answer.created,
                "model": answer.model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "service_tier": "default",
            }
        )
        self._head = "data: " + envelope[:-1] + ',"choices":'
        self._tail = ',"usage":null}\n\n' if include_usage else "}\n\n"

    def delta(self, delta: JSONDict, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return f"{self._head}[{dumps(choice)}]{self._tail}".encode()

    def usage(self, usage: JSONDict) -> bytes:
        return f'{self._head}[],"usage":{dumps(usage)}}}\n\n'.encode()


def _tool_call_events(encoder: _ChunkEncoder, answer: _Answer, size: int) -> list[bytes]:
    events: list[bytes] = []
    for index, call in enumerate(answer.tool_calls):
        function = {"name": call.name, "arguments": ""}
        opening = {"index": index, "id": call.id, "type": "function", "function": function}
        events.append(encoder.delta({"tool_calls": [opening]}))
        for piece in pieces(call.arguments, size):
            fragment = {"index": index, "function": {"arguments": piece}}
            events.append(encoder.delta({"tool_calls": [fragment]}))
    return events


def _stream_events(answer: _Answer, *, include_usage: bool, chunk_chars: int) -> list[bytes]:
    """All SSE events of a streamed answer, ``data: [DONE]`` included."""
    encoder = _ChunkEncoder(answer, include_usage)
    if answer.text is not None:
        role: JSONDict = {"role": "assistant", "content": "", "refusal": None}
    else:
        role = {"role": "assistant", "content": None}
    events = [encoder.delta(role)]
    events += [
        encoder.delta({"reasoning_content": piece})
        for piece in pieces(answer.reasoning or "", chunk_chars)
    ]
    events += [
        encoder.delta({"content": piece}) for piece in pieces(answer.text or "", chunk_chars)
    ]
    events += _tool_call_events(encoder, answer, chunk_chars)
    events.append(encoder.delta({}, answer.finish_reason))
    if include_usage:
        events.append(encoder.usage(answer.usage))
    events.append(_DONE_EVENT)
    return events


_MIDSTREAM_ERROR: Final = (
    b'data: {"error":{"message":"The server had an error while processing your request. '
    b'Sorry about that!","type":"server_error","param":null,"code":null}}\n\n'
)


def _model_object(model_id: str) -> JSONDict:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": "system"}


# --------------------------------------------------------------------------------------------
# The server


class FakeOpenAI(FakeUpstream[ScriptedResponse]):
    """A fake OpenAI Chat Completions upstream running on a background thread."""

    default_models = DEFAULT_MODELS
    _script_type = ScriptedResponse
    _label = "openai"
    _id_tag_extra = "-_"
    _cli_description = "Run a fake OpenAI Chat Completions upstream."
    _api_key_help = "require Authorization: Bearer KEY"

    def _setup(self) -> None:
        self._chat_path = f"{self.path_prefix}/chat/completions"
        self._call_ids = itertools.count(1)
        #: An SSE comment line (e.g. OpenRouter's ``: OPENROUTER PROCESSING``) sent
        #: before the first event and again after the second; None: no comments.
        self.stream_comment: str | None = None

    # ---- scripted answers ------------------------------------------------------------------

    def queue_response(
        self,
        text: str | None = None,
        *,
        tool_calls: Sequence[tuple[str, str]] = (),
        finish_reason: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        reasoning: str | None = None,
    ) -> None:
        """Script the answer to the next chat request that reaches the answering stage.

        ``tool_calls`` holds ``(name, arguments_json_string)`` pairs. ``finish_reason`` defaults
        to ``tool_calls`` when there are calls and ``stop`` otherwise. Usage numbers left None are
        computed as for unscripted answers.
        """
        if text is None and not tool_calls:
            raise ValueError("a scripted response needs text, tool_calls or both")
        script = ScriptedResponse(
            text,
            tuple((str(name), str(arguments)) for name, arguments in tool_calls),
            finish_reason,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            reasoning_tokens,
            reasoning,
        )
        self._queue_script(script)

    # ---- protocol hooks --------------------------------------------------------------------

    def _next_request_id(self) -> str:
        return f"req_{self._id_tag}_{next(self._sequence):012x}"

    def _head_fields(self, request_id: str, started: float, content_type: str) -> tuple[str, str]:
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        own = f"x-request-id: {request_id}\r\nopenai-processing-ms: {elapsed_ms}\r\n"
        return own + _STATIC_HEADERS, ""

    def _bad_request(self, message: str) -> _ApiError:
        return _invalid(message)

    def _fault_error(self, fault: StatusFault) -> _ApiError:
        status, retry, name = fault.status, fault.retry_after, self.name
        if status == 401:
            message = f"Incorrect API key provided: sk-fake*********key. {_KEY_HELP}"
            return _ApiError(401, message, "invalid_request_error", None, "invalid_api_key", retry)
        if status == 429 and fault.quota:
            # OpenAI's out-of-credit answer: a 429 that waiting does not fix.
            message = (
                "You exceeded your current quota, please check your plan and billing details. "
                "For more information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors."
            )
            return _ApiError(429, message, "insufficient_quota", None, "insufficient_quota")
        if status == 429:
            wait = format_seconds(1 if retry is None else retry)
            message = (
                f"Rate limit reached for requests per min (RPM) on fake upstream {name}: "
                f"Limit 500, Used 500, Requested 1. Please try again in {wait}s."
            )
            retry = 1 if retry is None else retry
            return _ApiError(429, message, "requests", None, "rate_limit_exceeded", retry)
        if status == 500:
            message = "The server had an error while processing your request. Sorry about that!"
            return _ApiError(500, message, "server_error", None, None, retry)
        if status == 503:
            message = "The engine is currently overloaded, please try again later."
            retry = 1 if retry is None else retry
            return _ApiError(503, message, "server_error", None, "server_is_overloaded", retry)
        kind = "server_error" if status >= 500 else "invalid_request_error"
        message = f"{REASONS.get(status, 'Error')} (fault injected by fake upstream {name})"
        return _ApiError(status, message, kind, None, None, retry)

    def _not_found(self, request: HttpRequest) -> _ApiError:
        message = f"Invalid URL ({request.method} {request.path})"
        return _ApiError(404, message, "invalid_request_error")

    def _wrong_method(self, request: HttpRequest, allowed: str) -> _ApiError:
        message = f"Method Not Allowed ({request.method} {request.path})"
        return _ApiError(405, message, "invalid_request_error", headers=(("allow", allowed),))

    def _route(self, path: str) -> Route | None:
        if path == self._chat_path:
            return "POST", self._chat
        if path == self._models_path:
            return "GET", self._list_models
        model_id = self._model_id(path)
        return None if model_id is None else ("GET", partial(self._get_model, model_id=model_id))

    def _check_request(self, exchange: Exchange) -> _ApiError | None:
        expected = self.expected_api_key
        if expected is None:
            return None
        authorization = exchange.request.headers.get("authorization", "")
        scheme, _, key = authorization.partition(" ")
        if not authorization or not key.strip():
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). "
                + _KEY_HELP
            )
            return _ApiError(401, message, "invalid_request_error")
        if scheme.lower() != "bearer" or key.strip() != expected:
            message = f"Incorrect API key provided: {_mask_key(key.strip())}. {_KEY_HELP}"
            return _ApiError(401, message, "invalid_request_error", None, "invalid_api_key")
        return None

    # ---- endpoints -------------------------------------------------------------------------

    async def _list_models(self, exchange: Exchange) -> bool:
        body = {"object": "list", "data": [_model_object(model) for model in self.models]}
        return await exchange.send_json(200, dumps(body).encode())

    async def _get_model(self, exchange: Exchange, model_id: str) -> bool:
        if model_id not in self.models:
            message = f"The model '{model_id}' does not exist"
            error = _ApiError(404, message, "invalid_request_error", "model", "model_not_found")
            return await exchange.send_error(error)
        return await exchange.send_json(200, dumps(_model_object(model_id)).encode())

    async def _chat(self, exchange: Exchange) -> bool:
        payload = exchange.payload
        error = _validate_chat(payload) or self._check_model(payload)
        if error is not None:
            return await exchange.send_error(error)
        answer = self._answer(payload)
        if payload.get("stream") is not True:
            return await exchange.send_json(200, _completion_body(answer))
        events = _stream_events(
            answer, include_usage=_include_usage(payload), chunk_chars=self.chunk_chars
        )
        if self.stream_comment is not None:
            comment = f"{self.stream_comment}\n\n".encode()
            events = [comment, *events[:2], comment, *events[2:]]
        return await self._send_stream(exchange, events, _MIDSTREAM_ERROR)

    def _check_model(self, payload: JSONDict) -> _ApiError | None:
        model = payload["model"]
        if not self.strict_models or model in self.models:
            return None
        message = f"The model `{model}` does not exist or you do not have access to it."
        return _ApiError(404, message, "invalid_request_error", None, "model_not_found")

    def _answer(self, payload: JSONDict) -> _Answer:
        model = payload["model"]
        prompt_tokens = max(1, len(dumps(payload["messages"])) // 4)
        script = self._next_script(model)
        calls = tuple(
            _ToolCall(f"call_fake{next(self._call_ids):015d}", name, arguments)
            for name, arguments in script.tool_calls
        )
        output = (script.text or "") + "".join(c.name + c.arguments for c in calls)
        usage = _usage(
            prompt_tokens if script.prompt_tokens is None else script.prompt_tokens,
            max(1, len(output) // 4)
            if script.completion_tokens is None
            else script.completion_tokens,
            script.cached_tokens,
            script.reasoning_tokens,
        )
        finish_reason = script.finish_reason or ("tool_calls" if calls else "stop")
        return _Answer(
            id=f"chatcmpl-{next(self._sequence):024x}",
            model=model,
            created=int(time.time()),
            text=script.text,
            tool_calls=calls,
            finish_reason=finish_reason,
            usage=usage,
            reasoning=script.reasoning,
        )


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(FakeOpenAI, "tests.fakes.openai_upstream", argv)


if __name__ == "__main__":
    sys.exit(main())
