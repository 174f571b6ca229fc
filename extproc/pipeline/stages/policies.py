"""Per-client-key policies: which models a key may use, which stages are off for it."""

from __future__ import annotations

from collections.abc import Mapping

from extproc.config.safety import KeyPolicyConfig
from extproc.pipeline.context import RequestContext
from extproc.safety.tool_access import compile_globs, matches_glob

__all__ = ["KeyPolicies"]


#: Session settings (in-chat ``!/set(...)``) that turn a stage off for the session.
SESSION_TOGGLES = {
    "redaction": "redaction",
    "commands": "dangerous-commands",
    "loop_detection": "loop-detection",
}
#: Of those, the ones that lower protection (multi-user mode may forbid them).
SAFETY_TOGGLES = frozenset({"redaction", "commands"})


class KeyPolicies:
    """Looks up a request's client key policy (by key id) once per request.

    A stage is off for a request when the key's policy turns it off, or when
    the session's settings do (``!/set(redaction=off)``; in multi-user mode
    only where ``interactive.allow_safety_toggles`` lets clients lower their
    protection).
    """

    def __init__(
        self, policies: Mapping[str, KeyPolicyConfig], *, safety_toggles: bool = True
    ) -> None:
        self._safety_toggles = safety_toggles
        self._disabled = {key: frozenset(p.disable) for key, p in policies.items() if p.disable}
        self._models = {key: compile_globs(p.models) for key, p in policies.items() if p.models}

    def disabled(self, ctx: RequestContext, stage: str) -> bool:
        """The stage is turned off for this request's client key, or by its session."""
        session = ctx.session
        if session is not None and session.state is not None:
            setting = SESSION_TOGGLES.get(stage)
            if (
                setting is not None
                and session.state.settings.get(setting) is False
                and (self._safety_toggles or stage not in SAFETY_TOGGLES)
            ):
                return True
        if not self._disabled:
            return False
        key = ctx.client_key_id
        return key is not None and stage in self._disabled.get(key, ())

    def model_allowed(self, ctx: RequestContext, model: str) -> bool:
        if not self._models:
            return True
        key = ctx.client_key_id
        pattern = self._models.get(key) if key is not None else None
        return pattern is None or matches_glob(pattern, model)
