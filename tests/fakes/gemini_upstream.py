"""A fake Gemini API (``generativelanguage.googleapis.com``) for end-to-end tests and benchmarks.

It follows ``WIRE_FORMATS.md`` section 4 (Gemini generateContent) and the fake-upstream checklist
(5.11) closely enough that the official ``google-genai`` SDK, and Envoy in front of it, take it
for the real thing. It shares the HTTP/1.1 server, request recording, scripted answers, fault
knobs, control API and command line of every fake (:mod:`tests.fakes.base`: keep-alive, chunked
request bodies, ``TCP_NODELAY``; the same ``set_fault`` knobs with the same semantics); only the
protocol differs:

* endpoints, under ``path_prefix`` (default ``/v1beta``, so ``base_url`` is
  ``http://127.0.0.1:PORT/v1beta``): ``POST {prefix}/models/{model}:generateContent``,
  ``:streamGenerateContent`` (``?alt=sse``: ``data:`` lines with CRLF line ends, one complete
  ``GenerateContentResponse`` per event, no ``event:`` lines, no ``[DONE]``, the body just ends;
  without ``alt=sse``: one JSON array whose elements arrive one per HTTP chunk, like the real
  service), ``:countTokens``, ``GET {prefix}/models`` (``pageSize``, ``pageToken``) and
  ``GET {prefix}/models/{model}``. Other paths answer 404, a known path with the wrong method
  405;
* every error in Google's shape ``{"error": {"code", "message", "status", "details"?}}``;
  429 (and 503) carry a ``RetryInfo`` detail (``retryDelay``), not a ``retry-after`` header;
* with ``expected_api_key`` set, every request needs ``x-goog-api-key: KEY`` or ``?key=KEY``:
  none -> 403 ``PERMISSION_DENIED``, a wrong one -> 400 ``INVALID_ARGUMENT`` with an
  ``ErrorInfo`` reason ``API_KEY_INVALID`` (what the real API answers);
* requests are validated like the real API, accepting lowerCamelCase and snake_case field names:
  a non-empty ``contents`` array, roles ``user``/``model`` only, non-empty ``parts`` with exactly
  one data field each, ``functionCall.args`` and ``functionResponse.response`` objects, a
  function-response turn right after a function-call turn with as many responses as calls,
  function names that Gemini accepts, and, for ``gemini-3*`` models, a ``thoughtSignature`` on
  the first function call of each model turn of the current turn (all as Google-shaped 400s);
  ``countTokens`` takes ``contents`` or ``generateContentRequest``, not both.

Answers: without a script the answer is ``f"{name} says hello to {model}"`` (``answer_chars``
stretches it, as in the OpenAI fake). ``queue_response()`` scripts the next generate answers:
text, whole function calls (``(name, args_json)``; the first call part carries a
``thoughtSignature``, as the real service's do), a thought summary (``thinking``, sent as
``thought: true`` parts only when the request asked for ``includeThoughts``, always counted in
``thoughtsTokenCount``; with thinking, the last text part carries a ``thoughtSignature`` too),
the finish reason (a Gemini ``finishReason``, or OpenAI's name for it) and usage numbers.
Usage is deterministic: prompt tokens are the length of the
compact JSON of ``contents`` (plus ``systemInstruction``) divided by 4, candidate tokens the
length of the output divided by 4. Streams send thoughts and text in ``chunk_chars`` pieces with
prompt-only ``usageMetadata``, each function call whole in its own event, and the
``finishReason`` with the complete ``usageMetadata`` on the last event (an empty text part for
text answers, the last call otherwise).

Fault knobs (``set_fault``, ``clear_faults``, ``restore``) are those of every fake: ``status``
(+ ``retry_after``, seconds, into ``RetryInfo``), ``delay``, ``reset``, ``refuse``,
``stall_after``, ``chunk_delay``, ``midstream_error`` (after N events, ``data: {"error":
{"code": 500, ..., "status": "INTERNAL"}}`` and the connection closes), ``count`` and
``chat_only`` (only generate requests see the knobs; ``countTokens`` and model reads do not).

Command line::

    python -m tests.fakes.gemini_upstream --port 8003 --name gem --control-port 8103

prints ``listening on PORT``; the control port serves the same JSON API as the OpenAI fake.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
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
    render_head,
    run_cli,
    start_control_server,
)

__all__ = [
    "DEFAULT_MODELS",
    "FAULT_KNOBS",
    "FakeGemini",
    "RecordedRequest",
    "ScriptedResponse",
    "SentResponse",
    "default_answer",
    "main",
    "start_control_server",
]

DEFAULT_MODELS: Final = ("gemini-2.5-flash", "gemini-2.5-pro")
GENERATE_ACTIONS: Final = frozenset({"generateContent", "streamGenerateContent"})

_JSON_TYPE: Final = "application/json; charset=UTF-8"
_STATIC_HEADERS: Final = (
    "vary: Origin, X-Origin, Referer\r\n"
    "server: scaffolding on HTTPServer2\r\n"
    "x-xss-protection: 0\r\n"
    "x-frame-options: SAMEORIGIN\r\n"
    "x-content-type-options: nosniff\r\n"
)
_RPC_PREFIX: Final = "type.googleapis.com/google.rpc."
_RPC_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FAULT_MESSAGES: Final = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_DATA_FIELDS: Final = (
    ("text", "text"),
    ("inlineData", "inline_data"),
    ("fileData", "file_data"),
    ("functionCall", "function_call"),
    ("functionResponse", "function_response"),
    ("executableCode", "executable_code"),
    ("codeExecutionResult", "code_execution_result"),
)
#: OpenAI finish reasons accepted by ``queue_response`` (the shared knob API).
_OPENAI_FINISH: Final = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "content_filter": "SAFETY",
}
_FUNCTION_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,127}$")
_UPPER: Final = re.compile(r"([A-Z])")


def _get(obj: Any, name: str) -> Any:
    """Field ``name`` (lowerCamelCase) or its snake_case spelling, as the real API accepts."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(name)
    if value is None:
        value = obj.get(_UPPER.sub(lambda m: "_" + m.group(1).lower(), name))
    return value


# --------------------------------------------------------------------------------------------
# Public value types


@dataclass(frozen=True, slots=True)
class ScriptedResponse(ScriptedChatAnswer):
    """A scripted answer; see ``FakeGemini.queue_response``."""

    #: A thought summary, sent as ``thought: true`` parts when the request asks for them.
    thinking: str | None = None


# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class _ApiError:
    status: int
    message: str
    details: tuple[JSONDict, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def payload(self) -> JSONDict:
        error: JSONDict = {
            "code": self.status,
            "message": self.message,
            "status": _RPC_STATUS.get(self.status, "INTERNAL" if self.status >= 500 else "UNKNOWN"),
        }
        if self.details:
            error["details"] = list(self.details)
        return {"error": error}

    def body(self, _request_id: str = "") -> bytes:
        return dumps(self.payload()).encode()

    def response_headers(self) -> tuple[tuple[str, str], ...]:
        return self.headers


def _invalid(message: str, field: str | None = None) -> _ApiError:
    if field is None:
        return _ApiError(400, message)
    violation = {"field": field, "description": message}
    return _ApiError(
        400, message, ({"@type": _RPC_PREFIX + "BadRequest", "fieldViolations": [violation]},)
    )


def _retry_info(seconds: float) -> JSONDict:
    return {"@type": _RPC_PREFIX + "RetryInfo", "retryDelay": f"{format_seconds(seconds)}s"}


# --------------------------------------------------------------------------------------------
# Request validation


def _validate_contents(contents: Any, where: str, model: str) -> _ApiError | None:
    if not isinstance(contents, list) or not contents:
        return _invalid(f"* GenerateContentRequest.{where}: contents is not specified\n", where)
    for i, content in enumerate(contents):
        at = f"{where}[{i}]"
        if not isinstance(content, dict):
            return _invalid(f"Invalid JSON payload received. Invalid value at '{at}'.", at)
        if _get(content, "role") not in (None, "", "user", "model"):
            return _invalid("Please use a valid role: user, model.", f"{at}.role")
        parts = _get(content, "parts")
        if not isinstance(parts, list) or not parts:
            return _invalid(
                f"* GenerateContentRequest.{at}.parts: contents.parts must not be empty.\n",
                f"{at}.parts",
            )
        for j, part in enumerate(parts):
            error = _validate_part(part, f"{at}.parts[{j}]")
            if error is not None:
                return error
    return _validate_turns(contents, model)


def _validate_part(part: Any, at: str) -> _ApiError | None:
    if not isinstance(part, dict):
        return _invalid(f"Invalid JSON payload received. Invalid value at '{at}'.", at)
    present = [camel for camel, snake in _DATA_FIELDS if camel in part or snake in part]
    if not present:
        return _invalid(
            f"* GenerateContentRequest.{at}.data: required oneof field 'data' must have one "
            "initialized field\n",
            f"{at}.data",
        )
    if len(present) > 1:
        return _invalid(
            f"Invalid JSON payload received. Oneof field 'data' is already set. Cannot set "
            f"'{present[1]}' at '{at}'.",
            at,
        )
    call = _get(part, "functionCall")
    if call is not None:
        if not isinstance(_get(call, "name"), str):
            return _invalid(f"* GenerateContentRequest.{at}.function_call.name: missing\n", at)
        args = _get(call, "args")
        if args is not None and not isinstance(args, dict):
            return _invalid(
                f"Invalid JSON payload received. Invalid value at '{at}.function_call.args' "
                "(type.googleapis.com/google.protobuf.Struct)",
                f"{at}.function_call.args",
            )
    result = _get(part, "functionResponse")
    if result is not None and not isinstance(_get(result, "response"), dict):
        return _invalid(
            f"Invalid JSON payload received. Invalid value at '{at}.function_response.response' "
            "(type.googleapis.com/google.protobuf.Struct)",
            f"{at}.function_response.response",
        )
    return None


def _count(content: JSONDict, field: str) -> int:
    parts = _get(content, "parts") or []
    return sum(1 for part in parts if _get(part, field) is not None)


def _validate_turns(contents: list[JSONDict], model: str) -> _ApiError | None:
    """Function-call/response turn order and counts; Gemini 3 thought signatures."""
    for i, content in enumerate(contents):
        responses = _count(content, "functionResponse")
        if not responses:
            continue
        previous = contents[i - 1] if i else None
        calls = _count(previous, "functionCall") if previous is not None else 0
        if previous is None or _get(previous, "role") != "model" or not calls:
            return _invalid(
                "Please ensure that function response turn comes immediately after a function "
                "call turn."
            )
        if calls != responses:
            return _invalid(
                "Please ensure that the number of function response parts is equal to the number "
                "of function call parts of the function call turn."
            )
    if not model.startswith("gemini-3"):
        return None
    start = 0
    for i, content in enumerate(contents):
        parts = _get(content, "parts") or []
        if _get(content, "role") != "model" and any(_get(p, "text") is not None for p in parts):
            start = i
    for i in range(start, len(contents)):
        if _get(contents[i], "role") != "model":
            continue
        for j, part in enumerate(_get(contents[i], "parts") or []):
            call = _get(part, "functionCall")
            if call is None:
                continue
            if _get(part, "thoughtSignature") is None:
                return _invalid(
                    "Function call is missing a thought_signature in functionCall parts. This is "
                    "required for tools to work correctly, and missing thought_signature may lead "
                    "to degraded model performance. Additional data, function call "
                    f"`default_api:{_get(call, 'name')}` , position {j + 1}. Please refer to "
                    "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
                )
            break  # only the first call of a step carries the signature
    return None


def _validate_tools(tools: Any) -> _ApiError | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        return _invalid("Invalid JSON payload received. Invalid value at 'tools'.", "tools")
    for i, tool in enumerate(tools):
        declarations = _get(tool, "functionDeclarations") or []
        for j, declaration in enumerate(declarations if isinstance(declarations, list) else []):
            name = _get(declaration, "name")
            if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
                at = f"tools[{i}].function_declarations[{j}].name"
                return _invalid(
                    f"* GenerateContentRequest.{at}: Invalid function name. Must start with a "
                    "letter or an underscore. Must be a-z, A-Z, 0-9, or contain underscores, dots, "
                    "colons and dashes, with a maximum length of 128.\n",
                    at,
                )
    return None


def _validate_generate(payload: Any, model: str) -> _ApiError | None:
    if not isinstance(payload, dict):
        return _invalid("Invalid JSON payload received. Unexpected token.")
    error = _validate_contents(_get(payload, "contents"), "contents", model)
    if error is None:
        error = _validate_tools(_get(payload, "tools"))
    config = _get(payload, "generationConfig")
    if error is None and config is not None and not isinstance(config, dict):
        error = _invalid(
            "Invalid JSON payload received. Invalid value at 'generation_config'.",
            "generation_config",
        )
    return error


# --------------------------------------------------------------------------------------------
# Answers and their wire encodings


@dataclass(frozen=True, slots=True)
class _Answer:
    id: str
    model: str
    text: str | None
    calls: tuple[tuple[str, JSONDict], ...]
    thinking: str | None  # None unless the request asked for thoughts
    signature: str | None  # on the first call, or (with thinking) the last text part
    finish_reason: str
    usage: JSONDict
    prompt_tokens: int

    def parts(self) -> list[JSONDict]:
        parts: list[JSONDict] = []
        if self.thinking:
            parts.append({"text": self.thinking, "thought": True})
        if self.text is not None:
            parts.append({"text": self.text})
            if self.signature is not None and not self.calls:
                parts[-1]["thoughtSignature"] = self.signature
        parts.extend(self._call_part(index) for index in range(len(self.calls)))
        return parts

    def _call_part(self, index: int) -> JSONDict:
        name, args = self.calls[index]
        part: JSONDict = {"functionCall": {"name": name, "args": args}}
        if index == 0 and self.signature is not None:
            part["thoughtSignature"] = self.signature
        return part

    def body(self, parts: list[JSONDict], *, final: bool, usage: JSONDict) -> JSONDict:
        candidate: JSONDict = {"content": {"parts": parts, "role": "model"}}
        if final:
            candidate["finishReason"] = self.finish_reason
        candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": self.id,
        }

    def stream_bodies(self, chunk_chars: int) -> list[JSONDict]:
        """The ``GenerateContentResponse`` of each stream event, in order."""
        early = {
            "promptTokenCount": self.prompt_tokens,
            "totalTokenCount": self.prompt_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt_tokens}],
        }
        bodies = [
            self.body([{"text": piece, "thought": True}], final=False, usage=early)
            for piece in pieces(self.thinking or "", chunk_chars)
        ]
        bodies += [
            self.body([{"text": piece}], final=False, usage=early)
            for piece in pieces(self.text or "", chunk_chars)
        ]
        for index in range(len(self.calls)):
            last = index == len(self.calls) - 1
            usage = self.usage if last else early
            bodies.append(self.body([self._call_part(index)], final=last, usage=usage))
        if not self.calls:
            tail: JSONDict = {"text": ""}
            if self.signature is not None:
                tail["thoughtSignature"] = self.signature
            bodies.append(self.body([tail], final=True, usage=self.usage))
        return bodies


def _usage(prompt: int, candidates: int, thoughts: int, cached: int) -> JSONDict:
    usage: JSONDict = {"promptTokenCount": prompt, "candidatesTokenCount": candidates}
    if cached:
        usage["cachedContentTokenCount"] = cached
    usage["totalTokenCount"] = prompt + candidates + thoughts
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if cached:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _sse(body: JSONDict) -> bytes:
    return b"data: " + dumps(body).encode() + b"\r\n\r\n"


_MIDSTREAM_PAYLOAD: Final = {
    "error": {"code": 500, "message": _FAULT_MESSAGES[500], "status": "INTERNAL"}
}
_MIDSTREAM_ERROR: Final = _sse(_MIDSTREAM_PAYLOAD)


def _prompt_tokens(payload: JSONDict) -> int:
    counted = dumps(_get(payload, "contents")) + dumps(_get(payload, "systemInstruction") or "")
    return max(1, len(counted) // 4)


def _wants_thoughts(payload: JSONDict) -> bool:
    config = _get(payload, "generationConfig")
    return _get(_get(config, "thinkingConfig"), "includeThoughts") is True


def _model_object(model_id: str) -> JSONDict:
    return {
        "name": f"models/{model_id}",
        "baseModelId": model_id,
        "version": "001",
        "displayName": model_id.replace("-", " ").title(),
        "description": f"A fake {model_id}",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "temperature": 1,
        "maxTemperature": 2,
        "topP": 0.95,
        "topK": 64,
        "thinking": True,
    }


# --------------------------------------------------------------------------------------------
# The server


class FakeGemini(FakeUpstream[ScriptedResponse]):
    """A fake Gemini API upstream running on a background thread."""

    default_models = DEFAULT_MODELS
    default_path_prefix = "/v1beta"
    _script_type = ScriptedResponse
    _label = "gemini"
    _json_type = _JSON_TYPE
    _cli_description = "Run a fake Gemini API upstream."
    _api_key_help = "require x-goog-api-key: KEY or ?key=KEY"

    def _setup(self) -> None:
        self._signatures = itertools.count(1)

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT``: what the google-genai SDK takes as ``base_url``."""
        return self.base_url[: len(self.base_url) - len(self.path_prefix)]

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
        thinking: str | None = None,
        reasoning: str | None = None,
    ) -> None:
        """Script the answer to the next generate request that reaches the answering stage.

        The argument names are the OpenAI fake's. ``tool_calls`` holds ``(name,
        arguments_json_string)`` pairs; the arguments must be a JSON object (``""`` means
        ``{}``). ``thinking`` (or its alias ``reasoning``) is a thought summary.
        ``finish_reason`` is a Gemini ``finishReason`` (OpenAI's ``stop``/``length``/
        ``tool_calls``/``content_filter`` are mapped); it defaults to ``STOP``, also for function
        calls. Usage numbers left None are computed as for unscripted answers;
        ``reasoning_tokens`` defaults to a count of the thought summary.
        """
        if text is None and not tool_calls:
            raise ValueError("a scripted response needs text, tool_calls or both")
        if thinking is not None and reasoning is not None:
            raise ValueError("thinking and reasoning are the same knob: give one")
        native = _OPENAI_FINISH.get(finish_reason or "", finish_reason)
        if native is not None and not re.fullmatch(r"[A-Z][A-Z_]*", native):
            raise ValueError(f"unknown finish reason {finish_reason!r}")
        for name, arguments in tool_calls:
            args = json.loads(arguments) if str(arguments).strip() else {}
            if not isinstance(args, dict):
                raise ValueError(f"arguments of {name!r} must be a JSON object")
        script = ScriptedResponse(
            text,
            tuple((str(name), str(arguments)) for name, arguments in tool_calls),
            native,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            reasoning_tokens,
            thinking if thinking is not None else reasoning,
        )
        self._queue_script(script)

    # ---- protocol hooks --------------------------------------------------------------------

    def _is_chat(self, method: str, path: str) -> bool:
        """Generate requests (``:generateContent`` and ``:streamGenerateContent``)."""
        return method == "POST" and self._is_generate(path)

    def _head_fields(self, request_id: str, started: float, content_type: str) -> tuple[str, str]:
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        return f"{_STATIC_HEADERS}server-timing: gfet4t7; dur={elapsed_ms}\r\n", ""

    def _bad_request(self, message: str) -> _ApiError:
        return _invalid(message)

    def _malformed(self, message: str) -> bytes:
        # Unparsable HTTP gets a bare head, without the usual headers.
        body = self._bad_request(message).body()
        return render_head(400, self._json_type, len(body), keep_alive=False) + body

    def _fault_error(self, fault: StatusFault) -> _ApiError:
        status, retry = fault.status, fault.retry_after
        message = _FAULT_MESSAGES.get(
            status, f"{REASONS.get(status, 'Error')} (fault injected by fake upstream {self.name})"
        )
        details: tuple[JSONDict, ...] = ()
        if status in (429, 503) or retry is not None:
            details = (_retry_info(1 if retry is None else retry),)
        return _ApiError(status, message, details)

    def _not_found(self, request: HttpRequest) -> _ApiError:
        return _ApiError(404, "Method not found.")

    def _wrong_method(self, request: HttpRequest, allowed: str) -> _ApiError:
        message = f"Method not allowed: {request.method} {request.path}."
        return _ApiError(405, message, headers=(("allow", allowed),))

    def _route(self, path: str) -> Route | None:
        if path in (self._models_path, self._models_path + "/"):
            return "GET", self._list_models
        target = self._model_target(path)
        if target is None:
            return None
        model, action = target
        if action is None:
            return "GET", partial(self._get_model, model=model)
        if action in GENERATE_ACTIONS:
            return "POST", partial(self._generate, model=model)
        if action == "countTokens":
            return "POST", partial(self._count_tokens, model=model)
        return None

    def _is_generate(self, path: str) -> bool:
        target = self._model_target(path)
        return target is not None and target[1] in GENERATE_ACTIONS

    def _model_target(self, path: str) -> tuple[str, str | None] | None:
        """(model, action or None) for ``{prefix}/models/{model}[:{action}]`` paths."""
        target = self._model_id(path)
        if target is None:
            return None
        model, sep, action = target.rpartition(":")
        if sep and model and action.isalpha():
            return model, action
        return target, None

    def _check_request(self, exchange: Exchange) -> _ApiError | None:
        expected = self.expected_api_key
        if expected is None:
            return None
        key = exchange.request.headers.get("x-goog-api-key") or exchange.query.get("key")
        if not key:
            return _ApiError(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if key != expected:
            info = {
                "@type": _RPC_PREFIX + "ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
            return _ApiError(400, "API key not valid. Please pass a valid API key.", (info,))
        return None

    # ---- endpoints -------------------------------------------------------------------------

    def _unknown_model(self, model: str, action: str) -> _ApiError | None:
        if not self.strict_models or model in self.models:
            return None
        return _ApiError(
            404,
            f"models/{model} is not found for API version {self.path_prefix.strip('/')}, or is "
            f"not supported for {action}. Call ListModels to see the list of available models and "
            "their supported methods.",
        )

    async def _list_models(self, exchange: Exchange) -> bool:
        try:
            size = int(exchange.query.get("pageSize") or 50)
            start = int(exchange.query.get("pageToken") or 0)
        except ValueError:
            return await exchange.send_error(_invalid("Invalid page token or size."))
        size = max(1, min(size, 1000))
        body: JSONDict = {"models": [_model_object(m) for m in self.models[start : start + size]]}
        if start + size < len(self.models):
            body["nextPageToken"] = str(start + size)
        return await exchange.send_json(200, dumps(body).encode())

    async def _get_model(self, exchange: Exchange, model: str) -> bool:
        model = model.removeprefix("models/")
        if model not in self.models:
            return await exchange.send_error(_ApiError(404, f"models/{model} is not found"))
        return await exchange.send_json(200, dumps(_model_object(model)).encode())

    async def _count_tokens(self, exchange: Exchange, model: str) -> bool:
        payload = exchange.payload
        error = self._unknown_model(model, "countTokens")
        if error is None and not isinstance(payload, dict):
            error = _invalid("Invalid JSON payload received. Unexpected token.")
        if error is None:
            inner = _get(payload, "generateContentRequest")
            if inner is not None and _get(payload, "contents") is not None:
                error = _invalid(
                    "* CountTokensRequest: contents and generate_content_request are mutually "
                    "exclusive\n"
                )
            else:
                target = inner if isinstance(inner, dict) else payload
                error = _validate_contents(_get(target, "contents"), "contents", model)
        if error is not None:
            return await exchange.send_error(error)
        target = _get(payload, "generateContentRequest") or payload
        tokens = _prompt_tokens(target)
        body = {
            "totalTokens": tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}],
        }
        return await exchange.send_json(200, dumps(body).encode())

    async def _generate(self, exchange: Exchange, model: str) -> bool:
        payload = exchange.payload
        error = self._unknown_model(model, "generateContent") or _validate_generate(payload, model)
        if error is not None:
            return await exchange.send_error(error)
        answer = self._answer(payload, model)
        if not exchange.request.path.endswith(":streamGenerateContent"):
            body = answer.body(answer.parts(), final=True, usage=answer.usage)
            return await exchange.send_json(200, dumps(body).encode())
        bodies = answer.stream_bodies(self.chunk_chars)
        if exchange.query.get("alt") == "sse":
            events = [_sse(b) for b in bodies]
            return await self._send_stream(exchange, events, _MIDSTREAM_ERROR)
        # Without alt=sse: one JSON array, its elements arriving one by one.
        events = [(b"[" if i == 0 else b",\r\n") + dumps(b).encode() for i, b in enumerate(bodies)]
        events[-1] += b"]"
        array_error = b",\r\n" + dumps(_MIDSTREAM_PAYLOAD).encode() + b"]"
        return await self._send_stream(exchange, events, array_error, _JSON_TYPE)

    def _answer(self, payload: JSONDict, model: str) -> _Answer:
        script = self._next_script(model)
        calls = tuple(
            (name, json.loads(arguments) if arguments.strip() else {})
            for name, arguments in script.tool_calls
        )
        prompt = _prompt_tokens(payload) if script.prompt_tokens is None else script.prompt_tokens
        output = (script.text or "") + "".join(name + dumps(args) for name, args in calls)
        candidates = (
            max(1, len(output) // 4)
            if script.completion_tokens is None
            else script.completion_tokens
        )
        thoughts = script.reasoning_tokens or (len(script.thinking or "") + 3) // 4
        signature = None
        if calls or script.thinking:
            raw = f"fake-thought-signature-{self._id_tag}-{next(self._signatures)}"
            signature = base64.b64encode(raw.encode()).decode()
        return _Answer(
            id=f"fake{self._id_tag}{next(self._sequence):012x}",
            model=model,
            text=script.text,
            calls=calls,
            thinking=script.thinking if _wants_thoughts(payload) else None,
            signature=signature,
            finish_reason=script.finish_reason or "STOP",
            usage=_usage(prompt, candidates, thoughts, script.cached_tokens),
            prompt_tokens=prompt,
        )


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(FakeGemini, "tests.fakes.gemini_upstream", argv)


if __name__ == "__main__":
    sys.exit(main())
