"""Bash brace expansion (``a{b,c}d`` -> ``abd acd``), bounded.

Only comma lists are expanded (not sequences such as ``{1..3}``), nested groups
included; a word that would expand to more than ``MAX_BRACE_WORDS`` words, or that
holds more than that many ``{``, is not expanded (the caller decides what that means).
"""

from __future__ import annotations

__all__ = ["MAX_BRACE_WORDS", "expand_braces", "has_braces"]

MAX_BRACE_WORDS = 64


def has_braces(text: str) -> bool:
    """``text`` may hold a comma group (cheap test before :func:`expand_braces`)."""
    return "{" in text and "," in text and "}" in text


def expand_braces(text: str) -> list[str] | None:
    """The words ``text`` expands to (itself when it has no group); None beyond the bound."""
    if not has_braces(text):
        return [text]
    if text.count("{") > MAX_BRACE_WORDS:
        return None
    pending = [text]
    expanded: list[str] = []
    while pending:
        item = pending.pop()
        group = _first_group(item)
        if group is None:
            expanded.append(item)
        else:
            start, end, choices = group
            pending.extend(item[:start] + choice + item[end + 1 :] for choice in reversed(choices))
        if len(expanded) + len(pending) > MAX_BRACE_WORDS:
            return None
    return expanded


def _first_group(text: str) -> tuple[int, int, list[str]] | None:
    """The first ``{x,y}`` group: its start, end and alternatives (nested groups kept)."""
    start = text.find("{")
    while start >= 0:
        depth, current = 0, start + 1
        parts: list[str] = []
        for index in range(start, len(text)):
            char = text[index]
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    if parts:
                        parts.append(text[current:index])
                        return start, index, parts
                    break
            elif char == "," and depth == 1:
                parts.append(text[current:index])
                current = index + 1
        start = text.find("{", start + 1)
    return None
