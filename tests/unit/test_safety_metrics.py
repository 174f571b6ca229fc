"""What the safety stages do is counted in ``llm_proxy_safety_actions_total``."""

from __future__ import annotations

import json

from extproc.canonical import CanonicalResponse, TextPart, ToolCallPart
from extproc.config import build_config
from extproc.processing import App, Continue
from extproc.processing.factory import Processors
from tests.unit.test_stage_contract import BACKENDS, FROM_UPSTREAM, provider_json

BASH = {
    "type": "function",
    "function": {"name": "Bash", "parameters": {"type": "object", "properties": {}}},
}


def test_blocked_commands_and_redacted_secrets_are_counted() -> None:
    app = App(build_config({"backends": BACKENDS, "metrics": {"port": 0}}))
    router = Processors(app).router()
    headers = {":method": "POST", ":path": "/v1/chat/completions", "x-request-id": "r"}
    assert isinstance(router.request_headers(headers, False), Continue)
    secret = "ghp_FAKE0000000000000000000000000000MTRC"
    request = {
        "model": "openai:m-1",
        "messages": [{"role": "user", "content": f"token {secret}"}],
        "tools": [BASH],
    }
    action = router.request_body(json.dumps(request).encode(), True)
    assert isinstance(action, Continue) and action.body is not None
    assert secret.encode() not in action.body
    host = {"instance": "openai", "schema": "openai-chat"}
    router.response_headers(
        {":status": "200", **FROM_UPSTREAM, "content-type": "application/json"}, False, host
    )
    call = ToolCallPart(id="c1", name="Bash", arguments='{"command": "git reset --hard"}')
    answer = CanonicalResponse(id="r1", model="m-1", content=[TextPart("ok"), call])
    answer.finish_reason = "tool_calls"
    done = router.response_body(provider_json("openai-chat", answer), True)
    assert isinstance(done, Continue) and done.body is not None
    assert json.loads(done.body)["choices"][0]["message"].get("tool_calls") is None
    exposition = app.telemetry.metrics.exposition().decode()
    counted = [line for line in exposition.splitlines() if line.startswith("llm_proxy_safety")]
    assert (
        'llm_proxy_safety_actions_total{action="blocked",detail="git-reset-hard",'
        'stage="commands"} 1.0' in counted
    )
    assert (
        'llm_proxy_safety_actions_total{action="request",detail="secret",stage="redaction"} 1.0'
        in counted
    )
