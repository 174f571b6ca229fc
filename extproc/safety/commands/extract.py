"""The shell commands a tool call would run, whatever the agent's dialect.

Argument shapes (as the agents define their tools):

* Claude Code ``Bash``: ``{"command": "git status", "description": ..., "timeout": ...}``;
* Gemini CLI ``run_shell_command``: ``{"command": "...", "description": ..., "directory": ...}``;
* Codex ``shell``: ``{"command": ["bash", "-lc", "git status"], "workdir": ..., "timeout_ms": ...}``
  (an argv list; ``shell_command`` takes a string);
* Codex ``exec_command`` (unified exec): ``{"cmd": "git status", "workdir": ..., "shell": ...,
  "login": ...}``; ``write_stdin``: ``{"session_id": ..., "chars": "..."}`` types into a
  running shell, so ``chars`` is checked too;
* Codex ``local_shell`` (Responses API): ``{"action": {"type": "exec", "command": [...]}}``
  (or the action's fields at the top level);
* Cline / Roo ``execute_command``: ``{"command": "...", "requires_approval": ...}``;
* any other tool: a string or argv-list ``command``, ``cmd`` or ``script``, or a list of
  strings ``commands``.

A string that starts with ``*** Begin Patch`` is a Codex patch (a freeform
``apply_patch`` call whose raw text arrives as ``command``), not a shell command.

An argv list becomes one command text with :func:`shlex.join` (``["bash", "-lc",
"git reset --hard"]`` -> ``bash -lc 'git reset --hard'``; the normaliser unwraps the shell).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

__all__ = ["PATCH_START", "commands_in_tool_call"]

#: How a Codex ``apply_patch`` patch begins.
PATCH_START = "*** Begin Patch"

_KEYS = ("command", "cmd", "script")
#: Tools whose ``chars`` are typed into a running shell.
_STDIN_TOOLS = frozenset({"write_stdin"})
#: At most this many command texts per call (a list of commands is cut there).
_MAX_COMMANDS = 256


def _argv(items: list[Any]) -> str | None:
    words = [item if isinstance(item, str) else str(item) for item in items if _scalar(item)]
    if not words:
        return None
    if len(words) == 1:
        return words[0]  # a one-element argv is usually a whole command line
    return shlex.join(words)


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _command_text(value: Any) -> str | None:
    if isinstance(value, str):
        # A Codex patch (freeform apply_patch, its text passed on as is) is not shell.
        return value if value.strip() and not value.lstrip().startswith(PATCH_START) else None
    if isinstance(value, list):
        return _argv(value)
    return None


def commands_in_tool_call(name: str, arguments: Mapping[str, Any]) -> list[str]:
    """The command texts the tool call ``name(arguments)`` would run (empty: none)."""
    found: list[str] = []
    for key in _KEYS:
        text = _command_text(arguments.get(key))
        if text is not None:
            found.append(text)
    commands = arguments.get("commands")
    if isinstance(commands, list):
        if commands and all(isinstance(item, str) for item in commands):
            found.extend(item for item in commands[:_MAX_COMMANDS] if item.strip())
    else:
        text = _command_text(commands)
        if text is not None:
            found.append(text)
    action = arguments.get("action")
    if isinstance(action, Mapping):
        found.extend(commands_in_tool_call(name, action))
    if name in _STDIN_TOOLS:
        chars = arguments.get("chars")
        if isinstance(chars, str) and chars.strip():
            found.append(chars)
    return found[:_MAX_COMMANDS]
