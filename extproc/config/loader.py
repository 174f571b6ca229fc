"""Load a :class:`~extproc.config.model.Config` from YAML, environment and CLI.

Layers, lowest first: the schema's defaults, the config file, ``LLM_PROXY_*``
environment variables (:mod:`extproc.config.env`; a ``.env`` file's values
count as environment, :mod:`extproc.config.envfile`), CLI overrides. The
result is validated once; :func:`resolve_config` also says where each value
came from (:mod:`extproc.config.sources`).

* ``${VAR}`` and ``${VAR:-default}`` in YAML string values are replaced from
  the environment (after YAML parsing, so a value can never inject YAML);
  ``$${`` escapes a literal ``${``. A missing variable without a default is
  an error that names it.
* :func:`build_config` is the layer-less core: parsed YAML, ``${VAR}``
  substitution and dotted overrides, no ``LLM_PROXY_*`` mapping.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from extproc.config.env import env_settings
from extproc.config.model import Config
from extproc.config.sources import Provenance, set_path
from extproc.errors import ConfigError

__all__ = [
    "build_config",
    "env_references",
    "load_config",
    "load_yaml",
    "resolve_config",
    "substitute_env",
]

_ENV_RE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def substitute_env(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """Replace ``${VAR}`` references in every string of a parsed YAML tree."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            escaped, name, default = match.groups()
            if escaped:
                return match.group(0)[1:]
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{where or 'config'}: environment variable {name} is not set "
                f"(write ${{{name}:-}} to allow it to be empty)"
            )

        return _ENV_RE.sub(repl, value)
    if isinstance(value, dict):
        return {
            k: substitute_env(v, env, f"{where}.{k}" if where else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute_env(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def env_references(value: Any) -> set[str]:
    """The variable names ``${NAME}`` references in a parsed YAML tree read."""
    if isinstance(value, str):
        return {m.group(2) for m in _ENV_RE.finditer(value) if not m.group(1)}
    if isinstance(value, dict):
        return set().union(*(env_references(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(env_references(v) for v in value))
    return set()


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def build_config(
    raw: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Validate ``raw`` (parsed YAML) with env substitution and overrides."""
    data = substitute_env(dict(raw), os.environ if env is None else env)
    for key, value in (overrides or {}).items():
        if value is not None:
            # "routing.static_route": a nested key.
            set_path(data, tuple(key.split(".")), value)
    return _validate(data)


def resolve_config(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    dotenv: Mapping[str, str] | None = None,
    flags: Mapping[str, str] | None = None,
) -> tuple[Config, Provenance]:
    """The config from every layer, and where each value came from.

    ``env``: the process environment (default ``os.environ``); ``dotenv``: a
    ``.env`` file's variables, below ``env``; ``overrides``: dotted key ->
    value from CLI flags (``None``: not given); ``flags``: dotted key -> the
    flag that sets it, for provenance.
    """
    process = os.environ if env is None else env
    merged = {**(dotenv or {}), **process}
    provenance = Provenance()
    raw = load_yaml(path) if path is not None else {}
    where = f"{path}: " if path is not None else ""
    try:
        data = substitute_env(raw, merged)
        provenance.record_tree(data, "file")
        # A name the file reads through ${NAME} is the file's, not a config key.
        for setting in env_settings(merged, ignore=env_references(raw)):
            set_path(data, setting.path, setting.value)
            origin = "env" if setting.name in process else ".env"
            provenance.record(setting.path, f"{origin} {setting.name}")
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            key_path = tuple(key.split("."))
            set_path(data, key_path, value)
            flag = (flags or {}).get(key)
            provenance.record(key_path, f"cli {flag}" if flag else "cli")
        return _validate(data, provenance), provenance
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


def load_config(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    dotenv: Mapping[str, str] | None = None,
) -> Config:
    """The config from every layer (:func:`resolve_config` without provenance)."""
    return resolve_config(path, overrides, env, dotenv=dotenv)[0]


def _validate(data: Mapping[str, Any], provenance: Provenance | None = None) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, provenance)) from None


def _format_validation_error(exc: ValidationError, provenance: Provenance | None = None) -> str:
    """One ``key.path: message`` line per problem (never the value: it may be a secret)."""
    lines = ["invalid configuration:"]
    for err in exc.errors():
        path = tuple(str(p) for p in err["loc"])
        loc = ".".join(path) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        source = provenance.source_of(path) if provenance is not None and path else "file"
        where = "" if source in ("file", "default") else f" (from {source})"
        lines.append(f"  {loc}: {msg}{where}")
    return "\n".join(lines)
