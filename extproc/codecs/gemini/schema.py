"""Gemini's OpenAPI-subset ``Schema`` -> JSON Schema, and JSON Schema for Gemini.

``parameters`` / ``responseSchema`` use Gemini's ``Schema`` object (an OpenAPI
3.0 subset, proto field names in either spelling). The canonical model holds
JSON Schema, so the decoder converts:

* ``type``: ``OBJECT``/``STRING``/... (any case) -> lower case;
  ``TYPE_UNSPECIFIED`` is dropped; ``nullable: true`` adds ``"null"``
  (``{"type": ["string", "null"]}``, or ``anyOf`` member when there is no type);
* ``properties`` / ``items`` / ``anyOf`` / ``defs`` are converted recursively;
  ``defs`` -> ``$defs`` and ``ref`` -> ``$ref`` (``#/defs/X`` -> ``#/$defs/X``);
* size and range keywords keep their JSON Schema names (``min_items`` ->
  ``minItems``, ``additional_properties`` -> ``additionalProperties``...);
* ``format: "enum"`` (an OpenAPI marker with no JSON Schema meaning) and the
  Gemini-only ``propertyOrdering`` are dropped; ``example`` -> ``examples: [..]``;
  unknown keywords are kept as they are.

The encoder sends canonical JSON Schema as ``parametersJsonSchema`` /
``responseJsonSchema`` unchanged except for a top-level ``$schema``, which
the Gemini API rejects ("Unknown name $schema").
"""

from __future__ import annotations

from typing import Any

from extproc.codecs.gemini.wire import camel

_DROP = frozenset({"propertyOrdering", "nullable"})
_NESTED_MAP = frozenset({"properties", "$defs"})
_NESTED_ONE = frozenset({"items", "not"})
_NESTED_LIST = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_RENAMED = {"defs": "$defs", "ref": "$ref"}


def openapi_to_json_schema(schema: Any) -> Any:
    """A Gemini ``Schema`` (OpenAPI subset) as JSON Schema; non-objects unchanged."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for raw_key, value in schema.items():
        key = camel(raw_key) if "_" in raw_key and not raw_key.startswith("$") else raw_key
        key = _RENAMED.get(key, key)
        if key in _DROP:
            continue
        if key == "type":
            if isinstance(value, str):
                lowered = value.lower()
                if lowered != "type_unspecified":
                    out["type"] = lowered
            else:
                out["type"] = value
        elif key == "format" and value == "enum":
            continue
        elif key == "example":
            out["examples"] = [value]
        elif key == "$ref" and isinstance(value, str):
            out["$ref"] = value.replace("#/defs/", "#/$defs/", 1)
        elif key in _NESTED_MAP and isinstance(value, dict):
            out[key] = {name: openapi_to_json_schema(sub) for name, sub in value.items()}
        elif key in _NESTED_ONE:
            out[key] = openapi_to_json_schema(value)
        elif key in _NESTED_LIST and isinstance(value, list):
            out[key] = [openapi_to_json_schema(sub) for sub in value]
        elif key == "additionalProperties" and isinstance(value, dict):
            out[key] = openapi_to_json_schema(value)
        else:
            out[key] = value
    if schema.get("nullable") is True:
        _add_null(out)
    return out


def _add_null(out: dict[str, Any]) -> None:
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    elif isinstance(kind, list):
        if "null" not in kind:
            out["type"] = [*kind, "null"]
    elif isinstance(out.get("anyOf"), list):
        out["anyOf"] = [*out["anyOf"], {"type": "null"}]


def for_gemini(schema: dict[str, Any]) -> dict[str, Any]:
    """Canonical JSON Schema as ``parametersJsonSchema`` / ``responseJsonSchema``."""
    if "$schema" not in schema:
        return schema
    return {k: v for k, v in schema.items() if k != "$schema"}
