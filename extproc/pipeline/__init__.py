"""The request pipeline: ordered stages over the canonical model (see stage.py)."""

from extproc.pipeline.answer import AnswerChain, AnswerFilter, Emit, EndAnswer, StageFailed
from extproc.pipeline.context import RequestContext
from extproc.pipeline.runner import Pipeline
from extproc.pipeline.stage import Reject, RequestOutcome, Respond, Stage
from extproc.pipeline.toolgate import Block, Rewrite, ToolCallGate, ToolCheck, ToolVerdict

__all__ = [
    "AnswerChain",
    "AnswerFilter",
    "Block",
    "Emit",
    "EndAnswer",
    "Pipeline",
    "Reject",
    "RequestContext",
    "RequestOutcome",
    "Respond",
    "Rewrite",
    "Stage",
    "StageFailed",
    "ToolCallGate",
    "ToolCheck",
    "ToolVerdict",
]
