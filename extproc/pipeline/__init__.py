"""The request pipeline: ordered stages over the canonical model."""

from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Pipeline, Stage

__all__ = ["Pipeline", "RequestContext", "Stage"]
