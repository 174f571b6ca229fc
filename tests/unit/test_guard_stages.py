"""The guard stages in the pipeline: the tool-call gate's place, compression's report."""

from __future__ import annotations

import json
from typing import Any

from extproc.canonical import (
    CanonicalRequest,
    Finish,
    Message,
    TextDelta,
    TextPart,
    Tool,
    ToolCallStart,
)
from extproc.config import build_config
from extproc.pipeline import RequestContext
from extproc.pipeline.assemble import build_pipeline
from extproc.pipeline.stages.tool_repair import TextCallFilter
from extproc.pipeline.toolgate import ToolCallGate
from extproc.processing import App

BASH = Tool(
    name="Bash", parameters={"type": "object", "properties": {"command": {"type": "string"}}}
)


def _chain(order: list[str]) -> Any:
    app = App(build_config({"pipeline": {"order": order}}))
    request = CanonicalRequest(
        protocol="openai-chat",
        model="m",
        messages=[Message(role="user", content=[TextPart(text="tidy")])],
        tools=[BASH],
    )
    ctx = RequestContext(
        request_id="r", frontend="openai-chat", method="POST", path="/", headers={}
    )
    return app.pipeline.answer(ctx, request)


def test_the_gate_follows_every_filter_that_makes_tool_calls_in_any_order() -> None:
    for order in (["tool_repair", "commands"], ["commands", "tool_repair"]):
        chain = _chain(order)
        kinds = [type(f) for f in chain._filters]
        assert kinds.index(ToolCallGate) > kinds.index(TextCallFilter), order


def test_a_dangerous_call_written_as_text_is_checked_in_any_order() -> None:
    call = {"name": "Bash", "arguments": {"command": "rm -rf ~"}}
    text = f"```json\n{json.dumps(call)}\n```"
    for order in (["tool_repair", "commands"], ["commands", "tool_repair"]):
        chain = _chain(order)
        out, _ = chain.feed([TextDelta(text=text), Finish(reason="stop")])
        out += chain.finish()
        assert not any(isinstance(e, ToolCallStart) for e in out), order
        assert "blocked" in "".join(e.text for e in out if isinstance(e, TextDelta)), order


def test_build_pipeline_is_importable_for_custom_roots() -> None:
    assert callable(build_pipeline)
