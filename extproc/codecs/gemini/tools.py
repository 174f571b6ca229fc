"""``tools`` and ``toolConfig`` <-> canonical tools and tool choice.

Mapping rules (WIRE_FORMATS §4.2, §5.3):

* Each ``functionDeclarations`` entry -> a canonical tool; ``parameters``
  (OpenAPI subset) is converted to JSON Schema (the original kept in
  ``extra["parameters"]``), ``parametersJsonSchema`` is taken as is; other
  declaration fields (``response``, ``behavior``...) go to
  ``extra["declaration"]``. Other tool kinds (``googleSearch``,
  ``codeExecution``, ``urlContext``...) become opaque tools, sent again only to
  Gemini. Encoding puts all declarations in one ``functionDeclarations`` tool
  and sends ``parametersJsonSchema`` (JSON Schema as is, top-level ``$schema``
  removed), or the client's own ``parameters`` while the canonical schema still
  equals their conversion.
* Tool choice: ``AUTO`` -> auto, ``ANY`` -> required (``tool`` X when
  ``allowedFunctionNames`` is exactly ``[X]``), ``NONE`` -> none, ``VALIDATED``
  -> auto; back: auto -> ``AUTO``, required -> ``ANY``, tool X -> ``ANY`` +
  ``[X]``, none -> ``NONE``. The client's own ``toolConfig`` is sent again to
  Gemini while the canonical choice still equals its decoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extproc.canonical import CanonicalRequest, Tool, ToolChoice
from extproc.codecs.gemini.schema import for_gemini, openapi_to_json_schema
from extproc.codecs.gemini.wire import get, names, rest
from extproc.errors import InvalidRequest

_DECLARATION_FIELDS = names("name", "description", "parameters", "parametersJsonSchema")
_CALLING_CONFIG = names("functionCallingConfig")
_MODE_OUT = {"auto": "AUTO", "required": "ANY", "tool": "ANY", "none": "NONE"}


# -- decoding ------------------------------------------------------------------------------


def decode_tools(tools: Any, where: str = "tools") -> list[Tool]:
    if not isinstance(tools, list):
        raise InvalidRequest(f"'{where}' must be an array", param=where)
    out: list[Tool] = []
    for i, tool in enumerate(tools):
        at = f"{where}[{i}]"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"{at} must be an object", param=at)
        for key, value in tool.items():
            if key not in ("functionDeclarations", "function_declarations"):
                out.append(Tool(name=key, opaque={key: value}))
                continue
            if not isinstance(value, list):
                raise InvalidRequest(
                    f"{at}.functionDeclarations must be an array",
                    param=f"{at}.functionDeclarations",
                )
            out.extend(
                _decode_declaration(d, f"{at}.functionDeclarations[{j}]")
                for j, d in enumerate(value)
            )
    return out


def _decode_declaration(declaration: Any, where: str) -> Tool:
    if not isinstance(declaration, dict) or not isinstance(get(declaration, "name"), str):
        raise InvalidRequest(f"{where}.name must be a string", param=f"{where}.name")
    description = get(declaration, "description")
    parameters = get(declaration, "parameters")
    json_schema = get(declaration, "parametersJsonSchema")
    extra: dict[str, Any] = {}
    schema: dict[str, Any] | None = None
    if isinstance(json_schema, dict):
        schema = json_schema
    elif isinstance(parameters, dict):
        schema = openapi_to_json_schema(parameters)
        extra["parameters"] = parameters
    other = rest(declaration, _DECLARATION_FIELDS)
    if other:
        extra["declaration"] = other
    return Tool(
        name=get(declaration, "name"),
        description=description if isinstance(description, str) else None,
        parameters=schema,
        extra=extra or None,
    )


def decode_tool_config(config: Any, req: CanonicalRequest) -> None:
    if not isinstance(config, dict):
        raise InvalidRequest("'toolConfig' must be an object", param="toolConfig")
    req.extra["toolConfig"] = config
    calling = get(config, "functionCallingConfig")
    if calling is None:
        return
    where = "toolConfig.functionCallingConfig"
    if not isinstance(calling, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    req.tool_choice = tool_choice_in(calling, where)


def tool_choice_in(calling: Mapping[str, Any], where: str) -> ToolChoice | None:
    mode = get(calling, "mode")
    allowed = get(calling, "allowedFunctionNames")
    if allowed is not None and (
        not isinstance(allowed, list) or not all(isinstance(n, str) for n in allowed)
    ):
        raise InvalidRequest(
            f"{where}.allowedFunctionNames must be an array of strings",
            param=f"{where}.allowedFunctionNames",
        )
    if mode is None:
        return None
    if not isinstance(mode, str):
        raise InvalidRequest(f"{where}.mode must be a string", param=f"{where}.mode")
    upper = mode.upper()
    if upper in ("AUTO", "VALIDATED"):
        return ToolChoice(mode="auto")
    if upper == "NONE":
        return ToolChoice(mode="none")
    if upper == "ANY":
        if allowed is not None and len(allowed) == 1:
            return ToolChoice(mode="tool", name=allowed[0])
        return ToolChoice(mode="required")
    if upper == "MODE_UNSPECIFIED":
        return None
    raise InvalidRequest(
        f"{where}.mode must be one of AUTO, ANY, NONE, VALIDATED (got {mode!r})",
        param=f"{where}.mode",
    )


# -- encoding ------------------------------------------------------------------------------


def encode_tools(tools: list[Tool], same: bool) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for tool in tools:
        if tool.opaque is not None:
            if same:
                others.append(tool.opaque)
            continue
        declaration: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            declaration["description"] = tool.description
        extra = (tool.extra or {}) if same else {}
        original = extra.get("parameters")
        if tool.parameters is not None:
            if isinstance(original, dict) and openapi_to_json_schema(original) == tool.parameters:
                declaration["parameters"] = original
            else:
                declaration["parametersJsonSchema"] = for_gemini(tool.parameters)
        if isinstance(extra.get("declaration"), dict):
            declaration.update(extra["declaration"])
        declarations.append(declaration)
    head = [{"functionDeclarations": declarations}] if declarations else []
    return head + others


def encode_tool_config(req: CanonicalRequest, same: bool) -> dict[str, Any] | None:
    choice = req.tool_choice
    original = req.extra.get("toolConfig") if same else None
    if isinstance(original, dict):
        calling = get(original, "functionCallingConfig")
        decoded = tool_choice_in(calling, "toolConfig") if isinstance(calling, dict) else None
        if decoded == choice:
            return original
    if choice is None:
        return None
    calling_out: dict[str, Any] = {"mode": _MODE_OUT[choice.mode]}
    if choice.mode == "tool" and choice.name is not None:
        calling_out["allowedFunctionNames"] = [choice.name]
    out: dict[str, Any] = {"functionCallingConfig": calling_out}
    if isinstance(original, dict):
        # Other toolConfig members (retrievalConfig...) stay; the calling config is new.
        out.update({k: v for k, v in original.items() if k not in _CALLING_CONFIG})
    return out
