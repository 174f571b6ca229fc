"""The Gemini generateContent codec: golden vectors, the official SDK, bad input, cross-protocol.

Golden vectors live in ``golden/gemini/*.json``; their expected values were written from
WIRE_FORMATS.md §4 and §5 and docs/translation.md (not pasted from the codec's output). Every
face is checked: request decode/encode (and the same-protocol round trip), response
decode/encode, stream decode (whole, split at every byte, one byte at a time) and encode
(re-encoded and passed through), error decode/encode. Everything the encoder writes for Gemini
clients is also read back by the official ``google-genai`` SDK through an in-memory transport,
the way a real client would read it.
"""

from __future__ import annotations

import base64
import copy
import json
import string
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes
from hypothesis import given
from hypothesis import strategies as st

from extproc.canonical import (
    CanonicalError,
    CanonicalRequest,
    CanonicalResponse,
    Envelope,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    Reasoning,
    ReasoningDelta,
    ReasoningPart,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolChoice,
    ToolResultPart,
    Usage,
    UsageReport,
)
from extproc.canonical.aggregate import aggregate_events, response_events
from extproc.codecs import CODECS, get_codec
from extproc.codecs.base import REQUIRES_PROTOCOL, ModelInfo, RequestMeta, ResponseContext
from extproc.codecs.gemini import DecodeError, GeminiCodec
from extproc.codecs.openai_chat import OpenAIChatCodec
from extproc.errors import InvalidRequest
from tests.codecs.conftest import PROPERTY_SETTINGS, golden_params, load_golden

pytestmark = pytest.mark.filterwarnings("ignore:.*is not a valid FinishReason:UserWarning")

CODEC = GeminiCodec()
CHAT = OpenAIChatCodec()
GOLDEN = load_golden("gemini")
CHAT_GOLDEN = load_golden("openai_chat")
MODEL = "gemini-2.5-flash"
GENERATE = RequestMeta(
    path=f"/v1beta/models/{MODEL}:generateContent",
    path_params={"model": MODEL, "action": "generateContent"},
)
STREAM = RequestMeta(
    path=f"/v1beta/models/{MODEL}:streamGenerateContent",
    query={"alt": "sse"},
    path_params={"model": MODEL, "action": "streamGenerateContent"},
)
COUNT = RequestMeta(
    path=f"/v1beta/models/{MODEL}:countTokens",
    path_params={"model": MODEL, "action": "countTokens"},
)
REQUIRED_KEYS: dict[str, set[str]] = {
    "request": {"description", "path_params", "path", "wire", "canonical", "reencoded"},
    "response": {"description", "request_model", "wire", "canonical", "reencoded"},
    "error": {"description", "status", "retry_after", "body", "canonical", "reencoded"},
    "stream": {
        "description",
        "request_model",
        "transcript",
        "events",
        "aggregated",
        "client",
        "passthrough_tail",
    },
}

Decoded = list[tuple[bytes, list[StreamEvent]]]


# --------------------------------------------------------------------------------------------
# Helpers


def to_json(value: bytes) -> Any:
    return json.loads(value)


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def meta_for(vector: dict[str, Any]) -> RequestMeta:
    params = vector["path_params"]
    return RequestMeta(
        path=f"/v1beta/models/{params['model']}:{params['action']}", path_params=params
    )


def events_from(groups: list[list[dict[str, Any]]]) -> list[list[StreamEvent]]:
    return [msgspec.convert(group, list[StreamEvent]) for group in groups]


def decode_stream(chunks: Iterable[bytes]) -> Decoded:
    decoder = CODEC.stream_decoder()
    out: Decoded = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out + decoder.finish()


def comparable(decoded: Decoded) -> list[tuple[bytes, Any]]:
    return [(raw, builtins(events)) for raw, events in decoded]


def transcript_bytes(vector: dict[str, Any]) -> bytes:
    return "".join(vector["transcript"]).encode()


def client_payloads(stream: bytes) -> list[Any]:
    """Split a Gemini client stream into payloads, checking its framing (§4.4)."""
    if not stream:
        return []
    assert stream.endswith(b"\r\n\r\n"), stream[-40:]
    payloads = []
    for block in stream[:-4].split(b"\r\n\r\n"):
        assert block.startswith(b"data: "), block[:40]
        assert b"\n" not in block and b"\r" not in block, "one data line per event, no event:"
        payloads.append(to_json(block[len(b"data: ") :]))
    return payloads


def error_body(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


def encoded_body(request: CanonicalRequest, model: str = MODEL) -> Any:
    return to_json(CODEC.encode_request(request, model).body)


# -- the official SDK, reading what the encoder wrote --------------------------------------


def sdk_client(handler: Callable[[httpx.Request], httpx.Response]) -> genai.Client:
    return genai.Client(
        api_key="sk-test",
        http_options=gtypes.HttpOptions(
            base_url="http://gemini.test",
            api_version="v1beta",
            httpx_client=httpx.Client(transport=httpx.MockTransport(handler)),
        ),
    )


def sdk_generate(body: bytes, status: int = 200) -> gtypes.GenerateContentResponse:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v1beta/models/{MODEL}:generateContent"
        return httpx.Response(status, headers={"content-type": "application/json"}, content=body)

    return sdk_client(handler).models.generate_content(model=MODEL, contents="hi")


def sdk_stream(body: bytes) -> Iterator[gtypes.GenerateContentResponse]:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params.get("alt") == "sse"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return sdk_client(handler).models.generate_content_stream(model=MODEL, contents="hi")


def sdk_parts(chunks: Iterable[gtypes.GenerateContentResponse]) -> list[gtypes.Part]:
    return [
        part
        for chunk in chunks
        for candidate in chunk.candidates or []
        for part in (candidate.content.parts or [] if candidate.content else [])
    ]


# --------------------------------------------------------------------------------------------
# The golden files themselves


def test_golden_files_are_well_formed() -> None:
    assert len(GOLDEN) >= 20
    for name, vector in GOLDEN.items():
        kind = vector.get("kind")
        assert kind in REQUIRED_KEYS, f"{name}: unknown kind {kind!r}"
        assert set(vector) - {"kind"} == REQUIRED_KEYS[kind], name
        assert name.startswith(f"{kind}_"), name


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_golden_request_canonical_is_the_omit_defaults_form(vector: dict[str, Any]) -> None:
    assert builtins(msgspec.convert(vector["canonical"], CanonicalRequest)) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "response"))
def test_golden_response_wire_parses_in_sdk(vector: dict[str, Any]) -> None:
    # (the SDK's validators rename keys in place: hand them copies)
    gtypes.GenerateContentResponse.model_validate(copy.deepcopy(vector["wire"]))
    gtypes.GenerateContentResponse.model_validate(copy.deepcopy(vector["reencoded"]))
    response = msgspec.convert(vector["canonical"], CanonicalResponse)
    assert builtins(response) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_golden_stream_transcript_parses_in_sdk(vector: dict[str, Any]) -> None:
    # (the SDK wants "data: " with the space; the proxy's own parser takes both)
    stream = transcript_bytes(vector).replace(b"data:{", b"data: {")
    failed = "error" in vector["transcript"][-1]
    seen = 0
    try:
        for _chunk in sdk_stream(stream):
            seen += 1
    except genai_errors.ServerError:
        assert failed
    else:
        assert not failed
    assert seen == len(vector["transcript"]) - failed
    for payload in vector["client"]:
        if "error" not in payload:
            gtypes.GenerateContentResponse.model_validate(copy.deepcopy(payload))


# --------------------------------------------------------------------------------------------
# Registry and small faces


def test_registry_serves_the_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(CODECS, "gemini", CODEC)
    codec = get_codec("gemini")
    assert codec is CODEC
    assert codec.name == "gemini"
    assert codec.stream_content_type == "text/event-stream"
    assert codec.reports_input_early is False


def test_client_status_maps_anthropic_overload() -> None:
    assert CODEC.client_status(529) == 503
    assert CODEC.client_status(429) == 429


def test_count_response_and_model_list_shapes() -> None:
    assert to_json(CODEC.encode_count_response(31)) == {"totalTokens": 31}
    models = [ModelInfo("gemini-2.5-flash", "gem", "Gemini Flash"), ModelInfo("models/x-1", "b")]
    listed = to_json(CODEC.encode_model_list(models))
    assert [m["name"] for m in listed["models"]] == ["models/gemini-2.5-flash", "models/x-1"]
    assert listed["models"][0]["displayName"] == "Gemini Flash"
    assert "generateContent" in listed["models"][0]["supportedGenerationMethods"]
    one = to_json(CODEC.encode_model(models[1]))
    assert one["baseModelId"] == "x-1"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(":countTokens"):
            body = CODEC.encode_count_response(31)
        elif request.url.path == "/v1beta/models":
            body = CODEC.encode_model_list(models)
        else:
            body = CODEC.encode_model(models[1])
        return httpx.Response(200, headers={"content-type": "application/json"}, content=body)

    client = sdk_client(handler)
    assert client.models.count_tokens(model=MODEL, contents="hi").total_tokens == 31
    listed_by_sdk = list(client.models.list())
    assert [(m.name, m.display_name) for m in listed_by_sdk] == [
        ("models/gemini-2.5-flash", "Gemini Flash"),
        ("models/x-1", "x-1"),
    ]
    assert "generateContent" in (listed_by_sdk[0].supported_actions or [])
    assert client.models.get(model="x-1").name == "models/x-1"


# --------------------------------------------------------------------------------------------
# Requests


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_request_decode(vector: dict[str, Any]) -> None:
    request = CODEC.decode_request(copy.deepcopy(vector["wire"]), meta_for(vector))
    assert builtins(request) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_request_encode(vector: dict[str, Any]) -> None:
    request = msgspec.convert(vector["canonical"], CanonicalRequest)
    encoded = CODEC.encode_request(request, vector["path_params"]["model"])
    assert encoded.path == vector["path"]
    assert to_json(encoded.body) == vector["reencoded"]
    assert dict(encoded.headers) == {}


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "request"))
def test_request_round_trip_through_the_envelope(vector: dict[str, Any]) -> None:
    """Decode, cross Envoy as JSON inside an Envelope, re-encode for the same protocol."""
    request = CODEC.decode_request(copy.deepcopy(vector["wire"]), meta_for(vector))
    wire = msgspec.json.encode(Envelope(request=request, request_id="req-0001"))
    crossed = msgspec.json.decode(wire, type=Envelope).request
    assert crossed == request
    assert to_json(CODEC.encode_request(crossed, crossed.model).body) == vector["reencoded"]


def test_request_model_comes_from_the_path() -> None:
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    meta = RequestMeta(path_params={"model": "models/gemini-2.5-pro", "action": "generateContent"})
    request = CODEC.decode_request(body, meta)
    assert (request.model, request.stream) == ("gemini-2.5-pro", False)
    assert CODEC.decode_request(body, STREAM).stream is True
    assert CODEC.encode_request(request, "models/gemini-2.5-pro").path == (
        "/models/gemini-2.5-pro:generateContent"
    )


def test_request_accepts_a_string_system_instruction_and_snake_case_everywhere() -> None:
    body = {
        "system_instruction": "Be brief.",
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generation_config": {"max_output_tokens": 5, "top_k": 2, "stop_sequences": ["."]},
        "tool_config": {"function_calling_config": {"mode": "none"}},
        "tools": [{"function_declarations": [{"name": "f"}]}],
    }
    request = CODEC.decode_request(body, GENERATE)
    assert request.messages[0] == Message(
        role="system", content=[TextPart("Be brief.")], plain=True
    )
    assert (request.max_output_tokens, request.top_k, request.stop) == (5, 2, ["."])
    assert request.tool_choice == ToolChoice(mode="none")
    assert request.tools == [Tool(name="f")]


@pytest.mark.parametrize(
    ("calling", "choice"),
    [
        ({"mode": "AUTO"}, ToolChoice(mode="auto")),
        ({"mode": "any"}, ToolChoice(mode="required")),
        ({"mode": "ANY", "allowedFunctionNames": ["a", "b"]}, ToolChoice(mode="required")),
        ({"mode": "ANY", "allowedFunctionNames": ["a"]}, ToolChoice(mode="tool", name="a")),
        ({"mode": "NONE"}, ToolChoice(mode="none")),
        ({"mode": "VALIDATED"}, ToolChoice(mode="auto")),
        ({"mode": "MODE_UNSPECIFIED"}, None),
        ({}, None),
    ],
)
def test_tool_choice_decoding(calling: dict[str, Any], choice: ToolChoice | None) -> None:
    body = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "toolConfig": {"functionCallingConfig": calling},
    }
    request = CODEC.decode_request(body, GENERATE)
    assert request.tool_choice == choice
    # A Gemini backend gets the client's own toolConfig back while the choice is unchanged ...
    assert encoded_body(request)["toolConfig"] == body["toolConfig"]
    # ... and the canonical choice once a stage changed it.
    request.tool_choice = ToolChoice(mode="tool", name="z")
    assert encoded_body(request)["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["z"]}
    }


@pytest.mark.parametrize(
    ("thinking", "reasoning"),
    [
        ({"thinkingBudget": 0}, {"enabled": False}),
        ({"thinkingBudget": -1}, {"enabled": True}),
        (
            {"thinkingBudget": 2048, "includeThoughts": False},
            {"budget_tokens": 2048, "include_thoughts": False},
        ),
        ({"thinkingLevel": "low"}, {"effort": "low"}),
        (
            {"thinkingLevel": "MINIMAL", "thinkingBudget": -1},
            {"effort": "minimal", "enabled": True},
        ),
        ({"thinkingLevel": "THINKING_LEVEL_UNSPECIFIED"}, {}),
    ],
)
def test_thinking_config_round_trip(thinking: dict[str, Any], reasoning: dict[str, Any]) -> None:
    body = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "generationConfig": {"thinkingConfig": thinking},
    }
    request = CODEC.decode_request(body, GENERATE)
    assert builtins(request.reasoning) == reasoning
    expected = {k: (v.upper() if k == "thinkingLevel" else v) for k, v in thinking.items()}
    if thinking.get("thinkingLevel") == "THINKING_LEVEL_UNSPECIFIED":
        expected = {}
    generation = encoded_body(request).get("generationConfig", {})
    assert generation.get("thinkingConfig", {}) == expected


def test_stage_changes_win_over_the_clients_own_objects() -> None:
    """The same-protocol originals (function responses, OpenAPI schemas) come back only while
    the canonical values still derive from them: a stage that rewrote them is never undone."""
    vector = GOLDEN["request_sdk_snake_case_stream"]
    request = CODEC.decode_request(copy.deepcopy(vector["wire"]), STREAM)
    result = request.messages[-1].content[0]
    assert isinstance(result, ToolResultPart) and isinstance(result.content[0], TextPart)
    result.content[0].text = "[redacted]"
    assert request.tools is not None
    request.tools[0].parameters = {"type": "object", "properties": {}}
    assert request.response_format is not None
    request.response_format.schema = {"type": "object"}
    body = encoded_body(request)
    response = body["contents"][-1]["parts"][0]["functionResponse"]
    assert response == {"name": "lookup_tide", "response": {"output": "[redacted]"}}
    assert body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == {
        "type": "object",
        "properties": {},
    }
    assert "parameters" not in body["tools"][0]["functionDeclarations"][0]
    generation = body["generationConfig"]
    assert generation["responseJsonSchema"] == {"type": "object"}
    assert "responseSchema" not in generation


def test_openapi_schemas_become_json_schema() -> None:
    parameters = {
        "type": "OBJECT",
        "properties": {
            "when": {"type": "STRING", "format": "date-time", "nullable": True},
            "ports": {
                "type": "ARRAY",
                "items": {"$ref": "#/defs/Port"},
                "min_items": 1,
                "maxItems": 3,
            },
            "mode": {"anyOf": [{"type": "INTEGER"}, {"type": "NUMBER"}], "nullable": True},
            "any": {"type": "TYPE_UNSPECIFIED", "example": 3},
        },
        "defs": {"Port": {"type": "STRING", "enum": ["Porto", "Faro"], "format": "enum"}},
        "propertyOrdering": ["when", "ports"],
        "required": ["ports"],
    }
    body = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "tools": [{"functionDeclarations": [{"name": "plan", "parameters": parameters}]}],
    }
    (tool,) = CODEC.decode_request(body, GENERATE).tools or []
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "when": {"type": ["string", "null"], "format": "date-time"},
            "ports": {
                "type": "array",
                "items": {"$ref": "#/$defs/Port"},
                "minItems": 1,
                "maxItems": 3,
            },
            "mode": {"anyOf": [{"type": "integer"}, {"type": "number"}, {"type": "null"}]},
            "any": {"examples": [3]},
        },
        "$defs": {"Port": {"type": "string", "enum": ["Porto", "Faro"]}},
        "required": ["ports"],
    }


def test_count_tokens_requests() -> None:
    contents = [{"role": "user", "parts": [{"text": "How many tokens is this?"}]}]
    simple = CODEC.decode_count_request({"contents": contents}, COUNT)
    assert simple.model == MODEL and simple.messages[0].content == [
        TextPart("How many tokens is this?")
    ]
    full = CODEC.decode_count_request(
        {
            "generateContentRequest": {
                "model": f"models/{MODEL}",
                "contents": contents,
                "systemInstruction": {"parts": [{"text": "Be brief."}]},
                "tools": [{"functionDeclarations": [{"name": "f"}]}],
            }
        },
        COUNT,
    )
    assert [m.role for m in full.messages] == ["system", "user"]
    assert full.tools == [Tool(name="f")]
    assert "model" not in full.extra


# -- bad input ---------------------------------------------------------------------------------

USER = {"role": "user", "parts": [{"text": "Hello"}]}
CALL_TURN = {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}


def body_with(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [USER]}
    for key, value in fields.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


def answered(response: Any) -> dict[str, Any]:
    part = {"functionResponse": {"name": "f", "response": response}}
    return body_with(contents=[USER, CALL_TURN, {"role": "user", "parts": [part]}])


def generation(**fields: Any) -> dict[str, Any]:
    return body_with(generationConfig=fields)


def thinking(**fields: Any) -> dict[str, Any]:
    return generation(thinkingConfig=fields)


_DROP = object()
_FR = "contents[2].parts[0].functionResponse"
_FC = "contents[1].parts[0].functionCall"
_TC = "toolConfig.functionCallingConfig"

BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("contents missing", body_with(contents=_DROP), "contents"),
    ("contents empty", body_with(contents=[]), "contents"),
    ("contents an object", body_with(contents=USER), "contents"),
    ("contents a string", body_with(contents="Hello"), "contents"),
    ("content not an object", body_with(contents=["Hello"]), "contents[0]"),
    ("role assistant", body_with(contents=[{**USER, "role": "assistant"}]), "contents[0].role"),
    ("role function", body_with(contents=[{**USER, "role": "function"}]), "contents[0].role"),
    ("role system", body_with(contents=[{**USER, "role": "system"}]), "contents[0].role"),
    ("parts missing", body_with(contents=[{"role": "user"}]), "contents[0].parts"),
    ("parts empty", body_with(contents=[{"role": "user", "parts": []}]), "contents[0].parts"),
    ("parts a string", body_with(contents=[{"role": "user", "parts": "hi"}]), "contents[0].parts"),
    ("part not an object", body_with(contents=[{"parts": ["hi"]}]), "contents[0].parts[0]"),
    ("response a string", answered("42"), f"{_FR}.response"),
    ("response a list", answered([42]), f"{_FR}.response"),
    ("response null", answered(None), f"{_FR}.response"),
    (
        "response without name",
        body_with(contents=[USER, CALL_TURN, {"parts": [{"functionResponse": {"response": {}}}]}]),
        f"{_FR}.name",
    ),
    (
        "function response in a model turn",
        body_with(
            contents=[
                USER,
                {
                    "role": "model",
                    "parts": [
                        {"text": "x"},
                        {"functionResponse": {"name": "f", "response": {}}},
                    ],
                },
            ]
        ),
        "contents[1].parts[1]",
    ),
    (
        "args a list",
        body_with(
            contents=[
                USER,
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": [1]}}]},
            ]
        ),
        f"{_FC}.args",
    ),
    (
        "call without name",
        body_with(contents=[USER, {"role": "model", "parts": [{"functionCall": {"args": {}}}]}]),
        f"{_FC}.name",
    ),
    ("system instruction a number", body_with(systemInstruction=3), "systemInstruction"),
    (
        "system instruction part not an object",
        body_with(systemInstruction={"parts": ["x"]}),
        "systemInstruction",
    ),
    ("tools an object", body_with(tools={"functionDeclarations": []}), "tools"),
    ("tool not an object", body_with(tools=["f"]), "tools[0]"),
    (
        "declarations an object",
        body_with(tools=[{"functionDeclarations": {"name": "f"}}]),
        "tools[0].functionDeclarations",
    ),
    (
        "declaration without name",
        body_with(tools=[{"functionDeclarations": [{"description": "x"}]}]),
        "tools[0].functionDeclarations[0].name",
    ),
    ("toolConfig a string", body_with(toolConfig="AUTO"), "toolConfig"),
    ("calling config a string", body_with(toolConfig={"functionCallingConfig": "AUTO"}), _TC),
    (
        "unknown mode",
        body_with(toolConfig={"functionCallingConfig": {"mode": "SOMETIMES"}}),
        f"{_TC}.mode",
    ),
    ("mode a number", body_with(toolConfig={"functionCallingConfig": {"mode": 1}}), f"{_TC}.mode"),
    (
        "allowed names a string",
        body_with(
            toolConfig={"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": "f"}}
        ),
        f"{_TC}.allowedFunctionNames",
    ),
    ("generationConfig a list", body_with(generationConfig=[]), "generationConfig"),
    ("temperature a string", generation(temperature="hot"), "generationConfig.temperature"),
    ("temperature a bool", generation(temperature=True), "generationConfig.temperature"),
    ("topP a list", generation(topP=[1]), "generationConfig.topP"),
    ("topK a fraction", generation(topK=2.5), "generationConfig.topK"),
    (
        "maxOutputTokens a bool",
        generation(maxOutputTokens=True),
        "generationConfig.maxOutputTokens",
    ),
    ("seed a string", generation(seed="seven"), "generationConfig.seed"),
    ("two candidates", generation(candidateCount=2), "generationConfig.candidateCount"),
    ("stopSequences a string", generation(stopSequences="END"), "generationConfig.stopSequences"),
    ("stopSequences numbers", generation(stopSequences=[1]), "generationConfig.stopSequences"),
    ("mime type a number", generation(responseMimeType=5), "generationConfig.responseMimeType"),
    ("thinkingConfig a number", generation(thinkingConfig=1), "generationConfig.thinkingConfig"),
    (
        "budget a string",
        thinking(thinkingBudget="lots"),
        "generationConfig.thinkingConfig.thinkingBudget",
    ),
    (
        "includeThoughts a string",
        thinking(includeThoughts="yes"),
        "generationConfig.thinkingConfig.includeThoughts",
    ),
    ("level a number", thinking(thinkingLevel=3), "generationConfig.thinkingConfig.thinkingLevel"),
]


@pytest.mark.parametrize(
    ("body", "param"), [pytest.param(b, p, id=name) for name, b, p in BAD_REQUESTS]
)
def test_request_decode_rejects_bad_input(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        CODEC.decode_request(body, GENERATE)
    error = caught.value
    assert error.status == 400
    assert error.error_type == "invalid_request_error"
    assert error.param == param
    assert error.message


def test_request_without_a_model_in_the_path() -> None:
    with pytest.raises(InvalidRequest) as caught:
        CODEC.decode_request(body_with(), RequestMeta(path_params={"action": "generateContent"}))
    assert caught.value.param == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "contents"),
        ({"contents": [USER], "generateContentRequest": {"contents": [USER]}}, "contents"),
        ({"generateContentRequest": []}, "generateContentRequest"),
        ({"generateContentRequest": {"contents": []}}, "generateContentRequest.contents"),
        (
            {"generateContentRequest": {"contents": [{"role": "bot", "parts": [{"text": "x"}]}]}},
            "generateContentRequest.contents[0].role",
        ),
    ],
)
def test_count_request_rejects_bad_input(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        CODEC.decode_count_request(body, COUNT)
    assert caught.value.param == param


# -- other protocols' requests for a Gemini backend ---------------------------------------------

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6"
    "kgAAAABJRU5ErkJggg=="
)
TIDE_SCHEMA = {"type": "object", "properties": {"port": {"type": "string"}}, "required": ["port"]}


def chat_request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "Answer in one sentence."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_k3Q9fT2mWc8pLx01",
                        "type": "function",
                        "function": {"name": "lookup_tide", "arguments": '{"port":"Porto"}'},
                    },
                    {
                        "id": "call_Z9y8X7w6V5u4T3s2",
                        "type": "function",
                        "function": {"name": "lookup_weather", "arguments": ""},
                    },
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_k3Q9fT2mWc8pLx01",
                "content": '{"high":"14:05"}',
            },
            {"role": "tool", "tool_call_id": "call_Z9y8X7w6V5u4T3s2", "content": "sunny"},
            {"role": "user", "content": "Thanks!"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup_tide",
                    "description": "Tide times for a port",
                    "parameters": TIDE_SCHEMA,
                    "strict": True,
                },
            },
            {"type": "custom", "custom": {"name": "grammar_tool"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "lookup_tide"}},
        "parallel_tool_calls": False,
        "temperature": 0.7,
        "max_completion_tokens": 800,
        "stop": "\nEND",
        "seed": 3,
        "reasoning_effort": "low",
        "user": "user-1234",
        "logit_bias": {"50256": -100},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update(overrides)
    return body


def from_chat(body: dict[str, Any]) -> CanonicalRequest:
    return CHAT.decode_request(body, RequestMeta(path="/v1/chat/completions"))


def test_chat_request_for_a_gemini_backend() -> None:
    """System and developer prompts joined; results named after their calls and wrapped;
    consecutive results (and the user text after them) in one user content; extras dropped."""
    encoded = CODEC.encode_request(from_chat(chat_request()), MODEL)
    assert encoded.path == f"/models/{MODEL}:streamGenerateContent?alt=sse"
    assert to_json(encoded.body) == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "What is in this picture?"},
                    {"inlineData": {"mimeType": "image/png", "data": PNG}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "lookup_tide", "args": {"port": "Porto"}}},
                    {"functionCall": {"name": "lookup_weather", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "lookup_tide",
                            "response": {"output": '{"high":"14:05"}'},
                        }
                    },
                    {
                        "functionResponse": {
                            "name": "lookup_weather",
                            "response": {"output": "sunny"},
                        }
                    },
                    {"text": "Thanks!"},
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "Answer in one sentence.\n\nUse metric units."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "lookup_tide",
                        "description": "Tide times for a port",
                        "parametersJsonSchema": TIDE_SCHEMA,
                    }
                ]
            }
        ],
        "toolConfig": {
            "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup_tide"]}
        },
        "generationConfig": {
            "temperature": 0.7,
            "maxOutputTokens": 800,
            "stopSequences": ["\nEND"],
            "seed": 3,
            "thinkingConfig": {"thinkingBudget": 1024},
        },
    }


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("gemini-2.5-flash", "low", {"thinkingBudget": 1024}),
        ("gemini-2.5-pro", "medium", {"thinkingBudget": 4096}),
        ("gemini-2.0-flash-thinking", "high", {"thinkingBudget": 16384}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-3-pro-preview", "low", {"thinkingLevel": "LOW"}),
        ("gemini-3-flash", "minimal", {"thinkingLevel": "MINIMAL"}),
        ("gemini-3-pro-preview", "xhigh", {"thinkingLevel": "XHIGH"}),
        ("gemini-3-pro-preview", "max", {"thinkingLevel": "XHIGH"}),
        ("gemini-3-pro-preview", "none", {"thinkingBudget": 0}),
        ("gemini-3-pro-preview", "turbo", None),
    ],
)
def test_reasoning_effort_for_gemini_models(
    model: str, effort: str, thinking: dict[str, Any] | None
) -> None:
    request = from_chat(chat_request(reasoning_effort=effort, stream=False, stream_options=None))
    body = encoded_body(request, model)
    assert body["generationConfig"].get("thinkingConfig") == thinking


def test_budget_and_switches_from_other_protocols() -> None:
    """Anthropic's budget is Gemini's budget (it wins over an effort); bare switches map to
    dynamic (-1) and off (0)."""
    request = from_chat(chat_request())
    request.protocol = "anthropic"
    request.reasoning = Reasoning(budget_tokens=3000, include_thoughts=True, effort="high")
    assert encoded_body(request)["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 3000,
        "includeThoughts": True,
    }
    request.reasoning = Reasoning(enabled=True)
    assert encoded_body(request)["generationConfig"]["thinkingConfig"] == {"thinkingBudget": -1}
    request.reasoning = Reasoning(enabled=False)
    assert encoded_body(request)["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}


def test_http_image_url_is_a_400_for_a_gemini_backend() -> None:
    body = chat_request()
    body["messages"][1]["content"][1]["image_url"]["url"] = "https://example.com/chart.png"
    with pytest.raises(InvalidRequest) as caught:
        CODEC.encode_request(from_chat(body), MODEL)
    assert caught.value.status == 400
    assert caught.value.param == "messages[1].content[1]"
    assert caught.value.code == "unsupported_image_url"


@pytest.mark.parametrize(
    ("image", "part"),
    [
        (
            ImagePart(url="https://generativelanguage.googleapis.com/v1beta/files/abc"),
            {
                "fileData": {
                    "mimeType": "image/png",
                    "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc",
                }
            },
        ),
        (
            ImagePart(url="gs://bucket/chart.jpg"),
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/chart.jpg"}},
        ),
        (
            ImagePart(data="/9j/4AAQSkZJRg"),
            {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQSkZJRg"}},
        ),
        (
            ImagePart(data="UklGRiQAAABXRUJQ"),
            {"inlineData": {"mimeType": "image/webp", "data": "UklGRiQAAABXRUJQ"}},
        ),
        (
            ImagePart(url="data:image/gif;base64,R0lGODlh"),
            {"inlineData": {"mimeType": "image/gif", "data": "R0lGODlh"}},
        ),
    ],
)
def test_image_mapping(image: ImagePart, part: dict[str, Any]) -> None:
    request = CanonicalRequest(
        protocol="anthropic", model="m", messages=[Message(role="user", content=[image])]
    )
    assert encoded_body(request)["contents"][0]["parts"] == [part]


def test_non_base64_data_url_is_a_400() -> None:
    image = ImagePart(url="data:image/svg+xml,%3Csvg%3E")
    request = CanonicalRequest(
        protocol="anthropic", model="m", messages=[Message(role="user", content=[image])]
    )
    with pytest.raises(InvalidRequest) as caught:
        CODEC.encode_request(request, MODEL)
    assert caught.value.param == "messages[0].content[0]"


def test_replay_tokens_and_reasoning_from_other_providers_are_dropped() -> None:
    """Anthropic history: its thinking (and signature) is dropped, its extras too; reasoning
    that came from Gemini keeps its thoughtSignature; tool results inside a user message and
    the text after them form one user content; an error result is {"error": ...}."""
    request = CanonicalRequest(
        protocol="anthropic",
        model="claude-x",
        messages=[
            Message(role="user", content=[TextPart("Tide?", extra={"cache_control": {}})]),
            Message(
                role="assistant",
                content=[
                    ReasoningPart(text="hmm", signature="anthropic-sig", provider="anthropic"),
                    ReasoningPart(text="", redacted="opaque", provider="anthropic"),
                    ReasoningPart(text="prior", signature="gem-sig", provider="gemini"),
                    ToolCallPart(
                        id="toolu_01", name="lookup_tide", arguments="not json", extra={"x": 1}
                    ),
                ],
            ),
            Message(
                role="user",
                content=[
                    ToolResultPart(
                        tool_call_id="toolu_01",
                        content=[TextPart("closed"), ImagePart(data=PNG, media_type="image/png")],
                        is_error=True,
                    ),
                    TextPart("And now?"),
                ],
            ),
        ],
    )
    assert encoded_body(request)["contents"] == [
        {"role": "user", "parts": [{"text": "Tide?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "prior", "thought": True, "thoughtSignature": "gem-sig"},
                {"functionCall": {"name": "lookup_tide", "args": {"_raw_arguments": "not json"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "lookup_tide", "response": {"error": "closed"}}},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"text": "And now?"},
            ],
        },
    ]


def test_an_assistant_turn_left_empty_is_not_sent() -> None:
    request = CanonicalRequest(
        protocol="anthropic",
        model="m",
        messages=[
            Message(role="user", content=[TextPart("a")]),
            Message(role="assistant", content=[ReasoningPart(text="x", provider="anthropic")]),
            Message(role="user", content=[TextPart("b")]),
        ],
    )
    assert encoded_body(request)["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}
    ]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([Message(role="system", content=[TextPart("only a prompt")])], "messages"),
        (
            [
                Message(role="user", content=[TextPart("hi")]),
                Message(role="tool", content=[ToolResultPart(tool_call_id="call_unknown")]),
            ],
            "messages[1].content[0]",
        ),
    ],
)
def test_requests_a_gemini_backend_cannot_take(messages: list[Message], param: str) -> None:
    request = CanonicalRequest(protocol="openai-chat", model="m", messages=messages)
    with pytest.raises(InvalidRequest) as caught:
        CODEC.encode_request(request, MODEL)
    assert caught.value.param == param


def test_no_tool_config_without_declarations() -> None:
    """Another protocol's hosted tools do not reach Gemini, and neither does a calling mode
    that would then name no function."""
    body = chat_request(tools=[{"type": "custom", "custom": {"name": "grammar_tool"}}])
    body["tool_choice"] = "required"
    encoded = encoded_body(from_chat(body))
    assert "tools" not in encoded and "toolConfig" not in encoded


def test_requests_needing_another_protocol_are_a_400() -> None:
    request = from_chat(chat_request())
    request.hints[REQUIRES_PROTOCOL] = "openai-responses"
    with pytest.raises(InvalidRequest):
        CODEC.encode_request(request, MODEL)
    request.hints[REQUIRES_PROTOCOL] = "gemini"
    assert CODEC.encode_request(request, MODEL).body


def test_passthrough_fields_land_where_gemini_expects_them() -> None:
    request = from_chat(chat_request(reasoning_effort=None))
    request.passthrough = {"top_k": 5, "thinking_budget": 100, "cachedContent": "cachedContents/1"}
    body = encoded_body(request)
    assert body["generationConfig"]["topK"] == 5
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 100}
    assert body["cachedContent"] == "cachedContents/1"


def test_a_bare_signature_part_is_reasoning_not_empty_text() -> None:
    """Streams end with {"text": "", "thoughtSignature": ...} and SDK histories keep it: it is a
    Gemini replay token (sent back as it came), never an empty text block for another provider."""
    carrier = {"text": "", "thoughtSignature": "c2lnLWxhdGU="}
    body = {
        "contents": [
            USER,
            {"role": "model", "parts": [{"text": "Sail at noon."}, carrier]},
            {"role": "user", "parts": [{"text": "Thanks"}]},
        ]
    }
    request = CODEC.decode_request(copy.deepcopy(body), GENERATE)
    assert request.messages[1].content[1] == ReasoningPart(
        text="", signature="c2lnLWxhdGU=", provider="gemini", extra={"thought": False}
    )
    assert encoded_body(request)["contents"] == body["contents"]
    chat = to_json(CHAT.encode_request(request, "gpt-4.1").body)
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": "Sail at noon.",  # text-only content goes as a string to Chat
    }
    answer = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Yes."}, carrier]},
                "index": 0,
                "finishReason": "STOP",
            }
        ],
        "modelVersion": MODEL,
        "responseId": "r1",
    }
    response = CODEC.decode_response(json.dumps(answer).encode())
    assert to_json(CODEC.encode_response(response, ResponseContext(MODEL))) == answer
    assert (
        "reasoning_content"
        not in to_json(CHAT.encode_response(response, ResponseContext(MODEL)))["choices"][0][
            "message"
        ]
    )


def test_gemini_extras_reach_only_gemini() -> None:
    """The Gemini-decoded request keeps its signatures and extras for Gemini, and an OpenAI
    backend gets none of them."""
    vector = GOLDEN["request_thoughts_ids_and_opaque_parts"]
    request = CODEC.decode_request(copy.deepcopy(vector["wire"]), GENERATE)
    text = CHAT.encode_request(request, "gpt-4.1").body.decode()
    for token in (
        "thoughtSignature",
        "c2lnLWNhbGw=",
        "executableCode",
        "googleSearch",
        "cachedContent",
    ):
        assert token not in text
    chat = to_json(CHAT.encode_request(request, "gpt-4.1").body)
    tool = [m for m in chat["messages"] if m["role"] == "tool"]
    assert tool == [
        {
            "role": "tool",
            "tool_call_id": "fc-1",
            "content": "port closed",
        }
    ]


# --------------------------------------------------------------------------------------------
# Responses


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "response"))
def test_response_decode(vector: dict[str, Any]) -> None:
    response = CODEC.decode_response(json.dumps(vector["wire"]).encode())
    assert builtins(response) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "response"))
def test_response_encode(vector: dict[str, Any]) -> None:
    response = msgspec.convert(vector["canonical"], CanonicalResponse)
    body = CODEC.encode_response(response, ResponseContext(vector["request_model"]))
    assert to_json(body) == vector["reencoded"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "response"))
def test_response_round_trip_read_by_the_sdk(vector: dict[str, Any]) -> None:
    response = CODEC.decode_response(json.dumps(vector["wire"]).encode())
    body = CODEC.encode_response(response, ResponseContext(vector["request_model"]))
    assert to_json(body) == vector["reencoded"]
    answer = sdk_generate(body)
    assert answer.response_id == vector["wire"]["responseId"]
    calls = [p for p in response.content if isinstance(p, ToolCallPart)]
    assert [(c.id, c.name, c.args) for c in answer.function_calls or []] == [
        (c.id, c.name, json.loads(c.arguments)) for c in calls
    ]


def test_response_from_another_provider_read_by_the_sdk() -> None:
    """An Anthropic-like answer: its thinking is shown (no signature), calls get args objects
    and ids, tool_calls -> STOP, usage converted (candidates exclude thoughts)."""
    response = CanonicalResponse(
        id="msg_01",
        model="claude-fake",
        content=[
            ReasoningPart(text="Tide first.", signature="anthropic-sig", provider="anthropic"),
            TextPart("Checking.", extra={"citations": []}),
            ToolCallPart(id="toolu_01", name="lookup_tide", arguments=""),
        ],
        finish_reason="tool_calls",
        usage=Usage(
            input_tokens=100, output_tokens=30, cached_input_tokens=60, reasoning_tokens=12
        ),
    )
    body = CODEC.encode_response(response, ResponseContext("claude-fake"))
    assert b"anthropic-sig" not in body and b"citations" not in body
    answer = sdk_generate(body)
    assert answer.text == "Checking."
    parts = sdk_parts([answer])
    assert parts[0].thought is True and parts[0].text == "Tide first."
    assert [(c.id, c.name, c.args) for c in answer.function_calls or []] == [
        ("toolu_01", "lookup_tide", {})
    ]
    assert answer.candidates[0].finish_reason == gtypes.FinishReason.STOP  # type: ignore[index]
    usage = answer.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count) == (100, 18)
    assert (usage.thoughts_token_count, usage.cached_content_token_count) == (12, 60)
    assert usage.total_token_count == 130


@pytest.mark.parametrize(
    ("reason", "native"),
    [
        ("stop", "STOP"),
        ("length", "MAX_TOKENS"),
        ("content_filter", "SAFETY"),
        ("error", "OTHER"),
        ("other", "OTHER"),
        (None, "STOP"),
    ],
)
def test_response_finish_reasons(reason: Any, native: str) -> None:
    response = CanonicalResponse(id="", model="", content=[TextPart("x")], finish_reason=reason)
    body = to_json(CODEC.encode_response(response, ResponseContext("gemini-2.5-pro")))
    assert body["candidates"][0]["finishReason"] == native
    assert body["modelVersion"] == "gemini-2.5-pro"
    assert body["responseId"]
    assert "usageMetadata" not in body


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502</html>",
        b"[]",
        b'{"error": {"code": 500}}',
        b'{"candidates": {}}',
        b'{"candidates": [5]}',
        b'{"candidates": [{"content": {"parts": "hello"}}]}',
        b'{"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}',
        b'{"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": 3}}]}}]}',
    ],
)
def test_response_decode_rejects_malformed_answers(body: bytes) -> None:
    with pytest.raises(DecodeError):
        CODEC.decode_response(body)
    assert issubclass(DecodeError, ValueError)


def test_response_without_usage_or_candidates() -> None:
    response = CODEC.decode_response(b'{"modelVersion": "m"}')
    assert builtins(response) == {"id": "", "model": "m", "protocol": "gemini"}


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "error"))
def test_error_decode(vector: dict[str, Any]) -> None:
    error = CODEC.decode_error(vector["status"], error_body(vector["body"]), vector["retry_after"])
    assert builtins(error) == vector["canonical"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "error"))
def test_error_encode_read_by_the_sdk(vector: dict[str, Any]) -> None:
    error = msgspec.convert(vector["canonical"], CanonicalError)
    body = CODEC.encode_error(error)
    assert to_json(body) == vector["reencoded"]
    status = CODEC.client_status(error.status)
    expected = genai_errors.ClientError if status < 500 else genai_errors.ServerError
    with pytest.raises(expected) as caught:
        sdk_generate(body, status)
    assert (caught.value.code, caught.value.status) == (
        status,
        vector["reencoded"]["error"]["status"],
    )
    assert caught.value.message == error.message


@pytest.mark.parametrize(
    ("status", "rpc"),
    [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (405, "FAILED_PRECONDITION"),
        (413, "FAILED_PRECONDITION"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (501, "UNIMPLEMENTED"),
        (502, "UNAVAILABLE"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
        (529, "UNAVAILABLE"),
        (599, "INTERNAL"),
    ],
)
def test_error_status_names(status: int, rpc: str) -> None:
    error = CanonicalError(status, "x", code="invalid_json", param="contents", retry_after="30")
    body = to_json(CODEC.encode_error(error))["error"]
    assert (body["code"], body["status"]) == (CODEC.client_status(status), rpc)
    kinds = [d["@type"].rsplit(".", 1)[1] for d in body["details"]]
    assert kinds == ["ErrorInfo", "BadRequest", "RetryInfo"]
    assert body["details"][0]["reason"] == "invalid_json"
    assert body["details"][2]["retryDelay"] == "30s"


def test_error_decode_rounds_retry_delay_up_and_quotes_little() -> None:
    body = {
        "error": {
            "code": 429,
            "message": "slow down",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.2s"}
            ],
        }
    }
    assert CODEC.decode_error(429, json.dumps(body).encode(), None).retry_after == "1"
    page = b"<html>" + "\u00e9".encode() * 500 + b"</html>"
    error = CODEC.decode_error(502, page, None)
    assert error.message.startswith("upstream answered HTTP 502: <html>")
    assert len(error.message) < 250
    assert CODEC.decode_error(503, b"", None).message == "upstream answered HTTP 503"


def test_error_with_an_http_date_retry_after_has_no_retry_info() -> None:
    error = CanonicalError(503, "busy", retry_after="Wed, 21 Oct 2026 07:28:00 GMT")
    assert "details" not in to_json(CODEC.encode_error(error))["error"]


# --------------------------------------------------------------------------------------------
# Streams


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_decode(vector: dict[str, Any]) -> None:
    decoded = decode_stream([transcript_bytes(vector)])
    assert [builtins(events) for _, events in decoded] == vector["events"]
    raws = [raw for raw, _ in decoded]
    assert b"".join(raws) == transcript_bytes(vector)
    assert [r for r in raws if r] == [b.encode() for b in vector["transcript"]]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_decode_split_at_every_byte(vector: dict[str, Any]) -> None:
    data = transcript_bytes(vector)
    whole = comparable(decode_stream([data]))
    for cut in range(len(data) + 1):
        assert comparable(decode_stream([data[:cut], data[cut:]])) == whole, cut
    one_byte_chunks = [data[i : i + 1] for i in range(len(data))]
    assert comparable(decode_stream(one_byte_chunks)) == whole


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_aggregate(vector: dict[str, Any]) -> None:
    events = [e for group in events_from(vector["events"]) for e in group]
    assert builtins(aggregate_events(events)) == vector["aggregated"]


def encode_groups(groups: Iterable[list[StreamEvent]], model: str = MODEL) -> bytes:
    encoder = CODEC.stream_encoder(ResponseContext(model))
    out = b"".join(encoder.encode(group) for group in groups)
    return out + encoder.finish()


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_encode(vector: dict[str, Any]) -> None:
    """Re-encoding (the cross-protocol path): the encoder's own events."""
    payloads = client_payloads(
        encode_groups(events_from(vector["events"]), vector["request_model"])
    )
    assert payloads == vector["client"]


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_encode_read_by_the_sdk(vector: dict[str, Any]) -> None:
    stream = encode_groups(events_from(vector["events"]), vector["request_model"])
    seen: list[gtypes.GenerateContentResponse] = []
    failed = "error" in vector["client"][-1]
    try:
        for chunk in sdk_stream(stream):
            seen.append(chunk)
    except genai_errors.APIError as exc:
        assert failed
        assert exc.code == vector["client"][-1]["error"]["code"]
    else:
        assert not failed
        assert seen[-1].candidates[0].finish_reason is not None  # type: ignore[index]
    aggregated = vector["aggregated"]
    text = "".join(p.text or "" for p in sdk_parts(seen) if not p.thought)
    assert text == "".join(p["text"] for p in aggregated["content"] if p["type"] == "text")


@pytest.mark.parametrize("vector", golden_params(GOLDEN, "stream"))
def test_stream_pass_through(vector: dict[str, Any]) -> None:
    """Same protocol, nothing changed: raw events go out byte for byte, as translate.py does."""
    encoder = CODEC.stream_encoder(ResponseContext(vector["request_model"]))
    out: list[bytes] = []
    for raw, events in decode_stream([transcript_bytes(vector)]):
        assert encoder.can_pass_through(events)
        encoder.observe(events)
        out.append(raw)
    assert b"".join(out) == transcript_bytes(vector)
    assert client_payloads(encoder.finish()) == vector["passthrough_tail"]


def test_stream_from_openai_chat_sends_whole_calls() -> None:
    """OpenAI streams a call's arguments in pieces: the Gemini client gets each call whole,
    with its id, and the usage that followed the finish chunk on the last event."""
    vector = CHAT_GOLDEN["stream_two_tool_calls"]
    decoder = CHAT.stream_decoder()
    groups = [events for _, events in decoder.feed("".join(vector["transcript"]).encode())]
    groups += [events for _, events in decoder.finish()]
    payloads = client_payloads(encode_groups(groups, "gpt-4.1"))
    assert payloads == [
        {
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {
                                "functionCall": {
                                    "name": "lookup_tide",
                                    "args": {"port": "Porto"},
                                    "id": "call_A1b2C3d4E5f6G7h8",
                                }
                            },
                            {
                                "functionCall": {
                                    "name": "lookup_weather",
                                    "args": {"city": "Porto", "unit": "c"},
                                    "id": "call_Z9y8X7w6V5u4T3s2",
                                }
                            },
                        ],
                        "role": "model",
                    },
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 96,
                "candidatesTokenCount": 44,
                "totalTokenCount": 140,
            },
            "modelVersion": "gpt-4.1-2025-04-14",
            "responseId": "chatcmpl-Pw7",
        }
    ]
    chunks = list(sdk_stream(encode_groups(groups, "gpt-4.1")))
    assert [(c.name, c.args) for c in chunks[-1].function_calls or []] == [
        ("lookup_tide", {"port": "Porto"}),
        ("lookup_weather", {"city": "Porto", "unit": "c"}),
    ]


def test_stream_from_openai_chat_text_and_reasoning() -> None:
    vector = CHAT_GOLDEN["stream_reasoning_content_compat"]
    decoder = CHAT.stream_decoder()
    groups = [events for _, events in decoder.feed("".join(vector["transcript"]).encode())]
    groups += [events for _, events in decoder.finish()]
    chunks = list(sdk_stream(encode_groups(groups)))
    parts = sdk_parts(chunks)
    thoughts = "".join(p.text or "" for p in parts if p.thought)
    text = "".join(p.text or "" for p in parts if not p.thought)
    expected = aggregate_events([e for g in groups for e in g])
    assert thoughts == "".join(p.text for p in expected.content if isinstance(p, ReasoningPart))
    assert text == "".join(p.text for p in expected.content if isinstance(p, TextPart))
    assert chunks[-1].usage_metadata is not None


def test_stream_encoder_for_an_answer_that_arrived_whole() -> None:
    """The router streams a non-streamed answer to a streaming client via response_events."""
    vector = GOLDEN["response_two_function_calls"]
    response = CODEC.decode_response(json.dumps(vector["wire"]).encode())
    chunks = list(sdk_stream(encode_groups([response_events(response)])))
    (last,) = chunks
    assert [(c.id, c.name) for c in last.function_calls or []] == [
        ("call_mU2yaK7nBf6Iq4APq8KXuQo_0", "lookup_tide"),
        ("call_mU2yaK7nBf6Iq4APq8KXuQo_1", "lookup_weather"),
    ]
    assert last.usage_metadata is not None and last.usage_metadata.total_token_count == 234


def test_stream_encoder_odd_sequences() -> None:
    """A call still open at the finish goes out with it; a delta without a start gets an id;
    parts after the finish ride on the last event; nothing follows the end or an error."""
    encoder = CODEC.stream_encoder(ResponseContext(MODEL))
    out = encoder.encode(
        [
            StreamStart(id="r1", model="m1", protocol="gemini"),
            ToolCallDelta(index=3, arguments='{"a":'),
            ToolCallDelta(index=3, arguments="1}"),
        ]
    )
    assert out == b""
    assert not encoder.can_pass_through([])  # an open call must not be overtaken
    out += encoder.encode([Finish("stop"), UsageReport(Usage(input_tokens=1, output_tokens=2))])
    out += encoder.encode([ReasoningDelta(signature="s1")])
    assert out == b""
    out += encoder.encode([StreamEnd()])
    (last,) = client_payloads(out)
    assert last["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "", "args": {"a": 1}, "id": "call_3"}},
        {"text": "", "thoughtSignature": "s1"},
    ]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert (last["responseId"], last["modelVersion"]) == ("r1", "m1")
    assert encoder.finish() == b""
    assert encoder.encode([TextDelta("late")]) == b""
    assert not encoder.can_pass_through([])

    failing = CODEC.stream_encoder(ResponseContext(MODEL))
    out = failing.encode(
        [
            TextDelta("a"),
            ToolCallStart(index=0, id="c", name="f"),
            StreamError(CanonicalError(429, "slow")),
        ]
    )
    payloads = client_payloads(out)
    assert payloads[0]["candidates"][0]["content"]["parts"] == [{"text": "a"}]
    assert payloads[1] == {
        "error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED"}
    }
    assert failing.finish() == b""


def test_stream_encoder_truncated_after_text_keeps_the_text() -> None:
    encoder = CODEC.stream_encoder(ResponseContext(MODEL))
    out = encoder.encode(
        [TextDelta("partial"), ToolCallStart(index=0, id="c", name="f"), StreamEnd()]
    )
    payloads = client_payloads(out)
    assert payloads[0]["candidates"][0]["content"]["parts"] == [{"text": "partial"}]
    assert payloads[1]["error"]["code"] == 502


def test_stream_decoder_edge_cases() -> None:
    transcript = (
        b"data: [1, 2]\r\n\r\n"
        b'data: {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", '
        b'"data": "x"}, "thoughtSignature": "sig"}, {"text": "", "thought": true}]}, "index": 0}], '
        b'"responseId": ""}\r\n\r\n'
        b'data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f"}}]}}]}\r\n\r\n'
        b"data: {not json}\r\n\r\n"
    )
    decoded = decode_stream([transcript])
    assert decoded[0][1] == []
    start, signature = decoded[1][1]
    assert isinstance(start, StreamStart) and start.id == ""
    assert signature == ReasoningDelta(signature="sig")
    (tool_start, tool_delta) = decoded[2][1]
    assert isinstance(tool_start, ToolCallStart) and tool_start.id.startswith("call_")
    assert tool_start.id.endswith("_0") and tool_delta == ToolCallDelta(index=0, arguments="{}")
    (error,) = decoded[3][1]
    assert isinstance(error, StreamError) and error.error.status == 502
    assert len(decoded) == 4  # no finish after an error


def test_stream_decoder_blocked_prompt_and_malformed_chunk() -> None:
    blocked = b'data: {"promptFeedback": {"blockReason": "OTHER"}, "responseId": "b"}\r\n\r\n'
    decoded = decode_stream([blocked])
    assert decoded[-1] == (b"", [Finish("content_filter")])
    bad = b'data: {"candidates": [{"content": {"parts": "x"}}]}\r\n\r\n'
    (error,) = decode_stream([bad])[0][1]
    assert isinstance(error, StreamError) and error.error.status == 502


# --------------------------------------------------------------------------------------------
# Properties: requests round-trip for Gemini; streams survive encoding and decoding

texts = st.text(st.characters(codec="utf-8"), max_size=20)
names = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=12).map(
    lambda s: "f" + s
)
signatures = st.binary(min_size=1, max_size=12).map(lambda b: base64.b64encode(b).decode())
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
json_objects = st.dictionaries(texts, json_values, max_size=3)


@st.composite
def model_parts(draw: st.DrawFn) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["text", "thought", "call", "code"]))
        part: dict[str, Any]
        if kind == "text":
            part = {"text": draw(texts)}
        elif kind == "thought":
            part = {"text": draw(texts), "thought": True}
        elif kind == "call":
            call: dict[str, Any] = {"name": draw(names), "args": draw(json_objects)}
            if draw(st.booleans()):
                call["id"] = draw(names)
            part = {"functionCall": call}
        else:
            part = {"executableCode": {"language": "PYTHON", "code": draw(texts)}}
        if kind != "code" and draw(st.booleans()):
            part["thoughtSignature"] = draw(signatures)
        parts.append(part)
    return parts


@st.composite
def user_parts(draw: st.DrawFn, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for call in calls:  # tool results first (the documented normalisation)
        response = draw(
            st.builds(lambda v: {"output": v}, json_values)
            | st.builds(lambda v: {"error": v}, json_values)
            | json_objects
        )
        result: dict[str, Any] = {"name": call["name"], "response": response}
        if "id" in call:
            result["id"] = call["id"]
        parts.append({"functionResponse": result})
    for _ in range(draw(st.integers(0 if parts else 1, 3))):
        kind = draw(st.sampled_from(["text", "image", "file", "audio"]))
        if kind == "text":
            parts.append({"text": draw(texts)})
        elif kind == "image":
            data = draw(st.text(string.ascii_letters + "+/", min_size=1, max_size=24))
            parts.append({"inlineData": {"mimeType": "image/png", "data": data}})
        elif kind == "file":
            uri = f"https://generativelanguage.googleapis.com/v1beta/files/{draw(names)}"
            parts.append({"fileData": {"mimeType": "image/jpeg", "fileUri": uri}})
        else:
            parts.append({"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}})
    return parts


@st.composite
def gemini_requests(draw: st.DrawFn) -> dict[str, Any]:
    contents: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 5))):
        role = draw(st.sampled_from(["user", "model"]))
        if role == "model":
            parts = draw(model_parts())
            calls = [p["functionCall"] for p in parts if "functionCall" in p]
        else:
            parts = draw(user_parts(calls))
            calls = []
        contents.append({"role": role, "parts": parts})
    body: dict[str, Any] = {"contents": contents}
    if draw(st.booleans()):
        body["systemInstruction"] = {"parts": [{"text": draw(texts)}]}
    if draw(st.booleans()):
        declarations = [
            {"name": name, "parametersJsonSchema": {"type": "object", "properties": {}}}
            for name in draw(st.lists(names, min_size=1, max_size=3, unique=True))
        ]
        body["tools"] = [{"functionDeclarations": declarations}]
        if draw(st.booleans()):
            body["tools"].append({"googleSearch": {}})
        mode = draw(st.sampled_from(["AUTO", "ANY", "NONE", "VALIDATED"]))
        body["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    config = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "temperature": st.floats(0, 2),
                "topP": st.floats(0, 1),
                "topK": st.integers(1, 100),
                "maxOutputTokens": st.integers(1, 65536),
                "stopSequences": st.lists(texts, max_size=3),
                "seed": st.integers(-(2**31), 2**31),
                "presencePenalty": st.floats(-2, 2),
                "frequencyPenalty": st.floats(-2, 2),
                "responseModalities": st.just(["TEXT"]),
                "thinkingConfig": st.fixed_dictionaries(
                    {},
                    optional={
                        "thinkingBudget": st.integers(-1, 32768),
                        "includeThoughts": st.booleans(),
                        "thinkingLevel": st.sampled_from(["MINIMAL", "LOW", "MEDIUM", "HIGH"]),
                    },
                ),
            },
        )
    )
    if config:
        body["generationConfig"] = config
    if draw(st.booleans()):
        body["safetySettings"] = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]
    return body


def normalised(body: dict[str, Any]) -> dict[str, Any]:
    """What the same-protocol re-encoding of ``body`` must be (documented normalisations)."""
    expected = copy.deepcopy(body)
    thinking = expected.get("generationConfig", {}).get("thinkingConfig")
    if thinking == {}:
        del expected["generationConfig"]["thinkingConfig"]
        if not expected["generationConfig"]:
            del expected["generationConfig"]
    return expected


@PROPERTY_SETTINGS
@given(gemini_requests(), st.booleans())
def test_request_round_trip_property(body: dict[str, Any], stream: bool) -> None:
    wire = json.loads(json.dumps(body))
    request = CODEC.decode_request(copy.deepcopy(wire), STREAM if stream else GENERATE)
    crossed = msgspec.json.decode(msgspec.json.encode(request), type=CanonicalRequest)
    assert crossed == request
    encoded = CODEC.encode_request(crossed, crossed.model)
    assert encoded.path.endswith("alt=sse") is stream
    assert to_json(encoded.body) == normalised(wire)


@st.composite
def answers(draw: st.DrawFn) -> tuple[list[list[StreamEvent]], CanonicalResponse]:
    """Canonical stream groups (arguments split anywhere) and the answer they spell."""
    reasoning = draw(st.lists(st.text(min_size=1, max_size=8), max_size=3))
    text = draw(st.lists(st.text(min_size=1, max_size=8), max_size=4))
    calls = draw(st.lists(st.tuples(names, json_objects), max_size=3))
    events: list[StreamEvent] = [StreamStart(id="resp-1", model="m-1")]
    events += [ReasoningDelta(text=t) for t in reasoning]
    events += [TextDelta(t) for t in text]
    for index, (name, args) in enumerate(calls):
        events.append(ToolCallStart(index=index, id=f"call_{index}_x", name=name))
        arguments = json.dumps(args)
        cuts = sorted(draw(st.lists(st.integers(0, len(arguments)), max_size=3)))
        for start, end in zip([0, *cuts], [*cuts, len(arguments)], strict=True):
            if end > start:
                events.append(ToolCallDelta(index=index, arguments=arguments[start:end]))
    reason: FinishReason = draw(st.sampled_from(["stop", "length"]))
    output = draw(st.integers(0, 500))
    usage = Usage(
        input_tokens=draw(st.integers(0, 500)),
        output_tokens=output,
        cached_input_tokens=draw(st.integers(0, 50)),
        reasoning_tokens=draw(st.integers(0, output)),
    )
    tail: list[StreamEvent] = [Finish("tool_calls" if calls and reason == "stop" else reason)]
    tail += [UsageReport(usage), StreamEnd()]
    events += tail
    # Group the events at random, as wire events would.
    groups: list[list[StreamEvent]] = []
    position = 0
    while position < len(events):
        size = draw(st.integers(1, 3))
        groups.append(events[position : position + size])
        position += size
    return groups, aggregate_events(events)


@PROPERTY_SETTINGS
@given(answers(), st.data())
def test_stream_encode_then_decode_property(
    case: tuple[list[list[StreamEvent]], CanonicalResponse], data: st.DataObject
) -> None:
    groups, expected = case
    stream = encode_groups(groups)
    cut = data.draw(st.integers(0, len(stream)))
    decoded = decode_stream([stream[:cut], stream[cut:]])
    response = aggregate_events([e for _, events in decoded for e in events])
    assert response.id == expected.id and response.model == expected.model
    assert response.finish_reason == expected.finish_reason
    assert response.usage == expected.usage

    def summary(answer: CanonicalResponse) -> list[Any]:
        out: list[Any] = []
        for part in answer.content:
            if isinstance(part, ReasoningPart):
                out.append(("reasoning", part.text))
            elif isinstance(part, TextPart):
                out.append(("text", part.text))
            elif isinstance(part, ToolCallPart):
                out.append(("call", part.id, part.name, json.loads(part.arguments or "{}")))
        return out

    assert summary(response) == summary(expected)
