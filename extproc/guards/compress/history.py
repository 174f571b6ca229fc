"""compact_history: older tool results superseded or compressed, in place.

A tool result is *superseded* when a later result is of the same resource:

* a read of the same file: a read tool (``Read``, ``read_file``, ``view``,
  an editor tool's ``view`` command...) with the path in ``file_path``,
  ``path``, ``filename``, ``absolute_path`` or ``filePath``, or a shell
  command that is only ``cat <path>``. A whole-file read supersedes every
  earlier read of the file; a partial read (``offset``/``limit``,
  ``view_range``...) supersedes only the same partial read;
* a run of the same shell command (the identical command text, in the same
  working directory when the tool names one);
* the same search (a grep/glob/list tool with identical arguments).

A result marked as an error supersedes nothing (a read that failed, a run
that timed out: the older result is still the best there is). A superseded
result is replaced by one line, ``[proxy: superseded by a later read of PATH —
see below]`` (``run of `CMD```, ``search for `PATTERN` in PATH``); the newest
stays. The other results of shell commands and searches are compressed with
:func:`~extproc.guards.compress.output.compress_output` (the command known
from the call), and results of any other tool only when their content is
pytest, grep or diff output; file reads are never compressed (an edit needs
their exact text). With ``keep_latest`` (the default), the results after the
last assistant message — those the model has not seen yet — are left whole.

The messages are changed in place: a changed result is replaced in its
message's content list by a new part (parts are never mutated, so a part
shared with another structure is safe). The first text part's ``extra``
(e.g. ``cache_control``) is kept on the stub, so cache breakpoints stay put.
Idempotent: a second call changes nothing and reports zero.

Prompt caching: a stub or a compression changes an earlier message, so a
provider's prompt cache misses from there on, once. Superseding happens when
the newer result arrives (one miss at the older result); compressing happens
the turn after a result was new (a miss at that result, near the end).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

import msgspec

from extproc.canonical.model import (
    CanonicalRequest,
    Message,
    Part,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from extproc.canonical.tokens import estimate_tokens
from extproc.guards.compress.lines import marker
from extproc.guards.compress.output import compress_output
from extproc.safety.commands import commands_in_tool_call, parse

__all__ = ["CompactionReport", "compact_history"]

_READ_TOOLS = frozenset(
    {"read", "read_file", "readfile", "view", "view_file", "open_file", "file_read", "cat"}
)
#: Editor tools whose ``view`` command is a read (Anthropic's text editor tool).
_EDITOR_TOOLS = frozenset({"str_replace_editor", "str_replace_based_edit_tool", "edit_file"})
_PATH_KEYS = ("file_path", "path", "filename", "absolute_path", "filePath", "file")
_SEARCH_TOOLS = frozenset(
    {
        "grep",
        "glob",
        "search_file_content",
        "grep_search",
        "search_files",
        "grep_files",
        "find_files",
        "file_search",
        "list_dir",
        "list_directory",
        "list_files",
        "ls",
    }
)
_SHELL_TOOLS = frozenset(
    {
        "bash",
        "shell",
        "shell_command",
        "local_shell",
        "exec_command",
        "run_shell_command",
        "execute_command",
        "run_terminal_cmd",
        "run_command",
        "terminal",
        "powershell",
    }
)
_SHELL_WORDS = ("shell", "bash", "terminal", "powershell")
_PATTERN_KEYS = ("pattern", "regex", "query", "glob", "include", "file_pattern")
_WORKDIR_KEYS = ("workdir", "directory", "cwd", "working_directory")
_STRONG_KINDS = frozenset({"pytest", "grep", "diff"})
_LABEL_MAX = 120
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder(order="sorted")


@dataclass(slots=True)
class CompactionReport:
    """What :func:`compact_history` changed. Characters count the text of every
    tool result (before and after); tokens are estimated as
    :func:`~extproc.canonical.tokens.estimate_tokens` does (UTF-8 bytes / 4)."""

    stubbed: int = 0
    compressed: int = 0
    chars_before: int = 0
    chars_after: int = 0
    tokens_saved: int = 0

    @property
    def chars_saved(self) -> int:
        return self.chars_before - self.chars_after

    @property
    def changed(self) -> bool:
        return bool(self.stubbed or self.compressed)


@dataclass(frozen=True, slots=True)
class _Resource:
    key: tuple[str, ...]
    label: str
    #: The file a read reads (a whole-file read supersedes every read of it).
    read_path: str | None = None
    whole: bool = False
    #: Compress the results (shell commands and searches), with this command.
    compress: bool = False
    command: str | None = None


def _short(text: str) -> str:
    first = text.strip().split("\n", 1)[0]
    if len(first) > _LABEL_MAX or first != text.strip():
        return first[:_LABEL_MAX] + "…"
    return first


def _arguments(call: ToolCallPart) -> dict[str, Any]:
    try:
        value = _decoder.decode(call.arguments) if call.arguments else {}
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _canonical(value: Any) -> str:
    try:
        return _encoder.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def _norm_path(path: str, workdir: str | None = None) -> str:
    if workdir and not path.startswith(("/", "~")) and not (len(path) > 1 and path[1] == ":"):
        path = posixpath.join(workdir, path)
    while path.startswith("./"):
        path = path[2:]
    return path


def _read(path: str, rest: dict[str, Any]) -> _Resource:
    if rest:
        return _Resource(("read", path, _canonical(rest)), f"read of {_short(path)}", path)
    return _Resource(("read", path), f"read of {_short(path)}", path, whole=True)


def _cat_path(command: str) -> str | None:
    """The file of a command that is only ``cat <path>`` (errors to /dev/null allowed)."""
    sequence = parse(command).sequence
    if len(sequence) != 1:
        return None
    argv = list(sequence[0].argv)
    if argv[-2:] == ["2>", "/dev/null"]:
        argv = argv[:-2]
    if len(argv) == 2 and argv[0] == "cat" and not argv[1].startswith("-"):
        return argv[1]
    return None


def _resource(call: ToolCallPart) -> _Resource | None:
    name = call.name.lower()
    args = _arguments(call)
    path = next((v for k in _PATH_KEYS if isinstance(v := args.get(k), str) and v), None)
    if name in _READ_TOOLS or (name in _EDITOR_TOOLS and args.get("command") == "view"):
        if path is None:
            return None
        rest = {
            k: v
            for k, v in args.items()
            if k not in _PATH_KEYS and k not in ("command", "description") and v is not None
        }
        return _read(_norm_path(path), rest)
    if name in _SEARCH_TOOLS:
        pattern = next((v for k in _PATTERN_KEYS if isinstance(v := args.get(k), str)), None)
        label = f"search for `{_short(pattern)}`" if pattern else f"{name} call"
        if path:
            label += f" in {_short(path)}"
        return _Resource(("search", name, _canonical(args)), label, compress=True)
    if name == "write_stdin" or not (
        name in _SHELL_TOOLS or any(word in name for word in _SHELL_WORDS)
    ):
        return None
    commands = commands_in_tool_call(call.name, args)
    if len(commands) != 1:
        return None
    command = commands[0].strip()
    workdir = next((v for k in _WORKDIR_KEYS if isinstance(v := args.get(k), str)), "")
    cat = _cat_path(command)
    if cat is not None:
        return _read(_norm_path(cat, workdir), {})
    key = ("run", command, workdir)
    return _Resource(key, f"run of `{_short(command)}`", compress=True, command=command)


def _texts(part: ToolResultPart) -> int:
    return sum(len(item.text) for item in part.content if isinstance(item, TextPart))


def _stub(part: ToolResultPart, text: str) -> ToolResultPart | None:
    """``part`` with ``text`` as its whole content; None when it already is."""
    first = next((item for item in part.content if isinstance(item, TextPart)), None)
    if len(part.content) == 1 and first is not None and first.text == text:
        return None
    extra = first.extra if first is not None else None
    return msgspec.structs.replace(part, content=[TextPart(text=text, extra=extra)])


def _compress(part: ToolResultPart, resource: _Resource | None) -> ToolResultPart | None:
    """``part`` with its texts compressed; None when nothing changed."""
    if resource is not None and not resource.compress:
        return None
    command = resource.command if resource is not None else None
    content: list[TextPart | Any] = []
    changed = False
    for item in part.content:
        if isinstance(item, TextPart):
            result = compress_output(item.text, command=command)
            if result.text is not item.text and (
                resource is not None or result.kind in _STRONG_KINDS
            ):
                content.append(TextPart(text=result.text, extra=item.extra))
                changed = True
                continue
        content.append(item)
    return msgspec.structs.replace(part, content=content) if changed else None


def _estimate(texts: list[str]) -> int:
    if not texts:
        return 0
    parts: list[Part] = [TextPart(text=text) for text in texts]
    request = CanonicalRequest(protocol="-", model="-", messages=[Message("tool", parts)])
    return estimate_tokens(request)


def compact_history(messages: list[Message], *, keep_latest: bool = True) -> CompactionReport:
    """Stub superseded tool results and compress the others, in place (see the
    module docstring); the report says what changed."""
    report = CompactionReport()
    calls: dict[str, ToolCallPart] = {}
    results: list[tuple[int, int, ToolResultPart]] = []
    last_assistant = -1
    for index, message in enumerate(messages):
        if message.role == "assistant":
            last_assistant = index
        for position, part in enumerate(message.content):
            if isinstance(part, ToolCallPart):
                calls[part.id] = part
            elif isinstance(part, ToolResultPart):
                results.append((index, position, part))
    seen: set[tuple[str, ...]] = set()
    whole_reads: set[str] = set()
    before: list[str] = []
    after: list[str] = []
    for index, position, part in reversed(results):
        call = calls.get(part.tool_call_id)
        resource = _resource(call) if call is not None else None
        size = _texts(part)
        report.chars_before += size
        new: ToolResultPart | None = None
        superseded = False
        if resource is not None:
            superseded = resource.key in seen or resource.read_path in whole_reads
            if not part.is_error:  # a failed read or run replaces nothing
                seen.add(resource.key)
                if resource.whole and resource.read_path is not None:
                    whole_reads.add(resource.read_path)
        if superseded:
            assert resource is not None
            new = _stub(part, marker(f"superseded by a later {resource.label} — see below"))
            if new is not None:
                report.stubbed += 1
        elif not (keep_latest and index > last_assistant):
            new = _compress(part, resource)
            if new is not None:
                report.compressed += 1
        if new is None:
            report.chars_after += size
            continue
        report.chars_after += _texts(new)
        before.extend(item.text for item in part.content if isinstance(item, TextPart))
        after.extend(item.text for item in new.content if isinstance(item, TextPart))
        messages[index].content[position] = new
    report.tokens_saved = _estimate(before) - _estimate(after)
    return report
