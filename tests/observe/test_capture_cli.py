"""Tests for ``python -m extproc capture``: list, show, export and replay on synthetic captures
and against a fake OpenAI upstream."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from extproc.config.model import CaptureConfig
from extproc.observe.capture import CaptureWriter, capture_files, exchanges, make_record
from extproc.observe.capture_cli import (
    PLACEHOLDER_KEY,
    json_diff,
    main,
    parse_time,
    replay_request,
)
from tests.fakes.openai_upstream import FakeOpenAI

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_KEY = "sk-fake-client-key-0123456789abcdefghij-wxyz"
GEMINI_KEY = "AIza-fake-SECRET"
BASE = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
BINARY = bytes(range(256)) * 3
STREAM_TEXT = "Grüße 日本 🎉"


def masked_id(secret: str) -> str:
    """How a capture shows ``secret``: ``***`` and a truncated SHA-256, none of its characters."""
    return "***key-" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def listed_ids(output: str) -> list[str]:
    lines = output.splitlines()
    assert lines[0].split()[:2] == ["TIME", "REQUEST"]
    return [line.split()[1] for line in lines[1:]]


class Recorder:
    """Writes the records of one exchange the way the observers would."""

    def __init__(self, writer: CaptureWriter, rid: str, start: datetime, **common: Any) -> None:
        self.writer = writer
        self.rid = rid
        self.wall_ns = int(start.timestamp() * 1e9)
        self.mono_ns = int(start.timestamp() * 1e9) % 10**12
        self.common = common

    def __call__(self, leg: str, kind: str, attempt: int = 0, **fields: Any) -> None:
        self.mono_ns += 1_000_000
        self.wall_ns += 1_000_000
        record = make_record(
            self.rid,
            leg,
            kind,
            attempt=attempt,
            mono_ns=self.mono_ns,
            wall_ns=self.wall_ns,
            **self.common,
            **fields,
        )
        assert self.writer.submit(record)

    def request(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> None:
        head = [(":method", "POST"), (":path", path), (":authority", "127.0.0.1:8000"), *headers]
        self("client_request", "headers", headers=head)
        middle = len(body) // 2
        self("client_request", "body", body=body[:middle])
        self("client_request", "body", body=body[middle:], end_of_stream=True)

    def response(
        self,
        leg: str,
        status: int,
        chunks: list[bytes],
        content_type: str,
        attempt: int = 0,
        end: bool = True,
        **fields: Any,
    ) -> None:
        head = [(":status", str(status)), ("content-type", content_type)]
        self(leg, "headers", attempt, headers=head, **fields)
        for index, chunk in enumerate(chunks):
            self(leg, "body", attempt, body=chunk, end_of_stream=end and index == len(chunks) - 1)
        if end:
            self(leg, "end", attempt)


def openai_json(text: str, model: str = "gpt-4o-mini") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
    ).encode()


def openai_stream() -> list[bytes]:
    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + json.dumps({"id": "c", "choices": [choice]}).encode() + b"\n\n"

    call = {"index": 0, "id": "call_1", "function": {"name": "lookup", "arguments": '{"q":'}}
    data = (
        event({"role": "assistant", "content": ""})
        + event({"content": STREAM_TEXT})
        + event({"tool_calls": [call]})
        + event({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]})
        + event({}, "tool_calls")
        + b"data: [DONE]\n\n"
    )
    # Cut into chunks of 7 bytes: events and UTF-8 characters are split anywhere.
    return [data[i : i + 7] for i in range(0, len(data), 7)]


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    directory = tmp_path / "captures"
    config = CaptureConfig(directory=str(directory), max_file_bytes=2000)
    writer = CaptureWriter(config, wall=BASE.timestamp)  # file names agree with record times
    auth = [("authorization", f"Bearer {CLIENT_KEY}"), ("content-type", "application/json")]

    a = Recorder(writer, "req-aaa1", BASE, session_id="s1", client_key_id="key-0a1b2c3d4e5f")
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o-mini"})
    a.request("/v1/chat/completions", body.encode(), auth)
    a("provider_request", "headers", 1, annotations={"backend": "openai.1"})
    a.response("provider_response", 503, [b'{"error":"busy"}'], "application/json", 1)
    a("provider_request", "headers", 2, annotations={"backend": "openai.2"})
    a.response("provider_response", 200, [openai_json("Hello!")], "application/json", 2)
    a.response("client_response", 200, [openai_json("Hello!")], "application/json")

    b = Recorder(writer, "req-bbb2", BASE + timedelta(minutes=10), session_id="s1")
    b.request("/v1/chat/completions", b'{"model":"x","stream":true}', auth)
    b.response(
        "client_response",
        200,
        openai_stream(),
        "text/event-stream",
        annotations={"model": "claude-x", "backend": "anthropic"},
    )

    c = Recorder(writer, "req-ccc3", BASE + timedelta(minutes=20), session_id="s2")
    c.request("/v1/chat/completions", b'{"model":"gpt-4o","messages":[]}', auth)
    c.response("client_response", 429, [b'{"error":{"message":"slow down"}}'], "application/json")

    d = Recorder(writer, "req-ddd4", BASE + timedelta(minutes=30))
    d.request(f"/v1beta/models/gemini-2.0-flash:generateContent?key={GEMINI_KEY}", b"{}", [])
    d.response(
        "client_response", 502, [BINARY[:300], BINARY[300:]], "application/octet-stream", end=False
    )
    assert writer.close()
    assert len(capture_files(directory)) > 1
    return directory


# --------------------------------------------------------------------------------------------
# list


def test_list_shows_one_line_per_exchange(synthetic: Path) -> None:
    code, out, err = run("list", "--dir", str(synthetic))
    assert code == 0 and err == ""
    assert listed_ids(out) == ["req-aaa1", "req-bbb2", "req-ccc3", "req-ddd4"]
    lines = out.splitlines()
    first = lines[1].split()
    assert first[0] == "2026-01-05T06:00:00.001Z"
    assert first[2:7] == ["s1", "openai-chat", "gpt-4o-mini", "openai.2", "200"]
    assert first[8] == "json"
    assert "stream" in lines[2].split() and "claude-x" in lines[2] and "anthropic" in lines[2]
    d = lines[4].split()
    assert d[3:7] == ["gemini", "gemini-2.0-flash", "-", "502"]
    assert d[7].endswith("+")  # incomplete: the response never ended
    assert d[-1] == "768B"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--session", "s1"], ["req-aaa1", "req-bbb2"]),
        (["--model", "gpt-4o*"], ["req-aaa1", "req-ccc3"]),
        (["--model", "claude-x"], ["req-bbb2"]),
        (["--status", "2xx"], ["req-aaa1", "req-bbb2"]),
        (["--status", "429"], ["req-ccc3"]),
        (["--status", "5xx"], ["req-ddd4"]),
        (["--status", "4xx,5xx"], ["req-ccc3", "req-ddd4"]),
        (["--limit", "2"], ["req-ccc3", "req-ddd4"]),
        (["--since", "2026-01-05T06:05:00Z"], ["req-bbb2", "req-ccc3", "req-ddd4"]),
        (["--until", "2026-01-05T06:15"], ["req-aaa1", "req-bbb2"]),
        (
            ["--since", "2026-01-05T07:05:00+01:00", "--until", "2026-01-05T06:25:00Z"],
            ["req-bbb2", "req-ccc3"],
        ),
        (["--since", "100000d"], ["req-aaa1", "req-bbb2", "req-ccc3", "req-ddd4"]),
        (["--since", "10m"], []),
    ],
)
def test_list_filters(synthetic: Path, args: list[str], expected: list[str]) -> None:
    code, out, _ = run("list", "--dir", str(synthetic), *args)
    assert code == 0
    assert listed_ids(out) == expected


def test_list_rejects_bad_arguments(synthetic: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("list", "--dir", str(synthetic), "--status", "2yy")[0] == 2
    assert run("list", "--dir", str(synthetic), "--since", "yesterday")[0] == 2
    assert "not a time" in capsys.readouterr().err
    code, _, err = run("list", "--dir", str(synthetic / "missing"))
    assert code == 2 and "no capture directory" in err


def test_list_warns_about_a_torn_tail_and_reads_the_rest(synthetic: Path) -> None:
    last = capture_files(synthetic)[-1]
    with open(last, "ab") as fp:
        fp.write(b"\xac\x01\x68req-")  # the start of a record, cut short
    code, out, err = run("list", "--dir", str(synthetic))
    assert code == 0
    assert len(listed_ids(out)) == 4
    assert err.startswith("warning: ") and "truncated record" in err and last.name in err


def test_list_reads_the_directory_from_a_config_file(synthetic: Path, tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(f"capture:\n  enabled: true\n  directory: {synthetic}\n")
    code, out, _ = run("list", "--config", str(config))
    assert code == 0 and len(listed_ids(out)) == 4


# --------------------------------------------------------------------------------------------
# show


def test_show_prints_masked_headers_pretty_json_attempts_and_timing(synthetic: Path) -> None:
    code, out, _ = run("show", "req-aaa", "--dir", str(synthetic))
    assert code == 0
    assert "request   req-aaa1" in out
    assert "session   s1" in out and "key-0a1b2c3d4e5f" in out
    assert f"authorization: Bearer {masked_id(CLIENT_KEY)}" in out
    assert CLIENT_KEY not in out and CLIENT_KEY[-4:] not in out
    assert '    "model": "gpt-4o-mini"' in out  # pretty-printed JSON body
    assert "── provider_response attempt 1" in out and ":status: 503" in out
    assert "── provider_response attempt 2" in out
    assert "attempts 2" in out and "status 200" in out
    assert out.index("── client_request") < out.index("attempt 1") < out.index("── client_resp")


def test_show_reassembles_streams(synthetic: Path) -> None:
    code, out, _ = run("show", "req-bbb2", "--dir", str(synthetic))
    assert code == 0
    assert "stream: 6 events in" in out
    assert "text:\n    " + STREAM_TEXT in out
    assert 'tool call: lookup({"q":"x"})' in out
    assert "finish: tool_calls" in out
    assert "[6] data: [DONE]" in out


def test_show_binary_bodies_as_base64_and_masks_query_keys(synthetic: Path) -> None:
    code, out, _ = run("show", "req-ddd4", "--dir", str(synthetic), "--full")
    assert code == 0
    assert f"key={masked_id(GEMINI_KEY)}" in out and GEMINI_KEY not in out
    assert "not UTF-8" in out and base64.b64encode(BINARY).decode() in out
    assert "(incomplete)" in out


def test_show_unknown_and_ambiguous_ids(synthetic: Path) -> None:
    code, _, err = run("show", "nope", "--dir", str(synthetic))
    assert code == 2 and "no exchange 'nope'" in err
    code, _, err = run("show", "req-", "--dir", str(synthetic))
    assert code == 2 and "matches 4 exchanges" in err


# --------------------------------------------------------------------------------------------
# export


def test_export_json_says_how_each_body_is_encoded(synthetic: Path) -> None:
    code, out, _ = run("export", "req-ddd4", "--dir", str(synthetic), "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["format"] == "llm-proxy-capture-export" and document["status"] == 502
    legs = {leg["leg"]: leg for leg in document["legs"]}
    response = legs["client_response"]["body"]
    assert response["encoding"] == "base64"
    assert base64.b64decode(response["data"]) == BINARY
    assert [c["bytes"] for c in legs["client_response"]["chunks"]] == [300, 468]
    assert legs["client_request"]["body"] == {"encoding": "utf-8", "text": "{}"}


def test_export_stream_has_text_and_chunks(synthetic: Path) -> None:
    code, out, _ = run("export", "req-bbb2", "--dir", str(synthetic))
    assert code == 0
    document = json.loads(out)
    [response] = [leg for leg in document["legs"] if leg["leg"] == "client_response"]
    assert response["body"]["encoding"] == "utf-8"  # whole body valid UTF-8, chunks are not
    assert response["stream"]["text"] == STREAM_TEXT
    assert response["stream"]["tool_calls"][0]["name"] == "lookup"
    assert sum(c["bytes"] for c in response["chunks"]) == len(b"".join(openai_stream()))
    assert ["authorization", f"Bearer {masked_id(CLIENT_KEY)}"] in document["legs"][0]["headers"]
    assert CLIENT_KEY[-4:] not in out


# --------------------------------------------------------------------------------------------
# replay against a fake OpenAI upstream


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(name="alpha") as server:
        yield server


def capture_call(directory: Path, fake: FakeOpenAI, rid: str, *, stream: bool) -> bytes:
    """Send one real request to the fake and capture it as the client leg."""
    payload: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello. ☃"}],
    }
    if stream:
        payload["stream"] = True
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = [
        ("content-type", "application/json"),
        ("authorization", f"Bearer {CLIENT_KEY}"),
        ("user-agent", "capture-test"),
    ]
    writer = CaptureWriter(CaptureConfig(directory=str(directory)))
    rec = Recorder(writer, rid, datetime.now(UTC))
    rec.request("/v1/chat/completions", body, headers)
    url = f"http://127.0.0.1:{fake.port}/v1/chat/completions"
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", url, content=body, headers=headers) as response,
    ):
        head = [(":status", str(response.status_code)), *response.headers.multi_items()]
        rec("client_response", "headers", headers=head)
        for chunk in response.iter_raw():
            rec("client_response", "body", body=chunk)
        rec("client_response", "body", end_of_stream=True)
        rec("client_response", "end")
    assert writer.close()
    return body


def base_url(fake: FakeOpenAI) -> str:
    return f"http://127.0.0.1:{fake.port}"


def test_replay_json_equal_then_different(tmp_path: Path, fake: FakeOpenAI) -> None:
    body = capture_call(tmp_path, fake, "rj-1", stream=False)
    code, out, err = run("replay", "rj-1", "--dir", str(tmp_path), "--to", base_url(fake))
    assert code == 0, out
    assert "equal to the captured answer" in out
    assert "placeholder" in err
    replayed = fake.requests[-1]
    assert replayed.body == body  # body bytes exactly as captured
    assert replayed.headers["authorization"] == f"Bearer {PLACEHOLDER_KEY}"
    assert replayed.headers["user-agent"] == "capture-test"
    assert replayed.path == "/v1/chat/completions" and replayed.method == "POST"

    fake.queue_response("Something else entirely.")
    code, out, _ = run("replay", "rj-1", "--dir", str(tmp_path), "--to", base_url(fake))
    assert code == 1
    assert "different from the captured answer" in out
    assert '~ $.choices[0].message.content: "alpha says hello to gpt-4o-mini"' in out
    assert "Something else entirely." in out


def test_replay_stream_equal_then_different(tmp_path: Path, fake: FakeOpenAI) -> None:
    capture_call(tmp_path, fake, "rs-1", stream=True)
    [exchange] = exchanges(tmp_path)
    assert exchange.streamed and len(exchange.client_response.chunks) > 3
    code, out, _ = run("replay", "rs-1", "--dir", str(tmp_path), "--to", base_url(fake))
    assert code == 0, out

    fake.queue_response(tool_calls=[("get_weather", '{"city": "Paris"}')])
    code, out, _ = run("replay", "rs-1", "--dir", str(tmp_path), "--to", base_url(fake))
    assert code == 1
    assert "~ text:" in out
    assert '+ tool_calls[0]: {"name": "get_weather", "arguments": {"city": "Paris"}}' in out
    assert "~ finish_reason: 'stop' → 'tool_calls'" in out


def test_replay_reports_a_status_change(tmp_path: Path, fake: FakeOpenAI) -> None:
    capture_call(tmp_path, fake, "rst-1", stream=False)
    fake.set_fault(status=500, count=1)
    code, out, _ = run("replay", "rst-1", "--dir", str(tmp_path), "--to", base_url(fake))
    assert code == 1 and "~ status: 200 → 500" in out


def test_replay_with_a_supplied_key(tmp_path: Path) -> None:
    with FakeOpenAI(name="alpha") as open_fake:
        capture_call(tmp_path, open_fake, "rk-1", stream=False)
    with FakeOpenAI(name="alpha", expected_api_key="sk-fake-replay-key") as locked:
        url = base_url(locked)
        code, out, _ = run("replay", "rk-1", "--dir", str(tmp_path), "--to", url)
        assert code == 1 and "~ status: 200 → 401" in out
        header = "Authorization: Bearer sk-fake-replay-key"
        code, out, _ = run(
            "replay", "rk-1", "--dir", str(tmp_path), "--to", url, "--header", header
        )
        assert code == 0, out
        assert locked.requests[-1].headers["authorization"] == "Bearer sk-fake-replay-key"


def test_replay_errors(tmp_path: Path, fake: FakeOpenAI) -> None:
    capture_call(tmp_path, fake, "re-1", stream=False)
    port = fake.port
    fake.stop()
    code, _, err = run("replay", "re-1", "--dir", str(tmp_path), "--to", f"http://127.0.0.1:{port}")
    assert code == 2 and "replay to" in err
    code, _, err = run("replay", "re-1", "--dir", str(tmp_path), "--to", "ftp://x")
    assert code == 2


def test_replay_request_rebuilds_the_client_request(synthetic: Path) -> None:
    [exchange] = exchanges(synthetic, request_id="req-ddd4")
    method, url, headers, body = replay_request(exchange, "http://proxy:8000/")
    assert method == "POST" and body == b"{}"
    assert url == (
        f"http://proxy:8000/v1beta/models/gemini-2.0-flash:generateContent?key={PLACEHOLDER_KEY}"
    )
    assert all(not name.startswith(":") for name, _ in headers)
    [exchange] = exchanges(synthetic, request_id="req-aaa1")
    _, _, headers, _ = replay_request(exchange, "http://p", [("x-extra", "1")])
    assert headers == [
        ("authorization", f"Bearer {PLACEHOLDER_KEY}"),
        ("content-type", "application/json"),
        ("x-extra", "1"),
    ]


# --------------------------------------------------------------------------------------------
# Helpers


def test_json_diff_ignores_volatile_fields() -> None:
    old = {"id": "a", "created": 1, "system_fingerprint": "x", "choices": [{"t": 1}], "k": 1}
    new = {"id": "b", "created": 2, "system_fingerprint": "y", "choices": [{"t": 2}, 3], "n": 0}
    assert json_diff(old, new) == [
        "~ $.choices[0].t: 1 → 2",
        "+ $.choices[1]: 3",
        "- $.k: 1",
        "+ $.n: 0",
    ]
    assert json_diff({"a": 1}, {"a": 1.0}) == ["~ $.a: 1 → 1.0"]
    assert json_diff([1, {"id": 5}], [1, {"id": 6}]) == []


def test_parse_time() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_time("10m", now) == now - timedelta(minutes=10)
    assert parse_time("2h", now) == now - timedelta(hours=2)
    assert parse_time("1.5d", now) == now - timedelta(hours=36)
    assert parse_time("90s", now) == now - timedelta(seconds=90)
    assert parse_time("2026-11-28T06:15:02Z") == datetime(2026, 11, 28, 6, 15, 2, tzinfo=UTC)
    assert parse_time("2026-11-28T07:15:02+01:00") == datetime(2026, 11, 28, 6, 15, 2, tzinfo=UTC)
    assert parse_time("2026-11-28") == datetime(2026, 11, 28, tzinfo=UTC)


def test_module_runs_as_a_script(synthetic: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "extproc.observe.capture_cli", "list", "--dir", str(synthetic)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(listed_ids(result.stdout)) == 4
