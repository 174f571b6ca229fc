"""Dangerous shell commands in agent tool calls: normalise, then match rules.

* :func:`normalize` / :func:`parse`: command text -> the simple commands it
  would run (wrappers such as ``sudo``, ``bash -c``, ``env`` unwrapped,
  quoting and obfuscation undone);
* :data:`BUILTIN_RULES` / :class:`CommandRule`: what is dangerous, as data;
* :class:`CommandGuard`: the check, :class:`Blocked` its answer;
* :func:`commands_in_tool_call`: the command texts a tool call would run.

Pure: no I/O, no gRPC, no Envoy.
"""

from extproc.safety.commands.extract import commands_in_tool_call
from extproc.safety.commands.guard import UNPARSEABLE, Blocked, CommandGuard
from extproc.safety.commands.lexer import MAX_DEPTH, MAX_LENGTH
from extproc.safety.commands.normalize import ParsedCommand, SimpleCommand, normalize, parse
from extproc.safety.commands.rules import BUILTIN_RULES, CommandRule

__all__ = [
    "BUILTIN_RULES",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "UNPARSEABLE",
    "Blocked",
    "CommandGuard",
    "CommandRule",
    "ParsedCommand",
    "SimpleCommand",
    "commands_in_tool_call",
    "normalize",
    "parse",
]
