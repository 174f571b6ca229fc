"""Every frontend to every backend schema, through real Envoy + extproc.

Each case is a tool round trip with the frontend's official SDK: the client
offers a tool, the backend (a fake of the other protocol) calls it, the
client sends the result back, the backend answers. Both legs are checked in
their own protocol: what the client saw, and what the provider received.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.backends import READERS
from tests.e2e.clients import FRONTENDS, SYSTEM, TOOL_NAME, TOOL_RESULT
from tests.e2e.conftest import BACKENDS
from tests.harness import ProxyProcess

MODEL = "fake-model-1"
FINAL = "High tide in Porto is at 14:05."


def received(fake: Any, schema: str) -> Any:
    request = fake.chat_requests()[-1]
    assert request.json is not None
    return READERS[schema](request.json, request.path)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("frontend", list(FRONTENDS))
def test_tool_round_trip(
    translation_proxy: ProxyProcess,
    schema_fakes: dict[str, Any],
    frontend: str,
    backend: str,
    stream: bool,
) -> None:
    proxy, fake = translation_proxy, schema_fakes[backend]
    client = FRONTENDS[frontend]
    model = f"{BACKENDS[backend][0]}:{MODEL}"

    fake.queue_response(tool_calls=[(TOOL_NAME, '{"port": "Porto"}')])
    first = client.ask(proxy, model, stream)
    assert [(c.name, c.arguments) for c in first.calls] == [(TOOL_NAME, {"port": "Porto"})]
    asked = received(fake, backend)
    assert asked.model == MODEL
    assert asked.tool_names == [TOOL_NAME]
    assert SYSTEM in asked.system
    assert asked.streamed == stream
    assert first.input_tokens is None or first.input_tokens > 0

    fake.queue_response(text=FINAL)
    second = client.answer_tool(proxy, model, stream, first, TOOL_RESULT)
    assert second.text == FINAL
    assert second.calls == []
    answered = received(fake, backend)
    assert answered.tool_result is not None
    call_ref, result = answered.tool_result
    assert call_ref in answered.call_ids  # the result answers the call in the same request
    assert json.loads(result) == json.loads(TOOL_RESULT)
    # The provider saw only its own key.
    headers = fake.chat_requests()[-1].headers
    assert "sk-fake-client" not in json.dumps(headers)
