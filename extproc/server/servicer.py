"""The gRPC ext_proc servicer: it only dispatches.

Each ``Process`` stream is one HTTP request seen by one role. The first
message tells the roles apart: only the UPSTREAM role's filter is configured
with ``request_attributes`` (the chosen host's metadata). Messages become
calls on a per-stream processor; its plain actions become protobuf replies.
This is the only module that imports the generated protobuf code.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format, text_format

from extproc._pb.envoy.config.core.v3 import base_pb2
from extproc._pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from extproc.internalapi import (
    EXT_PROC_FILTER,
    HOST_METADATA_ATTRIBUTE,
    METADATA_NAMESPACE,
    OBSERVE_CLIENT_ROLE,
    OBSERVE_PROVIDER_ROLE,
    ROLE_METADATA,
)
from extproc.processing import Action, Continue, Reply
from extproc.processing.factory import Processors, RouterRole, UpstreamRole
from extproc.processing.observer import ObserverProcessor, Side
from extproc.server.serving_state import ServingState

log = logging.getLogger(__name__)

#: Bodies at least this large are processed off the event loop.
OFFLOAD_BYTES = 256 * 1024
#: After the last reply of a stream, how long to wait for Envoy to close it before
#: ending it from this side (see ``last_reply``).
LINGER_SECONDS = 10.0

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_STREAMED = processing_mode_pb2.ProcessingMode.STREAMED
_NONE = processing_mode_pb2.ProcessingMode.NONE
_FULL_DUPLEX = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED
_SEND = processing_mode_pb2.ProcessingMode.SEND
#: What a processor's answer is once nothing is left to await.
_ACTIONS = (Continue, Reply)


def headers_dict(header_map: Any) -> dict[str, str]:
    """Envoy's header map as a dict (values arrive in ``raw_value``)."""
    out: dict[str, str] = {}
    for header in header_map.headers:
        key = header.key
        raw = header.raw_value
        value = raw.decode("utf-8", "replace") if raw else header.value
        if key in out:  # a repeated header: join, as HTTP allows
            value = f"{out[key]}, {value}"
        out[key] = value
    return out


@functools.lru_cache(maxsize=1024)
def _parse_host_metadata(text: str) -> dict[str, Any] | None:
    metadata = base_pb2.Metadata()
    try:
        text_format.Parse(text, metadata)
    except text_format.ParseError:
        log.error("cannot parse upstream host metadata: %r", text[:200])
        return None
    if METADATA_NAMESPACE not in metadata.filter_metadata:
        return None
    return json_format.MessageToDict(metadata.filter_metadata[METADATA_NAMESPACE])


def host_metadata(request: Any) -> dict[str, Any] | None:
    """The chosen upstream host's ``llm`` metadata, if Envoy sent it."""
    attrs = request.attributes.get(EXT_PROC_FILTER)
    if attrs is None or HOST_METADATA_ATTRIBUTE not in attrs.fields:
        return None
    value = attrs.fields[HOST_METADATA_ATTRIBUTE]
    if value.HasField("string_value") and value.string_value:
        return _parse_host_metadata(value.string_value)
    if value.HasField("struct_value"):
        nested = json_format.MessageToDict(value.struct_value)
        filter_metadata = nested.get("filter_metadata", nested)
        found = filter_metadata.get(METADATA_NAMESPACE)
        return found if isinstance(found, dict) else None
    return None


def _mutation(target: Any, set_headers: dict[str, str], remove: list[str]) -> None:
    for key, value in set_headers.items():
        option = target.set_headers.add()
        option.header.key = key
        option.header.raw_value = value.encode()
        option.append_action = _OVERWRITE
    if remove:
        target.remove_headers.extend(remove)


def to_response(kind: str, action: Action) -> Any:
    """A processor action as the ``ProcessingResponse`` for message ``kind``."""
    response = pb.ProcessingResponse()
    if isinstance(action, Reply):
        immediate = response.immediate_response
        immediate.status.code = action.status  # type: ignore[assignment]
        immediate.body = action.body
        immediate.details = action.details or "llm_proxy"
        _mutation(immediate.headers, action.headers, [])
        if action.dynamic_metadata:
            response.dynamic_metadata.update(action.dynamic_metadata)
        return response
    assert isinstance(action, Continue)
    if kind.endswith("_trailers"):
        getattr(response, kind).SetInParent()
        return response
    common = getattr(response, kind).response
    if action.set_headers or action.remove_headers:
        _mutation(common.header_mutation, action.set_headers, action.remove_headers)
    if action.stream_end is not None:
        streamed = common.body_mutation.streamed_response
        streamed.body = action.body or b""
        streamed.end_of_stream = action.stream_end
    elif action.body is not None:
        common.body_mutation.body = action.body
        if action.replace:
            common.status = pb.CommonResponse.CONTINUE_AND_REPLACE
    elif not (action.set_headers or action.remove_headers):
        getattr(response, kind).SetInParent()
    if action.clear_route_cache:
        common.clear_route_cache = True
    if action.response_body_mode == "streamed":
        response.mode_override.response_body_mode = _STREAMED
    elif action.response_body_mode == "full_duplex":
        response.mode_override.response_body_mode = _FULL_DUPLEX
        response.mode_override.response_trailer_mode = _SEND
    elif action.response_body_mode == "none":
        response.mode_override.response_body_mode = _NONE
    if action.dynamic_metadata:
        response.dynamic_metadata.update(action.dynamic_metadata)
    return response


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    """``state``: counts the open streams (a stopping process lets them finish)."""

    def __init__(self, processors: Processors, state: ServingState | None = None) -> None:
        self.processors = processors
        self._state = state if state is not None else ServingState()

    async def Process(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        role = _role(context)
        processor: RouterRole | UpstreamRole | None = None
        self._state.stream_started()
        try:
            if role in OBSERVER_ROLES:
                await self._observe(OBSERVER_ROLES[role], request_iterator)
                return
            async for request in request_iterator:
                kind = request.WhichOneof("request")
                if processor is None:
                    host = host_metadata(request)
                    metadata = context.invocation_metadata()
                    processor = (
                        self.processors.upstream(host, metadata)
                        if host is not None
                        else self.processors.router(metadata)
                    )
                try:
                    action = _dispatch(processor, kind, request)
                    while not isinstance(action, _ACTIONS):
                        # A large body processed in a thread, or an async stage.
                        action = await action
                except Exception as exc:  # a bug: answer it, never leave Envoy waiting
                    log.exception("ext_proc: %s failed on %s", type(processor).__name__, kind)
                    action = processor.internal_error(kind, exc)
                yield to_response(kind, action)
                if last_reply(isinstance(processor, UpstreamRole), kind, request, action):
                    # Nothing more comes: wait for Envoy's reset without a read in
                    # flight (grpc.aio leaks a failed batch's ops, ~100 B a stream:
                    # grpc/grpc#43360); grpc cancels this task when the reset comes.
                    await asyncio.sleep(LINGER_SECONDS)
                    return
        finally:
            self._state.stream_ended()
            if processor is not None:
                processor.close()

    async def _observe(self, side: Side, request_iterator: AsyncIterator[Any]) -> None:
        """An observability-mode stream: record every message, answer none."""
        observer: ObserverProcessor | None = None
        try:
            async for request in request_iterator:
                kind = request.WhichOneof("request")
                if observer is None:
                    observer = self.processors.observer(side, host_metadata(request))
                message = getattr(request, kind)
                if kind.endswith("_headers"):
                    pairs = header_pairs(message.headers)
                    observer.handle(kind, pairs, None, message.end_of_stream)
                elif kind.endswith("_body"):
                    observer.handle(kind, None, message.body, message.end_of_stream)
        finally:
            if observer is not None:
                observer.close()


OBSERVER_ROLES: dict[str, Side] = {OBSERVE_CLIENT_ROLE: "client", OBSERVE_PROVIDER_ROLE: "provider"}


def _role(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == ROLE_METADATA:
            return str(value)
    return None


def header_pairs(header_map: Any) -> list[tuple[str, bytes]]:
    """Envoy's header map as ordered (name, raw bytes) pairs, duplicates kept."""
    return [
        (header.key, header.raw_value or header.value.encode()) for header in header_map.headers
    ]


#: An action now, or one to await (which may itself need awaiting: an async
#: stage's answer to a body processed in a thread).
Pending = Action | Awaitable[Any]


def last_reply(upstream: bool, kind: str, request: Any, action: Action) -> bool:
    """Whether Envoy sends nothing more on this stream once ``action`` answered ``request``.

    An immediate response ends the HTTP request. The UPSTREAM role sees the request side
    only; the ROUTER role's last message is the end of the answer: the body's end (no
    trailers are asked for), response headers that end the answer or switch its body
    off, or the trailers (full-duplex streams). Anything else: more may come.
    """
    if isinstance(action, Reply):
        return True
    message = getattr(request, kind)
    if upstream:
        return kind in ("request_headers", "request_body") and bool(message.end_of_stream)
    if kind == "response_trailers":
        return True
    if kind == "response_body":
        return bool(message.end_of_stream)
    if kind == "response_headers":
        return bool(message.end_of_stream) or action.response_body_mode == "none"
    return False


def _dispatch(processor: RouterRole | UpstreamRole, kind: str, request: Any) -> Pending:
    if kind == "request_headers":
        message = request.request_headers
        return processor.request_headers(headers_dict(message.headers), message.end_of_stream)
    if kind == "request_body":
        body = request.request_body
        return _maybe_offload(processor.request_body, body.body, body.end_of_stream)
    if not isinstance(processor, UpstreamRole):  # only the ROUTER role sees answers
        if kind == "response_headers":
            message = request.response_headers
            return processor.response_headers(
                headers_dict(message.headers), message.end_of_stream, host_metadata(request)
            )
        if kind == "response_body":
            body = request.response_body
            return _maybe_offload(processor.response_body, body.body, body.end_of_stream)
    # Trailers and anything unexpected: let it pass unchanged.
    log.debug("ext_proc: passing %s through unchanged", kind)
    return Continue()


def _maybe_offload(fn: Callable[[bytes, bool], Pending], body: bytes, eos: bool) -> Pending:
    """Small bodies inline; large ones in a worker thread so other streams keep moving."""
    if len(body) >= OFFLOAD_BYTES:
        return asyncio.to_thread(fn, body, eos)
    return fn(body, eos)
