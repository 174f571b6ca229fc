"""The effective config as YAML, secrets masked, each value with its source.

Every leaf is one line ending in a comment that says where it came from
(``# default``, ``# from file``, ``# from env LLM_PROXY_PORT``,
``# from .env LLM_PROXY_PORT``, ``# from cli --port``); lists and empty
maps are written inline. The output is valid YAML (comments aside, the
config itself with secrets replaced by ``**********``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from extproc.config.model import Config
from extproc.config.sources import DEFAULT, Provenance

__all__ = ["MASK", "mask_secrets", "render_config"]

MASK = "**********"

_SECRET_NAME = re.compile(r"key|password|passwd|token|secret", re.IGNORECASE)


def mask_secrets(value: Any, name: str = "") -> Any:
    """``value`` with secrets masked: strings under a secret-looking name, URL passwords.

    SecretStr fields are already masked by pydantic's dump.
    """
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, name) for v in value]
    if isinstance(value, str):
        if value and _SECRET_NAME.search(name):
            return MASK
        return _mask_url(value)
    return value


def _mask_url(value: str) -> str:
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return value
    if not password:
        return value
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}"))


def render_config(config: Config, provenance: Provenance, header: str = "") -> str:
    """The YAML text of ``config``, masked, one source comment per leaf."""
    data = mask_secrets(config.model_dump(mode="json", by_alias=True))
    lines = [f"# {line}" for line in header.splitlines()]
    _render(data, (), 0, provenance, lines)
    return "\n".join(lines) + "\n"


def _render(
    data: dict[str, Any],
    path: tuple[str, ...],
    indent: int,
    provenance: Provenance,
    lines: list[str],
) -> None:
    pad = " " * indent
    for key, value in data.items():
        here = (*path, str(key))
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{_inline(key)}:")
            _render(value, here, indent + 2, provenance, lines)
            continue
        source = provenance.source_of(here)
        comment = source if source == DEFAULT else f"from {source}"
        lines.append(f"{pad}{_inline(key)}: {_inline(value)}  # {comment}")


def _inline(value: Any) -> str:
    """One line of YAML flow for a scalar, list or mapping."""
    text = yaml.safe_dump(
        value, default_flow_style=True, width=10**9, allow_unicode=True, sort_keys=False
    )
    return text.removesuffix("\n").removesuffix("\n...").strip()
