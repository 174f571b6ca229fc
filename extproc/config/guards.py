"""Configuration of the agent guards (docs/agent-guards.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CompressionConfig",
    "EmptyAnswersConfig",
    "LoopDetectionConfig",
    "ToolLoopsConfig",
    "ToolRepairConfig",
]


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


class ToolLoopsConfig(_Model):
    """Tool-call loops in the history (on by default): steer, then refuse with 409.

    The same call (name, arguments, output) ``same_call`` times in a row, or the
    same failing output ``same_output`` times within the last ``window`` calls:
    the request goes up with a note telling the model it repeats itself; after
    ``refuse_after`` more repeats it is refused until the user speaks again.
    """

    enabled: bool = True
    same_call: int = Field(4, ge=2)
    same_output: int = Field(4, ge=2)
    window: int = Field(12, ge=2, le=200)
    refuse_after: int = Field(2, ge=0)


class ToolRepairConfig(_Model):
    """Tool-call repair (on by default): calls written as text, broken arguments."""

    enabled: bool = True
    #: Turn tool calls the model wrote as text into real calls.
    text_calls: bool = True
    #: Repair broken argument JSON and near-miss names against the tool's schema.
    arguments: bool = True
    #: The most text held while it might still become a call (released unchanged beyond).
    max_hold: int = Field(64 * 1024, ge=1024, le=1024 * 1024)


class CompressionConfig(_Model):
    """Context compression (off by default; per session ``!/set(compression=on)``)."""

    enabled: bool = False
    #: Requests smaller than this (estimated input tokens) are left alone.
    threshold_tokens: int = Field(8000, ge=0)
    #: Leave the newest tool result whole (the model is reading it now).
    keep_latest: bool = True
    #: Flags a bare ``pytest`` tool call gets (empty: leave pytest calls alone).
    pytest_flags: str = "-q -rfE"
    #: ``a && b`` becomes ``a; if ($?) { b }`` for agents on Windows PowerShell.
    powershell: bool = True


class EmptyAnswersConfig(_Model):
    """A 200 answer with no content and no tool call becomes a 502 ``empty_answer``."""

    enabled: bool = True
