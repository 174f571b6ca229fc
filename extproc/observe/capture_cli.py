"""``python -m extproc capture ...``: list, show, export and replay captured exchanges.

::

    capture list   [--dir D] [--since T] [--until T] [--session S] [--model M]
                   [--status 2xx|5xx|429|...] [--limit N]
    capture show   ID [--dir D] [--full]
    capture export ID [--dir D] [--format json]
    capture replay ID --to URL [--dir D] [--header K:V ...] [--ignore FIELD ...]

``ID`` is a request id or an unambiguous prefix of one. Times accept ISO-8601
(``2026-11-28T06:15``, UTC unless an offset is given) or an age such as ``90s``, ``10m``,
``2h``, ``1d``. ``--dir`` defaults to the ``capture.directory`` of ``--config FILE``, else
``./captures``. A torn record at the end of a file (a writer killed mid-write) is reported as a
warning on stderr; everything before it is read.

Exit codes: 0 success (``replay``: the new answer equals the captured one), 1 ``replay`` found
a difference, 2 usage errors, unknown ids, unreachable targets.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

import httpx

from extproc.observe.capture import (
    MASK,
    CaptureFormatError,
    Exchange,
    Leg,
    StreamSummary,
    body_for_json,
    exchanges,
    is_credential_header,
    parse_sse,
    summarize_stream,
)

__all__ = [
    "PLACEHOLDER_KEY",
    "VOLATILE_FIELDS",
    "build_parser",
    "export_document",
    "json_diff",
    "main",
    "parse_time",
    "replay_request",
]

DEFAULT_DIR: Final = "./captures"
#: Sent in place of a masked credential unless ``--header`` supplies the real one.
PLACEHOLDER_KEY: Final = "capture-replay-placeholder-key"
#: JSON fields that differ between two runs of the same request; ``replay`` ignores them.
VOLATILE_FIELDS: Final = frozenset(
    {
        "id",
        "created",
        "created_at",
        "system_fingerprint",
        "responseId",
        "createTime",
        "call_id",
        "request_id",
    }
)
#: Client headers never replayed: pseudo-headers, hop-by-hop and proxy-added headers.
_NOT_REPLAYED: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "x-request-id",
        "accept-encoding",
    }
)
_NOT_REPLAYED_PREFIXES: Final = (":", "x-envoy-", "x-forwarded-")
_AGE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_AGE_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_STATUS_RE: Final = re.compile(r"^[1-5x][0-9x]{2}$")
_EVENT_PREVIEW: Final = 200


class CliError(Exception):
    """A user-facing error: printed, exit code 2."""


# --------------------------------------------------------------------------------------------
# Arguments


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An aware UTC datetime from ISO-8601 (naive means UTC) or an age (``10m`` ago)."""
    now = now or datetime.now(UTC)
    match = _AGE_RE.match(text)
    if match is not None:
        seconds = float(match.group(1)) * _AGE_UNITS[match.group(2).lower()]
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (ISO-8601 like 2026-11-28T06:15:00Z, or 90s, 10m, 2h, 1d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _status_pattern(text: str) -> list[str]:
    patterns = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not patterns or not all(_STATUS_RE.match(p) for p in patterns):
        raise argparse.ArgumentTypeError(f"not a status pattern: {text!r} (e.g. 2xx, 429, 5xx)")
    return patterns


def _header_arg(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"not a header: {text!r} (use Name:value)")
    return name.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help=f"capture directory or file (default {DEFAULT_DIR})")
    common.add_argument("--config", type=Path, help="read capture.directory from this config")
    parser = argparse.ArgumentParser(
        prog="python -m extproc capture",
        description="Read wire captures: list, show, export and replay exchanges.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", parents=[common], help="one line per exchange")
    listing.add_argument("--since", type=parse_time, help="ISO-8601 time or age (10m, 2h)")
    listing.add_argument("--until", type=parse_time, help="ISO-8601 time or age (10m, 2h)")
    listing.add_argument("--session", help="only this session id")
    listing.add_argument("--model", help="only this model (glob: 'gpt-4o*')")
    listing.add_argument(
        "--status", type=_status_pattern, help="status patterns, comma-separated: 2xx,429"
    )
    listing.add_argument("--limit", type=int, help="only the N most recent exchanges")

    show = commands.add_parser("show", parents=[common], help="headers, bodies, streams, timing")
    show.add_argument("id", help="request id (or a unique prefix)")
    show.add_argument("--full", action="store_true", help="do not shorten long events or blobs")

    export = commands.add_parser("export", parents=[common], help="the exchange as JSON")
    export.add_argument("id", help="request id (or a unique prefix)")
    export.add_argument("--format", choices=["json"], default="json")

    replay = commands.add_parser(
        "replay", parents=[common], help="re-send the client request, diff the answer"
    )
    replay.add_argument("id", help="request id (or a unique prefix)")
    replay.add_argument("--to", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    replay.add_argument(
        "--header",
        type=_header_arg,
        action="append",
        default=[],
        help="add or replace a header (e.g. 'Authorization: Bearer KEY'); repeatable",
    )
    replay.add_argument(
        "--ignore", action="append", default=[], help="another JSON field to ignore in the diff"
    )
    replay.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    return parser


def _directory(args: argparse.Namespace) -> Path:
    if args.dir:
        return Path(args.dir)
    if args.config is not None:
        from extproc.config.loader import load_yaml
        from extproc.config.model import CaptureConfig
        from extproc.errors import ConfigError

        try:
            section = load_yaml(args.config).get("capture") or {}
            return Path(CaptureConfig.model_validate(section).directory)
        except (ConfigError, ValueError) as exc:
            raise CliError(f"cannot read capture.directory from {args.config}: {exc}") from None
    return Path(DEFAULT_DIR)


# --------------------------------------------------------------------------------------------
# Formatting helpers


def _iso(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _size(count: int) -> str:
    if count < 1000:
        return f"{count}B"
    if count < 1000**2:
        return f"{count / 1000:.1f}kB"
    return f"{count / 1000**2:.1f}MB"


def _duration(ns: int) -> str:
    return f"{ns / 1e6:.1f}ms" if ns < 1_000_000_000 else f"{ns / 1e9:.2f}s"


def _warn(problems: Iterable[CaptureFormatError], out: TextIO) -> None:
    for problem in problems:
        print(f"warning: {problem}", file=out)


def _status_matches(status: int | None, patterns: Sequence[str]) -> bool:
    if status is None:
        return False
    text = str(status)
    return any(
        all(p in ("x", c) for p, c in zip(pattern, text, strict=True)) for pattern in patterns
    )


def _load(directory: Path, problems: list[CaptureFormatError], **kwargs: Any) -> list[Exchange]:
    if not directory.exists():
        raise CliError(f"no capture directory or file at {directory}")
    return exchanges(directory, problems=problems, **kwargs)


def _find(directory: Path, request_id: str, problems: list[CaptureFormatError]) -> Exchange:
    found = _load(directory, problems, request_id=request_id)
    if not found:
        raise CliError(f"no exchange {request_id!r} in {directory}")
    if len(found) > 1:
        ids = ", ".join(exchange.request_id for exchange in found[:10])
        raise CliError(f"{request_id!r} matches {len(found)} exchanges: {ids}")
    return found[0]


# --------------------------------------------------------------------------------------------
# list


_COLUMNS: Final = (
    "TIME",
    "REQUEST",
    "SESSION",
    "FRONTEND",
    "MODEL",
    "BACKEND",
    "STATUS",
    "DURATION",
    "MODE",
    "IN",
    "OUT",
)


def _list_rows(found: Sequence[Exchange]) -> list[list[str]]:
    rows = [list(_COLUMNS)]
    for exchange in found:
        status = exchange.status
        rows.append(
            [
                _iso(exchange.started),
                exchange.request_id or "-",
                exchange.session_id or "-",
                exchange.frontend or "-",
                exchange.model or "-",
                exchange.backend or "-",
                "-" if status is None else str(status),
                _duration(exchange.duration_ns) + ("" if exchange.complete else "+"),
                "stream" if exchange.streamed else "json",
                _size(exchange.bytes_in),
                _size(exchange.bytes_out),
            ]
        )
    return rows


def cmd_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    problems: list[CaptureFormatError] = []
    found = _load(_directory(args), problems, bodies=False, since=args.since, until=args.until)
    selected: list[Exchange] = []
    for exchange in found:
        started = exchange.started
        if args.since is not None and (started is None or started < args.since):
            continue
        if args.until is not None and (started is None or started > args.until):
            continue
        if args.session is not None and exchange.session_id != args.session:
            continue
        if args.model is not None and not fnmatchcase(exchange.model or "", args.model):
            continue
        if args.status is not None and not _status_matches(exchange.status, args.status):
            continue
        selected.append(exchange)
    if args.limit is not None:
        selected = selected[-args.limit :] if args.limit > 0 else []
    rows = _list_rows(selected)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip(), file=out)
    _warn(problems, err)
    return 0


# --------------------------------------------------------------------------------------------
# show


def _shorten(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[:limit] + f"… ({len(text) - limit} more characters)"


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines()) or prefix


def _header_lines(pairs: Sequence[tuple[str, bytes]]) -> list[str]:
    return [f"  {name}: {value.decode('utf-8', 'replace')}" for name, value in pairs]


def _body_text(leg: Leg, full: bool) -> list[str]:
    data = leg.decoded_body
    kind = leg.content_type or "no content-type"
    if leg.body_bytes and not leg.chunks:
        return [f"  body: {leg.body_bytes} bytes (not kept)"]
    if not data:
        return []
    parsed = leg.json()
    if parsed is not None or data.strip() == b"null":
        pretty = json.dumps(parsed, indent=2, ensure_ascii=False)
        return [f"  body ({kind}, {len(data)} bytes):", _indent(pretty)]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        shown = data if full else data[:96]
        encoded = base64.b64encode(shown).decode("ascii")
        more = "" if len(shown) == len(data) else f" (first {len(shown)} bytes)"
        return [f"  body ({kind}, {len(data)} bytes, not UTF-8), base64{more}:", _indent(encoded)]
    return [f"  body ({kind}, {len(data)} bytes):", _indent(text)]


def _summary_lines(summary: StreamSummary) -> list[str]:
    lines: list[str] = []
    if summary.reasoning:
        lines += ["  reasoning:", _indent(summary.reasoning)]
    if summary.text:
        lines += ["  text:", _indent(summary.text)]
    for call in summary.tool_calls:
        lines.append(
            f"  tool call: {call.name}({call.arguments})" + (f"  [{call.id}]" if call.id else "")
        )
    for error in summary.errors:
        lines.append(f"  error: {error}")
    if summary.finish_reason is not None:
        lines.append(f"  finish: {summary.finish_reason}")
    if summary.usage:
        lines.append(f"  usage: {json.dumps(summary.usage, ensure_ascii=False)}")
    return lines


def _stream_lines(leg: Leg, start: int, full: bool) -> list[str]:
    if leg.body_bytes and not leg.chunks:
        return [f"  stream: {leg.body_bytes} bytes (not kept)"]
    events = leg.sse_events()
    times = leg.chunk_mono_ns
    timing = ""
    if times:
        timing = (
            f", first chunk +{_duration(times[0] - start)}, last +{_duration(times[-1] - start)}"
        )
    lines = [
        f"  stream: {len(events)} events in {len(times)} chunks, {leg.body_bytes} bytes{timing}"
    ]
    limit = None if full else _EVENT_PREVIEW
    for number, event in enumerate(events, 1):
        name = f"event: {event.event}  " if event.event else ""
        lines.append(f"    [{number}] {name}data: {_shorten(event.data, limit)}")
    return lines + _summary_lines(summarize_stream(events))


def _leg_lines(leg: Leg, start: int, full: bool) -> list[str]:
    title = leg.name + (f" attempt {leg.attempt}" if leg.name.startswith("provider") else "")
    offset = _duration((leg.first_mono_ns or start) - start)
    chunks = len(leg.chunk_mono_ns)
    state = "ended" if leg.complete else "incomplete"
    plural = "" if chunks == 1 else "s"
    lines = [f"── {title}  +{offset}  ({leg.body_bytes} bytes in {chunks} chunk{plural}, {state})"]
    if leg.annotations:
        lines.append(
            f"  annotations: {json.dumps(leg.annotations, ensure_ascii=False, default=str)}"
        )
    lines += _header_lines(leg.headers)
    if leg.is_sse:
        lines += _stream_lines(leg, start, full)
    else:
        lines += _body_text(leg, full)
    if leg.trailers:
        lines.append("  trailers:")
        lines += ["  " + line for line in _header_lines(leg.trailers)]
    return lines


def render_exchange(exchange: Exchange, *, full: bool = False) -> str:
    """The ``show`` view of one exchange."""
    status = exchange.status
    lines = [
        f"request   {exchange.request_id}",
        f"session   {exchange.session_id or '-'}    client key  {exchange.client_key_id or '-'}",
        f"started   {_iso(exchange.started)}    duration {_duration(exchange.duration_ns)}"
        f"{'' if exchange.complete else ' (incomplete)'}    status {status or '-'}"
        f"    {'streamed' if exchange.streamed else 'not streamed'}",
        f"frontend  {exchange.frontend or '-'}    model {exchange.model or '-'}"
        f"    backend {exchange.backend or '-'}    attempts {len(exchange.attempts)}",
        f"request   {exchange.method or '-'} {exchange.path or '-'}"
        f"    in {exchange.bytes_in} bytes    out {exchange.bytes_out} bytes",
    ]
    start = exchange.first_mono_ns or 0
    for leg in exchange.legs():
        lines.append("")
        lines += _leg_lines(leg, start, full)
    return "\n".join(lines) + "\n"


def cmd_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    problems: list[CaptureFormatError] = []
    exchange = _find(_directory(args), args.id, problems)
    out.write(render_exchange(exchange, full=args.full))
    _warn(problems, err)
    return 0


# --------------------------------------------------------------------------------------------
# export


def _header_json(pairs: Sequence[tuple[str, bytes]]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for name, value in pairs:
        try:
            out.append([name, value.decode("utf-8")])
        except UnicodeDecodeError:
            out.append([name, {"base64": base64.b64encode(value).decode("ascii")}])
    return out


def export_document(exchange: Exchange) -> dict[str, Any]:
    """The exchange as a JSON-ready document (``export --format json``)."""
    start = exchange.first_mono_ns or 0
    legs: list[dict[str, Any]] = []
    for leg in exchange.legs():
        entry: dict[str, Any] = {
            "leg": leg.name,
            "attempt": leg.attempt,
            "offset_ms": ((leg.first_mono_ns or start) - start) / 1e6,
            "headers": _header_json(leg.headers),
            "body": body_for_json(leg.body),
            "chunks": [
                {"offset_ms": (t - start) / 1e6, "bytes": len(chunk)}
                for t, chunk in zip(leg.chunk_mono_ns, leg.chunks, strict=True)
            ],
            "end_of_stream": leg.end_of_stream,
            "ended": leg.ended,
        }
        if leg.trailers:
            entry["trailers"] = _header_json(leg.trailers)
        if leg.annotations:
            entry["annotations"] = leg.annotations
        if leg.is_sse:
            summary = summarize_stream(leg.sse_events())
            entry["stream"] = {
                "text": summary.text,
                "reasoning": summary.reasoning,
                "tool_calls": [
                    {"id": c.id, "name": c.name, "arguments": c.arguments}
                    for c in summary.tool_calls
                ],
                "finish_reason": summary.finish_reason,
                "usage": summary.usage,
                "errors": summary.errors,
            }
        legs.append(entry)
    return {
        "format": "llm-proxy-capture-export",
        "version": 1,
        "request_id": exchange.request_id,
        "session_id": exchange.session_id,
        "client_key_id": exchange.client_key_id,
        "started": _iso(exchange.started),
        "duration_ms": exchange.duration_ns / 1e6,
        "complete": exchange.complete,
        "method": exchange.method,
        "path": exchange.path,
        "status": exchange.status,
        "streamed": exchange.streamed,
        "frontend": exchange.frontend,
        "model": exchange.model,
        "backend": exchange.backend,
        "annotations": exchange.annotations,
        "legs": legs,
    }


def cmd_export(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    problems: list[CaptureFormatError] = []
    exchange = _find(_directory(args), args.id, problems)
    json.dump(export_document(exchange), out, indent=2, ensure_ascii=False, default=str)
    out.write("\n")
    _warn(problems, err)
    return 0


# --------------------------------------------------------------------------------------------
# replay


def _placeholder(value: str) -> str:
    scheme, sep, _ = value.partition(" ")
    if sep and MASK not in scheme:
        return f"{scheme} {PLACEHOLDER_KEY}"
    return PLACEHOLDER_KEY


def replay_request(
    exchange: Exchange, base_url: str, extra: Sequence[tuple[str, str]] = ()
) -> tuple[str, str, list[tuple[str, str]], bytes]:
    """Method, URL, headers and body that re-send the captured client request to ``base_url``.

    Credentials were masked in the capture: they are replaced by :data:`PLACEHOLDER_KEY`
    (scheme kept) unless ``extra`` supplies them; masked query values likewise.
    """
    request = exchange.client_request
    if not request.seen:
        raise CliError(f"exchange {exchange.request_id} has no captured client request")
    method = exchange.method or "POST"
    path = exchange.path or "/"
    path = re.sub(r"(?<==)\*\*\*[^&#;]*", PLACEHOLDER_KEY, path)
    url = base_url.rstrip("/") + (path if path.startswith("/") else "/" + path)
    overrides = {name.lower() for name, _ in extra}
    headers: list[tuple[str, str]] = []
    for name, raw in request.headers:
        lower = name.lower()
        if lower in _NOT_REPLAYED or lower.startswith(_NOT_REPLAYED_PREFIXES):
            continue
        if lower in overrides:
            continue
        value = raw.decode("latin-1")
        if is_credential_header(lower):
            if lower in ("cookie", "set-cookie"):
                continue
            value = _placeholder(value)
        headers.append((name, value))
    headers.extend(extra)
    return method, url, headers, request.body


def _compact(value: Any) -> str:
    return _shorten(json.dumps(value, ensure_ascii=False, default=str), 120)


def json_diff(
    old: Any, new: Any, *, ignore: frozenset[str] = VOLATILE_FIELDS, path: str = "$"
) -> list[str]:
    """Structural differences, one line each: ``~ path: old → new``, ``- path: old``,
    ``+ path: new``; object keys in ``ignore`` are skipped at any depth."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines: list[str] = []
        for key in list(old) + [k for k in new if k not in old]:
            if key in ignore:
                continue
            where = f"{path}.{key}"
            if key not in new:
                lines.append(f"- {where}: {_compact(old[key])}")
            elif key not in old:
                lines.append(f"+ {where}: {_compact(new[key])}")
            else:
                lines += json_diff(old[key], new[key], ignore=ignore, path=where)
        return lines
    if isinstance(old, list) and isinstance(new, list):
        lines = []
        for index in range(max(len(old), len(new))):
            where = f"{path}[{index}]"
            if index >= len(new):
                lines.append(f"- {where}: {_compact(old[index])}")
            elif index >= len(old):
                lines.append(f"+ {where}: {_compact(new[index])}")
            else:
                lines += json_diff(old[index], new[index], ignore=ignore, path=where)
        return lines
    if type(old) is not type(new) or old != new:
        return [f"~ {path}: {_compact(old)} → {_compact(new)}"]
    return []


def _summary_diff(old: StreamSummary, new: StreamSummary) -> list[str]:
    lines: list[str] = []
    if old.text != new.text:
        lines.append(f"~ text: {_compact(old.text)} → {_compact(new.text)}")
    if old.reasoning != new.reasoning:
        lines.append(f"~ reasoning: {_compact(old.reasoning)} → {_compact(new.reasoning)}")
    old_calls = [{"name": c.name, "arguments": c.parsed_arguments()} for c in old.tool_calls]
    new_calls = [{"name": c.name, "arguments": c.parsed_arguments()} for c in new.tool_calls]
    lines += json_diff(old_calls, new_calls, path="tool_calls")
    if old.finish_reason != new.finish_reason:
        lines.append(f"~ finish_reason: {old.finish_reason!r} → {new.finish_reason!r}")
    lines += json_diff(old.errors, new.errors, path="errors")
    return lines


def compare_answers(
    captured: Leg,
    status: int,
    content_type: str,
    body: bytes,
    ignore: frozenset[str] = VOLATILE_FIELDS,
) -> list[str]:
    """How a new answer differs from the captured client response (empty: equal)."""
    lines: list[str] = []
    if captured.status is not None and captured.status != status:
        lines.append(f"~ status: {captured.status} → {status}")
    new_type = content_type.split(";", 1)[0].strip().lower()
    if captured.is_sse or new_type == "text/event-stream":
        if captured.is_sse != (new_type == "text/event-stream"):
            lines.append(f"~ content-type: {captured.content_type!r} → {new_type!r}")
        old_summary = summarize_stream(captured.sse_events())
        new_summary = summarize_stream(parse_sse(body))
        return lines + _summary_diff(old_summary, new_summary)
    old_body = captured.decoded_body
    old_json: Any = None
    new_json: Any = None
    with contextlib.suppress(ValueError):
        old_json = json.loads(old_body)
    with contextlib.suppress(ValueError):
        new_json = json.loads(body)
    if old_json is not None and new_json is not None:
        return lines + json_diff(old_json, new_json, ignore=ignore)
    if old_body != body:
        lines.append(f"~ body: {len(old_body)} bytes → {len(body)} bytes (not JSON; bytes differ)")
    return lines


def cmd_replay(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    problems: list[CaptureFormatError] = []
    exchange = _find(_directory(args), args.id, problems)
    _warn(problems, err)
    if urlsplit(args.to).scheme not in ("http", "https"):
        raise CliError(f"--to needs an http(s) base URL, got {args.to!r}")
    method, url, headers, body = replay_request(exchange, args.to, args.header)
    captured = exchange.client_response
    placeholders = [name for name, value in headers if PLACEHOLDER_KEY in value]
    if placeholders:
        print(
            f"note: masked credential sent as a placeholder in {', '.join(placeholders)}"
            " (use --header to supply one)",
            file=err,
        )
    try:
        with (
            httpx.Client(timeout=args.timeout) as client,
            client.stream(method, url, headers=headers, content=body) as response,
        ):
            chunks = list(response.iter_bytes())
            status = response.status_code
            content_type = response.headers.get("content-type", "")
    except httpx.HTTPError as exc:
        raise CliError(f"replay to {url} failed: {exc}") from None
    new_body = b"".join(chunks)
    print(
        f"replayed {method} {url}: {status}, {len(new_body)} bytes in {len(chunks)} reads", file=out
    )
    if not captured.seen:
        print("no captured client response to compare with", file=out)
        return 1
    ignore = VOLATILE_FIELDS | frozenset(args.ignore)
    lines = compare_answers(captured, status, content_type, new_body, ignore)
    if not lines:
        print("equal to the captured answer", file=out)
        return 0
    print(f"different from the captured answer ({len(lines)} differences):", file=out)
    for line in lines:
        print("  " + line, file=out)
    return 1


# --------------------------------------------------------------------------------------------

_COMMANDS: Final = {"list": cmd_list, "show": cmd_show, "export": cmd_export, "replay": cmd_replay}


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one ``capture`` command; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        return _COMMANDS[args.command](args, out, err)
    except CliError as exc:
        print(f"error: {exc}", file=err)
        return 2
    except BrokenPipeError:  # `capture list | head`
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
