"""Tool-call arguments as the checks read them (parsed once per call, shared by the checks)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["tool_arguments"]


@functools.lru_cache(maxsize=256)
def tool_arguments(text: str) -> Mapping[str, Any]:
    """The arguments object of a tool call; text that is not a JSON object is a ``command``.

    An agent cannot run arguments that are not JSON as they are, but their
    text is still checked as if it were a command (fail closed). Cached: the
    command and sandbox checks of one call parse its arguments once; callers
    must not change the mapping.
    """
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"command": text}
    return value if isinstance(value, dict) else {"command": text}
