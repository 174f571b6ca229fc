"""Wire capture end to end: real Envoy + extproc (``python -m extproc``) with capture on.

Both capture modes run the same checks: ``observers`` (Envoy's observer filters in
observability mode, served by a capture process of its own) and ``tap`` (the default: the
proxy's roles record their own messages). Requests go out with httpx and explicit body bytes,
so the test knows exactly what the client sent and received; the fakes record what they
received and what they sent. Each leg of the capture must equal its own side byte for byte:
the client leg what the client saw, the provider leg what the provider saw, attempt by attempt.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from extproc.observe.capture import (
    LEGS,
    CaptureFormatError,
    CaptureRecord,
    Exchange,
    TruncatedTail,
    capture_files,
    exchanges,
    iter_records,
    parse_sse,
)
from extproc.observe.capture_cli import main as capture_main
from extproc.pipeline.context import key_id
from extproc.sessions.ids import a_leg_id
from tests.e2e.conftest import two_backends
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import (
    CLIENT_KEY,
    PROVIDER_KEY,
    REPO,
    ProxyProcess,
    fast_health,
    free_port,
    proxy_config,
    running_proxy,
    start_proxy,
    wait_for,
)

ALPHA_KEY = f"{PROVIDER_KEY}-alpha"
BETA_KEY = f"{PROVIDER_KEY}-beta"
MODES = ("observers", "tap")
#: Spaces, key order and raw UTF-8 no encoder would produce: the client's own bytes.
CHAT_BODY = (
    '{ "messages" : [ {"role": "user", "content": "Grüße, ☃ — say hello"} ],\n'
    '  "model": "gpt-4o-mini" }'
).encode()
CHAT_STREAM_BODY = (
    '{"model":"gpt-4o-mini", "stream": true,\t"messages":[{"content":"hi ☃","role":"user"}]}'
).encode()
ANTHROPIC_BODY = (
    '{"model": "gpt-4o-mini", "max_tokens": 64,  "messages": [{"role": "user", "content": "hé"}]}'
).encode()
GEMINI_BODY = b'{"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}'


def masked(key: str) -> bytes:
    """How a capture shows a credential: ``***`` and the key's id (``key-`` + 12 hex)."""
    return b"***" + key_id(key).encode()


def capture_config(directory: Path, mode: str) -> dict[str, Any]:
    config: dict[str, Any] = {"enabled": True, "directory": str(directory)}
    if mode == "observers":
        config.update(observers=True, grpc_port=free_port())
    return config


@dataclass(frozen=True)
class Capturing:
    """A running proxy that captures to ``directory``, in capture mode ``mode``."""

    proxy: ProxyProcess
    directory: Path
    mode: str

    @property
    def observers(self) -> bool:
        return self.mode == "observers"


def _capturing(
    factory: pytest.TempPathFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI, mode: str
) -> Iterator[Capturing]:
    tmp = factory.mktemp(f"capture-{mode}")
    directory = tmp / "captures"
    config = two_backends(fake_a, fake_b, capture=capture_config(directory, mode))
    with running_proxy(tmp, config) as proxy:
        yield Capturing(proxy, directory, mode)


@pytest.fixture(scope="module")
def observers_capture(
    tmp_path_factory: pytest.TempPathFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> Iterator[Capturing]:
    yield from _capturing(tmp_path_factory, fake_a, fake_b, "observers")


@pytest.fixture(scope="module")
def tap_capture(
    tmp_path_factory: pytest.TempPathFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> Iterator[Capturing]:
    yield from _capturing(tmp_path_factory, fake_a, fake_b, "tap")


@pytest.fixture(params=MODES)
def capturing(request: pytest.FixtureRequest) -> Capturing:
    """Each capture mode in turn (one proxy per mode for the whole module)."""
    found: Capturing = request.getfixturevalue(f"{request.param}_capture")
    return found


def session() -> str:
    """A fresh session id: how a test finds its own exchange among the module's captures."""
    return f"cap-{uuid.uuid4().hex[:12]}"


def send(url: str, body: bytes, headers: dict[str, str], sid: str) -> tuple[httpx.Response, bytes]:
    """POST ``body`` as is; the response and the body bytes exactly as received."""
    all_headers = {
        "content-type": "application/json",
        "accept-encoding": "identity",
        "x-session-id": sid,
        **headers,
    }
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", url, content=body, headers=all_headers) as response,
    ):
        received = b"".join(response.iter_raw())
    return response, received


def openai_send(proxy: ProxyProcess, body: bytes, sid: str) -> tuple[httpx.Response, bytes]:
    url = f"{proxy.openai_base_url}/chat/completions"
    return send(url, body, {"authorization": f"Bearer {CLIENT_KEY}"}, sid)


def anthropic_send(proxy: ProxyProcess, body: bytes, sid: str) -> tuple[httpx.Response, bytes]:
    headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    return send(f"{proxy.base_url}/anthropic/v1/messages", body, headers, sid)


def settled(exchange: Exchange, attempts: int, retried: Collection[int] = ()) -> bool:
    """Every leg of the exchange is written to its end: the client leg, ``attempts`` provider
    requests, and the answers of those not in ``retried`` (attempts Envoy cut off to retry:
    what the capture has of their answers depends on the mode, and the observer filters see
    such a leg end only when Envoy closes their stream, seconds later)."""
    if not (exchange.client_request.complete and exchange.client_response.complete):
        return False
    if sorted(exchange.attempts) != list(range(1, attempts + 1)):
        return False
    return all(
        attempt.request.complete and (number in retried or attempt.response.complete)
        for number, attempt in exchange.attempts.items()
    )


def session_exchanges(directory: Path, sid: str) -> list[Exchange]:
    if not directory.exists():
        return []
    problems: list[CaptureFormatError] = []  # the writer may be mid-write: a torn tail is fine
    # Captures are filed under the proxy's A-leg session id (single-user owner "local").
    a_leg = a_leg_id("local", sid)
    return [e for e in exchanges(directory, problems=problems) if e.session_id == a_leg]


def captured(
    directory: Path,
    sid: str,
    attempts: int = 1,
    retried: Collection[int] = (),
    timeout: float = 15.0,
) -> Exchange:
    """The one exchange of session ``sid``, once the writer has flushed all of it."""
    found: list[Exchange] = []

    def ready() -> bool:
        found[:] = session_exchanges(directory, sid)
        return len(found) == 1 and settled(found[0], attempts, retried)

    wait_for(ready, timeout, what=f"the capture of session {sid} ({attempts} attempts)")
    return found[0]


def records_of(directory: Path, request_id: str) -> list[CaptureRecord]:
    problems: list[CaptureFormatError] = []
    return [r for r in iter_records(directory, problems=problems) if r.request_id == request_id]


def assert_provider_leg_is_what_the_fake_saw(
    exchange: Exchange, number: int, fake: Any, *, retried: bool = False
) -> None:
    """Attempt ``number`` is the fake's last chat exchange, byte for byte, both ways.

    ``retried``: Envoy retried this attempt on its status. It resets such an attempt as soon
    as it has the response headers, so the body may never cross its filters: what the capture
    has of it is then only a prefix (usually nothing) of what the fake sent.
    """
    attempt = exchange.attempts[number]
    [received] = fake.chat_requests()[-1:]
    [sent] = fake.chat_sent_responses()[-1:]
    assert sent.request is received
    assert attempt.request.body == received.body
    assert attempt.request.header(":path") == received.path + (
        f"?{received.query}" if received.query else ""
    )
    if retried:
        assert sent.body.startswith(attempt.response.body)
    else:
        assert attempt.response.body == sent.body
    assert attempt.response.status == sent.status
    # The answer's own headers came through as the fake wrote them.
    fake_id = re.search(rb"(?im)^x-request-id: *(\S+)", sent.head)
    assert fake_id is not None
    assert attempt.response.header("x-request-id") == fake_id.group(1).decode()


# -- same protocol -----------------------------------------------------------------------


def test_non_streaming_legs_are_the_bytes_on_each_side(
    capturing: Capturing, fake_a: FakeOpenAI
) -> None:
    sid = session()
    response, received = openai_send(capturing.proxy, CHAT_BODY, sid)
    assert response.status_code == 200
    exchange = captured(capturing.directory, sid)

    assert exchange.client_request.body == CHAT_BODY
    assert exchange.client_response.body == received
    assert exchange.client_response.status == 200
    assert exchange.method == "POST" and exchange.path == "/v1/chat/completions"
    assert exchange.client_key_id == key_id(CLIENT_KEY)
    assert (
        exchange.client_request.header("authorization") == "Bearer " + masked(CLIENT_KEY).decode()
    )

    assert list(exchange.attempts) == [1]
    assert_provider_leg_is_what_the_fake_saw(exchange, 1, fake_a)
    provider = exchange.attempts[1]
    # The ROUTER role re-encoded the request: the provider leg is not the client's bytes.
    assert provider.request.body != CHAT_BODY
    assert json.loads(provider.request.body)["messages"] == json.loads(CHAT_BODY)["messages"]
    assert provider.request.header("authorization") == "Bearer " + masked(ALPHA_KEY).decode()
    assert provider.request.annotations["backend"] == "openai"
    assert exchange.client_response.summary().text == "alpha says hello to gpt-4o-mini"


def test_streamed_chunks_are_records_in_order(capturing: Capturing, fake_a: FakeOpenAI) -> None:
    # Events a little apart, so that each crosses Envoy as a chunk of its own.
    fake_a.set_fault(chunk_delay=0.03, count=1)
    sid = session()
    response, received = openai_send(capturing.proxy, CHAT_STREAM_BODY, sid)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    exchange = captured(capturing.directory, sid)

    assert exchange.client_request.body == CHAT_STREAM_BODY
    client = exchange.client_response
    assert client.body == received
    # One record per chunk, each of whole events, in the order the client got them
    # (answer redaction may hold a token that could start a secret, so a chunk can
    # carry two events).
    events = parse_sse(received)
    per_chunk = [parse_sse(chunk) for chunk in client.chunks]
    assert [event for chunk in per_chunk for event in chunk] == events
    assert all(per_chunk) and len(client.chunks) > 5
    assert client.chunk_mono_ns == sorted(client.chunk_mono_ns)
    assert len(set(client.chunk_mono_ns)) == len(client.chunk_mono_ns)
    assert events[-1].data == "[DONE]"
    assert client.summary().text == "alpha says hello to gpt-4o-mini"

    [sent] = fake_a.chat_sent_responses()
    provider = exchange.attempts[1].response
    assert provider.chunks == sent.chunks  # event by event, as the fake wrote them
    assert_provider_leg_is_what_the_fake_saw(exchange, 1, fake_a)
    # The proxy asked the provider for usage and kept it from the client, who did not.
    assert b'"usage":{' in provider.body and b'"usage":{' not in client.body


# -- translation -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_translated_legs_each_equal_their_own_side(
    capturing: Capturing, fake_a: FakeOpenAI, stream: bool
) -> None:
    body = ANTHROPIC_BODY
    if stream:
        body = body.replace(b'"max_tokens": 64,', b'"max_tokens": 64, "stream": true,')
        fake_a.set_fault(chunk_delay=0.03, count=1)  # one chunk per event, as above
    sid = session()
    response, received = anthropic_send(capturing.proxy, body, sid)
    assert response.status_code == 200
    exchange = captured(capturing.directory, sid)

    assert exchange.path == "/anthropic/v1/messages"
    assert exchange.client_request.body == body
    assert exchange.client_response.body == received
    assert exchange.client_request.header("x-api-key") == masked(CLIENT_KEY).decode()
    assert_provider_leg_is_what_the_fake_saw(exchange, 1, fake_a)
    provider = exchange.attempts[1]
    assert provider.request.header(":path") == "/v1/chat/completions"
    # Two protocols: nothing of one side's bytes is the other's.
    assert provider.request.body != exchange.client_request.body
    assert provider.response.body != exchange.client_response.body
    assert b'"max_tokens"' in exchange.client_request.body
    if stream:
        assert exchange.client_response.is_sse and provider.response.is_sse
        assert b"event: message_start" in received
        assert b"event: message_start" not in provider.response.body
        assert provider.response.chunks == fake_a.chat_sent_responses()[-1].chunks
    else:
        assert json.loads(received)["type"] == "message"
        assert json.loads(provider.response.body)["object"] == "chat.completion"
    assert exchange.client_response.summary().text == "alpha says hello to gpt-4o-mini"
    assert provider.response.summary().text == "alpha says hello to gpt-4o-mini"


# -- failover ----------------------------------------------------------------------------


def test_failover_attempts_are_numbered_and_the_client_sees_one_answer(
    capturing: Capturing, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.set_fault(status=503, count=1, chat_only=True)
    sid = session()
    body = CHAT_BODY.replace(b'"gpt-4o-mini"', b'"smart"')
    response, received = openai_send(capturing.proxy, body, sid)
    assert response.status_code == 200
    exchange = captured(capturing.directory, sid, attempts=2, retried=[1])

    assert sorted(exchange.attempts) == [1, 2]
    first, second = exchange.attempts[1], exchange.attempts[2]
    if capturing.observers:
        assert (first.response.status, second.response.status) == (503, 200)
        assert_provider_leg_is_what_the_fake_saw(exchange, 1, fake_a, retried=True)
    else:  # the tap mode sees no answer of an attempt Envoy retried (docs/capture.md)
        assert not first.response.seen and second.response.status == 200
        [failed] = fake_a.chat_requests()
        assert first.request.body == failed.body
    assert_provider_leg_is_what_the_fake_saw(exchange, 2, fake_b)
    assert first.request.annotations["backend"] == "openai"
    assert second.request.annotations["backend"] == "openai.1"
    assert json.loads(first.request.body)["model"] == "gpt-4o"
    assert json.loads(second.request.body)["model"] == "gpt-4o-mini"
    assert first.request.header("authorization") == "Bearer " + masked(ALPHA_KEY).decode()
    assert second.request.header("authorization") == "Bearer " + masked(BETA_KEY).decode()
    assert (first.request.first_mono_ns or 0) < (second.request.first_mono_ns or 0)

    # The client leg: one request, one answer (the second attempt's, a 200).
    assert exchange.client_request.body == body
    assert exchange.client_response.body == received
    assert exchange.status == 200
    heads = [
        r
        for r in records_of(capturing.directory, exchange.request_id)
        if r.leg == "client_response" and r.kind == "headers"
    ]
    assert [dict(r.headers)[":status"] for r in heads] == [b"200"]
    assert exchange.client_response.summary().text == "beta says hello to gpt-4o-mini"


# -- credentials -------------------------------------------------------------------------


def gemini_path(key: str) -> str:
    return f"/v1beta/models/gpt-4o-mini:streamGenerateContent?alt=sse&key={key}"


def test_gemini_query_key_is_masked_in_the_captured_path(
    capturing: Capturing, fake_a: FakeOpenAI
) -> None:
    sid = session()
    url = capturing.proxy.base_url + gemini_path(CLIENT_KEY)
    response, received = send(url, GEMINI_BODY, {}, sid)
    assert response.status_code == 200
    exchange = captured(capturing.directory, sid)

    assert exchange.path == gemini_path(masked(CLIENT_KEY).decode())
    assert CLIENT_KEY not in (exchange.path or "")
    # The key in the URL is the client's key: the same id as usage records give it.
    assert exchange.client_key_id == key_id(CLIENT_KEY)
    assert exchange.client_request.body == GEMINI_BODY
    assert exchange.client_response.body == received
    # The ROUTER role took the key out of the URL before the provider saw it.
    assert exchange.attempts[1].request.header(":path") == "/v1/chat/completions"
    assert_provider_leg_is_what_the_fake_saw(exchange, 1, fake_a)


def test_a_percent_encoded_query_key_gets_the_usage_id(
    capturing: Capturing, fake_a: FakeOpenAI
) -> None:
    """The ROUTER role (and so usage) reads ``?key=`` percent-decoded: so does the capture."""
    key = CLIENT_KEY + "+/="
    sid = session()
    url = capturing.proxy.base_url + gemini_path(quote(key, safe=""))
    assert send(url, GEMINI_BODY, {}, sid)[0].status_code == 200
    exchange = captured(capturing.directory, sid)
    assert exchange.client_key_id == key_id(key)
    assert exchange.path == gemini_path(masked(key).decode())
    assert fake_a.chat_requests()[-1].query == ""


def test_no_key_reaches_the_capture_files(
    capturing: Capturing, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    proxy, directory = capturing.proxy, capturing.directory
    sids = [session() for _ in range(4)]
    assert openai_send(proxy, CHAT_BODY, sids[0])[0].status_code == 200
    assert anthropic_send(proxy, ANTHROPIC_BODY, sids[1])[0].status_code == 200
    url = proxy.base_url + gemini_path(CLIENT_KEY)
    assert send(url, GEMINI_BODY, {"x-goog-api-key": CLIENT_KEY}, sids[2])[0].status_code == 200
    fake_a.set_fault(status=503, count=1, chat_only=True)  # both provider keys get used
    smart = CHAT_BODY.replace(b'"gpt-4o-mini"', b'"smart"')
    assert openai_send(proxy, smart, sids[3])[0].status_code == 200
    for sid in sids[:3]:
        captured(directory, sid)
    captured(directory, sids[3], attempts=2, retried=[1])

    raw = b"".join(path.read_bytes() for path in capture_files(directory))
    for key in (CLIENT_KEY, ALPHA_KEY, BETA_KEY):
        assert key.encode() not in raw
        # Not a piece of one either (the old masking kept the last 4 characters).
        pieces = {key[i : i + 10] for i in range(len(key) - 9)}
        assert not [piece for piece in pieces if piece.encode() in raw]
    assert b"Bearer " + masked(CLIENT_KEY) in raw
    assert b"key=" + masked(CLIENT_KEY) in raw
    assert b"Bearer " + masked(ALPHA_KEY) in raw
    assert b"Bearer " + masked(BETA_KEY) in raw


# -- the command line --------------------------------------------------------------------


def run_capture_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extproc", "capture", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_replay_equal_then_different(observers_capture: Capturing, fake_a: FakeOpenAI) -> None:
    proxy, directory = observers_capture.proxy, observers_capture.directory
    sid = session()
    assert openai_send(proxy, CHAT_BODY, sid)[0].status_code == 200
    rid = captured(directory, sid).request_id
    replay = ("replay", rid, "--dir", str(directory), "--to", proxy.base_url)

    same = run_capture_cli(*replay)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "equal to the captured answer" in same.stdout
    replayed = fake_a.chat_requests()[-1].json
    assert replayed is not None and replayed["messages"] == json.loads(CHAT_BODY)["messages"]

    fake_a.queue_response("Something else entirely.")
    different = run_capture_cli(*replay)
    assert different.returncode == 1, different.stdout + different.stderr
    assert "different from the captured answer" in different.stdout
    assert "~ $.choices[0].message.content:" in different.stdout
    assert "alpha says hello to gpt-4o-mini" in different.stdout
    assert "Something else entirely." in different.stdout


def cli_list(*argv: str) -> list[str]:
    out, err = io.StringIO(), io.StringIO()
    assert capture_main(["list", *argv], out, err) == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["TIME", "REQUEST", "SESSION"]
    return [line.split()[1] for line in lines[1:]]


def test_list_filters_by_session_and_status(capturing: Capturing) -> None:
    proxy, directory = capturing.proxy, capturing.directory
    mine, other = session(), session()
    assert openai_send(proxy, CHAT_BODY, mine)[0].status_code == 200
    assert openai_send(proxy, b'{"model": "gpt-4o-mini"}', mine)[0].status_code == 400
    assert openai_send(proxy, CHAT_BODY, other)[0].status_code == 200

    def both_written() -> bool:
        found = session_exchanges(directory, mine)
        return len(found) == 2 and all(settled(e, len(e.attempts)) for e in found)

    wait_for(both_written, 15, what="two exchanges of one session")
    elsewhere = captured(directory, other).request_id
    found = session_exchanges(directory, mine)
    ok = next(e.request_id for e in found if e.status == 200)
    bad = next(e.request_id for e in found if e.status == 400)
    assert not next(e for e in found if e.status == 400).attempts  # the proxy answered itself

    where = ("--dir", str(directory))
    mine = a_leg_id("local", mine)
    assert cli_list(*where, "--session", mine) == [ok, bad]
    assert cli_list(*where, "--session", mine, "--status", "4xx") == [bad]
    assert cli_list(*where, "--session", mine, "--status", "2xx") == [ok]
    assert cli_list(*where, "--session", mine, "--status", "5xx") == []
    everything = cli_list(*where)
    assert {ok, bad} <= set(everything)
    assert elsewhere in everything and elsewhere not in cli_list(*where, "--session", mine)


# -- streams that stop, and crashes ------------------------------------------------------


def test_a_stalled_stream_reaches_the_files(capturing: Capturing, fake_a: FakeOpenAI) -> None:
    """What crossed before a stream went quiet is in the files while it stays quiet (a hung
    request is what one looks for in a capture), not only once more bytes come."""
    fake_a.set_fault(stall_after=3, chunk_delay=0.03, count=1)
    sid = session()
    url = f"{capturing.proxy.openai_base_url}/chat/completions"
    headers = {
        "authorization": f"Bearer {CLIENT_KEY}",
        "content-type": "application/json",
        "accept-encoding": "identity",
        "x-session-id": sid,
    }
    try:
        with (
            httpx.Client(timeout=30) as client,
            client.stream("POST", url, content=CHAT_STREAM_BODY, headers=headers) as response,
        ):
            reading = response.iter_raw()  # kept: a dropped generator closes the connection
            next(reading)

            def three_chunks_written() -> bool:
                found = session_exchanges(capturing.directory, sid)
                return len(found) == 1 and len(found[0].client_response.chunks) == 3

            wait_for(three_chunks_written, 5, what="the chunks before the stall in the files")
    finally:
        fake_a.clear_faults()
    [exchange] = session_exchanges(capturing.directory, sid)
    [sent] = fake_a.chat_sent_responses()
    assert exchange.attempts[1].response.chunks == sent.chunks[:3]


_CAPTURE_PID = re.compile(r"capture process (\d+) writing")


def capture_pid(proxy: ProxyProcess) -> int | None:
    """The capture child's pid (capture runs in a process of its own in both modes)."""
    match = _CAPTURE_PID.search(proxy.log())
    return int(match.group(1)) if match else None


def kill(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("mode", MODES)
def test_kill_9_mid_stream_leaves_readable_files(tmp_path: Path, mode: str) -> None:
    directory = tmp_path / "captures"
    fake = FakeOpenAI(name="slow", expected_api_key=ALPHA_KEY, answer_chars=400)
    fake.start()
    backends = {
        "openai": {
            "type": "openai",
            "base_url": fake.base_url,
            "api_key": ALPHA_KEY,
            "models": ["gpt-4o-mini"],
            **fast_health(),
        }
    }
    config = proxy_config(
        backends, default_backend="openai:gpt-4o-mini", capture=capture_config(directory, mode)
    )
    proxy = start_proxy(tmp_path, config)
    envoy, writer = proxy.envoy_pid(), capture_pid(proxy)
    assert writer is not None
    sid = session()
    try:
        # 6 events a little apart (one chunk each), then silence until cleared.
        fake.set_fault(stall_after=6, chunk_delay=0.03, count=1)
        headers = {
            "authorization": f"Bearer {CLIENT_KEY}",
            "content-type": "application/json",
            "accept-encoding": "identity",
            "x-session-id": sid,
        }
        url = f"{proxy.openai_base_url}/chat/completions"
        with (
            httpx.Client(timeout=30) as client,
            client.stream("POST", url, content=CHAT_STREAM_BODY, headers=headers) as response,
        ):
            assert response.status_code == 200
            reading = response.iter_raw()  # kept: a dropped generator closes the connection
            next(reading)

            def stalled_and_captured() -> bool:
                sent = fake.chat_sent_responses()
                found = session_exchanges(directory, sid)
                if len(sent) != 1 or len(sent[0].chunks) != 6 or len(found) != 1:
                    return False
                attempt = found[0].attempts.get(1)
                return (
                    attempt is not None
                    and attempt.response.chunks == sent[0].chunks
                    and len(found[0].client_response.chunks) == 6
                )

            wait_for(stalled_and_captured, 10, what="six streamed chunks in the capture")
            # The proxy process first (nothing restarts the capture process then), then the
            # capture process (the writer), then Envoy.
            kill(proxy.proc.pid)
            proxy.proc.wait(10)
            kill(writer)
            kill(envoy)
    finally:
        kill(proxy.proc.pid)
        kill(writer)
        kill(envoy)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proxy.proc.wait(10)
        fake.clear_faults()
        fake.stop()

    problems: list[CaptureFormatError] = []
    records = list(iter_records(directory, problems=problems))
    assert all(type(problem) is TruncatedTail for problem in problems), problems
    [exchange] = [
        e for e in exchanges(directory, problems=[]) if e.session_id == a_leg_id("local", sid)
    ]
    assert not exchange.complete  # killed mid-stream
    sent = fake.chat_sent_responses()[0]
    assert exchange.attempts[1].response.body == b"".join(sent.chunks[:6])
    assert exchange.client_request.body == CHAT_STREAM_BODY
    assert len(exchange.client_response.chunks) == 6
    # The records of the cut exchange are in order: headers first, then the body chunks, with
    # the clock going forward, on every leg.
    mine = [r for r in records if r.request_id == exchange.request_id]
    for leg in LEGS:
        of_leg = [r for r in mine if r.leg == leg]
        assert of_leg and of_leg[0].kind == "headers", leg
        assert all(r.kind != "headers" for r in of_leg[1:]), leg
        clock = [r.mono_ns for r in of_leg]
        assert clock == sorted(clock), leg
    streamed = [r.body for r in mine if r.leg == "client_response" and r.body]
    assert [len(parse_sse(chunk)) for chunk in streamed] == [1] * 6
