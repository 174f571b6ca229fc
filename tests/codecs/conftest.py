"""Shared helpers for the codec tests: golden vectors and hypothesis settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

GOLDEN_ROOT = Path(__file__).parent / "golden"

#: Deterministic, quick property tests: a fixed seed per test, no example database.
PROPERTY_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def load_golden(protocol: str) -> dict[str, dict[str, Any]]:
    """Every golden vector of ``protocol``, by file stem."""
    vectors: dict[str, dict[str, Any]] = {}
    for path in sorted((GOLDEN_ROOT / protocol).glob("*.json")):
        vectors[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return vectors


def golden_params(vectors: dict[str, dict[str, Any]], kind: str) -> list[Any]:
    """``pytest.param`` per vector of ``kind``, with the file stem as id."""
    params = [pytest.param(v, id=name) for name, v in vectors.items() if v.get("kind") == kind]
    assert params, f"no golden vectors of kind {kind!r}"
    return params
