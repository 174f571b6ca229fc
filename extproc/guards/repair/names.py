"""Name matching for tools and properties: exact first, then one unique near miss.

Tool names (:func:`repair_tool_name`) are compared ignoring case and treating
``-`` and ``_`` as the same character, after trimming whitespace and a leaked
``functions.`` namespace prefix (OpenAI-style models sometimes write
``functions.read_file``). Property names (:func:`property_key`) are compared
more loosely: case, ``-``, ``_`` and spaces are ignored, so ``filePath``,
``file_path``, ``FILE-PATH`` and ``FilePath`` are the same property.

A near miss counts only when it is unique: two declared tools (or schema
properties) with the same comparison key make every near miss of that key
ambiguous, and ambiguity is never guessed away.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

#: Namespace prefixes models put before a function name by mistake.
_LEAKED_PREFIXES = ("functions.", "function.", "tools.")


def tool_key(name: str) -> str:
    """The comparison key of a tool name: case-insensitive, ``-`` equals ``_``."""
    return name.strip().lower().replace("-", "_")


def property_key(name: str) -> str:
    """The comparison key of a property name: case, ``-``, ``_`` and spaces ignored."""
    return "".join(ch for ch in name.lower() if ch not in "-_ ")


class ToolNames:
    """Declared tool names, indexed for :meth:`resolve` (build once per request)."""

    __slots__ = ("_by_key", "_names")

    def __init__(self, names: Iterable[str]) -> None:
        self._names = frozenset(names)
        by_key: dict[str, list[str]] = {}
        for name in sorted(self._names):
            by_key.setdefault(tool_key(name), []).append(name)
        self._by_key = by_key

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def resolve(self, name: str) -> str | None:
        """The declared tool ``name`` means, or ``None`` (unknown or ambiguous)."""
        if name in self._names:
            return name
        stripped = name.strip()
        spellings = [stripped]
        spellings.extend(
            stripped[len(prefix) :] for prefix in _LEAKED_PREFIXES if stripped.startswith(prefix)
        )
        for spelling in spellings:
            if spelling in self._names:
                return spelling
        for spelling in spellings:
            matches = self._by_key.get(tool_key(spelling), ())
            if len(matches) == 1:
                return matches[0]
            if matches:
                return None
        return None


def repair_tool_name(name: str, tools: Collection[str]) -> str | None:
    """The declared tool a model-written ``name`` means, or ``None``.

    Exact match first; otherwise the unique tool whose name equals ``name``
    ignoring case and ``-``/``_`` (after trimming whitespace and a leaked
    ``functions.`` prefix). No match, or several, gives ``None``.
    """
    if name in tools:
        return name
    return ToolNames(tools).resolve(name)
