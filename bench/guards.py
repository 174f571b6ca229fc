"""The cost of the agent-guard stages, in-process (section 11; no gRPC, no Envoy).

    python -m bench.guards                      # about 30 s
    python -m bench.guards --quick              # about 15 s, fewer repeats
    python -m bench.guards --out bench/results/guards.json

Each stage is driven through its stage API, with ``RequestContext`` and
``CanonicalRequest`` objects built as the unit tests build them; answers go
through a real :class:`~extproc.pipeline.answer.AnswerChain`, as 20-character
``TextDelta`` chunks (a typical LLM delta). Garbage collection is off inside
timed windows. Figures:

1. **Loop detection** (``LoopFilter`` of ``LoopStage``): µs per streamed chunk
   (p50, p99; every ``feed`` of the chain timed on its own) and µs per KB of
   the whole stream (median of ``--repeat`` runs, a fresh chain each), for
   10 KB, 100 KB and 1 MB answers: ``prose`` (no loop: every chunk is
   examined) and ``looping`` (that much prose, then one sentence forever, fed
   until the filter cuts the answer). Bar (loop-detection issue): at most
   0.05 ms per streamed chunk at p50, and a flat cost per byte from 10 KB to
   1 MB (here: the 1 MB figure within 1.25x of the 10 KB one, in CPU time of the
   thread, which other load on the machine does not inflate; wall time beside it). The chain alone
   (no filter) and the three guard filters together are shown beside it.
2. **Tool-call repair** (``ToolRepairStage``, a request declaring the 17
   tools of tests/guards/corpus/toolcalls/tools.json): the text-call filter on
   a 2 KB prose answer (no call: the common case), on a fenced JSON call and
   on a Cline XML call, streamed (µs per answer, filter built per answer) and
   whole (``AnswerChain.whole``); the argument check on a valid ``Bash`` call
   (the common case) and on a broken one (trailing comma, single quotes), µs
   per call.
3. **Compression** (``CompressionStage.on_request``, compression on, default
   threshold 8000 tokens): coding-agent histories of about 20 KB, 200 KB and
   1 MB (file reads, some of them repeated, and the outputs of
   tests/guards/corpus/outputs/: pytest, grep, npm, git diff), a fresh copy of
   the request per call (the stage compacts in place, and every client request
   carries the history uncompacted again); µs per request and tokens saved.
   20 KB is under the default threshold, so it is also shown with threshold 0.
   Off (the default): the same call with ``enabled=False`` and no session.
4. **Tool-call loops** (``ToolLoopStage.on_request``): histories of 10, 100
   and 1,000 tool calls, no loop at the end (the common case), and one of 100
   calls ending in the same failing test run 5 times (steered: a note is added;
   a fresh copy per call).
5. **Empty answers** (``EmptyAnswerFilter``): µs per streamed chunk.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from time import perf_counter_ns, process_time, thread_time_ns
from typing import Any

import msgspec

from bench.procs import machine_busy_seconds
from bench.secrets_scan import prose
from bench.stats import percentile
from extproc.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    Finish,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
)
from extproc.canonical.model import Message, Tool
from extproc.canonical.tokens import estimate_tokens
from extproc.guards.loops import LoopConfig
from extproc.guards.tool_loops import ToolLoopConfig
from extproc.pipeline.answer import AnswerChain, AnswerFilter
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stages.compression import CompressionStage
from extproc.pipeline.stages.empty_answers import EmptyAnswerStage
from extproc.pipeline.stages.loops import LoopStage
from extproc.pipeline.stages.tool_loops import ToolLoopStage
from extproc.pipeline.stages.tool_repair import ToolRepairStage
from extproc.pipeline.toolgate import Block, Rewrite

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "guards" / "corpus"
OUTPUTS = CORPUS / "outputs"
TOOLCALLS = CORPUS / "toolcalls"
DEFAULT_OUT = ROOT / "bench" / "results" / "guards.json"

CHUNK_CHARS = 20
#: Bar of the loop-detection issue: per streamed chunk, p50.
CHUNK_BAR_MS = 0.05
#: "Flat" per-byte cost: the 1 MB figure at most this many times the 10 KB one.
FLAT_RATIO = 1.25
LOOP_UNIT = "I am sorry, I cannot help with that request. Let me try again. "
KB = 1024


# -- helpers -------------------------------------------------------------------------------


@contextmanager
def _no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _ctx() -> RequestContext:
    return RequestContext(
        request_id="bench", frontend="openai-chat", method="POST", path="/v1/chat/completions",
        headers={},
    )  # fmt: skip


def _copy(request: CanonicalRequest) -> CanonicalRequest:
    return msgspec.json.decode(msgspec.json.encode(request), type=CanonicalRequest)


def _chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _summary_us(samples_ns: Sequence[int]) -> dict[str, float]:
    ordered = sorted(s / 1000 for s in samples_ns)
    return {
        "n": len(ordered),
        "p50_us": percentile(ordered, 50),
        "p99_us": percentile(ordered, 99),
        "mean_us": sum(ordered) / len(ordered),
    }


def _median_us(work: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``work`` in µs, one warm-up call, no GC while timing."""
    work()
    samples = []
    with _no_gc():
        for _ in range(repeat):
            started = perf_counter_ns()
            work()
            samples.append(perf_counter_ns() - started)
    return statistics.median(samples) / 1000


def _each_us(calls: Sequence[Callable[[], object]]) -> list[int]:
    """Each prepared call timed on its own (ns), no GC while timing."""
    samples = []
    with _no_gc():
        for call in calls:
            started = perf_counter_ns()
            call()
            samples.append(perf_counter_ns() - started)
    return samples


# -- 1. loop detection ---------------------------------------------------------------------


def _loop_filter() -> AnswerFilter:
    flt = LoopStage(LoopConfig()).answer_filter(_ctx(), _request({}))
    assert flt is not None
    return flt


def looping(size: int) -> str:
    """``size`` bytes of prose, then one sentence forever (cut soon after it starts)."""
    return prose(size) + LOOP_UNIT * (4096 // len(LOOP_UNIT) + 1)


def _stream(chain: AnswerChain, chunks: Sequence[str]) -> int:
    """Feed the chunks (then the end) until the chain ends; the characters fed."""
    fed = 0
    for piece in chunks:
        chain.feed([TextDelta(text=piece)])
        fed += len(piece)
        if chain.ended is not None:
            return fed
    chain.feed([Finish(reason="stop"), StreamEnd()])
    chain.finish()
    return fed


def _per_chunk_ns(
    make_chain: Callable[[], AnswerChain], chunks: Sequence[str], want: int
) -> list[int]:
    """Every ``feed`` of a stream timed on its own, over enough passes for ``want`` samples."""
    samples: list[int] = []
    with _no_gc():
        while len(samples) < want:
            chain = make_chain()
            for piece in chunks:
                event: list[StreamEvent] = [TextDelta(text=piece)]
                started = perf_counter_ns()
                chain.feed(event)
                samples.append(perf_counter_ns() - started)
                if chain.ended is not None:
                    break
    return samples


def loop_detection(sizes_kb: Sequence[int], rounds: int, want: int) -> dict[str, Any]:
    streams: dict[tuple[str, int], list[str]] = {}
    rows: list[dict[str, Any]] = []
    for kind, make in (("prose", prose), ("looping", looping)):
        for kb in sizes_kb:
            chunks = _chunks(make(kb * KB))
            probe = AnswerChain([_loop_filter()])
            fed = _stream(probe, chunks)
            cut = probe.ended is not None
            assert cut == (kind == "looping"), (kind, kb, cut)
            streams[kind, kb] = chunks
            rows.append({"text": kind, "kb": kb, "bytes_fed": fed, "cut": cut,
                         "cut_at": fed if cut else None})  # fmt: skip
    # Whole streams, a fresh chain each run, in interleaved rounds (so that the machine's
    # drift hits every size alike); each round feeds about 1 MB per size.
    whole: dict[tuple[str, int], list[int]] = {key: [] for key in streams}
    cpu: dict[tuple[str, int], list[int]] = {key: [] for key in streams}
    for _ in range(rounds):
        for key, chunks in streams.items():
            runs = max(1, 1000 // key[1])
            with _no_gc():
                for _ in range(runs):
                    chain = AnswerChain([_loop_filter()])
                    started, started_cpu = perf_counter_ns(), thread_time_ns()
                    _stream(chain, chunks)
                    whole[key].append(perf_counter_ns() - started)
                    cpu[key].append(thread_time_ns() - started_cpu)
    for row in rows:
        key = (row["text"], row["kb"])
        stream_us = statistics.median(whole[key]) / 1000
        cpu_us = statistics.median(cpu[key]) / 1000
        per_chunk = _summary_us(
            _per_chunk_ns(lambda: AnswerChain([_loop_filter()]), streams[key], want)
        )
        row |= {
            "stream_ms": stream_us / 1000,
            "stream_runs": len(whole[key]),
            "us_per_kb": stream_us / (row["bytes_fed"] / KB),
            "ns_per_byte": stream_us * 1000 / row["bytes_fed"],
            "cpu_us_per_kb": cpu_us / (row["bytes_fed"] / KB),
            **{f"chunk_{k}": v for k, v in per_chunk.items()},
        }
    # Context: the chain with no filter, and the three guard filters of a request with tools.
    text_100k = _chunks(prose(100 * KB))
    request = _request(TOOLS)

    def guards_chain() -> AnswerChain:
        ctx = _ctx()
        filters = [
            ToolRepairStage().answer_filter(ctx, request),
            LoopStage(LoopConfig()).answer_filter(ctx, request),
            EmptyAnswerStage().answer_filter(ctx, request),
        ]
        return AnswerChain([f for f in filters if f is not None])

    context = {
        "empty_chain": _summary_us(_per_chunk_ns(lambda: AnswerChain([]), text_100k, want)),
        "guard_chain": _summary_us(_per_chunk_ns(guards_chain, text_100k, want)),
    }
    prose_rows = [r for r in rows if r["text"] == "prose"]
    smallest, largest = prose_rows[0], prose_rows[-1]
    worst_p50_ms = max(r["chunk_p50_us"] for r in rows) / 1000
    ratio = largest["us_per_kb"] / smallest["us_per_kb"]
    cpu_ratio = largest["cpu_us_per_kb"] / smallest["cpu_us_per_kb"]
    return {
        "chunk_chars": CHUNK_CHARS,
        "rows": rows,
        "context_100kb_prose": context,
        "bar": {
            "chunk_p50_ms_worst": worst_p50_ms,
            "chunk_limit_ms": CHUNK_BAR_MS,
            "chunk_pass": worst_p50_ms <= CHUNK_BAR_MS,
            "per_byte_ratio_largest_smallest": ratio,
            "per_byte_cpu_ratio_largest_smallest": cpu_ratio,
            "flat_limit": FLAT_RATIO,
            "flat_pass": cpu_ratio <= FLAT_RATIO,
        },
    }


# -- 2. tool-call repair -------------------------------------------------------------------

TOOLS: dict[str, Any] = json.loads((TOOLCALLS / "tools.json").read_text(encoding="utf-8"))


def _request(tools: Mapping[str, Any], messages: list[Message] | None = None) -> CanonicalRequest:
    return CanonicalRequest(
        protocol="openai-chat",
        model="gpt-4o-mini",
        messages=messages or [Message("user", [TextPart("Fix the failing test.")])],
        tools=[Tool(name=n, description=f"The {n} tool", parameters=p) for n, p in tools.items()]
        or None,
        stream=True,
    )


def _streamed_answer(request: CanonicalRequest, chunks: Sequence[str]) -> list[StreamEvent]:
    flt = ToolRepairStage().answer_filter(_ctx(), request)
    assert flt is not None
    chain = AnswerChain([flt])
    out: list[StreamEvent] = []
    for piece in chunks:
        out += chain.feed([TextDelta(text=piece)])[0]
    out += chain.feed([Finish(reason="stop"), StreamEnd()])[0]
    out += chain.finish()
    return out


def _whole_answer(request: CanonicalRequest, response: CanonicalResponse) -> CanonicalResponse:
    flt = ToolRepairStage().answer_filter(_ctx(), request)
    assert flt is not None
    final, failure = AnswerChain([flt]).whole(response)
    assert failure is None
    return final


VALID_ARGS = json.dumps(
    {"command": "python -m pytest -q tests/unit/test_parser.py", "description": "Run the tests",
     "timeout": 120000}
)  # fmt: skip
BROKEN_ARGS = (
    "{'command': 'python -m pytest -q tests/unit/test_parser.py', "
    "'description': 'Run the tests', 'timeout': 120000,}"
)


def tool_repair(repeat: int) -> dict[str, Any]:
    request = _request(TOOLS)
    answers = {
        "prose 2 KB (no call)": prose(2 * KB),
        "fenced JSON call": (TOOLCALLS / "calls" / "qwen25_fenced_json.txt").read_text("utf-8"),
        "Cline XML call": (TOOLCALLS / "calls" / "cline_write_to_file.txt").read_text("utf-8"),
    }
    text_rows = []
    for label, text in answers.items():
        chunks = _chunks(text)
        events = _streamed_answer(request, chunks)
        calls = [e.name for e in events if isinstance(e, ToolCallStart)]
        assert bool(calls) == ("call" in label and "no call" not in label), (label, calls)
        response = CanonicalResponse(
            id="r", model="m", content=[TextPart(text=text)], finish_reason="stop"
        )
        final = _whole_answer(request, response)
        whole_calls = [p.name for p in final.content if isinstance(p, ToolCallPart)]
        assert whole_calls == calls, (label, whole_calls, calls)
        streamed_us = _median_us(partial(_streamed_answer, request, chunks), repeat)
        whole_us = _median_us(partial(_whole_answer, request, response), repeat)
        text_rows.append(
            {
                "answer": label,
                "bytes": len(text.encode()),
                "chunks": len(chunks),
                "calls_made": calls,
                "streamed_us": streamed_us,
                "streamed_us_per_chunk": streamed_us / len(chunks),
                "whole_us": whole_us,
            }
        )
    # The same 2 KB prose answer through a chain without the filter: what the filter adds.
    chunks = _chunks(answers["prose 2 KB (no call)"])

    def bare() -> None:
        chain = AnswerChain([])
        for piece in chunks:
            chain.feed([TextDelta(text=piece)])
        chain.feed([Finish(reason="stop"), StreamEnd()])
        chain.finish()

    bare_us = _median_us(bare, repeat)

    stage = ToolRepairStage()
    ctx = _ctx()
    check = stage.tool_check(ctx, request)
    assert check is not None
    valid = ToolCallPart("call_1", "Bash", VALID_ARGS)
    broken = ToolCallPart("call_1", "Bash", BROKEN_ARGS)
    assert check.check(valid) is None
    verdict = check.check(broken)
    assert isinstance(verdict, Rewrite) and not isinstance(verdict, Block)
    assert json.loads(verdict.arguments or "") == json.loads(VALID_ARGS)
    cases: dict[str, Callable[[], object]] = {
        "valid Bash call (schema checked)": partial(check.check, valid),
        "broken: trailing comma + single quotes": partial(check.check, broken),
        "building the check (per request)": partial(stage.tool_check, ctx, request),
    }
    check_rows = [{"call": k, "us": _median_us(work, repeat * 5)} for k, work in cases.items()]
    return {
        "tools_declared": len(TOOLS),
        "text_calls": text_rows,
        "chain_without_filter_prose_2kb_us": bare_us,
        "argument_check": check_rows,
    }


# -- 3. compression ------------------------------------------------------------------------

_READ_FILES = (
    "extproc/pipeline/answer.py",
    "extproc/pipeline/stages/tool_repair.py",
    "extproc/pipeline/stages/loops.py",
    "extproc/pipeline/stages/compression.py",
    "extproc/pipeline/stages/redaction.py",
    "extproc/pipeline/stages/sessions.py",
    "extproc/pipeline/stages/interactive.py",
    "extproc/pipeline/stages/rewrites.py",
)
_AGENT_TOOLS = {name: TOOLS[name] for name in ("Bash", "Read", "Grep")} | {
    "Edit": {
        "type": "object",
        "properties": {
            "file_path": {"type": "string"},
            "old_string": {"type": "string"},
            "new_string": {"type": "string"},
        },
        "required": ["file_path", "old_string", "new_string"],
    }
}


def _numbered(path: str) -> str:
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    return "".join(f"{n:6}\t{line}\n" for n, line in enumerate(lines, 1))


def _output(name: str) -> str:
    return (OUTPUTS / name).read_text(encoding="utf-8")


class _History:
    """A coding agent's conversation, one tool call and its result at a time."""

    def __init__(self) -> None:
        self.messages: list[Message] = [
            Message("system", [TextPart("You are Claude Code, a coding agent. Use the tools.")]),
            Message("user", [TextPart("The parser tests fail since yesterday; fix them.")]),
        ]
        self.calls = 0
        self.chars = 0

    def call(self, name: str, args: dict[str, Any], result: str, note: str = "") -> None:
        self.calls += 1
        call_id = f"toolu_{self.calls:05d}"
        parts: list[Any] = [TextPart(note)] if note else []
        parts.append(ToolCallPart(call_id, name, json.dumps(args)))
        self.messages.append(Message("assistant", parts))
        self.messages.append(Message("tool", [ToolResultPart(call_id, [TextPart(result)])]))
        self.chars += len(result) + len(note) + len(json.dumps(args))


def _agent_steps(cycle: int) -> list[tuple[str, dict[str, Any], str, str]]:
    path = _READ_FILES[cycle % len(_READ_FILES)]
    other = _READ_FILES[(cycle + 3) % len(_READ_FILES)]
    content = _numbered(path)
    return [
        ("Read", {"file_path": f"/repo/{path}"}, content, "Let me look at the module first."),
        ("Bash", {"command": "python -m pytest -v tests/unit/test_parser.py",
                  "description": "Run the parser tests"}, _output("pytest_verbose.txt"), ""),
        ("Edit", {"file_path": f"/repo/{path}", "old_string": "return None",
                  "new_string": "return result"}, "The file has been updated.", "Fixing it."),
        ("Bash", {"command": "python -m pytest -q"}, _output("pytest_progress.txt"), ""),
        ("Read", {"file_path": f"/repo/{other}"}, _numbered(other), ""),
        ("Grep", {"pattern": "def parse", "path": "/repo"}, _output("grep_rn.txt"), ""),
        ("Read", {"file_path": f"/repo/{path}"}, content, "Checking the edit."),
        ("Bash", {"command": "npm install"}, _output("npm_install.txt"), ""),
        ("Bash", {"command": "git diff"}, _output("git_diff.txt"), "Reviewing the changes."),
    ]  # fmt: skip


def agent_history(target: int) -> CanonicalRequest:
    """A coding-agent request of about ``target`` characters of history."""
    history = _History()
    cycle = 0
    skipped = 0
    while history.chars < target * 0.9 and skipped < 40:
        for name, args, result, note in _agent_steps(cycle):
            if history.chars + len(result) > target * 1.1 and history.chars > 0:
                skipped += 1
                continue
            history.call(name, args, result, note)
            if history.chars >= target * 0.9:
                break
        cycle += 1
    return _request(_AGENT_TOOLS, history.messages)


def _compression_stage(enabled: bool, threshold: int = 8000) -> CompressionStage:
    return CompressionStage(
        enabled=enabled, threshold_tokens=threshold, keep_latest=True,
        pytest_flags="-q -rfE", powershell=True,
    )  # fmt: skip


def compression(sizes_kb: Sequence[int], budget_kb: int) -> dict[str, Any]:
    rows = []
    cases = [(kb, 8000) for kb in sizes_kb] + [(sizes_kb[0], 0)]
    for kb, threshold in cases:
        request = agent_history(kb * KB)
        size = len(msgspec.json.encode(request))
        tokens = estimate_tokens(request)
        reps = max(5, min(200, budget_kb // max(1, size // KB)))
        copies = [_copy(request) for _ in range(reps + 1)]
        stage = _compression_stage(True, threshold)
        contexts = [_ctx() for _ in copies]
        stage.on_request(contexts[0], copies[0])  # warm-up
        saved = contexts[0].tokens_saved
        samples = _each_us(
            [partial(stage.on_request, c, r) for c, r in zip(contexts[1:], copies[1:], strict=True)]
        )
        assert all(c.tokens_saved == saved for c in contexts[1:])
        off = _compression_stage(False, threshold)
        ctx = _ctx()
        off_us = _median_us(partial(off.on_request, ctx, request), 2000)
        rows.append(
            {
                "history_kb": kb,
                "threshold_tokens": threshold,
                "request_bytes": size,
                "messages": len(request.messages),
                "tool_calls": (len(request.messages) - 2) // 2,
                "tokens_before": tokens,
                "tokens_saved": saved,
                "saved_share": saved / tokens,
                "on_us": statistics.median(samples) / 1000,
                "on_us_p90": percentile(sorted(s / 1000 for s in samples), 90),
                "off_us": off_us,
                "runs": len(samples),
            }
        )
    return {"rows": rows}


# -- 4. tool-call loops --------------------------------------------------------------------


def tool_history(calls: int, *, looping_tail: int = 0) -> CanonicalRequest:
    """``calls`` varied tool calls (reads, test runs, searches), then a looping tail if asked."""
    history = _History()
    for i in range(calls - looping_tail):
        kind = i % 3
        if kind == 0:
            history.call(
                "Read",
                {"file_path": f"/repo/src/module_{i:04d}.py"},
                f'"""Module {i}."""\n\ndef f{i}(x):\n    return x * {i}\n' * 4,
            )
        elif kind == 1:
            history.call(
                "Bash",
                {"command": f"python -m pytest -q tests/test_{i:04d}.py"},
                f"....                                  [100%]\n4 passed in 0.{i % 97:02d}s\n",
            )
        else:
            history.call(
                "Grep",
                {"pattern": f"f{i}\\(", "path": "/repo/src"},
                f"src/module_{i:04d}.py:3:def f{i}(x):\n",
            )
    failure = (
        "F                                                    [100%]\n"
        "FAILED tests/test_parser.py::test_dates - AssertionError: assert None == "
        "datetime.date(2024, 1, 2)\n1 failed in 0.31s\n"
    )
    for _ in range(looping_tail):
        history.call("Bash", {"command": "python -m pytest -q tests/test_parser.py"}, failure)
    return _request(_AGENT_TOOLS, history.messages)


def tool_loops(counts: Sequence[int], repeat: int) -> dict[str, Any]:
    stage = ToolLoopStage(ToolLoopConfig())
    rows = []
    for n in counts:
        request = tool_history(n)
        ctx = _ctx()
        assert stage.on_request(ctx, _copy(request)) is None
        before = msgspec.json.encode(request)
        us = _median_us(partial(stage.on_request, ctx, request), repeat)
        assert msgspec.json.encode(request) == before  # nothing found, nothing changed
        rows.append({"calls": n, "case": "no loop", "us": us})
    # The tail loops: the request goes up with a steering note (a fresh copy per call).
    n, tail = 100, 5
    request = tool_history(n, looping_tail=tail)
    copies = [_copy(request) for _ in range(repeat + 1)]
    contexts = [_ctx() for _ in copies]
    stage.on_request(contexts[0], copies[0])
    last = copies[0].messages[-1].content[-1]
    assert isinstance(last, ToolResultPart) and len(last.content) == 2  # the note was added
    samples = _each_us(
        [partial(stage.on_request, c, r) for c, r in zip(contexts[1:], copies[1:], strict=True)]
    )
    rows.append(
        {"calls": n, "case": f"last {tail} calls the same failing run (steered)",
         "us": statistics.median(samples) / 1000}
    )  # fmt: skip
    return {"rows": rows}


# -- 5. empty answers ----------------------------------------------------------------------


def empty_answers(want: int) -> dict[str, Any]:
    chunks = _chunks(prose(100 * KB))
    request = _request(TOOLS)

    def chain() -> AnswerChain:
        flt = EmptyAnswerStage().answer_filter(_ctx(), request)
        assert flt is not None
        return AnswerChain([flt])

    # The first chunk (the filter looks at it) and the rest (it has seen content).
    first = _each_us(
        [partial(chain().feed, [TextDelta(text=chunks[0])]) for _ in range(want // 10)]
    )
    return {
        "per_chunk": _summary_us(_per_chunk_ns(chain, chunks, want)),
        "first_chunk": _summary_us(first),
        "empty_chain": _summary_us(_per_chunk_ns(lambda: AnswerChain([]), chunks, want)),
    }


# -- the section ---------------------------------------------------------------------------


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() or "?"


def measure(*, quick: bool = False) -> dict[str, Any]:
    """Every figure of the section (about 30 s; 15 s with ``quick``)."""
    repeat = 200 if quick else 1000
    want = 20_000 if quick else 100_000
    load_before = os.getloadavg()
    wall, busy, own = perf_counter_ns(), machine_busy_seconds(), process_time()
    section: dict[str, Any] = {
        "head": _git_head(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "mode": "quick" if quick else "full",
        "loadavg_before": " ".join(f"{x:.2f}" for x in load_before),
        "loops": loop_detection((10, 100, 1000), 3 if quick else 7, want),
        "tool_repair": tool_repair(repeat),
        "compression": compression((20, 200, 1000), 2000 if quick else 10_000),
        "tool_loops": tool_loops((10, 100, 1000), repeat),
        "empty_answers": empty_answers(want),
    }
    section["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    seconds = (perf_counter_ns() - wall) / 1e9
    section["seconds"] = seconds
    # Busy CPU of the whole machine minus this process's, per second: anything above ~0.1
    # means something else ran meanwhile (the figures are then noisier).
    section["other_load"] = (machine_busy_seconds() - busy - (process_time() - own)) / seconds
    return section


def render(section: Mapping[str, Any]) -> str:
    loops = section["loops"]
    lines = [
        "== 11. Agent guards, in-process " + "=" * 67,
        f"HEAD {section['head']}, {section['python']}, {section['mode']} run, "
        f"{section['seconds']:.0f} s; other load {section['other_load']:.2f} cores "
        f"(load average {section['loadavg_before']} -> {section['loadavg_after']})",
        "",
        f"1. loop detection: LoopFilter in an AnswerChain, {loops['chunk_chars']}-char TextDelta "
        "chunks",
        f"{'text':<9}{'size':>8}{'fed':>11}{'cut at':>11}{'stream ms':>11}{'µs/KB':>8}{'cpu':>7}"
        f"{'chunk p50':>11}{'p99':>8}{'mean':>8}",
    ]
    for row in loops["rows"]:
        cut = f"{row['cut_at']:,}" if row["cut"] else "-"
        lines.append(
            f"{row['text']:<9}{_size(row['kb']):>8}{row['bytes_fed']:>11,}{cut:>11}"
            f"{row['stream_ms']:>11.2f}{row['us_per_kb']:>8.1f}{row['cpu_us_per_kb']:>7.1f}"
            f"{row['chunk_p50_us']:>9.2f}µs{row['chunk_p99_us']:>7.1f}µs"
            f"{row['chunk_mean_us']:>6.2f}µs"
        )
    context = loops["context_100kb_prose"]
    lines += [
        "per chunk, 100 KB prose, for comparison: chain without filters "
        f"p50 {context['empty_chain']['p50_us']:.2f} µs; tool repair + loops + empty answers "
        f"p50 {context['guard_chain']['p50_us']:.2f} µs, "
        f"p99 {context['guard_chain']['p99_us']:.2f} µs",
    ]
    bar = loops["bar"]
    lines += [
        f"{'PASS' if bar['chunk_pass'] else 'FAIL'}  per streamed chunk p50, worst row "
        f"{bar['chunk_p50_ms_worst']:.4f} ms (limit {bar['chunk_limit_ms']} ms)",
        f"{'PASS' if bar['flat_pass'] else 'FAIL'}  per-byte cost 1 MB / 10 KB prose "
        f"{bar['per_byte_cpu_ratio_largest_smallest']:.2f}x in CPU time, "
        f"{bar['per_byte_ratio_largest_smallest']:.2f}x wall (flat: at most {bar['flat_limit']}x)",
        "",
    ]
    repair = section["tool_repair"]
    lines += [
        f"2. tool-call repair ({repair['tools_declared']} tools declared)",
        f"{'answer':<24}{'bytes':>7}{'chunks':>8}{'streamed µs':>13}{'µs/chunk':>10}"
        f"{'whole µs':>10}  calls made",
    ]
    for row in repair["text_calls"]:
        lines.append(
            f"{row['answer']:<24}{row['bytes']:>7}{row['chunks']:>8}{row['streamed_us']:>13.1f}"
            f"{row['streamed_us_per_chunk']:>10.2f}{row['whole_us']:>10.1f}  "
            f"{', '.join(row['calls_made']) or '-'}"
        )
    lines.append(
        f"(the 2 KB prose streamed through a chain without the filter: "
        f"{repair['chain_without_filter_prose_2kb_us']:.1f} µs)"
    )
    for row in repair["argument_check"]:
        lines.append(f"argument check, {row['call']:<40}{row['us']:>8.1f} µs")
    lines += ["", "3. compression (CompressionStage.on_request, a fresh request copy per call)"]
    lines.append(
        f"{'history':>8}{'threshold':>10}{'request':>10}{'calls':>7}{'tokens':>9}{'saved':>9}"
        f"{'on µs':>10}{'p90':>10}{'off µs':>8}"
    )
    for row in section["compression"]["rows"]:
        lines.append(
            f"{_size(row['history_kb']):>8}{row['threshold_tokens']:>10}"
            f"{row['request_bytes'] // KB:>8}KB{row['tool_calls']:>7}{row['tokens_before']:>9,}"
            f"{row['tokens_saved']:>9,}{row['on_us']:>10.0f}{row['on_us_p90']:>10.0f}"
            f"{row['off_us']:>8.2f}"
        )
    lines += ["", "4. tool-call loops (ToolLoopStage.on_request)"]
    for row in section["tool_loops"]["rows"]:
        lines.append(f"{row['calls']:>6} calls, {row['case']:<46}{row['us']:>8.1f} µs")
    empty = section["empty_answers"]
    lines += [
        "",
        f"5. empty answers: per chunk p50 {empty['per_chunk']['p50_us']:.2f} µs "
        f"(p99 {empty['per_chunk']['p99_us']:.2f}; the first chunk "
        f"{empty['first_chunk']['p50_us']:.2f} µs; a chain without filters "
        f"{empty['empty_chain']['p50_us']:.2f} µs)",
    ]
    return "\n".join(lines)


def _size(kb: int) -> str:
    return f"{kb // 1000} MB" if kb >= 1000 else f"{kb} KB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.guards", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about 15 s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    args = parser.parse_args(argv)
    section = measure(quick=args.quick)
    print(render(section), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(section, indent=2) + "\n")
    print(f"\nreport written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
