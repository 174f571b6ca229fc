"""Tests for the capture library: record format, writer (rotation, retention, drops, crash
safety), masking, reader, exchanges and stream summaries."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.config.model import CaptureConfig
from extproc.observe.capture import (
    FORMAT,
    KEY_BODY,
    KEY_HEADERS,
    KEY_LEG,
    KEY_REQUEST_ID,
    MASK,
    VERSION,
    CaptureFormatError,
    CaptureRecord,
    CaptureWriter,
    CorruptCapture,
    SSEEvent,
    TruncatedTail,
    UnsupportedCapture,
    capture_files,
    decode_record,
    encode_record,
    exchanges,
    file_time,
    is_credential_header,
    iter_records,
    make_record,
    mask_headers,
    mask_query,
    mask_secret,
    parse_sse,
    read_header,
    summarize_json,
    summarize_stream,
)
from extproc.pipeline.context import RequestContext, key_id

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME_RE = re.compile(r"^capture-\d{8}T\d{6}Z-\d{4,}\.cbors$")
SECRET = "sk-fake-capture-secret-0123456789abcd"
GEMINI_KEY = "AIza-fake-gemini-key-0123456789"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def config(directory: Path, **overrides: Any) -> CaptureConfig:
    values: dict[str, Any] = {"enabled": True, "directory": str(directory)}
    values.update(overrides)
    return CaptureConfig(**values)


@pytest.fixture
def capture_dir(tmp_path: Path) -> Path:
    return tmp_path / "captures"


def body_record(
    rid: str, body: bytes, *, eos: bool = False, leg: str = "client_response", mono_ns: int = 0
) -> CaptureRecord:
    return make_record(rid, leg, "body", body=body, end_of_stream=eos, mono_ns=mono_ns)


def write_all(directory: Path, records: list[CaptureRecord], **overrides: Any) -> CaptureWriter:
    writer = CaptureWriter(config(directory, **overrides))
    for record in records:
        assert writer.submit(record)
    assert writer.close(timeout=10)
    return writer


# --------------------------------------------------------------------------------------------
# Record format


def test_file_starts_with_versioned_header_then_integer_keyed_records(capture_dir: Path) -> None:
    record = make_record(
        "req-1",
        "client_request",
        "headers",
        headers=[(":method", "POST"), (":path", "/v1/chat/completions")],
        session_id="sess-1",
        client_key_id="key-1a2b3c4d5e6f",
        annotations={"frontend": "openai-chat", "backend": None},
        end_of_stream=False,
    )
    writer = CaptureWriter(config(capture_dir), hostname="box-1")
    writer.submit(record)
    writer.close()
    [path] = capture_files(capture_dir)
    assert NAME_RE.match(path.name)
    with open(path, "rb") as fp:
        decoder = cbor2.CBORDecoder(fp)
        header = decoder.decode()
        item = decoder.decode()
    assert header["format"] == FORMAT == "llm-proxy-capture"
    assert header["version"] == VERSION == 1
    assert header["host"] == "box-1"
    assert isinstance(header["created"], int) and header["created"] > 1_600_000_000 * 10**9
    assert read_header(path)["format"] == FORMAT
    assert item[KEY_REQUEST_ID] == "req-1"
    assert item[KEY_LEG] == "client_request"
    assert item[KEY_HEADERS] == [[":method", b"POST"], [":path", b"/v1/chat/completions"]]
    assert item[2] == "sess-1" and item[3] == "key-1a2b3c4d5e6f"
    assert item[5] == 0 and item[6] == "headers" and item[11] is False
    assert item[12] == {"frontend": "openai-chat"}  # None annotations are left out
    assert KEY_BODY not in item  # empty bodies are left out


def test_round_trip_many_records_binary_and_split_utf8(capture_dir: Path) -> None:
    rng = random.Random(1234)
    text = "héllo wörld — 日本語テキスト 🎉🚀 ".encode() * 20
    records: list[CaptureRecord] = []
    expected_bodies: dict[str, bytes] = {}
    for n in range(60):
        rid = f"req-{n:03d}"
        if n % 2:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        else:
            payload = text
        expected_bodies[rid] = payload
        cuts = sorted(rng.sample(range(1, len(payload)), min(7, len(payload) - 1)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        records.append(
            make_record(rid, "client_response", "headers", headers=[(":status", b"200")])
        )
        for index, piece in enumerate(pieces):
            records.append(
                body_record(rid, piece, eos=index == len(pieces) - 1, mono_ns=n * 1000 + index)
            )
        records.append(make_record(rid, "client_response", "end"))
    writer = write_all(capture_dir, records)
    assert writer.written == len(records) and writer.dropped == 0

    back = list(iter_records(capture_dir))
    assert len(back) == len(records)
    for original, read in zip(records, back, strict=True):
        assert read.request_id == original.request_id
        assert read.leg == original.leg and read.kind == original.kind
        assert read.body == original.body
        assert read.mono_ns == original.mono_ns and read.wall_ns == original.wall_ns
        assert read.end_of_stream == original.end_of_stream
    found = {exchange.request_id: exchange for exchange in exchanges(capture_dir)}
    assert list(found) == list(expected_bodies)
    for rid, payload in expected_bodies.items():
        assert found[rid].body("client_response") == payload
        assert found[rid].client_response.complete


@settings(max_examples=40, deadline=None)
@given(
    body=st.binary(max_size=2000) | st.text(max_size=400).map(str.encode),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_body_split_anywhere_comes_back_identical(body: bytes, cuts: list[int]) -> None:
    points = sorted({c for c in cuts if 0 < c < len(body)})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        write_all(Path(tmp), [body_record("r", piece) for piece in pieces])
        [exchange] = exchanges(tmp)
        assert exchange.body("client_response") == body
        assert len(exchange.client_response.chunk_mono_ns) == sum(1 for p in pieces if p)


def test_encode_decode_keeps_every_field() -> None:
    record = make_record(
        "r",
        "provider_response",
        "body",
        attempt=3,
        body=bytearray(b"\x00\xff data"),
        end_of_stream=True,
        session_id="s",
        client_key_id="key-0123",
        annotations={"status": 200, "model": "m", "stream": True},
        mono_ns=5,
        wall_ns=6,
    )
    back = decode_record(cbor2.loads(encode_record(record)))
    assert back == CaptureRecord(
        "r",
        "provider_response",
        "body",
        3,
        5,
        6,
        [],
        b"\x00\xff data",
        True,
        "s",
        "key-0123",
        {"status": 200, "model": "m", "stream": True},
    )


def test_make_record_rejects_unknown_legs_and_kinds() -> None:
    with pytest.raises(ValueError, match="leg"):
        make_record("r", "client", "body")
    with pytest.raises(ValueError, match="kind"):
        make_record("r", "client_request", "trailers")


def test_unencodable_annotations_are_written_as_text(capture_dir: Path) -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    write_all(capture_dir, [make_record("r", "client_request", "end", annotations={"x": Opaque()})])
    [record] = iter_records(capture_dir)
    assert record.annotations == {"x": "opaque!"}


# --------------------------------------------------------------------------------------------
# Masking


def masked_id(secret: str) -> str:
    """The masked form of ``secret``, computed independently of the code under test."""
    return "***key-" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def test_mask_secret_is_a_stable_id_of_the_key_and_keeps_no_character() -> None:
    masked = mask_secret(SECRET)
    assert re.fullmatch(r"\*\*\*key-[0-9a-f]{12}", masked)
    assert masked == masked_id(SECRET) == MASK + key_id(SECRET)
    assert mask_secret(SECRET) == masked  # stable
    assert mask_secret(SECRET[:-1] + "e") != masked  # one character changes the id
    assert SECRET[-4:] not in masked and SECRET[:8] not in masked
    assert mask_secret(f" {SECRET} ") == masked  # surrounding whitespace is not the secret


def test_mask_secret_hides_short_secrets_entirely() -> None:
    assert mask_secret("a" * 7) == "***"
    assert mask_secret("abcdefgh") == masked_id("abcdefgh")
    assert mask_secret("") == ""


def test_masked_id_is_the_usage_client_key_id() -> None:
    """A capture and a usage row of the same client key can be matched."""
    ctx = RequestContext(
        request_id="r",
        frontend="openai-chat",
        method="POST",
        path="/",
        headers={},
        client_key=SECRET,
    )
    assert mask_secret(SECRET) == MASK + (ctx.client_key_id or "")


def test_mask_headers() -> None:
    masked = dict(
        mask_headers(
            [
                ("Authorization", f"Bearer {SECRET}"),
                ("proxy-authorization", b"Basic dXNlcjpwYXNz"),
                ("x-api-key", SECRET.encode()),
                ("api-key", "short"),
                ("x-goog-api-key", GEMINI_KEY),
                ("cookie", "session=abc; theme=dark"),
                ("set-cookie", "id=1234567890abcdefghijklmnop; Path=/"),
                ("x-custom-token", "tok"),
                ("x-my-secret-thing", "s3cr3t"),
                ("x-auth-user", "bob"),
                ("x-ratelimit-remaining-tokens", "29999000"),
                (":authority", "127.0.0.1:8000"),
                (":path", f"/v1beta/models/g:generateContent?alt=sse&key={GEMINI_KEY}"),
                ("content-type", "application/json"),
            ]
        )
    )
    secret_id, gemini_id = masked_id(SECRET).encode(), masked_id(GEMINI_KEY).encode()
    assert masked["Authorization"] == b"Bearer " + secret_id
    assert masked["proxy-authorization"] == b"Basic " + masked_id("dXNlcjpwYXNz").encode()
    assert masked["x-api-key"] == secret_id
    assert masked["api-key"] == b"***"
    assert masked["x-goog-api-key"] == gemini_id
    assert masked["cookie"] == masked_id("session=abc; theme=dark").encode()
    assert masked["x-custom-token"] == b"***"
    assert masked["x-my-secret-thing"] == b"***"
    assert masked["x-auth-user"] == b"***"
    assert masked["x-ratelimit-remaining-tokens"] == b"29999000"
    assert masked[":authority"] == b"127.0.0.1:8000"
    assert masked[":path"] == b"/v1beta/models/g:generateContent?alt=sse&key=" + gemini_id
    assert masked["content-type"] == b"application/json"
    everything = b"".join(masked.values())
    for secret in (SECRET, GEMINI_KEY):
        assert secret.encode() not in everything
        assert secret[-4:].encode() not in everything


def test_mask_headers_keeps_order_and_duplicates() -> None:
    pairs = [("a", "1"), ("authorization", "Bearer x"), ("a", "2")]
    assert mask_headers(pairs) == [("a", b"1"), ("authorization", b"Bearer ***"), ("a", b"2")]


def test_is_credential_header() -> None:
    for name in ("Authorization", "X-Api-Key", "anthropic-auth", "x-session-token", "set-cookie"):
        assert is_credential_header(name)
    for name in ("content-type", ":authority", "x-ratelimit-limit-tokens", "keep-alive"):
        assert not is_credential_header(name)


def test_mask_query() -> None:
    assert mask_query("/v1/models") == "/v1/models"
    assert mask_query("/x?key=abc&alt=sse") == "/x?key=***&alt=sse"
    assert (
        mask_query(f"/x?alt=sse&API_KEY={SECRET}#f") == f"/x?alt=sse&API_KEY={masked_id(SECRET)}#f"
    )
    assert mask_query("/x?token=t1;monkey=1&access_token=zz") == (
        "/x?token=***;monkey=1&access_token=***"
    )
    assert mask_query("/x?keyboard=1") == "/x?keyboard=1"


def test_mask_query_ids_the_decoded_key() -> None:
    """The proxy reads ``?key=`` percent-decoded: the id is that of the decoded key."""
    encoded = SECRET.replace("-", "%2D")
    assert mask_query(f"/x?key={encoded}&alt=sse") == f"/x?key={masked_id(SECRET)}&alt=sse"


def test_keys_never_reach_the_files(capture_dir: Path) -> None:
    headers = [
        (":path", f"/v1beta/models/gemini:streamGenerateContent?key={GEMINI_KEY}"),
        ("authorization", f"Bearer {SECRET}"),
        ("x-goog-api-key", GEMINI_KEY),
        ("x-api-key", SECRET),
    ]
    write_all(
        capture_dir,
        [
            make_record("r", "client_request", "headers", headers=headers),
            make_record("r", "provider_request", "headers", attempt=1, headers=headers),
        ],
    )
    raw = b"".join(path.read_bytes() for path in capture_files(capture_dir))
    for secret in (SECRET, GEMINI_KEY):
        assert secret.encode() not in raw
        assert secret[:-4].encode() not in raw
        assert secret[-4:].encode() not in raw
    assert b"Bearer " + masked_id(SECRET).encode() in raw
    assert b"key=" + masked_id(GEMINI_KEY).encode() in raw


# --------------------------------------------------------------------------------------------
# Rotation and retention


def test_rotation_by_size(capture_dir: Path) -> None:
    records = [body_record(f"r{n}", b"x" * 100, mono_ns=n) for n in range(50)]
    writer = write_all(capture_dir, records, max_file_bytes=1000)
    files = capture_files(capture_dir)
    assert writer.files == len(files) > 5
    for path in files:
        assert NAME_RE.match(path.name)
        assert path.stat().st_size <= 1000
        assert read_header(path)["version"] == 1
    assert [r.request_id for r in iter_records(capture_dir)] == [f"r{n}" for n in range(50)]


def test_a_record_larger_than_a_file_gets_a_file_of_its_own(capture_dir: Path) -> None:
    records = [body_record("r", b"a" * 10), body_record("r", b"b" * 5000), body_record("r", b"c")]
    write_all(capture_dir, records, max_file_bytes=1000)
    assert len(capture_files(capture_dir)) == 3
    [exchange] = exchanges(capture_dir)
    assert exchange.body("client_response") == b"a" * 10 + b"b" * 5000 + b"c"


def test_rotation_by_age_uses_the_injected_clock(capture_dir: Path) -> None:
    clock = FakeClock()
    writer = CaptureWriter(config(capture_dir, max_file_age=60), monotonic=clock)
    writer.submit(body_record("r", b"1"))
    assert writer.flush(5)
    clock.now += 59
    writer.submit(body_record("r", b"2"))
    assert writer.flush(5)
    assert writer.files == 1
    clock.now += 1
    writer.submit(body_record("r", b"3"))
    assert writer.flush(5)
    assert writer.files == 2
    writer.close()
    first, second = capture_files(capture_dir)
    assert [r.body for r in iter_records(first)] == [b"1", b"2"]
    assert [r.body for r in iter_records(second)] == [b"3"]


def test_file_names_carry_utc_time_and_continue_a_same_second_sequence(capture_dir: Path) -> None:
    capture_dir.mkdir()
    wall = 1_795_846_502.5  # 2026-11-28T06:15:02Z
    (capture_dir / "capture-20261128T061502Z-0007.cbors").write_bytes(b"")
    writer = CaptureWriter(config(capture_dir), wall=lambda: wall)
    writer.submit(body_record("r", b"x"))
    writer.close()
    assert writer.current_path is None
    names = [path.name for path in capture_files(capture_dir)]
    assert names == ["capture-20261128T061502Z-0007.cbors", "capture-20261128T061502Z-0008.cbors"]
    created = file_time(capture_dir / names[1])
    assert created is not None and created.timestamp() == 1_795_846_502


def test_retention_deletes_oldest_files_but_never_the_current_one(capture_dir: Path) -> None:
    capture_dir.mkdir()
    unrelated = capture_dir / "notes.txt"
    unrelated.write_text("keep me")
    writer = CaptureWriter(config(capture_dir, max_file_bytes=1000, max_total_bytes=3000))
    for n in range(100):
        writer.submit(body_record(f"r{n:03d}", b"y" * 200))
    writer.close()
    files = capture_files(capture_dir)
    assert writer.files > len(files) >= 2
    # Retention runs after each rotation: what is left besides the newest file fits the cap.
    sizes = [path.stat().st_size for path in files]
    assert sum(sizes[:-1]) <= 3000
    kept = [r.request_id for r in iter_records(capture_dir)]
    assert kept == [f"r{n:03d}" for n in range(100 - len(kept), 100)]  # the newest survive
    assert unrelated.read_text() == "keep me"


def test_retention_smaller_than_one_file_keeps_the_current_file(capture_dir: Path) -> None:
    writer = CaptureWriter(config(capture_dir, max_file_bytes=500, max_total_bytes=10))
    for n in range(20):
        writer.submit(body_record(f"r{n}", b"z" * 100))
    assert writer.flush(5)
    current = writer.current_path
    assert current is not None and current.exists()
    assert capture_files(capture_dir) == [current]
    writer.close()


# --------------------------------------------------------------------------------------------
# Queue overflow


class BlockingOpener:
    """Opens capture files only once the test releases it: the writer thread waits inside."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, path: Path) -> IO[bytes]:
        self.entered.set()
        assert self.release.wait(10), "test never released the writer"
        return open(path, "xb", buffering=0)


def test_full_queue_drops_counts_and_warns_at_most_every_ten_seconds(
    capture_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="extproc.observe.capture")
    clock = FakeClock()
    opener = BlockingOpener()
    writer = CaptureWriter(config(capture_dir, queue_size=2), monotonic=clock, opener=opener)
    try:
        assert writer.submit(body_record("r", b"0"))
        assert opener.entered.wait(5)  # the writer took record 0 and is stuck opening the file
        assert writer.submit(body_record("r", b"1"))
        assert writer.submit(body_record("r", b"2"))
        assert writer.queue_depth == 2
        assert [writer.submit(body_record("r", b"x")) for _ in range(3)] == [False] * 3
        assert writer.dropped == 3
        warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(warnings) == 1 and "1 dropped so far" in warnings[0].getMessage()
        clock.now += 10
        assert not writer.submit(body_record("r", b"x"))
        warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(warnings) == 2 and "4 dropped so far" in warnings[1].getMessage()
    finally:
        opener.release.set()
    assert writer.close(5)
    assert writer.written == 3 and writer.dropped == 4
    assert [r.body for r in iter_records(capture_dir)] == [b"0", b"1", b"2"]


def test_unreported_drops_are_logged_at_close(
    capture_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="extproc.observe.capture")
    clock = FakeClock()
    opener = BlockingOpener()
    writer = CaptureWriter(config(capture_dir, queue_size=1), monotonic=clock, opener=opener)
    writer.submit(body_record("r", b"0"))
    assert opener.entered.wait(5)
    writer.submit(body_record("r", b"1"))
    writer.submit(body_record("r", b"x"))
    writer.submit(body_record("r", b"x"))  # within 10 s of the first warning: not logged yet
    opener.release.set()
    writer.close(5)
    assert "2 records dropped in total" in caplog.text


def test_submit_after_close_is_a_counted_drop(capture_dir: Path) -> None:
    writer = CaptureWriter(config(capture_dir))
    assert writer.close()
    assert not writer.submit(body_record("r", b"late"))
    assert writer.dropped == 1


def test_flush_times_out_while_the_writer_is_stuck(capture_dir: Path) -> None:
    opener = BlockingOpener()
    writer = CaptureWriter(config(capture_dir), opener=opener)
    writer.submit(body_record("r", b"0"))
    assert opener.entered.wait(5)
    assert not writer.flush(timeout=0.01)
    opener.release.set()
    assert writer.flush(timeout=5)
    writer.close()


def test_write_errors_are_counted_and_the_writer_recovers(capture_dir: Path) -> None:
    calls = {"n": 0}

    def flaky(path: Path) -> IO[bytes]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise PermissionError("denied")
        return open(path, "xb", buffering=0)

    writer = CaptureWriter(config(capture_dir), opener=flaky)
    writer.submit(body_record("r", b"lost"))
    assert writer.flush(5)
    writer.submit(body_record("r", b"kept"))
    writer.close()
    assert writer.dropped == 1 and writer.written == 1
    assert [r.body for r in iter_records(capture_dir)] == [b"kept"]


# --------------------------------------------------------------------------------------------
# Crash safety and the reader's tolerance


CHILD = textwrap.dedent(
    """
    import sys
    from extproc.config.model import CaptureConfig
    from extproc.observe.capture import CaptureWriter, make_record

    writer = CaptureWriter(CaptureConfig(directory=sys.argv[1], max_file_bytes=65536,
                                         queue_size=100000))
    n = 0
    while True:
        for _ in range(200):
            writer.submit(make_record("r", "client_response", "body",
                                      body=b"%08d" % n + b"\\xff" * (n % 300), mono_ns=n))
            n += 1
        writer.flush()
        print(writer.written, flush=True)
    """
)


def test_sigkill_while_writing_leaves_every_complete_record_readable(capture_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(capture_dir)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:  # the child reports what it has written and flushed
            if int(line) >= 5000:
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    problems: list[CaptureFormatError] = []
    records = list(iter_records(capture_dir, problems=problems))
    assert len(records) >= 5000
    for n, record in enumerate(records):
        assert record.body == b"%08d" % n + b"\xff" * (n % 300)
    assert len(capture_files(capture_dir)) > 1
    assert len(problems) <= 1
    if problems:
        [problem] = problems
        assert isinstance(problem, TruncatedTail)
        assert problem.path == capture_files(capture_dir)[-1]


def test_a_torn_tail_at_any_byte_is_reported_and_the_rest_is_read(capture_dir: Path) -> None:
    records = [body_record("r", b"%03d" % n + "é".encode() * n) for n in range(5)]
    write_all(capture_dir, records)
    [path] = capture_files(capture_dir)
    whole = path.read_bytes()
    last = len(encode_record(records[-1]))
    for cut in range(1, last):
        path.write_bytes(whole[: len(whole) - cut])
        problems: list[CaptureFormatError] = []
        back = [r.body for r in iter_records(capture_dir, problems=problems)]
        assert back == [r.body for r in records[:-1]]
        [problem] = problems
        assert isinstance(problem, TruncatedTail)
        assert problem.offset == len(whole) - last
        assert problem.ignored == last - cut
        with pytest.raises(TruncatedTail):
            list(iter_records(capture_dir, strict=True))


def test_reader_reports_corrupt_and_foreign_files_and_goes_on(capture_dir: Path) -> None:
    write_all(capture_dir, [body_record("a", b"1"), body_record("a", b"2")])
    [good] = capture_files(capture_dir)
    corrupt = capture_dir / "capture-20000101T000000Z-0001.cbors"  # sorts first
    data = good.read_bytes()
    header_len = len(cbor2.dumps(cbor2.loads(data)))
    corrupt.write_bytes(data[:header_len] + b"\xff\xff\xff" + data[header_len:])
    foreign = capture_dir / "capture-20000101T000000Z-0002.cbors"
    foreign.write_bytes(cbor2.dumps({"format": "something-else"}))
    future = capture_dir / "capture-20000101T000000Z-0003.cbors"
    future.write_bytes(cbor2.dumps({"format": FORMAT, "version": 2}))
    empty = capture_dir / "capture-20000101T000000Z-0004.cbors"
    empty.write_bytes(b"")
    problems: list[CaptureFormatError] = []
    assert [r.body for r in iter_records(capture_dir, problems=problems)] == [b"1", b"2"]
    kinds = [(type(p), p.path) for p in problems]
    assert kinds == [
        (CorruptCapture, corrupt),
        (UnsupportedCapture, foreign),
        (UnsupportedCapture, future),
    ]
    with pytest.raises(UnsupportedCapture):
        read_header(future)


def test_since_and_until_skip_whole_files_by_name(capture_dir: Path) -> None:
    capture_dir.mkdir()
    for stamp, rid in (("20260101T000000Z", "old"), ("20260201T000000Z", "new")):
        path = capture_dir / f"capture-{stamp}-0001.cbors"
        header = cbor2.dumps({"format": FORMAT, "version": 1, "created": 0, "host": "h"})
        path.write_bytes(header + encode_record(body_record(rid, b"x")))
    assert [r.request_id for r in iter_records(capture_dir)] == ["old", "new"]
    # The old file ends when the new one starts (Feb 1): nothing in it is after Feb 2.
    after = datetime(2026, 2, 2, tzinfo=UTC)
    assert [r.request_id for r in iter_records(capture_dir, since=after)] == ["new"]
    before = datetime(2026, 1, 15, tzinfo=UTC)
    assert [r.request_id for r in iter_records(capture_dir, since=before)] == ["old", "new"]
    assert [r.request_id for r in iter_records(capture_dir, until=before)] == ["old"]


# --------------------------------------------------------------------------------------------
# Exchanges


def test_exchange_groups_legs_attempts_and_timing(capture_dir: Path) -> None:
    t = iter(range(1_000_000, 100_000_000, 1_000_000))

    def rec(leg: str, kind: str, attempt: int = 0, **kw: Any) -> CaptureRecord:
        return make_record("req-9", leg, kind, attempt=attempt, mono_ns=next(t), **kw)

    request = b'{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o","stream":false}'
    records = [
        rec(
            "client_request",
            "headers",
            session_id="s1",
            client_key_id="key-ab",
            headers=[(":method", "POST"), (":path", "/v1/chat/completions")],
        ),
        rec("client_request", "body", body=request[:20]),
        rec("client_request", "body", body=request[20:], end_of_stream=True),
        rec(
            "provider_request",
            "headers",
            1,
            headers=[(":path", "/v1/chat/completions")],
            annotations={"backend": "openai.1", "schema": "openai"},
        ),
        rec("provider_request", "body", 1, body=b"{}", end_of_stream=True),
        rec("provider_response", "headers", 1, headers=[(":status", "503")]),
        rec("provider_response", "end", 1),
        rec("provider_request", "headers", 2, annotations={"backend": "openai.2"}),
        rec("provider_response", "headers", 2, headers=[(":status", "200")]),
        rec("provider_response", "body", 2, body=b'{"ok":1}', end_of_stream=True),
        rec(
            "client_response",
            "headers",
            headers=[(":status", "200"), ("content-type", "application/json")],
        ),
        rec("client_response", "body", body=b'{"ok":true}', end_of_stream=True),
        rec("client_response", "end", headers=[("grpc-status", "0")]),
    ]
    write_all(capture_dir, records)
    [exchange] = exchanges(capture_dir)
    assert exchange.session_id == "s1" and exchange.client_key_id == "key-ab"
    assert exchange.method == "POST" and exchange.path == "/v1/chat/completions"
    assert exchange.frontend == "openai-chat"
    assert exchange.model == "gpt-4o" and not exchange.streamed
    assert exchange.status == 200 and exchange.complete
    assert exchange.backend == "openai.2"  # the last attempt's annotation wins
    assert sorted(exchange.attempts) == [1, 2]
    assert exchange.attempts[1].response.status == 503
    assert exchange.attempts[2].response.body == b'{"ok":1}'
    assert exchange.body("client_request") == request
    assert exchange.client_response.json() == {"ok": True}
    assert exchange.client_response.trailers == [("grpc-status", b"0")]
    assert exchange.bytes_in == len(request) and exchange.bytes_out == 11
    assert exchange.duration_ns == 12_000_000
    names = [(leg.name, leg.attempt) for leg in exchange.legs()]
    assert names == [
        ("client_request", 0),
        ("provider_request", 1),
        ("provider_response", 1),
        ("provider_request", 2),
        ("provider_response", 2),
        ("client_response", 0),
    ]
    # Without bodies: sizes, timings and the request's model stay; chunks do not.
    [light] = exchanges(capture_dir, bodies=False)
    assert light.model == "gpt-4o" and light.bytes_out == 11
    assert light.client_response.chunks == [] and light.client_request.chunks == []
    assert exchanges(capture_dir, request_id="req-") == exchanges(capture_dir, request_id="req-9")
    assert exchanges(capture_dir, request_id="nope") == []
    assert exchange.body("provider_response", attempt=7) == b""  # reading adds no attempt
    assert sorted(exchange.attempts) == [1, 2]
    with pytest.raises(KeyError):
        exchange.leg("server_response")


def test_exchanges_follow_records_across_rotated_files(capture_dir: Path) -> None:
    records = []
    for n in range(30):
        for rid in ("a", "b"):
            records.append(body_record(rid, f"{rid}{n};".encode()))
    write_all(capture_dir, records, max_file_bytes=300)
    assert len(capture_files(capture_dir)) > 3
    found = {e.request_id: e.body("client_response") for e in exchanges(capture_dir)}
    assert found == {rid: "".join(f"{rid}{n};" for n in range(30)).encode() for rid in "ab"}


def test_the_writer_is_the_observer_sink(capture_dir: Path) -> None:
    """The observer (extproc.processing.observer) hands its messages to ``event``."""
    observer_mod = pytest.importorskip("extproc.processing.observer")
    writer = CaptureWriter(config(capture_dir))
    attempts = observer_mod.AttemptCounter()
    client = observer_mod.ObserverProcessor(writer, "client", attempts)
    provider = observer_mod.ObserverProcessor(
        writer, "provider", attempts, {"instance": "openai.1", "schema": "openai"}
    )
    head = [
        (":method", b"POST"),
        (":path", b"/v1/chat/completions"),
        ("x-request-id", b"rid-1"),
        ("authorization", f"Bearer {SECRET}".encode()),
    ]
    client.handle("request_headers", head, None, False)
    client.handle("request_body", None, b'{"model":"m"}', True)
    provider.handle("request_headers", head, None, False)
    provider.handle("response_headers", [(":status", b"200")], None, False)
    provider.handle("response_body", None, b"ok", True)
    client.handle("response_headers", [(":status", b"200")], None, False)
    client.handle("response_body", None, b"ok", True)
    provider.close()
    client.close()
    writer.close()
    [exchange] = exchanges(capture_dir)
    assert exchange.request_id == "rid-1"
    assert exchange.client_request.header("authorization") == f"Bearer {masked_id(SECRET)}"
    assert exchange.client_key_id == key_id(SECRET)
    assert exchange.attempts[1].response.body == b"ok"
    assert exchange.backend == "openai.1"
    assert exchange.status == 200 and exchange.complete


def test_observer_ids_a_client_key_sent_in_the_query(capture_dir: Path) -> None:
    """A Gemini client's ``?key=`` is its client key, as for the ROUTER role and usage."""
    observer_mod = pytest.importorskip("extproc.processing.observer")
    writer = CaptureWriter(config(capture_dir))
    client = observer_mod.ObserverProcessor(writer, "client", observer_mod.AttemptCounter())
    path = f"/v1beta/models/g:generateContent?alt=sse&key={GEMINI_KEY}"
    head = [(":method", b"POST"), (":path", path.encode()), ("x-request-id", b"rid-q")]
    client.handle("request_headers", head, None, False)
    client.handle("request_body", None, b"{}", True)
    client.close()
    writer.close()
    [exchange] = exchanges(capture_dir)
    assert exchange.client_key_id == key_id(GEMINI_KEY)
    assert exchange.path == f"/v1beta/models/g:generateContent?alt=sse&key={masked_id(GEMINI_KEY)}"


# --------------------------------------------------------------------------------------------
# SSE and summaries


def test_parse_sse_handles_line_ends_comments_and_multiline_data() -> None:
    stream = (
        b": keep-alive\r\n\r\n"
        b'event: message_start\r\ndata: {"a":1}\r\n\r\n'
        b"data:no-space\n\n"
        b"data: line1\ndata: line2\nid: 7\n\n"
        b"data: [DONE]\r\r"
        b"data: cut"
    )
    events = parse_sse(stream)
    assert [(e.event, e.data, e.id) for e in events] == [
        ("message_start", '{"a":1}', None),
        (None, "no-space", None),
        (None, "line1\nline2", "7"),
        (None, "[DONE]", None),
        (None, "cut", None),
    ]
    assert events[0].json() == {"a": 1} and events[3].json() is None


def test_parse_sse_with_a_character_split_across_chunks() -> None:
    data = 'data: {"t":"日本"}\n\n'.encode()
    split = data.index("本".encode()) + 1
    leg_bytes = data[:split] + data[split:]
    assert parse_sse(leg_bytes)[0].json() == {"t": "日本"}


def sse(*objects: Any, done: bool = False) -> list[SSEEvent]:
    events = [SSEEvent(json.dumps(o)) for o in objects]
    return events + ([SSEEvent("[DONE]")] if done else [])


def test_summarize_openai_chat_stream() -> None:
    summary = summarize_stream(
        sse(
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
            {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_1",
                                    "function": {"name": "f", "arguments": ""},
                                }
                            ]
                        },
                    }
                ]
            },
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]},
                    }
                ]
            },
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
                    }
                ]
            },
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            {"choices": [], "usage": {"prompt_tokens": 3}},
            done=True,
        )
    )
    assert summary.text == "Hello"
    assert [(c.name, c.parsed_arguments(), c.id) for c in summary.tool_calls] == [
        ("f", {"a": 1}, "call_1")
    ]
    assert summary.finish_reason == "tool_calls" and summary.usage == {"prompt_tokens": 3}


def test_summarize_anthropic_gemini_and_responses_streams() -> None:
    anthropic = summarize_stream(
        sse(
            {"type": "message_start", "message": {"usage": {"input_tokens": 5}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "tu_1", "name": "g", "input": {}},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"b": 2}'},
            },
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 7},
            },
        )
    )
    assert anthropic.text == "Hi" and anthropic.finish_reason == "tool_use"
    assert [(c.name, c.parsed_arguments()) for c in anthropic.tool_calls] == [("g", {"b": 2})]
    assert anthropic.usage == {"input_tokens": 5, "output_tokens": 7}
    gemini = summarize_stream(
        sse(
            {"candidates": [{"content": {"parts": [{"text": "Yo"}]}}]},
            {
                "candidates": [
                    {
                        "content": {"parts": [{"functionCall": {"name": "h", "args": {}}}]},
                        "finishReason": "STOP",
                    }
                ]
            },
        )
    )
    assert gemini.text == "Yo" and gemini.finish_reason == "STOP"
    assert [c.name for c in gemini.tool_calls] == ["h"]
    responses = summarize_stream(
        sse(
            {"type": "response.output_text.delta", "delta": "A"},
            {
                "type": "response.output_item.added",
                "output_index": 1,
                "item": {"type": "function_call", "name": "k", "call_id": "c1"},
            },
            {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "{}"},
            {"type": "response.completed", "response": {"status": "completed"}},
        )
    )
    assert responses.text == "A" and responses.finish_reason == "completed"
    assert [(c.name, c.id) for c in responses.tool_calls] == [("k", "c1")]
    errors = summarize_stream(sse({"error": {"message": "boom"}}))
    assert errors.errors == ['{"message": "boom"}']


def test_summarize_json_answers() -> None:
    openai = summarize_json(
        {"choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}]}
    )
    assert (openai.text, openai.finish_reason) == ("x", "stop")
    anthropic = summarize_json(
        {"type": "message", "content": [{"type": "text", "text": "y"}], "stop_reason": "end_turn"}
    )
    assert (anthropic.text, anthropic.finish_reason) == ("y", "end_turn")
    assert summarize_json(None).text == ""


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    before = {t.name for t in threading.enumerate() if t.name == "capture-writer"}
    yield
    # Writers are closed by every test; a daemon thread left behind would mean a missing close.
    after = [t for t in threading.enumerate() if t.name == "capture-writer" and t.is_alive()]
    assert len(after) <= len(before)
