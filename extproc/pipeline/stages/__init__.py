"""The built-in stages."""

from extproc.pipeline.stages.access import AccessControlStage
from extproc.pipeline.stages.routing import RoutingStage

__all__ = ["AccessControlStage", "RoutingStage"]
