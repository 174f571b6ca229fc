"""Sessions through the real pipeline: ids, the sessions stage, the book, dedup, policies, routing.

Requests go through the ROUTER role of an ``App`` built from ``build_config`` (real codecs,
real stores, no Envoy): :class:`Proxy` sends a client's bytes and, for a forwarded request,
answers it as the provider would, on one event loop per test so the book's background
writes run (and are drained) between requests.

The in-chat commands have their own file (test_interactive_commands.py), which uses the
harness defined here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from extproc.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    Message,
    StreamEvent,
    TextPart,
    Usage,
)
from extproc.canonical.aggregate import aggregate_events, response_events
from extproc.codecs import get_codec
from extproc.codecs.base import ResponseContext
from extproc.config import build_config
from extproc.errors import InvalidRequest, NotFound
from extproc.internalapi import SESSION_ECHO_HEADER
from extproc.pipeline import Pipeline, RequestContext
from extproc.pipeline.context import key_id
from extproc.pipeline.stages.dedup import DedupStage
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.pipeline.stages.sessions import SessionStage
from extproc.processing import App, Continue, Reply
from extproc.processing.factory import Processors
from extproc.processing.router import RouterProcessor
from extproc.routing.resolver import RequestFacts, Resolver
from extproc.sessions import MemorySessionStore, SessionState, SQLiteSessionStore, update
from extproc.sessions.dedup import DedupTable
from extproc.sessions.ids import (
    CLIENT_SESSION_HEADERS,
    ClientSession,
    a_leg_id,
    b_leg_id,
    client_session,
    heuristic_session,
)
from extproc.sessions.session import Session, SessionBook

T = TypeVar("T")

BACKENDS: dict[str, dict[str, Any]] = {
    "openai": {"base_url": "http://127.0.0.1:9001/v1", "api_key": "sk-fake-a"},
    "anthropic": {"base_url": "http://127.0.0.1:9002/v1", "api_key": "sk-fake-b"},
    "gemini": {"base_url": "http://127.0.0.1:9003/v1beta", "api_key": "fake-c"},
    "openai-responses": {"base_url": "http://127.0.0.1:9004/v1", "api_key": "sk-fake-d"},
}
PATHS = {
    "openai-chat": "/v1/chat/completions",
    "openai-responses": "/v1/responses",
    "anthropic": "/anthropic/v1/messages",
}
KEY_A, KEY_B = "sk-proxy-key-alice", "sk-proxy-key-bob"
MULTI_USER: dict[str, Any] = {"multi_user_mode": True, "api_keys": [KEY_A, KEY_B]}
FROM_UPSTREAM = {"x-envoy-upstream-service-time": "2"}


# -- the harness -----------------------------------------------------------------------


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def proxy_config(**extra: Any) -> dict[str, Any]:
    """The tests' config: four backends, no metrics; safety stages off unless asked for."""
    base: dict[str, Any] = {
        "backends": BACKENDS,
        "metrics": {"enabled": False},
        "redaction": {"enabled": False},
        "commands": {"enabled": False},
    }
    return _merge(base, extra)


@dataclass
class Result:
    """One request as the client and the provider saw it."""

    proxy: Proxy
    protocol: str
    stream: bool
    router: RouterProcessor
    action: Continue | Reply
    #: What the request headers got (header mutations), before the body.
    head: Continue | Reply | None = None
    finished: bool = False
    #: The provider's answer status, once answered.
    status: int = 0
    #: The answer's bytes as the client got them.
    client_body: bytes | None = None

    @property
    def ctx(self) -> RequestContext:
        ctx = self.router.ctx
        assert ctx is not None
        return ctx

    @property
    def session(self) -> Session:
        session = self.ctx.session
        assert session is not None
        return session

    @property
    def request(self) -> CanonicalRequest:
        request = self.router.request
        assert request is not None
        return request

    @property
    def forwarded(self) -> bool:
        return isinstance(self.action, Continue)

    def upstream(self) -> dict[str, Any]:
        """The JSON body the provider gets."""
        assert isinstance(self.action, Continue), self.action
        assert self.action.body is not None
        body: dict[str, Any] = json.loads(self.action.body)
        return body

    @property
    def reply(self) -> Reply:
        assert isinstance(self.action, Reply), self.action
        return self.action

    def answer(self) -> CanonicalResponse:
        """The proxy's own answer (a Respond), decoded with the client's codec."""
        reply = self.reply
        assert reply.status == 200, reply.body
        codec = get_codec(self.protocol)
        if not self.stream:
            return codec.decode_response(reply.body)
        decoder = codec.stream_decoder()
        events = [e for _, evs in decoder.feed(reply.body) + decoder.finish() for e in evs]
        return aggregate_events(events)

    def text(self) -> str:
        return "".join(p.text for p in self.answer().content if isinstance(p, TextPart))

    def error(self) -> dict[str, Any]:
        reply = self.reply
        assert reply.status >= 400, reply.body
        body: dict[str, Any] = json.loads(reply.body)
        return body

    def finish(
        self,
        status: int = 200,
        answer_id: str | None = None,
        *,
        answer: CanonicalResponse | None = None,
        events: list[StreamEvent] | None = None,
    ) -> Result:
        """The provider answers; the exchange ends and the book's writes are drained."""
        assert self.forwarded and not self.finished
        self.proxy.finish(self, status, answer_id, answer=answer, events=events)
        return self

    def client_answer(self) -> CanonicalResponse:
        """What the client got from the provider, through the proxy, in its dialect."""
        assert self.finished and self.client_body is not None
        codec = get_codec(self.protocol)
        if not self.stream:
            return codec.decode_response(self.client_body)
        decoder = codec.stream_decoder()
        feed = decoder.feed(self.client_body) + decoder.finish()
        return aggregate_events([e for _, evs in feed for e in evs])


class Proxy:
    """An App built from a config, and the event loop its requests run on."""

    def __init__(self, **config: Any) -> None:
        self.app = App(build_config(proxy_config(**config)))
        self.loop = asyncio.new_event_loop()
        self.processors = Processors(self.app)
        self._count = 0

    @property
    def book(self) -> SessionBook:
        assert self.app.sessions is not None
        return self.app.sessions

    def stage(self, name: str) -> Any:
        return next(s for s in self.app.pipeline.stages if s.name == name)

    def replace_stage(self, name: str, stage: Any) -> None:
        stages = [stage if s.name == name else s for s in self.app.pipeline.stages]
        self.app.pipeline = Pipeline(stages)

    def run(self, work: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await work

        return self.loop.run_until_complete(wrapped())

    def close(self) -> None:
        if self.loop.is_closed():
            return
        if self.app.sessions is not None:
            self.run(self.app.sessions.close())
        self.loop.close()

    def state(self, session_id: str) -> SessionState | None:
        return self.run(self.book.store.get(session_id))

    def send(
        self,
        protocol: str,
        data: dict[str, Any],
        *,
        headers: dict[str, str] | None = None,
        key: str | None = None,
        path: str | None = None,
        finish: bool = True,
        answer_id: str | None = None,
        answer: CanonicalResponse | None = None,
    ) -> Result:
        """Send one request; a forwarded one is answered (200) unless ``finish`` is False."""
        self._count += 1
        request_id = f"req-{self._count}"
        stream = bool(data.get("stream"))
        if path is None:
            if protocol == "gemini":
                model = data.pop("model")
                action = "streamGenerateContent?alt=sse" if stream else "generateContent"
                data.pop("stream", None)
                path = f"/v1beta/models/{model}:{action}"
            else:
                path = PATHS[protocol]
        all_headers = {
            ":method": "POST",
            ":path": path,
            "content-type": "application/json",
            "x-request-id": request_id,
            "anthropic-version": "2023-06-01",
            **(headers or {}),
        }
        if key is not None:
            all_headers["authorization"] = f"Bearer {key}"
        router = self.processors.router()
        assert isinstance(router, RouterProcessor)  # (no capture: no tap around it)
        heads: list[Continue | Reply] = []

        async def go() -> Continue | Reply:
            head = router.request_headers(all_headers, False)
            if not isinstance(head, Continue | Reply):
                head = await head
            assert isinstance(head, Continue | Reply)
            heads.append(head)
            if isinstance(head, Reply):
                return head
            action = router.request_body(json.dumps(data).encode(), True)
            if not isinstance(action, Continue | Reply):
                action = await action
            assert isinstance(action, Continue | Reply)
            if self.app.sessions is not None:
                await self.app.sessions.drain()
            return action

        result = Result(self, protocol, stream, router, self.run(go()))
        result.head = heads[0]
        if finish and result.forwarded:
            self.finish(result, 200, answer_id, answer=answer)
        return result

    def finish(
        self,
        result: Result,
        status: int,
        answer_id: str | None,
        *,
        answer: CanonicalResponse | None = None,
        events: list[StreamEvent] | None = None,
    ) -> None:
        """Answer as the routed provider would: a stream when the client asked for one."""
        route = result.ctx.route
        assert route is not None
        instance = self.app.plans[route.cluster].endpoints[0].instance
        schema = self.app.config.backend_schema(instance)
        host = {"instance": instance, "schema": schema}
        codec = get_codec(schema)
        context = ResponseContext(request_model="m", include_usage=True)
        if answer is None:
            answer = CanonicalResponse(
                id=answer_id or f"resp_{result.ctx.request_id}",
                model=result.ctx.model or "m",
                content=[TextPart("ok")],
                finish_reason="stop",
                usage=Usage(input_tokens=1, output_tokens=1),
            )
        chunks: list[bytes]
        if status != 200:
            chunks = [json.dumps({"error": {"message": "upstream failed", "type": "x"}}).encode()]
            ctype = "application/json"
        elif result.stream:
            encoder = codec.stream_encoder(context)
            chunks = [encoder.encode([e]) for e in events or response_events(answer)]
            chunks = [c for c in [*chunks, encoder.finish()] if c]
            ctype = "text/event-stream"
        else:
            chunks = [codec.encode_response(answer, context)]
            ctype = "application/json"
        router = result.router

        async def go() -> bytes:
            head = {":status": str(status), **FROM_UPSTREAM, "content-type": ctype}
            router.response_headers(head, False, host)
            out = b""
            for i, chunk in enumerate(chunks):
                action = router.response_body(chunk, i == len(chunks) - 1)
                assert isinstance(action, Continue)
                out += chunk if action.body is None else action.body
                if action.stream_end:
                    break
            router.close()
            if self.app.sessions is not None:
                await self.app.sessions.drain()
            return out

        result.client_body = self.run(go())
        result.finished = True
        result.status = status


@pytest.fixture
def make_proxy() -> Iterator[Any]:
    """A factory of proxies (closed at teardown)."""
    made: list[Proxy] = []

    def make(**config: Any) -> Proxy:
        proxy = Proxy(**config)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


@pytest.fixture(params=["memory", "sqlite"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The ``sessions`` section for each store (the SQLite store is awaited, memory is not)."""
    if request.param == "memory":
        return {"store": "memory"}
    return {"store": "sqlite", "sqlite_path": str(tmp_path / "sessions.db")}


def chat(
    proxy: Proxy,
    *turns: str | dict[str, Any],
    session: str | None = None,
    model: str = "openai:gpt-x",
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> Result:
    """An OpenAI Chat request; string turns alternate user/assistant from the first."""
    messages = [
        t if isinstance(t, dict) else {"role": "user" if i % 2 == 0 else "assistant", "content": t}
        for i, t in enumerate(turns)
    ]
    all_headers = dict(headers or {})
    if session is not None:
        all_headers["x-session-id"] = session
    finish = fields.pop("finish", True)
    key = fields.pop("key", None)
    answer = fields.pop("answer", None)
    data = {"model": model, "messages": messages, **fields}
    return proxy.send(
        "openai-chat", data, headers=all_headers, key=key, finish=finish, answer=answer
    )


def canonical(*texts: str, **extra: Any) -> CanonicalRequest:
    return CanonicalRequest(
        protocol="openai-chat",
        model="m",
        messages=[Message(role="user", content=[TextPart(t)]) for t in texts],
        extra=dict(extra),
    )


# -- client session ids (extproc/sessions/ids.py) -----------------------------------------


def test_no_header_and_no_body_field_is_no_client_session() -> None:
    assert client_session({}, canonical("hi")) is None


@pytest.mark.parametrize(
    "name",
    [
        "x-session-id",
        "x-claude-code-session-id",
        "session-id",
        "thread-id",
        "session_id",
        "conversation_id",
        "x-gemini-api-privileged-user-id",
    ],
)
def test_each_session_header_is_read(name: str) -> None:
    assert client_session({name: "abc"}, canonical("hi")) == ClientSession("abc", f"header {name}")


def test_headers_are_read_in_their_order_of_preference() -> None:
    # Every header at once: each one wins over all that come after it.
    for i, name in enumerate(CLIENT_SESSION_HEADERS):
        headers = {h: f"id-{j}" for j, h in enumerate(CLIENT_SESSION_HEADERS) if j >= i}
        found = client_session(headers, canonical("hi", session_id="body"))
        assert found == ClientSession(f"id-{i}", f"header {name}")


def test_codex_sends_session_id_and_thread_id_the_session_id_header_wins() -> None:
    headers = {"thread-id": "thread-1", "session-id": "0199-codex", "x-client-request-id": "0199"}
    found = client_session(headers, canonical("hi", prompt_cache_key="0199-codex"))
    assert found == ClientSession("0199-codex", "header session-id")


def test_gemini_cli_installation_id_names_the_session() -> None:
    found = client_session({"x-gemini-api-privileged-user-id": "inst-42"}, canonical("hi"))
    assert found == ClientSession("inst-42", "header x-gemini-api-privileged-user-id")


def test_a_configured_header_comes_before_the_known_ones() -> None:
    headers = {"x-session-id": "known", "x-my-conv": "mine"}
    found = client_session(headers, canonical("hi"), header="x-my-conv")
    assert found == ClientSession("mine", "header x-my-conv")
    # An empty configured header falls back to the known ones.
    headers["x-my-conv"] = "   "
    assert client_session(headers, canonical("hi"), header="x-my-conv") == ClientSession(
        "known", "header x-session-id"
    )


def test_blank_values_are_skipped_and_values_are_trimmed_and_bounded() -> None:
    headers = {"x-session-id": "  ", "x-claude-code-session-id": "  cc-1  "}
    assert client_session(headers, canonical("hi")) == ClientSession(
        "cc-1", "header x-claude-code-session-id"
    )
    long = "x" * 1000
    found = client_session({"x-session-id": long}, canonical("hi"))
    assert found is not None and found.id == "x" * 256


CLAUDE_SESSION = "9b0c6f2e-1f5c-4d55-9a2b-0d1f63a1b2c3"
CLAUDE_JSON_USER_ID = json.dumps(
    {"device_id": "ab" * 32, "account_uuid": "", "session_id": CLAUDE_SESSION}
)
CLAUDE_LEGACY_USER_ID = (
    f"user_{'cd' * 32}_account_7e0c2a3b-0000-4000-8000-000000000001_session_{CLAUDE_SESSION}"
)


@pytest.mark.parametrize(
    "user_id", [CLAUDE_JSON_USER_ID, CLAUDE_LEGACY_USER_ID], ids=["json", "legacy"]
)
def test_claude_code_metadata_user_id_gives_its_session(user_id: str) -> None:
    found = client_session({}, canonical("hi", metadata={"user_id": user_id}))
    assert found == ClientSession(CLAUDE_SESSION, "body metadata.user_id")


@pytest.mark.parametrize(
    "user_id",
    [
        "alice",  # an ordinary end-user id
        '{"device_id": "d", "account_uuid": ""}',  # JSON without a session
        '{"session_id": ',  # broken JSON
        '["session_id"]',  # JSON, not an object
        "user_x_account_y_session_short",  # not a uuid-like tail
        '{"session_id": "   "}',
    ],
)
def test_other_user_ids_are_not_sessions(user_id: str) -> None:
    assert client_session({}, canonical("hi", metadata={"user_id": user_id})) is None


def test_body_fields_in_their_order_of_preference() -> None:
    fields: dict[str, Any] = {
        "session_id": "body-sid",
        "metadata": {"user_id": CLAUDE_JSON_USER_ID, "session_id": "meta-sid"},
        "prompt_cache_key": "pck",
    }
    assert client_session({}, canonical("hi", **fields)) == ClientSession(
        "body-sid", "body session_id"
    )
    del fields["session_id"]
    assert client_session({}, canonical("hi", **fields)) == ClientSession(
        CLAUDE_SESSION, "body metadata.user_id"
    )
    fields["metadata"] = {"user_id": "alice", "session_id": "meta-sid"}
    assert client_session({}, canonical("hi", **fields)) == ClientSession(
        "meta-sid", "body metadata.session_id"
    )
    del fields["metadata"]
    assert client_session({}, canonical("hi", **fields)) == ClientSession(
        "pck", "body prompt_cache_key"
    )


def test_non_string_body_fields_are_ignored() -> None:
    request = canonical("hi", session_id=123, metadata="not a dict", prompt_cache_key=["x"])
    assert client_session({}, request) is None


def test_a_leg_ids_are_stable_per_owner_and_distinct_across_owners_and_ids() -> None:
    assert a_leg_id("local", "c-1") == a_leg_id("local", "c-1")
    assert a_leg_id("local", "c-1") != a_leg_id("key-000000000001", "c-1")
    assert a_leg_id("local", "c-1") != a_leg_id("local", "c-2")
    # The separator keeps ("ab", "c") and ("a", "bc") apart.
    assert a_leg_id("ab", "c") != a_leg_id("a", "bc")
    session_id = a_leg_id("local", "c-1")
    assert session_id.startswith("sess-") and len(session_id) == len("sess-") + 24
    assert "c-1" not in session_id


def test_b_leg_ids_come_from_the_request_id_or_are_random() -> None:
    assert b_leg_id("3b0c2f8e") == "leg-3b0c2f8e"
    assert b_leg_id() != b_leg_id()
    assert b_leg_id().startswith("leg-")


def test_the_heuristic_names_a_conversation_by_its_first_user_message() -> None:
    first = CanonicalRequest(
        protocol="openai-chat",
        model="m",
        messages=[
            Message(role="system", content=[TextPart("be brief")]),
            Message(role="user", content=[TextPart("plan a trip")]),
        ],
    )
    later = CanonicalRequest(
        protocol="openai-chat",
        model="m",
        messages=[
            Message(role="system", content=[TextPart("other system prompt")]),
            Message(role="user", content=[TextPart("plan a trip")]),
            Message(role="assistant", content=[TextPart("where to?")]),
            Message(role="user", content=[TextPart("Rome")]),
        ],
    )
    one, two = heuristic_session(first), heuristic_session(later)
    assert one is not None and one == two and one.source == "heuristic"
    assert "plan a trip" not in one.id
    assert heuristic_session(canonical("another conversation")) != one
    assert heuristic_session(canonical("")) is None


# -- the sessions stage --------------------------------------------------------------------


def test_a_client_id_names_the_session_owned_by_local_in_single_user_mode(
    make_proxy: Any, store_config: dict[str, Any]
) -> None:
    proxy = make_proxy(sessions=store_config)
    first = chat(proxy, "hi", session="conv-1")
    session = first.session
    assert session.id == a_leg_id("local", "conv-1")
    assert session.owner == "local" and not session.isolated
    assert session.client == ClientSession("conv-1", "header x-session-id")
    assert session.b_leg == "leg-req-1"
    assert first.ctx.session_id == session.id
    # The bookkeeping of the first request is stored; the second sees it.
    second = chat(proxy, "hi", "ok", "more", session="conv-1")
    assert second.session.id == session.id and second.session.b_leg == "leg-req-2"
    assert second.session.state is not None
    assert second.session.state.counters["requests"] == 1
    assert second.session.state.last_route == "instance/openai (gpt-x)"
    stored = proxy.state(session.id)
    assert stored is not None and stored.counters["requests"] == 2
    assert stored.owner == "local" and stored.client_session == "conv-1"


def test_without_a_client_id_each_request_is_an_isolated_session(
    make_proxy: Any, store_config: dict[str, Any]
) -> None:
    proxy = make_proxy(sessions=store_config)
    one, two = chat(proxy, "hi"), chat(proxy, "hi")
    assert one.session.isolated and two.session.isolated
    assert one.session.id != two.session.id
    assert one.session.id.startswith("sess-")
    assert proxy.run(proxy.book.store.list()) == []  # nothing remembered


def test_the_a_leg_id_is_echoed_on_the_proxys_own_answers_and_errors(make_proxy: Any) -> None:
    proxy = make_proxy()
    hello = chat(proxy, "!/hello", session="conv-echo")
    assert hello.reply.headers[SESSION_ECHO_HEADER] == a_leg_id("local", "conv-echo")
    refused = chat(proxy, "hi", session="conv-echo", model="nope:gpt-x")
    assert refused.reply.status == 404
    assert refused.reply.headers[SESSION_ECHO_HEADER] == a_leg_id("local", "conv-echo")


def test_the_a_leg_id_is_echoed_when_the_body_is_refused(make_proxy: Any) -> None:
    proxy = make_proxy()
    result = proxy.send(
        "openai-chat", {"model": "openai:gpt-x"}, headers={"x-session-id": "conv-bad"}
    )
    assert result.reply.status == 400
    assert result.reply.headers[SESSION_ECHO_HEADER] == a_leg_id("local", "conv-bad")


def test_session_headers_never_reach_the_provider(make_proxy: Any) -> None:
    proxy = make_proxy(sessions={"header": "x-my-conv"})
    headers = {
        "x-session-id": "a",
        "x-claude-code-session-id": "b",
        "session-id": "c",
        "thread-id": "c",
        "x-client-request-id": "c",
        "x-codex-window-id": "c:0",
        "x-codex-turn-metadata": "{}",
        "x-gemini-api-privileged-user-id": "d",
        "x-my-conv": "e",
        "user-agent": "kept",
    }
    result = proxy.send(
        "openai-chat",
        {"model": "openai:gpt-x", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
        finish=False,
    )
    # The request headers' own Continue (sent before the body) removes them.
    head = result.head
    assert isinstance(head, Continue)
    assert set(head.remove_headers) == set(headers) - {"user-agent"}
    assert result.session.client == ClientSession("e", "header x-my-conv")


def test_with_sessions_off_session_headers_go_through(make_proxy: Any) -> None:
    proxy = make_proxy(sessions={"enabled": False})
    result = chat(proxy, "hi", session="a", session_id="body-id")
    assert isinstance(result.head, Continue) and "x-session-id" not in result.head.remove_headers
    assert result.ctx.session is None
    assert result.upstream()["session_id"] == "body-id"


def test_body_fields_with_client_ids_are_replaced_or_removed(make_proxy: Any) -> None:
    proxy = make_proxy()
    fields: dict[str, Any] = {
        "session_id": "sid-1",
        "prompt_cache_key": "client-cache-key",
        "client_metadata": {"session_id": "sid-1", "installation_id": "inst"},
        "metadata": {"user_id": CLAUDE_LEGACY_USER_ID, "session_id": "sid-1", "team": "x"},
    }
    result = chat(proxy, "hi", **fields)
    body = result.upstream()
    session = result.session
    assert session.client == ClientSession("sid-1", "body session_id")
    assert "session_id" not in body and "client_metadata" not in body
    assert body["metadata"] == {"user_id": session.b_leg, "team": "x"}
    cache_key = body["prompt_cache_key"]
    assert cache_key.startswith("pck-") and "client-cache-key" not in cache_key
    assert "sid-1" not in json.dumps(body) and CLAUDE_SESSION not in json.dumps(body)
    # The cache key is stable for the session, and differs between sessions.
    again = chat(proxy, "hi", "ok", "again", **fields).upstream()
    assert again["prompt_cache_key"] == cache_key
    assert again["metadata"]["user_id"] == "leg-req-2"
    other = chat(proxy, "hi", **{**fields, "session_id": "sid-2"}).upstream()
    assert other["prompt_cache_key"] != cache_key


def test_metadata_without_ids_is_left_alone(make_proxy: Any) -> None:
    proxy = make_proxy()
    body = chat(proxy, "hi", metadata={"team": "x"}).upstream()
    assert body["metadata"] == {"team": "x"}


def test_prompt_cache_key_names_the_session_and_is_never_forwarded(make_proxy: Any) -> None:
    # Codex sends its session id as prompt_cache_key (and nothing else in the body).
    proxy = make_proxy()
    fields = {"model": "openai-responses:m", "input": "hi", "prompt_cache_key": "codex-1"}
    one = proxy.send("openai-responses", dict(fields))
    two = proxy.send("openai-responses", dict(fields))
    assert one.session.client == ClientSession("codex-1", "body prompt_cache_key")
    assert one.session.id == two.session.id == a_leg_id("local", "codex-1")
    key = one.upstream()["prompt_cache_key"]
    assert key.startswith("pck-") and len(key) == len("pck-") + 32
    assert key == two.upstream()["prompt_cache_key"] and "codex-1" not in key
    # Without one, none is added.
    plain = proxy.send("openai-responses", {"model": "openai-responses:m", "input": "hi"})
    assert "prompt_cache_key" not in plain.upstream()


def test_claude_codes_metadata_user_id_through_the_anthropic_frontend(make_proxy: Any) -> None:
    # The Anthropic codec decodes metadata.user_id into the request's ``user``.
    proxy = make_proxy()
    result = proxy.send(
        "anthropic",
        {
            "model": "anthropic:claude-x",
            "max_tokens": 10,
            "metadata": {"user_id": CLAUDE_JSON_USER_ID},
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert result.session.client == ClientSession(CLAUDE_SESSION, "body metadata.user_id")
    assert result.session.id == a_leg_id("local", CLAUDE_SESSION)
    body = result.upstream()
    assert body["metadata"] == {"user_id": result.session.b_leg}
    assert CLAUDE_SESSION not in json.dumps(body) and "ab" * 32 not in json.dumps(body)


def test_an_anthropic_header_session_still_hides_metadata_user_id(make_proxy: Any) -> None:
    proxy = make_proxy()
    result = proxy.send(
        "anthropic",
        {
            "model": "anthropic:claude-x",
            "max_tokens": 10,
            "metadata": {"user_id": CLAUDE_LEGACY_USER_ID},
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"x-claude-code-session-id": CLAUDE_SESSION},
    )
    assert result.session.client == ClientSession(CLAUDE_SESSION, "header x-claude-code-session-id")
    assert result.upstream()["metadata"] == {"user_id": result.session.b_leg}


def test_multi_user_mode_scopes_sessions_by_client_key(
    make_proxy: Any, store_config: dict[str, Any]
) -> None:
    proxy = make_proxy(**MULTI_USER, sessions=store_config)
    alice = chat(proxy, "!/set(temperature=0.3)", session="shared", key=KEY_A)
    assert alice.text().startswith("Set temperature = 0.3")
    bob = chat(proxy, "hi", session="shared", key=KEY_B)
    assert alice.session.owner == key_id(KEY_A) and bob.session.owner == key_id(KEY_B)
    assert alice.session.id == a_leg_id(key_id(KEY_A), "shared")
    assert bob.session.id == a_leg_id(key_id(KEY_B), "shared") != alice.session.id
    assert "temperature" not in bob.upstream()
    assert chat(proxy, "hi", session="shared", key=KEY_A).upstream()["temperature"] == 0.3


def test_single_user_mode_ignores_the_key_for_the_owner(make_proxy: Any) -> None:
    proxy = make_proxy()
    result = chat(proxy, "hi", session="s", headers={"authorization": "Bearer whatever"})
    assert result.session.owner == "local"


def responses(proxy: Proxy, text: str, *, key: str | None = None, **fields: Any) -> Result:
    data = {"model": "openai-responses:m", "input": text, **fields}
    return proxy.send("openai-responses", data, key=key)


def test_previous_response_id_joins_the_session_that_produced_it(
    make_proxy: Any, store_config: dict[str, Any]
) -> None:
    # Metrics on: the answer is read, so its id is linked to the session.
    proxy = make_proxy(metrics={"enabled": True}, sessions=store_config)
    first = responses(proxy, "hi")
    assert first.session.isolated and first.ctx.response_id == "resp_req-1"
    second = responses(proxy, "!/set(temperature=0.4) go on", previous_response_id="resp_req-1")
    assert second.session.id == first.session.id and not second.session.isolated
    assert second.session.client == ClientSession(first.session.id, "previous_response_id chain")
    assert second.upstream()["temperature"] == 0.4
    assert second.upstream()["previous_response_id"] == "resp_req-1"
    third = responses(proxy, "and then", previous_response_id="resp_req-2")
    assert third.session.id == first.session.id
    assert third.upstream()["temperature"] == 0.4
    unknown = responses(proxy, "hi", previous_response_id="resp_unknown")
    assert unknown.session.isolated and unknown.session.id != first.session.id


def test_a_client_id_beats_previous_response_id(make_proxy: Any) -> None:
    proxy = make_proxy(metrics={"enabled": True})
    first = responses(proxy, "hi")
    second = responses(proxy, "hi", previous_response_id="resp_req-1", prompt_cache_key="own")
    assert second.session.id == a_leg_id("local", "own") != first.session.id


def test_another_keys_session_is_not_honoured_through_a_chain(
    make_proxy: Any, store_config: dict[str, Any]
) -> None:
    proxy = make_proxy(**MULTI_USER, metrics={"enabled": True}, sessions=store_config)
    responses(proxy, "hi", key=KEY_A)
    alice = responses(
        proxy, "!/set(temperature=0.4) go", key=KEY_A, previous_response_id="resp_req-1"
    )
    assert alice.upstream()["temperature"] == 0.4
    state = proxy.state(alice.session.id)
    assert state is not None and state.owner == key_id(KEY_A)
    # Bob learned Alice's response id: he gets a fresh, unremembered session.
    bob = responses(proxy, "hi", key=KEY_B, previous_response_id="resp_req-1")
    assert bob.session.id != alice.session.id
    assert bob.session.isolated and bob.session.owner == key_id(KEY_B)
    assert bob.session.state is None
    assert "temperature" not in bob.upstream()
    # And his request changed nothing of Alice's session.
    after = proxy.state(alice.session.id)
    assert after is not None and after.counters == state.counters


def test_a_chain_through_a_command_answer_keeps_the_session(make_proxy: Any) -> None:
    proxy = make_proxy(metrics={"enabled": True})
    first = responses(proxy, "hi")
    command = responses(proxy, "!/set(temperature=0.4)", previous_response_id="resp_req-1")
    proxy_answer_id = command.answer().id
    after = responses(proxy, "go on", previous_response_id=proxy_answer_id)
    assert after.session.id == first.session.id
    assert after.upstream()["temperature"] == 0.4


def test_the_heuristic_groups_requests_without_an_id(make_proxy: Any) -> None:
    proxy = make_proxy(sessions={"heuristic": True})
    one = chat(proxy, "plan a trip")
    two = chat(proxy, "plan a trip", "where to?", "Rome")
    other = chat(proxy, "something else")
    assert one.session.id == two.session.id != other.session.id
    assert one.session.client is not None and one.session.client.source == "heuristic"
    assert not one.session.isolated
    # A real id still wins.
    assert chat(proxy, "plan a trip", session="s").session.id == a_leg_id("local", "s")


def test_without_the_heuristic_the_first_message_does_not_group(make_proxy: Any) -> None:
    proxy = make_proxy()
    assert chat(proxy, "plan a trip").session.id != chat(proxy, "plan a trip").session.id


def test_command_answers_are_not_counted_as_requests(make_proxy: Any) -> None:
    proxy = make_proxy()
    chat(proxy, "!/hello", session="s")
    chat(proxy, "hi", session="s")
    chat(proxy, "!/session", session="s")
    state = proxy.state(a_leg_id("local", "s"))
    assert state is not None and state.counters == {"requests": 1}


# -- the session book ----------------------------------------------------------------------


def _session(client: str | None = "c", owner: str = "local") -> Session:
    found = ClientSession(client, "test") if client is not None else None
    session_id = a_leg_id(owner, client) if client is not None else "sess-isolated"
    return Session(id=session_id, owner=owner, client=found, b_leg="leg-1")


@pytest.fixture(params=["memory", "sqlite"])
def book(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionBook]:
    if request.param == "memory":
        yield SessionBook(MemorySessionStore())
        return
    store = SQLiteSessionStore(tmp_path / "book.db")
    yield SessionBook(store)
    asyncio.run(store.close())


def test_the_book_reads_immediately_only_from_an_in_process_store(book: SessionBook) -> None:
    assert book.immediate is isinstance(book.store, MemorySessionStore)


def test_change_creates_then_updates_the_stored_state(book: SessionBook) -> None:
    async def scenario() -> None:
        session = _session()
        await book.load(session)
        assert session.state is None
        state = await book.change(session, lambda s: s.settings.update(model="m1"))
        assert state.version == 1 and session.state is state
        assert state.owner == "local" and state.client_session == "c"
        await book.change(session, lambda s: s.settings.update(temperature=0.2))
        reread = _session()
        await book.load(reread)
        assert reread.state is not None and reread.state.version == 2
        assert reread.settings == {"model": "m1", "temperature": 0.2}
        assert reread.setting("model") == "m1" and reread.setting("x", 7) == 7

    asyncio.run(scenario())


def test_changes_merge_with_a_concurrent_writer(book: SessionBook) -> None:
    async def scenario() -> None:
        session = _session()
        await book.change(session, lambda s: s.settings.update(a=1))
        stale = _session()
        await book.load(stale)
        # Another request of the session writes meanwhile.
        await book.change(_session(), lambda s: s.settings.update(b=2))
        # The stale copy's change is applied to the stored state, not over it.
        state = await book.change(stale, lambda s: s.settings.update(c=3))
        assert state.settings == {"a": 1, "b": 2, "c": 3}

    asyncio.run(scenario())


def test_an_isolated_session_changes_for_this_request_only(book: SessionBook) -> None:
    async def scenario() -> None:
        session = _session(client=None)
        assert session.isolated
        await book.load(session)
        assert session.state is None
        state = await book.change(session, lambda s: s.settings.update(model="m1"))
        assert session.settings == {"model": "m1"} and state.version == 0
        book.record(session, lambda s: s.settings.update(x=1))
        book.after_request(session, route="r", response_id=None)
        await book.drain()
        assert await book.store.get(session.id) is None
        assert await book.store.list() == []
        assert await book.forget(session) is False and session.state is None

    asyncio.run(scenario())


def test_load_now_reads_an_in_process_store_without_awaiting() -> None:
    book = SessionBook(MemorySessionStore())

    async def scenario() -> None:
        await book.change(_session(), lambda s: s.settings.update(model="m1"))
        await book.store.link("resp_1", _session().id)

    asyncio.run(scenario())
    session = _session()
    book.load_now(session)
    assert session.settings == {"model": "m1"}
    isolated = _session(client=None)
    book.load_now(isolated)
    assert isolated.state is None
    assert book.resolve_now("resp_1") == session.id and book.resolve_now("nope") is None


def test_record_and_after_request_write_in_the_background(book: SessionBook) -> None:
    async def scenario() -> None:
        session = _session()
        book.record(session, lambda s: s.steering.update(rule=5.0))
        book.after_request(session, route="instance/openai (m)", response_id="resp_9")
        book.after_request(session, route=None, response_id=None)
        await book.drain()
        state = await book.store.get(session.id)
        assert state is not None
        assert state.steering == {"rule": 5.0}
        assert state.counters == {"requests": 2}
        assert state.last_route == "instance/openai (m)"  # a None route keeps the last one
        assert await book.resolve("resp_9") == session.id

    asyncio.run(scenario())


def test_an_isolated_sessions_answer_id_is_linked_but_nothing_stored(book: SessionBook) -> None:
    async def scenario() -> None:
        session = _session(client=None)
        book.after_request(session, route="r", response_id="resp_iso")
        await book.drain()
        assert await book.resolve("resp_iso") == session.id
        assert await book.store.get(session.id) is None

    asyncio.run(scenario())


def test_the_memory_store_takes_bookkeeping_at_once_without_a_task() -> None:
    # In memory the per-request bookkeeping is written synchronously (no event-loop task:
    # cheaper than scheduling one), even for a caller outside any running loop.
    store = MemorySessionStore()
    book = SessionBook(store)
    session = _session()
    book.after_request(session, route="r", response_id="resp_1")
    stored = store.get_now(session.id)
    assert stored is not None and stored.counters == {"requests": 1} and stored.last_route == "r"
    assert store.resolve_now("resp_1") == session.id
    book.record(session, lambda s: s.settings.update(x=1))
    stored = store.get_now(session.id)
    assert stored is not None and stored.settings == {"x": 1}
    asyncio.run(book.drain())


def test_forget_deletes_the_stored_state(book: SessionBook) -> None:
    async def scenario() -> None:
        session = _session()
        await book.change(session, lambda s: s.settings.update(model="m1"))
        assert await book.forget(session) is True and session.state is None
        assert await book.store.get(session.id) is None
        assert await book.forget(session) is False

    asyncio.run(scenario())


def test_a_failing_store_degrades_to_no_memory(tmp_path: Path, caplog: Any) -> None:
    store = SQLiteSessionStore(tmp_path / "gone.db")
    book = SessionBook(store)

    async def scenario() -> None:
        await store.close()  # every later call raises SessionStoreError
        session = _session()
        await book.load(session)
        assert session.state is None
        assert await book.resolve("resp_1") is None
        book.after_request(session, route="r", response_id="resp_1")
        book.record(session, lambda s: s.settings.update(x=1))
        await book.drain()

    asyncio.run(scenario())
    assert "session store unavailable" in caplog.text
    assert "bookkeeping not saved" in caplog.text and "change not saved" in caplog.text


def test_a_command_whose_change_cannot_be_saved_is_refused(make_proxy: Any, tmp_path: Path) -> None:
    proxy = make_proxy(sessions={"store": "sqlite", "sqlite_path": str(tmp_path / "s.db")})
    proxy.run(proxy.book.store.close())
    # Reading fails softly (no memory) ...
    assert chat(proxy, "hi", session="s").forwarded
    # ... a command's change is not saved: the proxy says so and forwards nothing.
    result = chat(proxy, "!/set(temperature=0.2) and a prompt", session="s")
    text = result.text()
    assert "The session store failed" in text and "nothing was saved" in text
    assert "Nothing was sent to the model" in text


# -- request dedup -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_dedup_refuses_a_key_in_flight_with_the_time_left() -> None:
    clock = Clock()
    table = DedupTable(window=3.0, clock=clock)
    assert table.admit("k") is None
    clock.now += 1.0
    assert table.admit("k") == pytest.approx(2.0)
    assert table.admit("other") is None
    clock.now += 5.0
    # In flight longer than the window (a slow request): a retry goes through.
    assert table.admit("k") is None


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404])
def test_dedup_an_answer_clears_the_key(status: int) -> None:
    table = DedupTable(window=3.0, clock=Clock())
    table.admit("k")
    table.done("k", status)
    assert len(table) == 0 and table.admit("k") is None


@pytest.mark.parametrize("status", [0, 429, 500, 502, 503])
def test_dedup_a_failure_holds_the_key_for_the_window_after_it_ended(status: int) -> None:
    clock = Clock()
    table = DedupTable(window=3.0, clock=clock)
    table.admit("k")
    clock.now += 10.0  # a long request
    table.done("k", status)
    clock.now += 1.0
    assert table.admit("k") == pytest.approx(2.0)  # counted from the end, not the start
    clock.now += 2.0
    assert table.admit("k") is None


def test_dedup_done_for_an_unknown_key_is_harmless() -> None:
    table = DedupTable(clock=Clock())
    table.done("never", 500)
    assert len(table) == 0


def test_dedup_is_bounded_oldest_first() -> None:
    clock = Clock()
    table = DedupTable(window=3.0, max_entries=2, clock=clock)
    table.admit("a")
    table.admit("b")
    table.done("a", 500)  # still held...
    table.admit("c")  # ...but the oldest goes
    assert len(table) == 2
    assert table.admit("a") is None  # forgotten: admitted again (and "b" goes)
    assert table.admit("c") is not None
    assert table.admit("b") is None


def _dedup_proxy(make_proxy: Any, clock: Clock, **config: Any) -> Proxy:
    proxy: Proxy = make_proxy(**config)
    proxy.replace_stage("dedup", DedupStage(DedupTable(window=3.0, clock=clock)))
    return proxy


def test_dedup_refuses_the_same_request_of_a_session_while_the_first_runs(
    make_proxy: Any, store_config: dict[str, Any]
) -> None:
    clock = Clock()
    proxy = _dedup_proxy(make_proxy, clock, sessions=store_config)
    first = chat(proxy, "hi", session="s", finish=False)
    assert first.forwarded
    clock.now += 1.0
    dup = chat(proxy, "hi", session="s")
    assert dup.reply.status == 429 and dup.reply.headers["retry-after"] == "2"
    error = dup.error()["error"]
    assert error["code"] == "duplicate_request" and "retry in 2 s" in error["message"]
    assert dup.reply.headers[SESSION_ECHO_HEADER] == first.session.id
    # Another session, or another request of the same session, is not a duplicate.
    assert chat(proxy, "hi", session="other").forwarded
    assert chat(proxy, "hi there", session="s").forwarded
    # An answer clears it: a deliberate resend goes through.
    first.finish(200)
    assert chat(proxy, "hi", session="s").forwarded


def test_dedup_after_a_provider_failure_then_after_the_window(make_proxy: Any) -> None:
    clock = Clock()
    proxy = _dedup_proxy(make_proxy, clock)
    chat(proxy, "hi", session="s", finish=False).finish(503)
    clock.now += 1.0
    assert chat(proxy, "hi", session="s").reply.status == 429
    clock.now += 3.0
    assert chat(proxy, "hi", session="s").forwarded


def test_dedup_sees_the_clients_request_not_the_providers_b_leg(make_proxy: Any) -> None:
    # Claude Code: the B-leg id replaces metadata.user_id per request; a resend is still
    # the same request.
    clock = Clock()
    proxy = _dedup_proxy(make_proxy, clock)
    data = {
        "model": "anthropic:claude-x",
        "max_tokens": 10,
        "metadata": {"user_id": CLAUDE_JSON_USER_ID},
        "messages": [{"role": "user", "content": "hi"}],
    }
    first = proxy.send("anthropic", json.loads(json.dumps(data)), finish=False)
    assert first.forwarded and first.session.client is not None
    again = proxy.send("anthropic", json.loads(json.dumps(data)))
    assert again.reply.status == 429
    assert again.error()["error"]["type"] == "rate_limit_error"


def test_dedup_never_touches_requests_without_a_session_id(make_proxy: Any) -> None:
    clock = Clock()
    proxy = _dedup_proxy(make_proxy, clock)
    assert chat(proxy, "hi", finish=False).forwarded
    assert chat(proxy, "hi", finish=False).forwarded


def test_dedup_compares_requests_as_the_client_sent_them(make_proxy: Any) -> None:
    clock = Clock()
    proxy = _dedup_proxy(make_proxy, clock)
    assert chat(proxy, "hi", session="s", finish=False).forwarded
    # Not the same request (dedup runs before the commands are stripped) ...
    assert chat(proxy, "!/low hi", session="s", finish=False).forwarded
    # ... while a byte-identical resend is.
    assert chat(proxy, "!/low hi", session="s").reply.status == 429


def test_dedup_is_built_only_with_sessions(make_proxy: Any) -> None:
    names = [s.name for s in make_proxy(sessions={"enabled": False}).app.pipeline.stages]
    assert "dedup" not in names and "sessions" not in names and "interactive" in names
    names = [s.name for s in make_proxy(dedup={"enabled": False}).app.pipeline.stages]
    assert "dedup" not in names
    names = [s.name for s in make_proxy().app.pipeline.stages]
    assert names[:3] == ["sessions", "dedup", "interactive"] and names[-1] == "routing"


# -- key policies and session toggles (extproc/pipeline/stages/policies.py) ---------------


def _ctx(settings: dict[str, Any] | None = None, key: str | None = None) -> RequestContext:
    ctx = RequestContext(
        request_id="r", frontend="openai-chat", method="POST", path="/", headers={}, client_key=key
    )
    session = _session()
    if settings is not None:
        session.state = SessionState.new(session.id, "local")
        session.state.settings.update(settings)
    ctx.session = session
    return ctx


@pytest.mark.parametrize(
    ("stage", "setting"),
    [
        ("redaction", "redaction"),
        ("commands", "dangerous-commands"),
        ("loop_detection", "loop-detection"),
    ],
)
def test_a_session_setting_turns_its_stage_off(stage: str, setting: str) -> None:
    policies = KeyPolicies({})
    assert policies.disabled(_ctx({setting: False}), stage)
    assert not policies.disabled(_ctx({setting: True}), stage)
    assert not policies.disabled(_ctx({}), stage)
    assert not policies.disabled(_ctx(None), stage)


def test_without_safety_toggles_only_non_safety_settings_turn_stages_off() -> None:
    policies = KeyPolicies({}, safety_toggles=False)
    assert not policies.disabled(_ctx({"redaction": False}), "redaction")
    assert not policies.disabled(_ctx({"dangerous-commands": False}), "commands")
    assert policies.disabled(_ctx({"loop-detection": False}), "loop_detection")


def test_a_key_policy_turns_stages_off_for_its_key_only() -> None:
    from extproc.config.safety import KeyPolicyConfig

    policies = KeyPolicies({key_id(KEY_A): KeyPolicyConfig(disable=["sandbox"])})
    assert policies.disabled(_ctx({}, KEY_A), "sandbox")
    assert not policies.disabled(_ctx({}, KEY_A), "commands")
    assert not policies.disabled(_ctx({}, KEY_B), "sandbox")
    assert not policies.disabled(_ctx({}, None), "sandbox")


def test_model_allow_lists_are_globs_per_key() -> None:
    from extproc.config.safety import KeyPolicyConfig

    policies = KeyPolicies({key_id(KEY_A): KeyPolicyConfig(models=["gpt-4o*", "claude-?"])})
    assert policies.model_allowed(_ctx({}, KEY_A), "gpt-4o-mini")
    assert policies.model_allowed(_ctx({}, KEY_A), "GPT-4O")  # case-insensitive
    assert policies.model_allowed(_ctx({}, KEY_A), "claude-3")
    assert not policies.model_allowed(_ctx({}, KEY_A), "o3")
    assert not policies.model_allowed(_ctx({}, KEY_A), "xgpt-4o")  # whole name
    assert policies.model_allowed(_ctx({}, KEY_B), "o3")  # no policy: any
    assert KeyPolicies({}).model_allowed(_ctx({}, KEY_A), "anything")


def _store_settings(proxy: Proxy, owner: str, client: str, **settings: Any) -> None:
    """Settings written straight into the store (as an older proxy version might have)."""
    session_id = a_leg_id(owner, client)

    def mutate(state: SessionState) -> None:
        state.settings.update(settings)

    proxy.run(
        update(
            proxy.book.store,
            session_id,
            mutate,
            create=lambda: SessionState.new(session_id, owner, client_session=client),
        )
    )


SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8" * 4


@pytest.mark.parametrize(
    ("allow", "redacted"), [(False, True), (True, False)], ids=["locked", "allowed"]
)
def test_multi_user_mode_honours_stored_safety_toggles_only_when_allowed(
    make_proxy: Any, allow: bool, redacted: bool
) -> None:
    proxy = make_proxy(
        **MULTI_USER,
        redaction={"enabled": True},
        interactive={"allow_safety_toggles": allow},
    )
    _store_settings(proxy, key_id(KEY_A), "s", redaction=False)
    body = json.dumps(chat(proxy, f"key {SECRET}", session="s", key=KEY_A).upstream())
    assert (SECRET not in body) is redacted


def test_single_user_mode_honours_a_stored_safety_toggle(make_proxy: Any) -> None:
    proxy = make_proxy(redaction={"enabled": True})
    _store_settings(proxy, "local", "s", redaction=False)
    assert SECRET in json.dumps(chat(proxy, SECRET, session="s").upstream())
    assert SECRET not in json.dumps(chat(proxy, SECRET, session="other").upstream())


# -- routing precedence (extproc/pipeline/stages/routing.py, resolver.expression) ----------


def _resolver(**routing: Any) -> Resolver:
    return Resolver(build_config(proxy_config(routing=routing)))


def test_expression_rung_static_route_beats_everything() -> None:
    resolver = _resolver(static_route="anthropic:claude-x", rewrites=[{"model": "m", "to": "x"}])
    facts = RequestFacts(session_route="openai:s", header_route="openai:h")
    assert resolver.expression("m", facts) == ("anthropic:claude-x", "static route")


def test_expression_rung_session_beats_header_and_rewrites() -> None:
    resolver = _resolver(rewrites=[{"model": "m", "to": "gemini:g"}])
    facts = RequestFacts(session_route="openai:s", session_why="one-off", header_route="openai:h")
    assert resolver.expression("m", facts) == ("openai:s", "one-off")


def test_expression_rung_header_beats_rewrites_and_model() -> None:
    resolver = _resolver(rewrites=[{"model": "m", "to": "gemini:g"}])
    facts = RequestFacts(header_route="openai:h")
    assert resolver.expression("m", facts) == ("openai:h", "x-llm-route header")


def test_expression_rung_rewrite_then_model() -> None:
    resolver = _resolver(
        rewrites=[
            {"model": "m", "to": "gemini:g", "clients": ["key-000000000001"]},
            {"model": "m", "to": "openai:o"},
        ]
    )
    assert resolver.expression(" m ", RequestFacts()) == ("openai:o", "rewrite 'm' -> 'openai:o'")
    facts = RequestFacts(client_key_id="key-000000000001")
    assert resolver.expression("m", facts)[0] == "gemini:g"
    assert resolver.expression("other", RequestFacts()) == ("other", "")


def _routed(result: Result) -> tuple[str, str]:
    route = result.ctx.route
    assert route is not None and result.forwarded
    assert result.ctx.model is not None
    return route.cluster, result.ctx.model


def test_route_rung_static_route_beats_the_session(make_proxy: Any) -> None:
    proxy = make_proxy(routing={"static_route": "anthropic:claude-static"})
    chat(proxy, "!/set(model=gemini:g-session)", session="s")
    result = chat(proxy, "hi", session="s", headers={"x-llm-route": "openai:h"})
    assert result.ctx.route is not None
    assert result.ctx.route.cluster == "instance/anthropic"
    assert result.ctx.route.reason.startswith("static route")


def test_route_rung_the_session_beats_the_header(make_proxy: Any) -> None:
    proxy = make_proxy()
    chat(proxy, "!/set(model=anthropic:claude-session)", session="s")
    result = chat(proxy, "hi", session="s", headers={"x-llm-route": "gemini:g-header"})
    assert result.ctx.route is not None
    assert result.ctx.route.cluster == "instance/anthropic"
    assert result.ctx.route.reason.startswith("session model")


def test_route_rung_the_header_beats_the_model(make_proxy: Any) -> None:
    proxy = make_proxy()
    result = chat(proxy, "hi", session="s", headers={"x-llm-route": "gemini:g-header"})
    assert _routed(result) == ("instance/gemini", "g-header")
    assert result.ctx.route is not None
    assert result.ctx.route.reason.startswith("x-llm-route header")


def test_route_rung_the_model_alone(make_proxy: Any) -> None:
    result = chat(make_proxy(), "hi", session="s")
    assert _routed(result) == ("instance/openai", "gpt-x")


def test_the_route_header_is_ignored_in_multi_user_mode_unless_allowed(make_proxy: Any) -> None:
    proxy = make_proxy(**MULTI_USER)
    result = chat(proxy, "hi", key=KEY_A, headers={"x-llm-route": "gemini:g"})
    assert _routed(result) == ("instance/openai", "gpt-x")
    proxy = make_proxy(**MULTI_USER, routing={"route_header": True})
    result = chat(proxy, "hi", key=KEY_A, headers={"x-llm-route": "anthropic:c"})
    assert result.ctx.route is not None and result.ctx.route.cluster == "instance/anthropic"


def test_routing_rewrites_do_not_apply_to_the_sessions_route(make_proxy: Any) -> None:
    proxy = make_proxy(routing={"rewrites": [{"model": "cheap", "to": "gemini:g"}]})
    assert _routed(chat(proxy, "hi", model="cheap"))[0] == "instance/gemini"
    chat(proxy, "!/model(cheap)", session="s")
    # The session's model "cheap" is not rewritten: no backend serves a bare "cheap".
    refused = chat(proxy, "hi", session="s", model="openai:gpt-x")
    assert refused.reply.status == 404


def test_session_rungs_oneoff_then_route_list_then_backend_then_model(make_proxy: Any) -> None:
    proxy = make_proxy()
    chat(proxy, "!/model(openai:m-model) !/backend(gemini:m-backend)", session="s")
    chat(proxy, "!/route-create(anthropic:m-route)", session="s")
    chat(proxy, "!/oneoff(openai-responses:m-oneoff)", session="s")
    seen = []
    for _ in range(4):
        result = chat(proxy, "hi", session="s")
        assert result.ctx.route is not None
        seen.append((result.ctx.route.cluster, result.ctx.route.reason.split(";")[0]))
        if len(seen) == 2:
            chat(proxy, "!/route-clear", session="s")
        if len(seen) == 3:
            chat(proxy, "!/unset(backend)", session="s")
    assert seen == [
        ("instance/openai-responses", "one-off"),
        ("instance/anthropic", "session route"),
        ("instance/gemini", "session backend"),
        ("instance/openai", "session model"),
    ]


def test_a_backend_without_a_model_takes_the_sessions_model_or_the_requests(
    make_proxy: Any,
) -> None:
    proxy = make_proxy()
    chat(proxy, "!/backend(anthropic)", session="s")
    assert _routed(chat(proxy, "hi", session="s", model="claude-req")) == (
        "instance/anthropic",
        "claude-req",
    )
    chat(proxy, "!/model(claude-session)", session="s")
    assert _routed(chat(proxy, "hi", session="s", model="claude-req")) == (
        "instance/anthropic",
        "claude-session",
    )


def test_params_rung_session_beats_uri_params(make_proxy: Any) -> None:
    proxy = make_proxy()
    chat(proxy, "!/set(temperature=0.5, top_p=0.7)", session="s")
    body = chat(
        proxy, "hi", session="s", model="openai:gpt-x?temperature=0.9", temperature=0.1
    ).upstream()
    assert body["temperature"] == 0.5 and body["top_p"] == 0.7


def test_params_rung_uri_params_beat_the_body(make_proxy: Any) -> None:
    body = chat(
        make_proxy(), "hi", session="s", model="openai:gpt-x?temperature=0.9", temperature=0.1
    ).upstream()
    assert body["temperature"] == 0.9


def test_params_rung_the_body_alone(make_proxy: Any) -> None:
    body = chat(make_proxy(), "hi", session="s", temperature=0.1, top_p=0.3).upstream()
    assert body["temperature"] == 0.1 and body["top_p"] == 0.3


def test_session_reasoning_effort_reaches_the_provider(make_proxy: Any) -> None:
    proxy = make_proxy()
    chat(proxy, "!/set(effort=high)", session="s")
    body = chat(proxy, "hi", session="s", model="openai:o3", reasoning_effort="low").upstream()
    assert body["reasoning_effort"] == "high"


def _reasoning_of(result: Result) -> Any:
    return result.request.reasoning


def test_presets_apply_per_routed_model(make_proxy: Any) -> None:
    presets = {
        "max": [
            {"models": ["claude-*"], "budget_tokens": 60000, "enabled": True},
            {"effort": "high"},
        ],
        "quick": [{"models": ["gpt-*"], "effort": "minimal"}],
    }
    proxy = make_proxy(interactive={"presets": presets})
    chat(proxy, "!/max", session="s")
    claude = chat(proxy, "hi", session="s", model="anthropic:claude-x")
    assert _reasoning_of(claude).budget_tokens == 60000 and _reasoning_of(claude).enabled
    gpt = chat(proxy, "hi", session="s", model="openai:gpt-x")
    assert _reasoning_of(gpt).effort == "high" and _reasoning_of(gpt).budget_tokens is None
    assert gpt.upstream()["reasoning_effort"] == "high"
    # A preset with no rule for the model leaves the request alone.
    chat(proxy, "!/quick", session="s")
    other = chat(proxy, "hi", session="s", model="anthropic:claude-x", reasoning_effort="low")
    assert _reasoning_of(other) is not None and _reasoning_of(other).effort == "low"
    # The preset is matched on the routed model, not the requested one.
    chat(proxy, "!/model(openai:gpt-routed)", session="s")
    routed = chat(proxy, "hi", session="s", model="anthropic:claude-x")
    assert _reasoning_of(routed).effort == "minimal"


def test_a_preset_comes_after_the_params_and_the_budget_after_the_preset(
    make_proxy: Any,
) -> None:
    proxy = make_proxy()
    chat(proxy, "!/set(reasoning-effort=low) !/max", session="s")
    result = chat(proxy, "hi", session="s", model="anthropic:claude-x")
    assert _reasoning_of(result).effort == "high"
    assert _reasoning_of(result).budget_tokens == 32768
    chat(proxy, "!/set(thinking-budget=2048)", session="s")
    result = chat(proxy, "hi", session="s", model="anthropic:claude-x")
    assert _reasoning_of(result).budget_tokens == 2048 and _reasoning_of(result).enabled
    assert result.upstream()["thinking"]["budget_tokens"] == 2048


def test_no_think_and_a_zero_budget_turn_reasoning_off(make_proxy: Any) -> None:
    proxy = make_proxy()
    chat(proxy, "!/no-think", session="s")
    result = chat(proxy, "hi", session="s", model="anthropic:claude-x")
    assert _reasoning_of(result).enabled is False
    chat(proxy, "!/unset(preset) !/set(thinking=0)", session="s")
    result = chat(proxy, "hi", session="s", model="anthropic:claude-x")
    assert _reasoning_of(result).enabled is False and _reasoning_of(result).budget_tokens == 0


def test_a_session_route_that_cannot_be_routed_is_refused_when_typed(make_proxy: Any) -> None:
    proxy = make_proxy()
    refused = chat(proxy, "!/backend(nope:x)", session="s").text()
    assert refused.startswith("!/backend: backend 'nope:x' cannot be routed: unknown backend")
    assert "Nothing was sent to the model" in refused
    assert proxy.state(a_leg_id("local", "s")) is None  # nothing was saved
    assert chat(proxy, "hi", session="s").forwarded


def test_a_racing_session_route_must_be_a_configured_alias() -> None:
    resolver = _resolver()
    with pytest.raises(InvalidRequest) as caught:
        resolver.route("m", RequestFacts(session_route="openai:a!anthropic:b"))
    assert "name the expression in routing.aliases" in caught.value.message
    with pytest.raises(NotFound):
        resolver.route("nope:m", RequestFacts())


def test_the_session_stage_is_first_after_access_control(make_proxy: Any) -> None:
    names = [s.name for s in make_proxy(**MULTI_USER).app.pipeline.stages]
    assert names[:4] == ["access", "sessions", "dedup", "interactive"]
    assert isinstance(make_proxy().stage("sessions"), SessionStage)
