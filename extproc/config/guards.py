"""Configuration of the agent guards (docs/agent-guards.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LoopDetectionConfig"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoopDetectionConfig(_Model):
    """Loop detection in answers (on by default): a model repeating itself is cut off.

    The thresholds are those of :class:`extproc.guards.loops.LoopConfig`.
    """

    enabled: bool = True
    #: Also watch the reasoning (thinking) text.
    reasoning: bool = True
    min_period: int = Field(8, ge=1, le=2000)
    max_period: int = Field(2000, ge=8, le=8000)
    min_repeats: int = Field(4, ge=2)
    long_period: int = Field(200, ge=8)
    long_min_repeats: int = Field(3, ge=2)
    min_chars: int = Field(400, ge=16)
    code_min_repeats: int = Field(6, ge=2)
    code_min_chars: int = Field(800, ge=16)
