"""Broken argument JSON of real tool calls: syntax repaired, then fitted to the schema.

:func:`repair_arguments` takes a call's arguments text and the tool's
``parameters`` schema and returns a :class:`Repaired`:

Syntax
    Valid JSON is kept as is. Empty (or blank) arguments mean ``{}``
    (``empty_arguments``). Otherwise, in order:

    * a valid value followed by junk (``{"a":1}}``, a stray closing fence)
      keeps the value (``json_syntax``); followed by a *second value*
      (``{"a":1}{"b":2}``) it is refused (``multiple_values``): json_repair
      would silently keep one of them;
    * anything else goes to json_repair (``json_syntax``): trailing commas,
      single quotes, unquoted keys, comments, Python literals, a truncated end
      (unterminated strings, missing brackets). Only texts up to
      ``max_repair_bytes`` go there (it is pure Python, ~2 µs a byte).

    A JSON string holding an object (double-encoded arguments) is unwrapped
    (``double_encoded``). The result must be an object (``not_object``).

Schema (applied even when the syntax was fine)
    For an object schema with ``properties`` (nested objects and arrays of
    objects too, up to :data:`MAX_DEPTH` levels; ``$ref``, ``anyOf`` and
    friends are not followed):

    * a property name the schema does not list, which matches exactly one
      listed property ignoring case, ``-``, ``_`` and camelCase
      (:func:`.names.property_key`), is renamed to it (``renamed_property``);
      two matches, or a match whose property is already present, is
      ambiguous and refused (``ambiguous_property``). Renaming applies
      whatever ``additionalProperties`` says: a near-miss spelling of a
      declared property is much likelier a typo than a real extra property;
    * with ``additionalProperties: false`` (and no ``patternProperties``),
      properties the schema does not list are dropped (``dropped_additional``);
    * a string where the schema wants exactly an integer, number, boolean,
      object or array (not also a string) is converted when its text is that
      JSON (``"10"`` -> ``10``, ``"true"`` -> ``true``, ``"[1]"`` -> ``[1]``):
      ``coerced_type``;
    * a missing required property is filled only from the property's
      ``default``, ``const`` or single-value ``enum`` (``filled_default``);
      otherwise it stays missing and is listed in :attr:`Repaired.missing`.
      That is not an error: the call still goes to the agent, which tells
      the model what is missing, and the model retries; an invented value
      would do harm silently instead.

Refusals (``error`` set, ``arguments`` the input unchanged): ``too_large``,
``not_json``, ``multiple_values``, ``not_object``, ``ambiguous_property``,
``non_finite_number`` (``NaN``/``Infinity``), ``too_deep``. The error text
starts with that kind, a colon and a detail.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from extproc.guards.repair import jsonfix
from extproc.guards.repair.names import property_key
from extproc.guards.repair.shapes import json_matches

#: Nested schema levels the schema repair follows.
MAX_DEPTH = 16
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,18})")
_CONVERTIBLE = ("integer", "number", "boolean", "object", "array")


@dataclass(frozen=True, slots=True)
class Repaired:
    """The outcome of :func:`repair_arguments`."""

    #: Compact JSON of the repaired arguments; the input unchanged when refused.
    arguments: str
    #: What was changed, as kinds in first-seen order (``()``: nothing; the
    #: caller may keep the original text).
    changes: tuple[str, ...] = ()
    #: Why the arguments were refused (``kind: detail``), else ``None``.
    error: str | None = None
    #: Required properties still missing, as ``/a/b`` paths.
    missing: tuple[str, ...] = ()
    #: One human-readable line per change (``renamed_property /filePath -> file_path``).
    details: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


class _Refused(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")


@dataclass
class _Log:
    changes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def add(self, kind: str, detail: str) -> None:
        if kind not in self.changes:
            self.changes.append(kind)
        self.details.append(f"{kind} {detail}")


def _too_large(text: str, limit: int) -> bool:
    if len(text) > limit:
        return True
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


def _decode(text: str, log: _Log, max_repair_bytes: int) -> Any:
    if not text.strip():
        log.add("empty_arguments", "-> {}")
        return {}
    try:
        return jsonfix.loads(text)
    except (jsonfix.NonFinite, jsonfix.TooDeep):
        raise
    except jsonfix.NotJson:
        pass
    stripped = text.strip()
    try:
        value, end = jsonfix.raw_decode(stripped)
    except (jsonfix.NonFinite, jsonfix.TooDeep):
        raise
    except jsonfix.NotJson:
        pass
    else:
        rest = stripped[end:].lstrip()
        if rest[:1] in ("{", "["):
            raise _Refused("multiple_values", "a second JSON value follows the first")
        log.add("json_syntax", f"dropped trailing text {rest[:20]!r}")
        return value
    if _too_large(text, max_repair_bytes):
        raise _Refused("too_large", f"broken JSON over {max_repair_bytes} bytes is not repaired")
    try:
        value = jsonfix.lenient_loads(text, limit=max_repair_bytes)
    except (jsonfix.NonFinite, jsonfix.TooDeep):
        raise
    except jsonfix.NotJson as exc:
        raise _Refused("not_json", str(exc)) from None
    log.add("json_syntax", "repaired by json_repair")
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "null" if value is None else "object"


def _types(schema: Mapping[str, Any]) -> set[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def _coerce(value: Any, schema: Mapping[str, Any], path: str, log: _Log) -> Any:
    if not isinstance(value, str):
        return value
    types = _types(schema) - {"null"}
    if len(types) != 1 or "string" in types or not types <= set(_CONVERTIBLE):
        return value
    text = value.strip()
    if types == {"integer"}:
        if not _INTEGER.fullmatch(text):
            return value
        converted: Any = int(text)
    elif types == {"boolean"}:
        if text not in ("true", "false"):
            return value
        converted = text == "true"
    else:
        try:
            converted = jsonfix.loads(text)
        except jsonfix.NotJson:
            return value
        if isinstance(converted, str) or not json_matches(converted, types):
            return value
    log.add("coerced_type", f"{path or '/'} string -> {next(iter(types))}")
    return converted


def _fill(schema: Any) -> tuple[bool, Any]:
    if not isinstance(schema, Mapping):
        return False, None
    if "default" in schema:
        return True, copy.deepcopy(schema["default"])
    if "const" in schema:
        return True, copy.deepcopy(schema["const"])
    enum = schema.get("enum")
    if isinstance(enum, list) and len(enum) == 1:
        return True, copy.deepcopy(enum[0])
    return False, None


def _repair_value(value: Any, schema: Any, path: str, log: _Log, depth: int) -> Any:
    if not isinstance(schema, Mapping) or depth > MAX_DEPTH:
        return value
    value = _coerce(value, schema, path, log)
    if isinstance(value, dict):
        return _repair_object(value, schema, path, log, depth)
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, Mapping):
        return [_repair_value(v, items, f"{path}/{i}", log, depth + 1) for i, v in enumerate(value)]
    return value


def _renames(value: dict[str, Any], props: Mapping[str, Any], path: str) -> dict[str, str]:
    unknown = [key for key in value if key not in props]
    if not unknown:
        return {}
    by_key: dict[str, list[str]] = {}
    for name in props:
        by_key.setdefault(property_key(name), []).append(name)
    renames: dict[str, str] = {}
    taken: set[str] = set()
    for key in unknown:
        matches = by_key.get(property_key(key), [])
        if len(matches) > 1:
            raise _Refused(
                "ambiguous_property", f"{path}/{key} matches {', '.join(sorted(matches))}"
            )
        if not matches:
            continue
        target = matches[0]
        if target in value or target in taken:
            raise _Refused(
                "ambiguous_property", f"{path}/{key} and another name both mean {target}"
            )
        renames[key] = target
        taken.add(target)
    return renames


def _repair_object(
    value: dict[str, Any], schema: Mapping[str, Any], path: str, log: _Log, depth: int
) -> dict[str, Any]:
    props = schema.get("properties")
    props = props if isinstance(props, Mapping) else {}
    renames = _renames(value, props, path) if props else {}
    if renames:
        for old, new in renames.items():
            log.add("renamed_property", f"{path}/{old} -> {new}")
        value = {renames.get(key, key): item for key, item in value.items()}
    if schema.get("additionalProperties") is False and "patternProperties" not in schema:
        extra = [key for key in value if key not in props]
        for key in extra:
            log.add("dropped_additional", f"{path}/{key}")
        if extra:
            value = {key: item for key, item in value.items() if key in props}
    result = {}
    for key, item in value.items():
        sub = props.get(key)
        result[key] = (
            _repair_value(item, sub, f"{path}/{key}", log, depth + 1) if sub is not None else item
        )
    required = schema.get("required")
    for name in required if isinstance(required, list) else ():
        if not isinstance(name, str) or name in result:
            continue
        found, filled = _fill(props.get(name))
        if found:
            result[name] = filled
            log.add("filled_default", f"{path}/{name}")
        else:
            log.missing.append(f"{path}/{name}")
    return result


def repair_arguments(
    arguments: str,
    schema: Mapping[str, Any] | None,
    *,
    max_bytes: int = 1_000_000,
    max_repair_bytes: int = jsonfix.LENIENT_LIMIT,
) -> Repaired:
    """Repair a tool call's ``arguments`` JSON against the tool's ``schema`` (module doc)."""
    if _too_large(arguments, max_bytes):
        return Repaired(arguments, error=f"too_large: arguments over {max_bytes} bytes")
    log = _Log()
    try:
        value = _decode(arguments, log, max_repair_bytes)
        if isinstance(value, str):
            try:
                inner = jsonfix.loads(value)
            except jsonfix.NotJson:
                inner = None
            if isinstance(inner, dict):
                log.add("double_encoded", "arguments were a JSON string holding an object")
                value = inner
        if not isinstance(value, dict):
            raise _Refused("not_object", f"arguments are a JSON {_json_type(value)}, not an object")
        value = _repair_value(value, schema, "", log, 0)
        text = jsonfix.dumps(value)
    except _Refused as refused:
        return Repaired(arguments, error=str(refused))
    except jsonfix.NonFinite as exc:
        return Repaired(arguments, error=f"non_finite_number: {exc}")
    except (jsonfix.TooDeep, RecursionError):
        return Repaired(arguments, error="too_deep: nesting too deep")
    return Repaired(
        text,
        changes=tuple(log.changes),
        missing=tuple(log.missing),
        details=tuple(log.details),
    )
