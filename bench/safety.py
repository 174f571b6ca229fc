"""The cost of the agent safety stages on the hot path (section 9).

Two proxies beside the benchmark's, against the same fake upstream, and
Envoy alone beside them, measured in interleaved rounds at concurrency 1:

* ``plain``: every safety stage off (``redaction``, ``commands`` disabled);
* ``safety``: every safety stage on: redaction both ways, dangerous-command
  protection, a tool access rule and the file sandbox.

The requests declare two tools and carry a (fake) secret in the user message,
so every stage has work: the request is redacted, and every answer runs the
redaction filter and the tool-call gate. The floors (safety issue): all stages
on add at most 0.3 ms at p50 per small non-streaming request, and at most
0.05 ms per streamed chunk, over the plain proxy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bench.load import SYSTEM_PROMPT, USER_PROMPT, Target
from bench.observability import measure as measure_interleaved
from bench.observability import table

#: Floors of the safety issue, over the plain proxy.
REQUEST_FLOOR_MS = 0.3
CHUNK_FLOOR_MS = 0.05
#: Obviously fake, in a format the redaction stage knows.
FAKE_SECRET = "ghp_FAKE0000000000000000000000000000BNCH"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "Bash",
            "description": "Run a shell command",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "Write",
            "description": "Write a file",
            "parameters": {
                "type": "object",
                "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
            },
        },
    },
]


def safety_body(model: str, *, stream: bool) -> bytes:
    """The benchmark's small request, with tools declared and a secret in the user message."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"{USER_PROMPT} (token {FAKE_SECRET})"},
        ],
        "temperature": 0.2,
        "max_tokens": 512,
        "tools": TOOLS,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


def safety_config(base: Mapping[str, Any], variant: str, workdir: Any) -> dict[str, Any]:
    """``base`` with every safety stage off (``plain``) or on (``safety``)."""
    config = dict(base)
    if variant == "plain":
        config["redaction"] = {"enabled": False}
        config["commands"] = {"enabled": False}
        return config
    config["tool_access"] = {"rules": [{"deny": ["mcp__*__delete_*"]}]}
    config["sandbox"] = {"enabled": True, "roots": [str(workdir)]}
    return config


async def measure(
    targets: Mapping[str, Target],
    model: str,
    expected_text: str,
    requests: int,
    streams: int,
) -> dict[str, Any]:
    bodies = (safety_body(model, stream=False), safety_body(model, stream=True))
    return await measure_interleaved(
        targets, expected_text, requests, streams, bodies=bodies, reference="plain"
    )


def render(section: Mapping[str, Any]) -> str:
    rows = section["targets"]
    lines = [
        "== 9. Agent safety stages on the hot path " + "=" * 57,
        "concurrency 1, interleaved rounds; requests declare 2 tools and carry a fake secret;",
        "plain = every safety stage off; safety = redaction, commands, tool access, sandbox on",
        *table(section),
    ]
    request_cost = rows["safety"]["p50_ms"] - rows["plain"]["p50_ms"]
    chunk_cost = rows["safety"]["per_chunk_p50_ms"] - rows["plain"]["per_chunk_p50_ms"]
    lines += [
        "",
        "floors (safety issue), safety over plain:",
        f"{'PASS' if request_cost <= REQUEST_FLOOR_MS else 'FAIL'}  non-streaming p50 "
        f"{request_cost:+.3f} ms (limit +{REQUEST_FLOOR_MS} ms)",
        f"{'PASS' if chunk_cost <= CHUNK_FLOOR_MS else 'FAIL'}  per streamed chunk p50 "
        f"{chunk_cost:+.4f} ms (limit +{CHUNK_FLOOR_MS} ms)",
    ]
    return "\n".join(lines)


def costs(section: Mapping[str, Any]) -> dict[str, float]:
    """The two figures the floors judge (for the report document)."""
    rows = section["targets"]
    return {
        "request_p50_ms": rows["safety"]["p50_ms"] - rows["plain"]["p50_ms"],
        "per_chunk_p50_ms": rows["safety"]["per_chunk_p50_ms"] - rows["plain"]["per_chunk_p50_ms"],
    }
