"""Interactive commands typed into chat messages (``!/set(model=gpt-4o)``).

* :func:`scan`: a message -> its :class:`Command`\\ s, its malformed commands
  (:class:`CommandSyntaxError`) and the text without them (:class:`Scan`);
* :func:`strip_commands`: just the text without them;
* :func:`has_prefix`: the cheap test first.

Pure: no I/O, no gRPC, no Envoy.
"""

from extproc.interactive.parse import (
    DEFAULT_PREFIX,
    MAX_ARGS_CHARS,
    MAX_COMMANDS,
    MAX_NAME_CHARS,
    Command,
    CommandSyntaxError,
    Scan,
    has_prefix,
    scan,
    strip_commands,
)

__all__ = [
    "DEFAULT_PREFIX",
    "MAX_ARGS_CHARS",
    "MAX_COMMANDS",
    "MAX_NAME_CHARS",
    "Command",
    "CommandSyntaxError",
    "Scan",
    "has_prefix",
    "scan",
    "strip_commands",
]
