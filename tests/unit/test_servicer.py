"""The gRPC servicer over a real grpc.aio channel: role detection and dispatch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from extproc.config import build_config
from extproc.processing import App
from extproc.server import start_grpc_server
from tests.harness import free_port

CONFIG = {
    "backends": {
        "openai": {"base_url": "http://127.0.0.1:9001/v1", "api_key": "sk-fake-provider"},
    },
    "default_backend": "openai",
}
HOST_METADATA = (
    'filter_metadata { key: "llm" value { fields { key: "instance" value { string_value: '
    '"openai" } } fields { key: "schema" value { string_value: "openai-chat" } } } } '
)


def headers(**values: str) -> Any:
    message = pb.HttpHeaders()
    for key, value in values.items():
        header = message.headers.headers.add()
        header.key = key.replace("_", "-") if not key.startswith("_") else ":" + key[1:]
        header.raw_value = value.encode()
    return message


def header_mutations(common: Any) -> dict[str, str]:
    return {o.header.key: o.header.raw_value.decode() for o in common.header_mutation.set_headers}


async def exchange(port: int, messages: list[Any]) -> list[Any]:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ExternalProcessorStub(channel)  # type: ignore[no-untyped-call]

        async def requests() -> AsyncIterator[Any]:
            for message in messages:
                yield message

        return [r async for r in stub.Process(requests())]


def run(messages: list[Any]) -> list[Any]:
    async def main() -> list[Any]:
        port = free_port()
        app = App(build_config({**CONFIG, "grpc_port": port}))
        server = await start_grpc_server(app, "127.0.0.1", port)
        try:
            return await exchange(port, messages)
        finally:
            await server.stop(None)

    return asyncio.run(main())


def test_router_role_flow() -> None:
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    replies = run(
        [
            pb.ProcessingRequest(
                request_headers=headers(
                    _method="POST", _path="/v1/chat/completions", authorization="Bearer sk-c"
                )
            ),
            pb.ProcessingRequest(request_body=pb.HttpBody(body=body.encode(), end_of_stream=True)),
        ]
    )
    first, second = replies
    assert first.WhichOneof("response") == "request_headers"
    assert list(first.request_headers.response.header_mutation.remove_headers) == ["authorization"]
    common = second.request_body.response
    mutations = header_mutations(common)
    assert mutations["x-llm-cluster"] == "instance/openai"
    assert int(mutations["content-length"]) == len(common.body_mutation.body)
    assert common.clear_route_cache


def test_immediate_response_for_unknown_path() -> None:
    [reply] = run(
        [pb.ProcessingRequest(request_headers=headers(_method="GET", _path="/v9/x", end="1"))]
    )
    immediate = reply.immediate_response
    assert immediate.status.code == 404
    assert json.loads(immediate.body)["error"]["code"] == "unknown_url"
    assert {o.header.key: o.header.raw_value for o in immediate.headers.set_headers} == {
        "content-type": b"application/json"
    }


def test_upstream_role_is_detected_by_host_metadata() -> None:
    from google.protobuf import struct_pb2

    attributes = struct_pb2.Struct()
    attributes.update({"xds.upstream_host_metadata": HOST_METADATA})
    envelope = json.dumps(
        {
            "request": {
                "protocol": "openai-chat",
                "model": "gpt-4o",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "hi"}], "plain": True}
                ],
            }
        }
    ).encode()
    first = pb.ProcessingRequest(request_headers=headers(_path="/v1/chat/completions"))
    first.attributes["envoy.filters.http.ext_proc"].CopyFrom(attributes)
    replies = run(
        [first, pb.ProcessingRequest(request_body=pb.HttpBody(body=envelope, end_of_stream=True))]
    )
    assert header_mutations(replies[0].request_headers.response)["authorization"] == (
        "Bearer sk-fake-provider"
    )
    mutations = header_mutations(replies[1].request_body.response)
    assert mutations[":path"] == "/v1/chat/completions"
    sent = json.loads(replies[1].request_body.response.body_mutation.body)
    assert sent == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def test_stream_mode_override_on_sse_answer() -> None:
    from google.protobuf import struct_pb2

    body = json.dumps(
        {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    response = pb.ProcessingRequest(
        response_headers=headers(
            _status="200", content_type="text/event-stream", x_envoy_upstream_service_time="2"
        )
    )
    attributes = struct_pb2.Struct()
    attributes.update({"xds.upstream_host_metadata": HOST_METADATA})
    response.attributes["envoy.filters.http.ext_proc"].CopyFrom(attributes)
    replies = run(
        [
            pb.ProcessingRequest(
                request_headers=headers(_method="POST", _path="/v1/chat/completions")
            ),
            pb.ProcessingRequest(request_body=pb.HttpBody(body=body.encode(), end_of_stream=True)),
            response,
            pb.ProcessingRequest(
                response_body=pb.HttpBody(body=b"data: [DONE]\n\n", end_of_stream=True)
            ),
        ]
    )
    # Answer stages are on by default (redaction): the ROUTER role may end the
    # stream itself, so the body is FULL_DUPLEX_STREAMED and each chunk goes back
    # as a streamed response.
    assert replies[2].mode_override.response_body_mode == 4  # FULL_DUPLEX_STREAMED
    assert replies[2].mode_override.response_trailer_mode == 1  # SEND
    streamed = replies[3].response_body.response.body_mutation.streamed_response
    assert streamed.end_of_stream
    assert b"[DONE]" in streamed.body


@pytest.mark.parametrize("kind", ["request_trailers", "response_trailers"])
def test_trailers_pass(kind: str) -> None:
    replies = run([pb.ProcessingRequest(**{kind: pb.HttpTrailers()})])
    assert replies[0].WhichOneof("response") == kind


def test_a_processor_bug_becomes_a_clear_500_not_a_broken_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from extproc.processing.router import RouterProcessor

    def explode(self: RouterProcessor, body: bytes, end_of_stream: bool) -> None:
        raise RuntimeError("boom: sk-fake-must-not-leak")

    monkeypatch.setattr(RouterProcessor, "request_body", explode)
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    replies = run(
        [
            pb.ProcessingRequest(
                request_headers=headers(_method="POST", _path="/v1/chat/completions")
            ),
            pb.ProcessingRequest(request_body=pb.HttpBody(body=body.encode(), end_of_stream=True)),
        ]
    )
    immediate = replies[1].immediate_response
    assert immediate.status.code == 500
    error = json.loads(immediate.body)["error"]
    assert error["code"] == "internal_error" and "RuntimeError" in error["message"]
    assert b"sk-fake-must-not-leak" not in immediate.body
