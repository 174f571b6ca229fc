"""``generationConfig`` and ``thinkingConfig`` <-> canonical settings.

Mapping rules (WIRE_FORMATS §4.2, §5.7, §5.8; docs/translation.md):

* Sampling: ``temperature``, ``topP``, ``topK``, ``maxOutputTokens``,
  ``stopSequences``, ``presencePenalty``, ``frequencyPenalty``, ``seed`` map one
  to one. ``candidateCount`` > 1 is a 400 (the proxy answers one candidate);
  other ``generationConfig`` fields travel in ``extra["generationConfig"]``.
* Structured output: ``responseMimeType: application/json`` -> ``json_object``,
  or ``json_schema`` with ``responseJsonSchema`` (as is) or ``responseSchema``
  (converted from the OpenAPI subset, the original kept for the same protocol
  and sent back while the canonical schema still equals its conversion);
  ``text/plain`` -> ``text``; other media types stay in ``extra``. Back:
  ``responseJsonSchema`` (top-level ``$schema`` removed).
* Thinking: ``thinkingBudget`` 0 -> ``enabled=False``, -1 (dynamic) ->
  ``enabled=True``, N > 0 -> ``budget_tokens=N``; ``thinkingLevel`` -> ``effort``
  (lower case); ``includeThoughts`` -> ``include_thoughts``. Back, for a Gemini
  client: its own settings. For others: a budget wins (Anthropic
  ``budget_tokens`` <-> ``thinkingBudget``); an effort becomes ``thinkingLevel``
  (``none`` -> budget 0, ``max`` -> ``XHIGH``, unknown efforts are left out),
  except for Gemini 1.x/2.x models, which have no levels: there the effort
  becomes a budget by the proxy's policy (minimal/low 1024, medium 4096, high
  and above 16384); ``enabled=False`` -> budget 0, ``enabled=True`` alone -> -1.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from extproc.canonical import CanonicalRequest, Reasoning, ResponseFormat
from extproc.codecs.gemini.schema import for_gemini, openapi_to_json_schema
from extproc.codecs.gemini.wire import camel, get, names, rest
from extproc.errors import InvalidRequest

_GENERATION_FIELDS = names(
    "temperature",
    "topP",
    "topK",
    "candidateCount",
    "maxOutputTokens",
    "stopSequences",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "thinkingConfig",
)
#: ``generationConfig`` fields a URI parameter (``passthrough``) may name.
GENERATION_PASSTHROUGH = frozenset(
    camel(n) for n in _GENERATION_FIELDS | names("responseModalities", "responseLogprobs")
) | {"logprobs", "mediaResolution", "speechConfig", "imageConfig"}
THINKING_PASSTHROUGH = frozenset({"thinkingBudget", "thinkingLevel", "includeThoughts"})
_THINKING_FIELDS = names("thinkingBudget", "thinkingLevel", "includeThoughts")
_LEVELS = {"minimal", "low", "medium", "high", "xhigh"}
_POLICY_BUDGET = {"minimal": 1024, "low": 1024, "medium": 4096}
_LEGACY_MODEL = re.compile(r"^(?:models/)?gemini-[12]\.")
_JSON = "application/json"

Path = Callable[[str], str]


def _path(where: str) -> Path:
    """Names of fields under ``where``, for ``param``."""
    return lambda name: f"{where}.{name}"


# -- decoding ------------------------------------------------------------------------------


def decode_generation(config: Any, req: CanonicalRequest, where: str) -> None:
    """Apply a ``generationConfig`` object to ``req``."""
    if not isinstance(config, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    at = _path(where)
    req.temperature = _number(config, "temperature", at)
    req.top_p = _number(config, "topP", at)
    req.top_k = _integer(config, "topK", at)
    req.max_output_tokens = _integer(config, "maxOutputTokens", at)
    req.presence_penalty = _number(config, "presencePenalty", at)
    req.frequency_penalty = _number(config, "frequencyPenalty", at)
    req.seed = _integer(config, "seed", at)
    count = _integer(config, "candidateCount", at)
    if count is not None and count > 1:
        raise InvalidRequest(
            "candidateCount greater than 1 is not supported by this proxy",
            param=at("candidateCount"),
        )
    stop = get(config, "stopSequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InvalidRequest(
                f"{at('stopSequences')} must be an array of strings", param=at("stopSequences")
            )
        req.stop = list(stop)
    kept = rest(config, _GENERATION_FIELDS)
    if count is not None:
        kept["candidateCount"] = count
    _decode_format(config, req, kept, at)
    thinking = get(config, "thinkingConfig")
    if thinking is not None:
        req.reasoning, thinking_rest = _decode_thinking(thinking, at("thinkingConfig"))
        if thinking_rest:
            kept["thinkingConfig"] = thinking_rest
    if kept:
        req.extra["generationConfig"] = kept


def _number(config: Mapping[str, Any], name: str, at: Path) -> float | None:
    value = get(config, name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{at(name)} must be a number", param=at(name))
    return float(value)


def _integer(config: Mapping[str, Any], name: str, at: Path) -> int | None:
    value = get(config, name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)  # proto JSON accepts int64 values as strings
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{at(name)} must be an integer", param=at(name))
    return value


def _decode_format(
    config: Mapping[str, Any],
    req: CanonicalRequest,
    kept: dict[str, Any],
    at: Path,
) -> None:
    mime = get(config, "responseMimeType")
    schema = get(config, "responseSchema")
    json_schema = get(config, "responseJsonSchema")
    if mime is not None and not isinstance(mime, str):
        raise InvalidRequest(
            f"{at('responseMimeType')} must be a string", param=at("responseMimeType")
        )
    if mime == _JSON and isinstance(json_schema, dict) and schema is None:
        req.response_format = ResponseFormat(type="json_schema", schema=json_schema)
    elif mime == _JSON and isinstance(schema, dict) and json_schema is None:
        req.response_format = ResponseFormat(
            type="json_schema", schema=openapi_to_json_schema(schema)
        )
        kept["responseSchema"] = schema
    elif mime == _JSON and schema is None and json_schema is None:
        req.response_format = ResponseFormat(type="json_object")
    elif mime == "text/plain" and schema is None and json_schema is None:
        req.response_format = ResponseFormat(type="text")
    else:
        for name, value in (
            ("responseMimeType", mime),
            ("responseSchema", schema),
            ("responseJsonSchema", json_schema),
        ):
            if value is not None:
                kept[name] = value


def _decode_thinking(thinking: Any, where: str) -> tuple[Reasoning, dict[str, Any]]:
    if not isinstance(thinking, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    at = _path(where)
    reasoning = Reasoning()
    budget = _integer(thinking, "thinkingBudget", at)
    if budget is not None:
        if budget == 0:
            reasoning.enabled = False
        elif budget < 0:
            reasoning.enabled = True  # -1: dynamic thinking
        else:
            reasoning.budget_tokens = budget
    level = get(thinking, "thinkingLevel")
    if level is not None:
        if not isinstance(level, str):
            raise InvalidRequest(
                f"{at('thinkingLevel')} must be a string", param=at("thinkingLevel")
            )
        if level.upper() != "THINKING_LEVEL_UNSPECIFIED":
            reasoning.effort = level.lower()
    include = get(thinking, "includeThoughts")
    if include is not None:
        if not isinstance(include, bool):
            raise InvalidRequest(
                f"{at('includeThoughts')} must be a boolean", param=at("includeThoughts")
            )
        reasoning.include_thoughts = include
    return reasoning, rest(thinking, _THINKING_FIELDS)


# -- encoding ------------------------------------------------------------------------------


def encode_generation(req: CanonicalRequest, model: str, same: bool) -> dict[str, Any]:
    """The ``generationConfig`` object for ``req`` (possibly empty)."""
    out: dict[str, Any] = {}
    for key, value in (
        ("temperature", req.temperature),
        ("topP", req.top_p),
        ("topK", req.top_k),
        ("maxOutputTokens", req.max_output_tokens),
        ("stopSequences", req.stop),
        ("presencePenalty", req.presence_penalty),
        ("frequencyPenalty", req.frequency_penalty),
        ("seed", req.seed),
    ):
        if value is not None:
            out[key] = value
    kept = req.extra.get("generationConfig") if same else None
    kept = dict(kept) if isinstance(kept, dict) else {}
    _encode_format(req.response_format, kept, out)
    thinking = encode_thinking(req.reasoning, model, same) if req.reasoning else {}
    kept_thinking = kept.pop("thinkingConfig", None)
    if isinstance(kept_thinking, dict):
        thinking = {**kept_thinking, **thinking}
    if thinking:
        out["thinkingConfig"] = thinking
    for key, value in kept.items():
        out.setdefault(key, value)
    return out


def _encode_format(value: ResponseFormat | None, kept: dict[str, Any], out: dict[str, Any]) -> None:
    original = kept.pop("responseSchema", None)
    if value is None:
        if original is not None:
            out["responseSchema"] = original
        return
    if value.type == "text":
        out["responseMimeType"] = "text/plain"
        return
    out["responseMimeType"] = _JSON
    if value.type == "json_schema" and value.schema is not None:
        if isinstance(original, dict) and openapi_to_json_schema(original) == value.schema:
            out["responseSchema"] = original
        else:
            out["responseJsonSchema"] = for_gemini(value.schema)


def encode_thinking(reasoning: Reasoning, model: str, same: bool) -> dict[str, Any]:
    """``thinkingConfig`` for ``reasoning`` (see the module docstring).

    A Gemini client's own settings come back as they were (budget and/or
    level); for other clients a budget wins over an effort.
    """
    out: dict[str, Any] = {}
    effort = reasoning.effort
    if reasoning.budget_tokens is not None:
        out["thinkingBudget"] = reasoning.budget_tokens
    elif reasoning.enabled is False or (effort == "none" and not same):
        out["thinkingBudget"] = 0
    elif effort is not None and not same and _LEGACY_MODEL.match(model):
        out["thinkingBudget"] = _POLICY_BUDGET.get(effort, 16384)
    elif reasoning.enabled is True and (same or effort is None):
        out["thinkingBudget"] = -1
    if same and effort is not None:
        out["thinkingLevel"] = effort.upper()
    elif effort is not None and "thinkingBudget" not in out:
        level = "xhigh" if effort == "max" else effort
        if level in _LEVELS:
            out["thinkingLevel"] = level.upper()
    if reasoning.include_thoughts is not None:
        out["includeThoughts"] = reasoning.include_thoughts
    return out
