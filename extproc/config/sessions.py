"""Configuration of sessions and in-chat control (docs/sessions.md, docs/commands.md)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DedupConfig",
    "InteractiveConfig",
    "PresetRuleConfig",
    "ReasoningConfig",
    "ReasoningRuleConfig",
    "RewriteConfig",
    "SessionsConfig",
    "SteeringRuleConfig",
]

_KEY_ID = re.compile(r"key-[0-9a-f]{12}")
_HEADER = re.compile(r"[a-z0-9][a-z0-9_-]*")

ReasoningMode = Literal["passthrough", "coerce_to_content", "drop"]


def _seconds(value: object) -> object:
    from extproc.config.model import _parse_duration

    return _parse_duration(value)


Seconds = Annotated[float, BeforeValidator(_seconds)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionsConfig(_Model):
    """Per-conversation sessions (on by default)."""

    enabled: bool = True
    #: ``memory`` (default; lost on restart), ``sqlite`` (survives restarts) or
    #: ``redis`` (shared by replicas through ``state``; needs ``state.backend: redis``).
    #: Unset with ``state.backend: redis``, sessions are shared too (``redis``).
    store: Literal["memory", "sqlite", "redis"] = "memory"
    #: The SQLite file (``store: sqlite``).
    sqlite_path: str = "llm-proxy-sessions.db"
    #: A session unused this long is forgotten (sliding).
    ttl: Seconds = Field(6 * 3600.0, gt=0)
    max_sessions: int = Field(10000, ge=1)
    #: A further request header that carries the client's session id (lower case).
    header: str | None = None
    #: Without a client session id, group requests by key and first user message
    #: (off: each such request is its own session).
    heuristic: bool = False

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER.fullmatch(value):
            raise ValueError(f"sessions.header {value!r} must be a lower-case header name")
        return value


class PresetRuleConfig(_Model):
    """One model's reasoning settings for a preset (``!/max``, ``!/no-think`` ...)."""

    #: Globs on the routed model name; empty: every model.
    models: list[str] = Field(default_factory=list)
    effort: str | None = None
    budget_tokens: int | None = Field(None, ge=0)
    #: False turns reasoning off (Anthropic thinking disabled, Gemini budget 0).
    enabled: bool | None = None


def _default_presets() -> dict[str, list[PresetRuleConfig]]:
    return {
        "max": [PresetRuleConfig(effort="high", budget_tokens=32768, enabled=True)],
        "medium": [PresetRuleConfig(effort="medium", budget_tokens=8192, enabled=True)],
        "low": [PresetRuleConfig(effort="low", budget_tokens=1024, enabled=True)],
        "no-think": [PresetRuleConfig(enabled=False)],
    }


class InteractiveConfig(_Model):
    """In-chat commands (``!/hello``, ``!/set(model=...)``): on by default."""

    enabled: bool = True
    prefix: str = Field("!/", min_length=1, max_length=8)
    #: Reasoning presets: name -> rules (first rule whose models match wins).
    presets: dict[str, list[PresetRuleConfig]] = Field(default_factory=_default_presets)
    #: In multi-user mode, may a client turn safety stages (redaction, dangerous
    #: commands) off for its session? Single-user mode always may.
    allow_safety_toggles: bool = False

    @field_validator("prefix")
    @classmethod
    def _no_space(cls, value: str) -> str:
        if any(c.isspace() or c.isalnum() or c in "`\\" for c in value):
            raise ValueError("interactive.prefix must be punctuation without spaces, e.g. '!/'")
        return value

    @field_validator("presets")
    @classmethod
    def _preset_names(
        cls, presets: dict[str, list[PresetRuleConfig]]
    ) -> dict[str, list[PresetRuleConfig]]:
        for name in presets:
            if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
                raise ValueError(f"preset name {name!r}: lower-case letters, digits and '-'")
        return presets


class RewriteConfig(_Model):
    """A text rewrite of the system prompt, user prompts or model replies."""

    id: str = Field(min_length=1)
    target: Literal["system", "user", "reply"]
    action: Literal["replace", "prepend", "append"] = "replace"
    #: Literal text to find (replace).
    find: str | None = None
    #: RE2 pattern to find (replace); linear time, no backreferences.
    pattern: str | None = None
    replacement: str = ""
    #: The text to prepend or append.
    text: str = ""
    #: The longest text a pattern can match (bounds the stream hold).
    max_match: int = Field(256, ge=1, le=4096)
    #: Globs on the model name, client key ids, User-Agent globs; empty: all.
    models: list[str] = Field(default_factory=list)
    keys: list[str] = Field(default_factory=list)
    agents: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> RewriteConfig:
        if self.action == "replace" and (self.find is None) == (self.pattern is None):
            raise ValueError(f"rewrite {self.id!r}: replace needs exactly one of find, pattern")
        if self.action != "replace" and (self.find or self.pattern or not self.text):
            raise ValueError(f"rewrite {self.id!r}: {self.action} takes text only")
        for key in self.keys:
            if not _KEY_ID.fullmatch(key):
                raise ValueError(f"{key!r} is not a key id ('key-' and 12 hex digits)")
        return self


class SteeringRuleConfig(_Model):
    """A tool call that is swallowed once per session with advice to the agent."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    #: RE2 pattern searched in the shell command of a tool call (or its arguments).
    trigger: str = Field(min_length=1)
    #: Globs on the tool name; empty: every tool.
    tools: list[str] = Field(default_factory=list)
    #: What the agent is told instead of running the call.
    message: str = Field(min_length=1)
    #: A repeat within this window goes through (the agent insisted).
    window: Seconds = Field(600.0, gt=0)


class ReasoningRuleConfig(_Model):
    """The reasoning mode for clients whose User-Agent matches."""

    agents: list[str] = Field(min_length=1)
    mode: ReasoningMode


class ReasoningConfig(_Model):
    """What happens to reasoning from the backend, and to ``<think>`` tags in text."""

    #: Without a header or a matching rule.
    mode: ReasoningMode = "passthrough"
    rules: list[ReasoningRuleConfig] = Field(default_factory=list)
    #: ``<think>…</think>`` in text: kept as text, made reasoning parts, or dropped.
    think_tags: Literal["keep", "reasoning", "drop"] = "keep"


class DedupConfig(_Model):
    """Refuse an identical request of the same session while the first is in flight."""

    enabled: bool = True
    window: Seconds = Field(3.0, gt=0, le=600)
    max_entries: int = Field(10000, ge=1)
