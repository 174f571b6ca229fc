"""Configuration sections of the agent safety stages (docs/safety.md)."""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AuthConfig",
    "CommandRuleConfig",
    "CommandsConfig",
    "KeyPolicyConfig",
    "LockoutConfig",
    "PipelineConfig",
    "RedactionConfig",
    "SandboxConfig",
    "SecretPatternConfig",
    "ToolAccessConfig",
    "ToolRuleConfig",
]

StageName = Literal[
    "tool_repair",
    "redaction",
    "tool_access",
    "commands",
    "sandbox",
    "steering",
    "rewrites",
    "reasoning",
    "loop_detection",
    "tool_loops",
    "compression",
    "empty_answers",
]
#: The configurable stages, in their default order (the order of ``StageName``).
STAGE_NAMES: tuple[StageName, ...] = get_args(StageName)
_KEY_ID = re.compile(r"key-[0-9a-f]{12}")


def _seconds(value: object) -> object:
    from extproc.config.model import _parse_duration

    return _parse_duration(value)


Seconds = Annotated[float, BeforeValidator(_seconds)]


def _size(value: object) -> object:
    from extproc.config.model import _parse_size

    return _parse_size(value)


#: A byte count: ``4194304`` or ``4MiB``.
Size = Annotated[int, BeforeValidator(_size)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretPatternConfig(_Model):
    """An extra secret format (RE2 syntax: linear time, no backreferences)."""

    id: str = Field(min_length=1)
    #: Names the secret in its placeholder (``[REDACTED:<kind>:…]``).
    kind: str = Field("secret", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    pattern: str = Field(min_length=1)
    #: The capture group that is the secret (0: the whole match).
    group: int = Field(0, ge=0)


class RedactionConfig(_Model):
    """Secret redaction, both directions (on by default)."""

    enabled: bool = True
    #: What the model reads: system, user, assistant and tool text, tool calls and results.
    requests: bool = True
    #: What the model writes: text, reasoning and tool-call arguments, JSON and streamed.
    answers: bool = True
    patterns: list[SecretPatternConfig] = Field(default_factory=list)
    #: RE2 patterns: a secret whose text fully matches one is left alone.
    allow: list[str] = Field(default_factory=list)
    #: Built-in rule ids to turn off.
    disable_rules: list[str] = Field(default_factory=list)


class CommandRuleConfig(_Model):
    """An extra dangerous-command rule, applied to each normalised simple command."""

    id: str = Field(min_length=1)
    #: RE2 pattern on the normalised command (``git reset --hard HEAD``), from its start.
    pattern: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    suggestion: str = ""
    #: RE2 pattern that exempts a match.
    unless: str | None = None


class CommandsConfig(_Model):
    """Dangerous-command protection for tool calls that run shell commands (on by default)."""

    enabled: bool = True
    #: ``steer``: swallow the call and tell the agent why (finish reason stop);
    #: ``error``: end the answer with a 403 error in the client's dialect.
    action: Literal["steer", "error"] = "steer"
    add_rules: list[CommandRuleConfig] = Field(default_factory=list)
    disable_rules: list[str] = Field(default_factory=list)
    #: Block commands that cannot be parsed (over-long, unbalanced nesting).
    strict: bool = False


class ToolRuleConfig(_Model):
    """Allow/deny tool names (globs) for some models, client keys and agents."""

    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    #: Globs on the model name; empty: every model.
    models: list[str] = Field(default_factory=list)
    #: Client key ids (``key-`` + 12 hex); empty: every client.
    keys: list[str] = Field(default_factory=list)
    #: Globs on the User-Agent (case-insensitive), e.g. ``claude-cli/*``; empty: every agent.
    agents: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _does_something(self) -> ToolRuleConfig:
        if not self.allow and not self.deny:
            raise ValueError("a tool_access rule needs allow or deny patterns")
        return self

    @field_validator("keys")
    @classmethod
    def _key_ids(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not _KEY_ID.fullmatch(key):
                raise ValueError(f"{key!r} is not a key id ('key-' and 12 hex digits)")
        return keys


class ToolAccessConfig(_Model):
    """Tool access control: disallowed tools vanish from requests and answers."""

    rules: list[ToolRuleConfig] = Field(default_factory=list)
    #: ``steer``: a call to a disallowed tool is swallowed with a note; ``error``: 403.
    action: Literal["steer", "error"] = "steer"


class SandboxConfig(_Model):
    """File sandbox for tool calls that write, move or delete files (off by default)."""

    enabled: bool = False
    #: Directories writes may go to; relative tool paths resolve against the first.
    roots: list[str] = Field(default_factory=list)
    #: The home directory ``~`` and ``$HOME`` stand for.
    home: str | None = None
    #: Block writes whose targets cannot be determined.
    strict: bool = False
    action: Literal["steer", "error"] = "steer"

    @field_validator("roots")
    @classmethod
    def _absolute(cls, roots: list[str]) -> list[str]:
        for root in roots:
            if not (root.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", root)):
                raise ValueError(f"sandbox root {root!r} must be an absolute path")
        return roots


class LockoutConfig(_Model):
    """Brute-force lockout of failed proxy-key attempts (multi-user mode)."""

    enabled: bool = True
    #: Consecutive failures before a lockout.
    threshold: int = Field(5, ge=1)
    #: The first lockout; each further failure doubles it, up to ``max``.
    base: Seconds = 1.0
    max: Seconds = 3600.0


class AuthConfig(_Model):
    lockout: LockoutConfig = Field(default_factory=LockoutConfig)
    #: Proxies in front of Envoy whose ``x-forwarded-for`` entries are trusted
    #: (Envoy's ``xff_num_trusted_hops``); 0: the TCP peer is the client.
    trusted_hops: int = Field(0, ge=0, le=10)


class KeyPolicyConfig(_Model):
    """What one client key may do (keyed by its key id)."""

    #: Globs of model names this key may ask for; empty: any.
    models: list[str] = Field(default_factory=list)
    #: Configurable stages turned off for this key (e.g. ``[sandbox]``).
    disable: list[StageName] = Field(default_factory=list)


class PipelineConfig(_Model):
    """Order of the configurable stages (access control runs first, routing last)."""

    order: list[StageName] = Field(default_factory=lambda: list(STAGE_NAMES))
    #: Extra stages: ``module:factory`` names; the factory gets the Config and returns a Stage.
    custom: list[str] = Field(default_factory=list)
    #: Held tool-call arguments are bounded by this many bytes (fail closed beyond).
    max_tool_call_bytes: Size = Field(4 * 1024 * 1024, ge=1024)

    @field_validator("order")
    @classmethod
    def _unique(cls, order: list[str]) -> list[str]:
        if len(set(order)) != len(order):
            raise ValueError("pipeline.order names a stage twice")
        return order

    @field_validator("custom")
    @classmethod
    def _factories(cls, custom: list[str]) -> list[str]:
        for name in custom:
            if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", name):
                raise ValueError(f"custom stage {name!r} must be 'module:factory'")
        return custom
