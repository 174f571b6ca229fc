"""Every bench module imports and has its entry point (bench.guards once did not: it
imported a constant the compression stage no longer has, and nothing ran it)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench

MODULES = sorted(m.name for m in pkgutil.iter_modules(bench.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_bench_module_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    if f"python -m bench.{name}" in (module.__doc__ or ""):
        assert callable(getattr(module, "main", None)), f"bench.{name} documents no main()"
