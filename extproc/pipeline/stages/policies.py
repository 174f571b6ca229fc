"""Per-client-key policies: which models a key may use, which stages are off for it."""

from __future__ import annotations

from collections.abc import Mapping

import re2

from extproc.config.safety import KeyPolicyConfig
from extproc.pipeline.context import RequestContext
from extproc.safety.tool_access import glob_to_regex

__all__ = ["KeyPolicies"]


class KeyPolicies:
    """Looks up a request's client key policy (by key id) once per request."""

    def __init__(self, policies: Mapping[str, KeyPolicyConfig]) -> None:
        self._disabled = {key: frozenset(p.disable) for key, p in policies.items() if p.disable}
        self._models = {
            key: re2.compile("(?is)" + "|".join(f"(?:{glob_to_regex(g)})" for g in p.models))
            for key, p in policies.items()
            if p.models
        }

    def disabled(self, ctx: RequestContext, stage: str) -> bool:
        """The stage is turned off for this request's client key."""
        if not self._disabled:
            return False
        key = ctx.client_key_id
        return key is not None and stage in self._disabled.get(key, ())

    def model_allowed(self, ctx: RequestContext, model: str) -> bool:
        if not self._models:
            return True
        key = ctx.client_key_id
        pattern = self._models.get(key) if key is not None else None
        return pattern is None or pattern.fullmatch(model) is not None
