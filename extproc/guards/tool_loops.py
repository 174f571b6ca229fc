"""Tool-call loops: a coding agent doing the same thing again and again, seen from its history.

:func:`find_tool_loop` reads the conversation a request carries (the history
the client resends every turn) and answers whether the agent is stuck *now*;
:func:`steering_note` is the text a stage adds to the request to tell the model
so, :func:`refusal_message` the text of the 409 the agent shows its user when
the model went on anyway. Pure functions: no stage, no session, no I/O.

What counts
    Tool calls are read in order, across assistant messages (parallel calls of
    one message in their order), each paired with its result by
    ``tool_call_id`` (a result answers the latest earlier call of that id, so
    clients that reuse ids pair correctly). Two kinds of loop:

    ``same_call``
        The most recent calls repeat one call -- the same tool name, the same
        normalised arguments, and the same normalised output -- ``same_call``
        times in a row. "In a row" allows other calls in between only when
        they repeat too: the tail of the history is periodic with a period of
        1, 2 or 3 calls (``A A A A``; ``edit test edit test ...``;
        ``read read test ...``). ``count`` is how often the newest call occurs
        in that periodic tail. The output is part of the call's identity: the
        same poll whose output changes (a long build, a job's progress) is
        progress, not a loop.

    ``same_output``
        The newest result failed (``is_error``, or its text looks like a
        failure: a traceback, ``FAILED``, ``error:``, ``N failed``, a non-zero
        exit code...) and the same tool returned exactly that output
        ``same_output`` times among the last ``window`` calls, whatever ran
        in between. This is the agent editing blindly: edit, test, another
        edit, the same failing test output; or trying ``pytest``,
        ``python -m pytest``, ``pytest -x``... into the same ImportError. Only
        failures count: a build that succeeds identically after each edit, or
        an edit tool that always answers "file updated", is work going well.
        Calls with other arguments count only when the shared output is long
        enough (120 characters) to be one specific failure -- a traceback, a
        compiler error, a test report. A short error ("File does not exist.",
        "Exit code 1") is the same for different causes: probing four
        candidate paths is a search, not a loop.

    Only the last ``window`` calls count for ``same_output``; a periodic tail
    is followed back at most ``window`` cycles (``window * period`` calls), so
    every period can reach its refusal count. A loop is about *now*: the same
    ``ls`` at the start and the end of a long session is not one.

    A human turn ends every loop: calls before the latest user message that
    carries text (and no tool result) do not count. After the proxy refused a
    request the history does not change, so without this reset every later
    request of the conversation would be refused too; with it, the user's
    next message ("try X instead", or just "go on") lets the agent continue,
    and the count starts again. User texts that agents add on their own
    (``<system-reminder>`` blocks) and texts holding the proxy's own markers
    are not human turns.

Normalisation
    Arguments: JSON text is parsed, keys sorted, and re-encoded compactly; in
    the values of ``command``/``cmd`` keys (strings, or the strings of an argv
    list) runs of whitespace collapse to one space, so ``pytest  -q`` and
    ``pytest -q`` are the same call (this also merges two quoted strings or
    heredocs differing only in whitespace -- rare, and harmless for loop
    counting). Next to a ``command``, a ``description`` key (Claude Code's
    Bash: a free-text label the model rewords each time) is dropped. Every
    other value is kept exactly: file contents, edit strings and patterns
    differing in whitespace are different calls. Text that is not JSON is
    compared as is, stripped.

    Outputs (text parts joined; an image is ``[image]``; ``is_error`` is part
    of the output): ANSI escapes removed, line ends unified, trailing
    whitespace dropped, and volatile parts replaced -- ISO timestamps and
    clock times, durations (``in 0.42s``, ``1m 03s``, ``12 ms``), random
    temporary path components (``/tmp/tmpk2j3_x9a``, ``pytest-17``,
    ``go-build123``, macOS ``/var/folders/../T``), PIDs (``pid 4242``), hex
    addresses (``0x7f3a9c``), UUIDs, JSON duration fields (Codex's
    ``"duration_seconds": 1.7``), and the width of ``===``/``---``/``___``
    rules (pytest centres its summary line in one). Of an output longer than
    64 KiB only the first and last 32 KiB are normalised and the lines between
    compared exactly (a bound on the work; it can miss a loop, never invent
    one). All patterns are RE2 (linear time, no backtracking), so no tool
    output can make the check slow; numbers that carry meaning
    (``3 failed``, line numbers) are kept.

Was the note already given?  (the design decision)
    The proxy adds the steering note to the request it sends upstream; the
    client never sees that request, so it does not resend the note in the
    next one, and the history alone cannot show it. Three ways out:

    (a) put the note where the client keeps it -- the answer. A stage that
        blocks the looping call and answers with the note (as the steering
        stage does with its rules) gets the note into an assistant turn the
        client resends. But an answer without a tool call ends the agent's
        turn: the user has to speak next, which resets the count anyway.
    (b) count: the note is *deemed* given on the request where ``count``
        first reached its threshold, and again on every request after it
        (each must carry it, since none is resent). ``count - threshold`` is
        then the number of repeats since the note, exactly, from the history
        alone: stateless, deterministic, the same on every proxy replica and
        after a restart, and nothing to store.
    (c) sessions remember when the note was given.

    This engine uses (b) as the base and recognises (a) on top: when a text
    part of an assistant, user or system message *after the loop began*
    contains :data:`STEERING_MARKER`, ``steered_before`` is true and
    ``repeats_since_note`` counts the repeats after that text (tool results
    are not searched: an agent reading this very file would fake a note).
    Otherwise ``steered_before`` is false and ``repeats_since_note`` is
    ``count - threshold``. ``refuse`` is ``repeats_since_note >= refuse_after``
    (``refuse_after = 0``: refuse at the threshold, never steer). A stage with
    session memory (c) can ignore ``refuse`` and decide from ``count`` and its
    own record instead.

    So with the defaults: a request whose history ends in 3 identical calls
    goes up as it is; ending in the 4th or the 5th, it goes up with the note;
    ending in the 6th, it is refused, and the user's next message starts the
    count again.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import re2

from extproc.canonical.model import ImagePart, Message, TextPart, ToolCallPart, ToolResultPart

__all__ = [
    "MAX_PERIOD",
    "REFUSAL_MARKER",
    "STEERING_MARKER",
    "ToolLoop",
    "ToolLoopConfig",
    "find_tool_loop",
    "normalize_arguments",
    "normalize_output",
    "refusal_message",
    "steering_note",
]

#: The longest cycle of calls :func:`find_tool_loop` recognises as one loop.
MAX_PERIOD = 3
#: Starts every :func:`steering_note`; found again in a history, it shows the note was given.
STEERING_MARKER = "[proxy: repeated tool call]"
#: Starts every :func:`refusal_message`.
REFUSAL_MARKER = "[proxy: tool loop stopped]"

_COMMAND_KEYS = ("command", "cmd")
#: Free-text labels next to a command; the model rewords them, the call stays the same.
_COSMETIC_KEYS = frozenset({"description"})
_AGENT_TEXT_PREFIXES = ("<system-reminder>",)
_SHOWN_CHARS = 100
#: Of a longer output, only this much at each end is normalised (the rest compared as is).
_EDGE_CHARS = 32_768
#: A shared failing output this long (normalised) ties different calls together.
_SPECIFIC_OUTPUT_CHARS = 120


@dataclass(frozen=True)
class ToolLoopConfig:
    """Thresholds; the defaults steer at the 4th identical call and refuse at the 6th."""

    #: The same call (name, arguments, output) this many times in a row is a loop.
    same_call: int = 4
    #: The same failing output of one tool this many times within the window is a loop.
    same_output: int = 4
    #: Only the last this-many tool calls count (this-many cycles for a periodic loop).
    window: int = 12
    #: After the steering note, this many more repeats are refused.
    refuse_after: int = 2

    def __post_init__(self) -> None:
        if self.same_call < 2 or self.same_output < 2:
            raise ValueError("same_call and same_output must be at least 2")
        if self.refuse_after < 0:
            raise ValueError("refuse_after must not be negative")
        need = max(self.same_call, self.same_output) + self.refuse_after
        if self.window < need:
            raise ValueError(
                f"window must be at least {need} (threshold + refuse_after): "
                "a shorter window never counts far enough to refuse"
            )


@dataclass(frozen=True)
class ToolLoop:
    """A loop the history shows; what a stage needs to steer, refuse, count and log."""

    kind: Literal["same_call", "same_output"]
    #: The tool of the newest call in the loop.
    name: str
    #: How often the newest call (``same_call``) or its output (``same_output``) occurs.
    count: int
    #: The newest call's arguments, short and on one line, for messages.
    arguments: str
    #: The history holds :data:`STEERING_MARKER` in a message after the loop began.
    steered_before: bool
    #: Repeats since the note: after the marker when present, else ``count - threshold``.
    repeats_since_note: int
    #: Calls per cycle (1 for ``same_output``).
    period: int = 1
    #: The tool names of one cycle, oldest first (ends with ``name``).
    cycle: tuple[str, ...] = ()
    #: ``repeats_since_note >= refuse_after``: answer with :func:`refusal_message`.
    refuse: bool = False


_DEFAULT_CONFIG = ToolLoopConfig()

_Position = tuple[int, int]  # (message index, part index)


class _Call:
    __slots__ = ("_output", "key", "part", "pos", "result")

    def __init__(self, pos: _Position, part: ToolCallPart) -> None:
        self.pos = pos
        self.part = part
        self.key = part.name + "\0" + normalize_arguments(part.arguments)
        self.result: ToolResultPart | None = None
        self._output: str | None = None

    def output(self) -> str:
        """The normalised output, ``is_error`` first (computed once, only when needed)."""
        if self._output is None:
            result = self.result
            if result is None:
                self._output = "\0missing"
            else:
                flag = "E" if result.is_error else "-"
                self._output = flag + "\0" + normalize_output(_result_text(result))
        return self._output

    def same(self, other: _Call) -> bool:
        return self.key == other.key and self.output() == other.output()


def find_tool_loop(
    messages: Sequence[Message], config: ToolLoopConfig = _DEFAULT_CONFIG
) -> ToolLoop | None:
    """The tool-call loop the end of ``messages`` shows, or ``None``.

    Linear in the size of the history; the text work (argument parsing, output
    normalisation) is bounded by the recent calls, not the whole history.
    """
    calls, markers = _recent_calls(messages, config.window * MAX_PERIOD)
    if not calls:
        return None
    return _same_call(calls, markers, config) or _same_output(calls, markers, config)


def steering_note(loop: ToolLoop) -> str:
    """The text telling the model it repeats itself; starts with :data:`STEERING_MARKER`."""
    name = _code(loop.name)
    if loop.kind == "same_output":
        what = (
            f"Your last {loop.count} calls to {name} (the latest: {_code(loop.arguments)}) all "
            "returned the same failing output. Whatever you changed in between did not "
            "affect it."
        )
    elif loop.period == 1:
        what = (
            f"You have called {name} with the same arguments ({_code(loop.arguments)}) "
            f"{loop.count} times in a row, and it returned the same result each time. "
            "Calling it again will not give a different answer."
        )
    else:
        sequence = " -> ".join(loop.cycle)
        what = (
            f"You have repeated the same {loop.period} tool calls ({_code(sequence)}) "
            f"{loop.count} times in a row, with the same results each time (the latest: "
            f"{name} {_code(loop.arguments)}). Repeating them again will not change anything."
        )
    return (
        f"{STEERING_MARKER} {what} Stop and read that output carefully: what does it tell "
        "you? Then change your approach: fix what the output reports, look somewhere else "
        "(another file, another command), or check your assumptions. If you are stuck, say "
        "so and ask the user how to proceed instead of repeating the call. If the repeats go "
        "on, the proxy will stop the request."
    )


def refusal_message(loop: ToolLoop) -> str:
    """The text of the 409 the agent shows its user; starts with :data:`REFUSAL_MARKER`."""
    if loop.kind == "same_output":
        what = (
            f"its last {loop.count} calls to {_code(loop.name)} (the latest: "
            f"{_code(loop.arguments)}) returned the same failing output"
        )
    elif loop.period == 1:
        what = (
            f"it called {_code(loop.name)} ({_code(loop.arguments)}) {loop.count} times in a "
            "row with the same result"
        )
    else:
        what = (
            f"it repeated the tool calls {_code(' -> '.join(loop.cycle))} {loop.count} times "
            "in a row with the same results"
        )
    return (
        f"{REFUSAL_MARKER} The proxy stopped this request because the agent is stuck in a "
        f"loop: {what}, and it went on after being told so. Check what it is trying to do "
        "and send it new instructions; your next message lets it continue."
    )


# -- normalisation -------------------------------------------------------------------


def normalize_arguments(text: str) -> str:
    """Tool-call arguments as compared: sorted compact JSON, commands' whitespace collapsed."""
    try:
        value = json.loads(text)
        return json.dumps(
            _normalize_value(value, command=False),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
    except (ValueError, RecursionError):
        return text.strip()


def _normalize_value(value: Any, *, command: bool) -> Any:
    if isinstance(value, dict):
        has_command = any(k in value for k in _COMMAND_KEYS)
        return {
            k: _normalize_value(v, command=k in _COMMAND_KEYS)
            for k, v in value.items()
            if not (has_command and k in _COSMETIC_KEYS)
        }
    if isinstance(value, list):
        return [_normalize_value(v, command=command) for v in value]
    if command and isinstance(value, str):
        return " ".join(value.split())
    return value


_ANSI = re2.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_VOLATILE: tuple[tuple[re2._Regexp[str], str], ...] = tuple(
    (re2.compile(pattern), replacement)
    for pattern, replacement in (
        # ISO 8601 timestamps (date and time), then bare clock times
        (
            r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2}\b)?",
            "<time>",
        ),
        (r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b", "<time>"),
        (r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<uuid>"),
        # durations: "in 0.42s", "1m 03s", "12 ms", "Time: 2.345 s"
        (
            r"\b\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?)\b",
            "<duration>",
        ),
        # random components of temporary paths
        (r"/(?:private/)?var/folders/[^/\s]+/[^/\s]+/T\b", "<tmp>"),
        (r"([/\\])tmp[._]?[A-Za-z0-9_]{6,}", r"\1tmp<random>"),
        (r"([/\\])pytest-\d+\b", r"\1pytest-<n>"),
        (r"([/\\])go-build\d+", r"\1go-build<n>"),
        (r"(?i)\b(pids?|pgid)\b[ =:#]*\d+(?:, *\d+)*", r"\1 <n>"),
        # durations as JSON fields (Codex: "duration_seconds": 1.7)
        (
            r"(?i)(\"?\w*(?:duration|elapsed|wall_time)\w*\"?\s*[:=]\s*)\d+(?:\.\d+)?",
            r"\1<duration>",
        ),
        # rules whose width follows the text they frame (pytest's summary line)
        (r"={3,}", "==="),
        (r"-{3,}", "---"),
        (r"_{3,}", "___"),
        (r"\b0x[0-9a-fA-F]{6,}\b", "0x<addr>"),
    )
)
_TRAILING_SPACE = re2.compile(r"(?m)[ \t]+$")

_FAILURE = re2.compile(
    r"(?m)Traceback \(most recent call last\)"
    r"|^(?:FAILED|FAIL|ERROR)\b"
    r"|^npm ERR!"
    r"|^E {3}"
    r"|^error(?:\[\w+\])?:"
    r"|^\w*(?:Error|Exception): +[^( ]"
    r"|\b[1-9]\d* (?:failed|errors?|failing)\b"
    r"|(?i:\bexit[ _](?:code|status))\"?:? *[1-9]"
    r"|(?i:command not found)"
    r"|No such file or directory"
    r"|(?i:permission denied)"
    r"|\bpanicked at\b"
)


def normalize_output(text: str) -> str:
    """Tool output as compared: volatile parts replaced, trailing whitespace dropped.

    Of a long output only the first and last :data:`_EDGE_CHARS` (cut at line
    ends) are normalised; the lines between are compared exactly. Each
    replacement costs a few microseconds in Python, so this bounds the work per
    output whatever it holds, and it can only make outputs differ, never merge
    two that differ.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(text) <= 2 * _EDGE_CHARS:
        return _normalize_piece(text)
    head_end = text.rfind("\n", 0, _EDGE_CHARS) + 1 or _EDGE_CHARS
    tail_start = text.find("\n", len(text) - _EDGE_CHARS) + 1 or len(text) - _EDGE_CHARS
    if tail_start <= head_end:
        return _normalize_piece(text)
    head = _normalize_piece(text[:head_end])
    tail = _normalize_piece(text[tail_start:])
    return f"{head}\n\0{text[head_end:tail_start]}\0\n{tail}"


def _normalize_piece(text: str) -> str:
    text = _ANSI.sub("", text)
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return _TRAILING_SPACE.sub("", text).rstrip()


def _result_text(result: ToolResultPart) -> str:
    pieces = []
    for part in result.content:
        if isinstance(part, TextPart):
            pieces.append(part.text)
        elif isinstance(part, ImagePart):
            pieces.append("[image]")
    return "\n".join(pieces)


def _looks_failed(call: _Call) -> bool:
    output = call.output()
    return output.startswith("E\0") or _FAILURE.search(output) is not None


# -- the history ----------------------------------------------------------------------


def _is_human_turn(message: Message) -> bool:
    if message.role != "user":
        return False
    human = False
    for part in message.content:
        if isinstance(part, ToolResultPart):
            return False
        if isinstance(part, ImagePart):
            human = True
        elif isinstance(part, TextPart):
            text = part.text.lstrip()
            if not text or text.startswith(_AGENT_TEXT_PREFIXES):
                continue
            if STEERING_MARKER in text or REFUSAL_MARKER in text:
                continue
            human = True
    return human


def _recent_calls(messages: Sequence[Message], cap: int) -> tuple[list[_Call], list[_Position]]:
    """The last ``cap`` calls since the latest human turn, and where steering notes sit."""
    start = len(messages)
    seen = 0
    while start > 0 and seen < cap:
        message = messages[start - 1]
        if _is_human_turn(message):
            break
        if message.role == "assistant":
            seen += sum(isinstance(part, ToolCallPart) for part in message.content)
        start -= 1
    calls: list[_Call] = []
    pending: dict[str, _Call] = {}
    markers: list[_Position] = []
    for mi in range(start, len(messages)):
        message = messages[mi]
        for pi, part in enumerate(message.content):
            if isinstance(part, ToolCallPart):
                if message.role == "assistant":
                    call = _Call((mi, pi), part)
                    calls.append(call)
                    pending[part.id] = call
            elif isinstance(part, ToolResultPart):
                answered = pending.pop(part.tool_call_id, None)
                if answered is not None:
                    answered.result = part
            elif (
                isinstance(part, TextPart)
                and message.role != "tool"
                and STEERING_MARKER in part.text
            ):
                markers.append((mi, pi))
    return calls[-cap:], markers


def _same_call(
    calls: list[_Call], markers: list[_Position], config: ToolLoopConfig
) -> ToolLoop | None:
    n = len(calls)
    best: tuple[int, int, int] | None = None  # (count, period, run length)
    for period in range(1, MAX_PERIOD + 1):
        if n < 2 * period:
            break
        lower = max(0, n - config.window * period)
        run = period
        j = n - 1
        while j - period >= lower and calls[j].same(calls[j - period]):
            run += 1
            j -= 1
        count = -(-run // period)
        if best is None or count > best[0]:
            best = (count, period, run)
    if best is None or best[0] < config.same_call:
        return None
    count, period, run = best
    newest = calls[-1]
    occurrences = [calls[i].pos for i in range(n - 1, n - run - 1, -period)]
    steered, repeats = _since_note(
        calls[n - run].pos, occurrences, count - config.same_call, markers
    )
    return ToolLoop(
        kind="same_call",
        name=newest.part.name,
        count=count,
        arguments=_shown(newest.part.arguments),
        steered_before=steered,
        repeats_since_note=repeats,
        period=period,
        cycle=tuple(c.part.name for c in calls[n - period :]),
        refuse=repeats >= config.refuse_after,
    )


def _same_output(
    calls: list[_Call], markers: list[_Position], config: ToolLoopConfig
) -> ToolLoop | None:
    recent = calls[-config.window :]
    newest = recent[-1]
    if newest.result is None or newest.output()[2:] == "" or not _looks_failed(newest):
        return None
    output = newest.output()
    name = newest.part.name
    # a short error says nothing about whether two different calls failed the same way
    specific = len(output) - 2 >= _SPECIFIC_OUTPUT_CHARS
    occurrences = [
        c.pos
        for c in recent
        if c.result is not None
        and c.part.name == name
        and c.output() == output
        and (specific or c.key == newest.key)
    ]
    count = len(occurrences)
    if count < config.same_output:
        return None
    steered, repeats = _since_note(occurrences[0], occurrences, count - config.same_output, markers)
    return ToolLoop(
        kind="same_output",
        name=name,
        count=count,
        arguments=_shown(newest.part.arguments),
        steered_before=steered,
        repeats_since_note=repeats,
        period=1,
        cycle=(name,),
        refuse=repeats >= config.refuse_after,
    )


def _since_note(
    began: _Position, occurrences: list[_Position], by_count: int, markers: list[_Position]
) -> tuple[bool, int]:
    """(note seen in the history, repeats since the note): the marker's word, else the count's."""
    i = bisect.bisect_right(markers, began)
    if i == len(markers):
        return False, max(0, by_count)
    note = markers[i]
    return True, sum(1 for pos in occurrences if pos > note)


def _shown(arguments: str) -> str:
    """Arguments for a message: the command when there is one, one line, at most 100 chars."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        value = arguments
    shown: str
    if isinstance(value, dict):
        command = next((value[k] for k in _COMMAND_KEYS if k in value), None)
        if isinstance(command, str):
            shown = command
        elif isinstance(command, list) and all(isinstance(c, str) for c in command):
            shown = " ".join(command)
        else:
            kept = {k: v for k, v in value.items() if k not in _COSMETIC_KEYS}
            try:
                shown = json.dumps(kept, sort_keys=True, ensure_ascii=False)
            except (ValueError, RecursionError):
                shown = arguments
    elif isinstance(value, str):
        shown = value
    else:
        shown = arguments
    shown = " ".join(shown.split())
    if len(shown) > _SHOWN_CHARS:
        shown = shown[: _SHOWN_CHARS - 1] + "…"
    return shown


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"
