"""Tool-call repair engines (pure): calls written as text, broken arguments, near-miss names.

* :func:`extract_text_calls` / :class:`TextCallSniffer` (:mod:`.text_calls`):
  tool calls a model wrote into its text, for the request's declared tools;
* :func:`repair_arguments` (:mod:`.arguments`): a real call's argument JSON,
  syntax repaired and checked against the tool's JSON schema;
* :func:`repair_tool_name` (:mod:`.names`): a near-miss tool name.
"""

from extproc.guards.repair.arguments import Repaired, repair_arguments
from extproc.guards.repair.model import TextCall, TextCalls
from extproc.guards.repair.names import repair_tool_name
from extproc.guards.repair.text_calls import (
    DEFAULT_MAX_HOLD,
    MAX_TEXT_BYTES,
    TextCallSniffer,
    extract_text_calls,
)

__all__ = [
    "DEFAULT_MAX_HOLD",
    "MAX_TEXT_BYTES",
    "Repaired",
    "TextCall",
    "TextCallSniffer",
    "TextCalls",
    "extract_text_calls",
    "repair_arguments",
    "repair_tool_name",
]
