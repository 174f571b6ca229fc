"""Per-request state that must not pile up under steady load (docs/performance.md, memory).

Two causes were found with ``python -m bench.soak --memory``:

* the ext_proc servicer kept reading after a stream's last reply, so Envoy's reset (when the
  HTTP request ends) failed that read, and grpc.aio leaks a failed batch's ops (about 100 B
  of native memory a request, grpc/grpc#43360). It now stops reading after the last reply;
* every answer's id was linked to its session in the store's alias index (up to
  4 x ``max_sessions`` entries), although only Responses clients ever resolve one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from extproc.config import build_config
from extproc.processing import App, Continue, Reply
from extproc.server import start_grpc_server
from extproc.server.servicer import last_reply
from tests.harness import free_port
from tests.unit.test_session_stages import Proxy, chat, responses

# -- the servicer stops reading after the last reply ---------------------------------------


def _headers(end_of_stream: bool = False, **values: str) -> pb.HttpHeaders:
    message = pb.HttpHeaders(end_of_stream=end_of_stream)
    for key, value in values.items():
        header = message.headers.headers.add()
        header.key = key.replace("_", "-") if not key.startswith("_") else ":" + key[1:]
        header.raw_value = value.encode()
    return message


def _body(kind: str, end_of_stream: bool) -> pb.ProcessingRequest:
    body = pb.HttpBody(body=b"x", end_of_stream=end_of_stream)
    if kind == "request_body":
        return pb.ProcessingRequest(request_body=body)
    return pb.ProcessingRequest(response_body=body)


def test_the_router_roles_last_reply_is_the_end_of_the_answer() -> None:
    go = Continue()
    request_headers = pb.ProcessingRequest(request_headers=_headers(True, _method="GET"))
    # A request without a body still has its answer to come.
    assert not last_reply(False, "request_headers", request_headers, go)
    assert not last_reply(False, "request_body", _body("request_body", True), go)
    response_headers = pb.ProcessingRequest(response_headers=_headers(_status="200"))
    assert not last_reply(False, "response_headers", response_headers, go)
    assert not last_reply(False, "response_body", _body("response_body", False), go)
    assert last_reply(False, "response_body", _body("response_body", True), go)
    # Headers that end the answer, or switch its body off.
    ended = pb.ProcessingRequest(response_headers=_headers(True, _status="204"))
    assert last_reply(False, "response_headers", ended, go)
    assert last_reply(
        False, "response_headers", response_headers, Continue(response_body_mode="none")
    )
    trailers = pb.ProcessingRequest(response_trailers=pb.HttpTrailers())
    assert last_reply(False, "response_trailers", trailers, go)


def test_an_immediate_response_is_always_the_last_reply() -> None:
    request_headers = pb.ProcessingRequest(request_headers=_headers(_method="POST"))
    assert last_reply(False, "request_headers", request_headers, Reply(status=404, body=b""))
    assert last_reply(True, "request_headers", request_headers, Reply(status=500, body=b""))


def test_the_upstream_roles_last_reply_is_the_end_of_the_request() -> None:
    go = Continue()
    with_body = pb.ProcessingRequest(request_headers=_headers(_method="POST"))
    assert not last_reply(True, "request_headers", with_body, go)
    assert last_reply(True, "request_body", _body("request_body", True), go)
    assert not last_reply(True, "request_body", _body("request_body", False), go)
    bodiless = pb.ProcessingRequest(request_headers=_headers(True, _method="GET"))
    assert last_reply(True, "request_headers", bodiless, go)


CONFIG: dict[str, Any] = {
    "backends": {"openai": {"base_url": "http://127.0.0.1:9001/v1", "api_key": "sk-fake"}},
    "default_backend": "openai",
    "metrics": {"enabled": False},
}
ANSWER = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
).encode()
HOST_METADATA = (
    'filter_metadata { key: "llm" value { fields { key: "instance" value { string_value: '
    '"openai" } } fields { key: "schema" value { string_value: "openai-chat" } } } } '
)


def _exchange(number: int) -> list[pb.ProcessingRequest]:
    from google.protobuf import struct_pb2

    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    answered = pb.ProcessingRequest(
        response_headers=_headers(
            _status="200", content_type="application/json", x_envoy_upstream_service_time="1"
        )
    )
    attributes = struct_pb2.Struct()
    attributes.update({"xds.upstream_host_metadata": HOST_METADATA})
    answered.attributes["envoy.filters.http.ext_proc"].CopyFrom(attributes)
    return [
        pb.ProcessingRequest(
            request_headers=_headers(
                _method="POST", _path="/v1/chat/completions", x_request_id=f"req-{number}"
            )
        ),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=body.encode(), end_of_stream=True)),
        answered,
        pb.ProcessingRequest(response_body=pb.HttpBody(body=ANSWER, end_of_stream=True)),
    ]


async def _like_envoy(stub: Any, messages: list[pb.ProcessingRequest]) -> list[Any]:
    """Each message after the previous reply; the stream left open, then reset (cancelled)."""
    replied: asyncio.Queue[None] = asyncio.Queue()
    finished = asyncio.Event()

    async def requests() -> AsyncIterator[pb.ProcessingRequest]:
        for message in messages:
            yield message
            await replied.get()
        await finished.wait()  # Envoy never half-closes first: it resets

    call = stub.Process(requests())
    replies = []
    async for reply in call:
        replies.append(reply)
        replied.put_nowait(None)
        if len(replies) == len(messages):
            break
    call.cancel()
    finished.set()
    return replies


def test_streams_reset_after_their_last_reply_leave_the_servicer_serving() -> None:
    import grpc

    async def main() -> None:
        port = free_port()
        app = App(build_config({**CONFIG, "grpc_port": port}))
        server = await start_grpc_server(app, "127.0.0.1", port)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.ExternalProcessorStub(channel)  # type: ignore[no-untyped-call]
                for number in range(20):
                    replies = await _like_envoy(stub, _exchange(number))
                    kinds = [reply.WhichOneof("response") for reply in replies]
                    assert kinds == [
                        "request_headers",
                        "request_body",
                        "response_headers",
                        "response_body",
                    ]
                    # The provider's own dialect: the answer passes unchanged.
                    assert not replies[-1].response_body.response.HasField("body_mutation")
                    assert replies[1].request_body.response.header_mutation.set_headers
        finally:
            await server.stop(None)

    asyncio.run(main())


# -- answer ids are linked to sessions only for clients that continue by them ----------------


@pytest.fixture
def proxies() -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def make(**config: Any) -> Proxy:
        made.append(Proxy(**config))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_chat_answers_add_no_alias_per_request(
    proxies: Callable[..., Proxy], store: str, tmp_path: Path
) -> None:
    sessions: dict[str, Any] = {"store": store}
    if store == "sqlite":
        sessions["sqlite_path"] = str(tmp_path / "sessions.db")
    proxy = proxies(metrics={"enabled": True}, sessions=sessions)
    answer_ids = []
    for number in range(300):
        result = chat(proxy, f"step {number}", session="agent-1")
        assert result.ctx.response_id is not None
        answer_ids.append(result.ctx.response_id)
    assert len(set(answer_ids)) == 300
    book = proxy.book.store
    assert all(proxy.run(book.resolve(answer_id)) is None for answer_id in answer_ids)
    # One conversation, one stored session, however many requests it made.
    assert len(proxy.run(book.list(limit=1000))) == 1


def test_responses_answers_are_still_linked(proxies: Callable[..., Proxy]) -> None:
    proxy = proxies(metrics={"enabled": True})
    first = responses(proxy, "hi")
    assert first.ctx.response_id is not None
    assert proxy.run(proxy.book.store.resolve(first.ctx.response_id)) == first.session.id
