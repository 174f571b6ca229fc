"""Which JSON values and XML parameters are tool calls of the declared tools.

The shapes models write when they put a call in text (any one, or a list of
them, or ``{"tool_calls": [...]}``):

* ``{"name": N, "arguments": A}``, where the name key may also be ``tool``,
  ``tool_name``, ``function`` (a string) or ``function_name`` and the
  arguments key ``parameters`` (Llama 3.1), ``args``, ``input``, ``params``
  or ``tool_input``; an ``id`` and a ``type`` of ``function``, ``tool_use``,
  ``tool_call`` or ``function_call`` may accompany them, nothing else;
* ``{"type": "function", "function": {"name": N, "arguments": A}}`` (OpenAI);

where ``A`` is an object or a string holding a JSON object. Anything else
(an extra key such as ``description``: a tool *definition*, not a call) is
not a call. ``N`` must resolve to a declared tool (:class:`ToolNames`).

Plausibility (:meth:`ToolSet.plausible`): when the tool's schema lists
properties, non-empty arguments must use at least one of them (exact or
near-miss spelling). This keeps a JSON example that happens to carry a
declared tool's name, or a tool definition ``{"name": ..., "parameters":
{"type": "object", "properties": ...}}``, from becoming a call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extproc.guards.repair import jsonfix
from extproc.guards.repair.model import TextCall
from extproc.guards.repair.names import ToolNames, property_key

_NAME_KEYS = frozenset({"name", "tool", "tool_name", "function", "function_name"})
_ARGUMENT_KEYS = frozenset({"arguments", "parameters", "args", "input", "params", "tool_input"})
_CALL_TYPES = frozenset({"function", "tool_use", "tool_call", "function_call"})
_OPENAI_KEYS = frozenset({"type", "function", "id", "index"})
#: More calls than this in one value is not a model's answer.
MAX_CALLS = 64
#: Text-call JSON bigger than this must be strict (json_repair is slow, and
#: a call written as text is rarely that big).
TEXT_LENIENT_LIMIT = 32 * 1024

Schema = Mapping[str, Any]


class ToolSet:
    """The request's declared tools (name -> parameters schema), indexed once."""

    __slots__ = ("_keys", "names", "schemas")

    def __init__(self, tools: Mapping[str, Schema | None]) -> None:
        self.schemas: dict[str, Schema | None] = dict(tools)
        self.names = ToolNames(self.schemas)
        self._keys: dict[str, frozenset[str]] = {}

    def resolve(self, name: str) -> str | None:
        return self.names.resolve(name)

    def properties(self, tool: str) -> Mapping[str, Any]:
        schema = self.schemas.get(tool)
        props = schema.get("properties") if isinstance(schema, Mapping) else None
        return props if isinstance(props, Mapping) else {}

    def required(self, tool: str) -> list[str]:
        schema = self.schemas.get(tool)
        required = schema.get("required") if isinstance(schema, Mapping) else None
        return [r for r in required if isinstance(r, str)] if isinstance(required, list) else []

    def plausible(self, tool: str, arguments: Mapping[str, Any]) -> bool:
        """Whether ``arguments`` could be meant for ``tool`` (see the module doc)."""
        if not arguments:
            return True
        keys = self._keys.get(tool)
        if keys is None:
            keys = self._keys[tool] = frozenset(property_key(n) for n in self.properties(tool))
        return not keys or any(property_key(name) in keys for name in arguments)


def _arguments_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            decoded = jsonfix.loads(value)
        except jsonfix.NotJson:
            return None
        return decoded if isinstance(decoded, dict) else None
    return None


def _one_call(item: Any, tools: ToolSet, fmt: str) -> TextCall | None:
    if not isinstance(item, dict):
        return None
    keys = set(item)
    function = item.get("function")
    if isinstance(function, dict):
        if not keys <= _OPENAI_KEYS or item.get("type", "function") != "function":
            return None
        if set(function) != {"name", "arguments"}:
            return None
        name, raw_arguments = function["name"], function["arguments"]
    else:
        name_keys = keys & _NAME_KEYS
        argument_keys = keys & _ARGUMENT_KEYS
        if len(name_keys) != 1 or len(argument_keys) != 1:
            return None
        if keys - name_keys - argument_keys - {"id", "type"}:
            return None
        if "type" in item and item["type"] not in _CALL_TYPES:
            return None
        name = item[next(iter(name_keys))]
        raw_arguments = item[next(iter(argument_keys))]
    if not isinstance(name, str):
        return None
    tool = tools.resolve(name)
    if tool is None:
        return None
    arguments = _arguments_object(raw_arguments)
    if arguments is None or not tools.plausible(tool, arguments):
        return None
    try:
        return TextCall(tool, jsonfix.dumps(arguments), fmt)
    except jsonfix.NotJson:
        return None


def json_calls(value: Any, tools: ToolSet, fmt: str) -> list[TextCall] | None:
    """The calls ``value`` (decoded JSON) holds, or ``None`` unless it is all calls."""
    if isinstance(value, dict) and set(value) == {"tool_calls"}:
        value = value["tool_calls"]
    items = value if isinstance(value, list) else [value]
    if not items or len(items) > MAX_CALLS:
        return None
    calls = []
    for item in items:
        call = _one_call(item, tools, fmt)
        if call is None:
            return None
        calls.append(call)
    return calls


def json_text_calls(text: str, tools: ToolSet, fmt: str, *, lenient: bool) -> list[TextCall] | None:
    """The calls a JSON text holds: strict values (one or a sequence), else lenient.

    ``lenient`` hands text that is not strict JSON to json_repair (single
    quotes, unquoted keys, trailing commas, a truncated end); used for text
    inside an explicit wrapper (a fence, ``<tool_call>``), never for bare
    prose. Several values are accepted only when each one parses strictly.
    """
    try:
        values = jsonfix.loads_sequence(text)
    except jsonfix.NotJson:
        if not lenient or jsonfix.second_value_follows(text):
            return None
        try:
            values = [jsonfix.lenient_loads(text, whole=True, limit=TEXT_LENIENT_LIMIT)]
        except jsonfix.NotJson:
            return None
    calls: list[TextCall] = []
    for value in values:
        found = json_calls(value, tools, fmt)
        if found is None:
            return None
        calls.extend(found)
    return calls if 0 < len(calls) <= MAX_CALLS else None


def xml_value(raw: str) -> str:
    """A parameter's text as the model meant it.

    One line: surrounding whitespace trimmed (``<path> a.py </path>``).
    Several lines: only the line break after the opening tag and the one
    before the closing tag go (with spaces/tabs next to them), so code keeps
    its indentation: ``<content>\\n  x\\n</content>`` is ``"  x"``.
    """
    if "\n" not in raw:
        return raw.strip()
    head = raw.lstrip(" \t")
    if head.startswith("\r\n"):
        raw = head[2:]
    elif head.startswith("\n"):
        raw = head[1:]
    tail = raw.rstrip(" \t")
    if tail.endswith("\r\n"):
        raw = tail[:-2]
    elif tail.endswith("\n"):
        raw = tail[:-1]
    return raw


def _types(schema: Any) -> set[str]:
    if not isinstance(schema, Mapping):
        return set()
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def json_matches(value: Any, types: set[str]) -> bool:
    """Whether a decoded JSON value has one of the JSON-schema ``types``."""
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, int):
        return bool(types & {"integer", "number"})
    if isinstance(value, float):
        return "number" in types or ("integer" in types and value.is_integer())
    if isinstance(value, dict):
        return "object" in types
    if isinstance(value, list):
        return "array" in types
    if value is None:
        return "null" in types
    return "string" in types


def typed_value(raw: str, schema: Any) -> Any:
    """An XML parameter's value: the text, or its JSON value when the schema says so.

    Text stays text unless the property's schema has a ``type`` that excludes
    ``string`` and the text is JSON of one of its types (``<limit>10</limit>``
    with ``{"type": "integer"}`` is ``10``; with no schema it is ``"10"``).
    """
    types = _types(schema)
    if not types or "string" in types:
        return raw
    try:
        value = jsonfix.loads(raw.strip())
    except jsonfix.NotJson:
        return raw
    if isinstance(value, str) or not json_matches(value, types):
        return raw
    return value


def xml_call(
    tools: ToolSet, tool: str, params: list[tuple[str, str]], fmt: str, *, strict_empty: bool
) -> TextCall | None:
    """A call from ``(name, raw text)`` parameters, typed by the tool's schema.

    ``None`` when a parameter repeats, when the arguments are implausible, or
    (``strict_empty``) when there are none but the tool requires some.
    """
    props = tools.properties(tool)
    by_key = {property_key(name): name for name in props}
    arguments: dict[str, Any] = {}
    for name, raw in params:
        if name in arguments:
            return None
        schema = props.get(name)
        if schema is None and property_key(name) in by_key:
            schema = props.get(by_key[property_key(name)])
        arguments[name] = typed_value(xml_value(raw), schema)
    if strict_empty and not arguments and tools.required(tool):
        return None
    if not tools.plausible(tool, arguments):
        return None
    return TextCall(tool, jsonfix.dumps(arguments), fmt)
