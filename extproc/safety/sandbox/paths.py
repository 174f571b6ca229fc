"""The paths a tool call writes, moves or deletes, in every agent dialect.

Editor tools (argument shapes as the agents define them):

* Claude Code ``Write``, ``Edit``, ``MultiEdit``: ``file_path``; ``NotebookEdit``:
  ``notebook_path``;
* Codex ``apply_patch``: the patch in ``input`` (freeform tool), ``patch`` or ``command``
  (raw text that is not JSON arrives so), or an argv
  ``command: ["apply_patch", "*** Begin Patch ..."]``; its ``*** Add File:``,
  ``*** Update File:``, ``*** Delete File:`` and ``*** Move to:`` paths;
* Gemini CLI ``write_file`` and ``replace``: ``file_path`` (older versions ``path``);
* Cline / Roo ``write_to_file``, ``replace_in_file``, ``apply_diff``, ``insert_content``,
  ``search_and_replace``: ``path``;
* any tool whose name says it writes (write, edit, create, delete, remove, move, rename,
  patch, save, append, insert, replace, mkdir, touch, copy) and that has a ``path``,
  ``file_path``, ``filepath``, ``filename``, ``notebook_path``, ``target``,
  ``destination``, ``new_path``, ``old_path`` (or, to move or rename, ``source``)
  argument, a string or a list of strings. Without one, a generic tool is not
  taken to write files (``create_issue`` is not a file write).

Shell tools (:func:`extproc.safety.commands.extract.commands_in_tool_call`) write what
:mod:`extproc.safety.sandbox.shell` finds, from the ``workdir``/``directory``/``cwd``
argument when there is one.

Paths come back as written (``~/x``, ``$HOME/x``, ``../x``, ``C:\\x``); resolving them
is :mod:`extproc.safety.sandbox.policy`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extproc.safety.commands.extract import commands_in_tool_call
from extproc.safety.sandbox.patch import patch_paths
from extproc.safety.sandbox.shell import ShellWrites, shell_writes

__all__ = ["WriteTargets", "paths_written"]


@dataclass(frozen=True)
class WriteTargets:
    """What a tool call writes."""

    #: Paths written, moved or deleted, as written (relative ones relative to the agent's
    #: directory, or joined to the ``cd`` or ``workdir`` they run in).
    paths: tuple[str, ...] = ()
    #: Something is written but (some of) its targets could not be determined.
    unparsed: bool = False
    #: What could not be determined (``$OUT/file``, ``$(mktemp)``), for messages.
    unresolved: tuple[str, ...] = ()


_FILE_PATH = ("file_path",)
_PATH = ("path",)
_EDITORS: dict[str, tuple[str, ...]] = {
    "Write": _FILE_PATH,
    "Edit": _FILE_PATH,
    "MultiEdit": _FILE_PATH,
    "NotebookEdit": ("notebook_path",),
    "write_file": ("file_path", "path"),
    "replace": ("file_path", "path"),
    "write_to_file": _PATH,
    "replace_in_file": _PATH,
    "apply_diff": _PATH,
    "insert_content": _PATH,
    "search_and_replace": _PATH,
}
_PATCH_TOOLS = frozenset({"apply_patch", "applypatch"})
_WRITING_WORDS = (
    "write",
    "edit",
    "create",
    "delete",
    "remove",
    "move",
    "rename",
    "patch",
    "save",
    "append",
    "insert",
    "replace",
    "mkdir",
    "touch",
    "copy",
)
_PATH_KEYS = (
    "path",
    "paths",
    "file_path",
    "filepath",
    "filename",
    "notebook_path",
    "target",
    "destination",
    "new_path",
    "old_path",
)
_MOVE_KEYS = ("source",)
_WORKDIR_KEYS = ("workdir", "directory", "cwd", "working_directory")


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return None


def _base_name(tool_name: str) -> str:
    """``mcp__fs__write_file`` -> ``write_file``: MCP tools are prefixed by their server."""
    for separator in ("__", "."):
        if separator in tool_name:
            tool_name = tool_name.rsplit(separator, 1)[1]
    return tool_name


def paths_written(tool_name: str, arguments: Mapping[str, Any]) -> WriteTargets:
    """The paths the tool call ``tool_name(arguments)`` writes, moves or deletes."""
    name = _base_name(tool_name)
    paths: list[str] = []
    unparsed = False
    keys = _EDITORS.get(name)
    if keys is not None:
        found = [path for key in keys for path in _strings(arguments.get(key)) or []]
        paths.extend(found)
        unparsed = not found
    elif name in _PATCH_TOOLS and not isinstance(arguments.get("command"), list):
        patch = next(
            (
                v
                for key in ("input", "patch", "command")
                if isinstance(v := arguments.get(key), str)
            ),
            None,
        )
        found = patch_paths(patch) if patch is not None else []
        paths.extend(found)
        unparsed = not found
    else:
        lowered = name.lower()
        if any(word in lowered for word in _WRITING_WORDS):
            keys = _PATH_KEYS + (_MOVE_KEYS if "move" in lowered or "rename" in lowered else ())
            for key in keys:
                paths.extend(_strings(arguments.get(key)) or [])
    unresolved: list[str] = []
    commands = commands_in_tool_call(tool_name, arguments)
    if commands:
        workdir = next(
            (value for key in _WORKDIR_KEYS if isinstance(value := arguments.get(key), str)),
            None,
        )
        writes: ShellWrites = shell_writes(commands, workdir or None)
        paths.extend(writes.paths)
        unresolved.extend(writes.unresolved)
    return WriteTargets(
        paths=tuple(paths),
        unparsed=unparsed or bool(unresolved),
        unresolved=tuple(unresolved),
    )
