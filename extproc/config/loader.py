"""Load a :class:`~extproc.config.model.Config` from YAML, environment and CLI.

* ``${VAR}`` and ``${VAR:-default}`` in YAML string values are replaced from
  the environment (after YAML parsing, so a value can never inject YAML);
  ``$${`` escapes a literal ``${``. A missing variable without a default is
  an error that names it.
* CLI overrides are applied last, then the whole result is validated once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from extproc.config.model import Config
from extproc.errors import ConfigError

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
        if value is None:
            continue
        # "routing.static_route": a nested key.
        *parents, leaf = key.split(".")
        target = data
        for parent in parents:
            child = target.get(parent)
            target[parent] = child = dict(child) if isinstance(child, Mapping) else {}
            target = child
        target[leaf] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


def load_config(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    raw = load_yaml(path) if path is not None else {}
    try:
        return build_config(raw, overrides, env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def _format_validation_error(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)
