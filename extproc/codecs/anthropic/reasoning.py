"""Reasoning controls -> Anthropic ``thinking`` / ``output_config.effort``.

Same protocol: exactly what the client sent (``thinking`` type from the ``thinking_type`` hint,
``budget_tokens``, ``display`` from ``include_thoughts``; ``output_config.effort`` from
``effort``).

Another protocol (a policy, not a provider fact; docs/translation.md):

* ``enabled=False``, effort ``none`` or a budget of 0 -> ``{"type": "disabled"}``.
* A budget (at least 1024) -> ``{"type": "enabled", "budget_tokens": budget}``; a negative
  ("dynamic") budget counts as none.
* Otherwise an effort maps to a budget: ``minimal``/``low`` 1024, ``medium`` 4096,
  ``high``/``xhigh``/``max`` 16384 (unknown levels: medium); ``enabled=True`` alone: medium.
* ``output_config.effort`` and ``display`` are never sent for another protocol (models
  without them would reject the request); ``summary``/``include_thoughts`` alone send nothing.
"""

from __future__ import annotations

from typing import Any

from extproc.canonical import CanonicalRequest
from extproc.codecs.anthropic.common import HINT_THINKING_TYPE

MIN_BUDGET = 1024
EFFORT_BUDGET = {
    "minimal": 1024,
    "low": 1024,
    "medium": 4096,
    "high": 16384,
    "xhigh": 16384,
    "max": 16384,
}
DEFAULT_BUDGET = EFFORT_BUDGET["medium"]


def same_protocol_thinking(req: CanonicalRequest) -> tuple[dict[str, Any] | None, str | None]:
    """``thinking`` and ``output_config.effort`` as an Anthropic client sent them."""
    reasoning = req.reasoning
    if reasoning is None:
        return None, None
    thinking: dict[str, Any] | None = None
    if reasoning.enabled is not None:
        if reasoning.enabled:
            thinking = {"type": req.hints.get(HINT_THINKING_TYPE, "enabled")}
            if reasoning.budget_tokens is not None:
                thinking["budget_tokens"] = reasoning.budget_tokens
        else:
            thinking = {"type": "disabled"}
        if reasoning.include_thoughts is not None:
            thinking["display"] = "summarized" if reasoning.include_thoughts else "omitted"
    return thinking, reasoning.effort


def foreign_thinking(req: CanonicalRequest) -> dict[str, Any] | None:
    """``thinking`` for a request from another protocol (see the module rules)."""
    reasoning = req.reasoning
    if reasoning is None:
        return None
    budget = reasoning.budget_tokens
    if reasoning.enabled is False or reasoning.effort == "none" or budget == 0:
        return {"type": "disabled"}
    if budget is not None and budget < 0:
        budget = None
    if budget is None and reasoning.effort is not None:
        budget = EFFORT_BUDGET.get(reasoning.effort, DEFAULT_BUDGET)
    if budget is None:
        if not reasoning.enabled:
            return None
        budget = DEFAULT_BUDGET
    return {"type": "enabled", "budget_tokens": max(budget, MIN_BUDGET)}
