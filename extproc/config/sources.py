"""Where each config value came from: default, file, environment, ``.env`` or a flag.

Layers are applied in order (defaults < config file < environment < CLI flags);
a later layer that sets a key replaces what earlier ones said at that key and
below. :meth:`Provenance.source_of` answers for any key path by its nearest
recorded ancestor, and ``default`` when no layer touched it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT", "Provenance", "set_path"]

DEFAULT = "default"


@dataclass
class Provenance:
    """Key path -> the source that set it (``file``, ``env LLM_PROXY_PORT``, ``cli --port``)."""

    sources: dict[tuple[str, ...], str] = field(default_factory=dict)

    def record(self, path: tuple[str, ...], source: str) -> None:
        """``path`` was set by ``source``; whatever earlier layers set below it is gone."""
        depth = len(path)
        for known in [p for p in self.sources if p[:depth] == path]:
            del self.sources[known]
        self.sources[path] = source

    def record_tree(
        self, data: Mapping[str, Any], source: str, prefix: tuple[str, ...] = ()
    ) -> None:
        """Every leaf of a parsed YAML mapping (an empty mapping is a leaf)."""
        for key, value in data.items():
            path = (*prefix, str(key))
            if isinstance(value, Mapping) and value:
                self.record_tree(value, source, path)
            else:
                self.record(path, source)

    def source_of(self, path: tuple[str, ...]) -> str:
        for depth in range(len(path), 0, -1):
            found = self.sources.get(path[:depth])
            if found is not None:
                return found
        return DEFAULT


def set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value``, copying and creating mappings on the way."""
    *parents, leaf = path
    target = data
    for parent in parents:
        child = target.get(parent)
        target[parent] = child = dict(child) if isinstance(child, Mapping) else {}
        target = child
    target[leaf] = value
