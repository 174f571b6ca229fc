"""Tool-call arguments as the checks read them."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["tool_arguments"]


def tool_arguments(text: str) -> dict[str, Any]:
    """The arguments object of a tool call; text that is not a JSON object is a ``command``.

    An agent cannot run arguments that are not JSON as they are, but their
    text is still checked as if it were a command (fail closed).
    """
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"command": text}
    return value if isinstance(value, dict) else {"command": text}
