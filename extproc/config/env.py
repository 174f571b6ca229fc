"""``LLM_PROXY_*`` environment variables: config keys set from the environment.

Every key of :class:`~extproc.config.model.Config` has a name:

* a top-level key: ``LLM_PROXY_<KEY>`` (``LLM_PROXY_PORT=8010``);
* a nested key: sections joined by a double underscore
  (``LLM_PROXY_SESSIONS__ENABLED=false``, ``LLM_PROXY_ROUTING__STATIC_ROUTE=openai:gpt-4o``);
* inside a map keyed by name (``backends``, ``routing.aliases``...), the name
  is one more segment, lower-cased (``LLM_PROXY_BACKENDS__OPENAI__API_KEY``);
  a name with a dot or a dash (``openai.1``) cannot be written this way.

Values of string keys (strings, secrets, choices) are taken as written;
others are read as YAML (``false``, ``3``, ``5s``, ``[a, b]``, ``{x: 1}``).
An unknown ``LLM_PROXY_*`` name is an error that suggests the nearest valid
one; error messages name variables, never their values.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr

from extproc.config.model import Config
from extproc.errors import ConfigError

__all__ = [
    "IGNORED",
    "PREFIX",
    "EnvSetting",
    "all_env_names",
    "env_name",
    "env_settings",
]

PREFIX = "LLM_PROXY_"

#: Names that are not config keys: the proxy sets the first two for its own
#: children; ``LLM_PROXY_KEY`` is the client key docs/frontends.md gives Codex.
IGNORED = frozenset({"LLM_PROXY_WORKER_INDEX", "LLM_PROXY_SUPERVISOR_PID", "LLM_PROXY_KEY"})


@dataclass(frozen=True)
class EnvSetting:
    """One ``LLM_PROXY_*`` variable resolved to a config path and a value."""

    name: str
    #: The key path as written in YAML (aliases such as ``schema``, not ``schema_``).
    path: tuple[str, ...]
    value: Any


@dataclass(frozen=True)
class _Shape:
    """What a field holds: a section, a map by name, or a leaf value."""

    kind: Literal["model", "map", "leaf"]
    model: type[BaseModel] | None = None
    item: Any = None
    #: A leaf read verbatim (str, SecretStr, a choice of strings).
    text: bool = False
    nullable: bool = False


def _shape(annotation: Any) -> _Shape:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _shape(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(get_args(annotation))
        if len(args) == 1:
            inner = _shape(args[0])
            return _Shape(
                inner.kind, inner.model, inner.item, inner.text, nullable or inner.nullable
            )
        text = all(_shape(a).text for a in args)
        return _Shape("leaf", text=text, nullable=nullable)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _Shape("model", model=annotation)
    if origin is dict:
        return _Shape("map", item=get_args(annotation)[1])
    if origin is Literal:
        return _Shape("leaf", text=all(isinstance(a, str) for a in get_args(annotation)))
    return _Shape("leaf", text=annotation in (str, SecretStr))


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """YAML key -> annotation (the alias when a field has one)."""
    return {(info.alias or name): info.annotation for name, info in model.model_fields.items()}


def env_name(path: Iterable[str]) -> str:
    """``("sessions", "enabled")`` -> ``LLM_PROXY_SESSIONS__ENABLED``."""
    return PREFIX + "__".join(part.upper() for part in path)


def all_env_names(model: type[BaseModel] = Config) -> list[str]:
    """Every variable name, with ``<NAME>`` for a map's key (for docs and suggestions)."""
    names: list[str] = []

    def walk(shape: _Shape, path: tuple[str, ...]) -> None:
        if path:
            names.append(env_name(path))
        if shape.kind == "model" and shape.model is not None:
            for key, annotation in _fields(shape.model).items():
                walk(_shape(annotation), (*path, key))
        elif shape.kind == "map":
            inner = _shape(shape.item)
            if inner.kind != "leaf":
                walk(inner, (*path, "<name>"))

    walk(_Shape("model", model=model), ())
    return names


def env_settings(
    env: Mapping[str, str],
    model: type[BaseModel] = Config,
    ignore: Iterable[str] = (),
) -> list[EnvSetting]:
    """The ``LLM_PROXY_*`` variables of ``env`` as config settings, shallowest first.

    ``ignore``: more names that are not config keys (e.g. those the config
    file reads through ``${NAME}``).
    """
    skip = IGNORED | set(ignore)
    out: list[EnvSetting] = []
    for name in sorted(env):
        if not name.startswith(PREFIX) or name in skip:
            continue
        path, shape = _resolve(name, model)
        out.append(EnvSetting(name, path, _value(name, env[name], shape)))
    out.sort(key=lambda s: len(s.path))
    return out


def _resolve(name: str, model: type[BaseModel]) -> tuple[tuple[str, ...], _Shape]:
    segments = [s.lower() for s in name[len(PREFIX) :].split("__")]
    shape = _Shape("model", model=model)
    path: list[str] = []
    for segment in segments:
        if not segment:
            raise _unknown(name, path, shape, "an empty segment")
        if shape.kind == "model" and shape.model is not None:
            fields = _fields(shape.model)
            if segment not in fields:
                raise _unknown(name, path, shape, f"no key {segment!r}")
            shape = _shape(fields[segment])
        elif shape.kind == "map":
            shape = _shape(shape.item)
        else:
            raise _unknown(name, path, shape, f"{'.'.join(path)} has no keys below it")
        path.append(segment)
    if not path:
        raise _unknown(name, path, shape, "no key")
    return tuple(path), shape


def _unknown(name: str, path: list[str], shape: _Shape, why: str) -> ConfigError:
    here: list[str] = []
    if shape.kind == "model" and shape.model is not None:
        here = [env_name([*path, key]) for key in _fields(shape.model)]
    suggestions = difflib.get_close_matches(name, here + all_env_names(), n=1, cutoff=0.6)
    hint = f"; did you mean {suggestions[0]}?" if suggestions else ""
    return ConfigError(
        f"environment variable {name} is not a config key ({why}){hint} "
        "(names: LLM_PROXY_<KEY>, LLM_PROXY_<SECTION>__<KEY>; docs/configuration.md)"
    )


def _value(name: str, raw: str, shape: _Shape) -> Any:
    if shape.kind == "leaf" and shape.text:
        return None if raw == "" and shape.nullable else raw
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        # The value may be a secret: the error names the variable only.
        raise ConfigError(
            f"environment variable {name}: its value is not valid YAML "
            "(quote a string, write lists as [a, b] and maps as {k: v})"
        ) from None
