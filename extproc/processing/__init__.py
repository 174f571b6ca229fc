"""Per-request processing for both ext_proc roles, free of gRPC."""

from extproc.processing.actions import Action, Continue, Reply
from extproc.processing.app import App

__all__ = ["Action", "App", "Continue", "Reply"]
