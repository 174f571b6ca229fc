"""Typed reads of optional JSON fields, failing as a 400 that names the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extproc.errors import InvalidRequest


def optional(body: Mapping[str, Any], key: str, kind: type) -> Any:
    """``body[key]`` if present and of ``kind`` (an integral float counts as int), else 400."""
    value = body.get(key)
    if value is None:
        return None
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidRequest(f"'{key}' must be of type {kind.__name__}", param=key)
    return value


def optional_number(body: Mapping[str, Any], key: str) -> float | None:
    """``body[key]`` as a float if present and numeric, else 400."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"'{key}' must be a number", param=key)
    return float(value)
