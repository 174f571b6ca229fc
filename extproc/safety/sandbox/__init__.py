"""File sandbox for agent tool calls: writes only below the allowed roots.

* :func:`paths_written`: what a tool call writes (editor tools and shell commands);
* :class:`Sandbox`: the check against the roots, :class:`Violation` its answer.

Pure: string logic only, no filesystem access, no gRPC, no Envoy.
"""

from extproc.safety.sandbox.paths import WriteTargets, paths_written
from extproc.safety.sandbox.policy import ALWAYS_ALLOWED, Sandbox, Violation
from extproc.safety.sandbox.resolve import Location, locate

__all__ = [
    "ALWAYS_ALLOWED",
    "Location",
    "Sandbox",
    "Violation",
    "WriteTargets",
    "locate",
    "paths_written",
]
