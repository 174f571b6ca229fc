"""Reasoning presets (``!/max``, ``!/medium``, ``!/low``, ``!/no-think``): per-model settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from extproc.canonical import CanonicalRequest, Reasoning
from extproc.config.sessions import PresetRuleConfig
from extproc.safety.tool_access import compile_globs, matches_glob

__all__ = ["Presets"]


class Presets:
    """The configured presets; :meth:`apply` sets a request's reasoning for its model."""

    def __init__(self, presets: Mapping[str, Sequence[PresetRuleConfig]]) -> None:
        self._rules = {
            name: [(compile_globs(r.models) if r.models else None, r) for r in rules]
            for name, rules in presets.items()
        }

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._rules)

    def rule(self, name: str, model: str) -> PresetRuleConfig | None:
        for pattern, rule in self._rules.get(name, ()):
            if pattern is None or matches_glob(pattern, model):
                return rule
        return None

    def apply(self, name: str, model: str, request: CanonicalRequest) -> bool:
        """Set the request's reasoning from the preset's rule for ``model``; False: none matched."""
        rule = self.rule(name, model)
        if rule is None:
            return False
        reasoning = request.reasoning or Reasoning()
        if rule.enabled is False:
            request.reasoning = Reasoning(enabled=False, effort=rule.effort)
            return True
        if rule.effort is not None:
            reasoning.effort = rule.effort
        if rule.budget_tokens is not None:
            reasoning.budget_tokens = rule.budget_tokens
        if rule.enabled is not None:
            reasoning.enabled = rule.enabled
        request.reasoning = reasoning
        return True
