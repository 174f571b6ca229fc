"""Secrets in recorded bodies are replaced before capture files are written."""

from __future__ import annotations

from pathlib import Path

from extproc.config import build_config
from extproc.observe.capture import CaptureWriter, capture_files, iter_records, make_record
from extproc.server.capture_process import capture_body_filter

PROVIDER_KEY = "sk-fake-provider-capture-0000"  # configured: redacted exactly
GITHUB = "ghp_FAKE0000000000000000000000000000CAPT"  # a known format


def written(directory: Path, body: bytes, **capture: object) -> bytes:
    config = build_config(
        {
            "backends": {"openai": {"api_key": PROVIDER_KEY}},
            "capture": {"enabled": True, "directory": str(directory), **capture},
        }
    )
    writer = CaptureWriter(config.capture, body_filter=capture_body_filter(config))
    writer.submit(make_record("req-1", "client_request", "body", body=body, end_of_stream=True))
    assert writer.close(timeout=10)
    [path] = capture_files(directory)
    [record] = list(iter_records(path))
    return record.body


def test_secrets_in_bodies_are_redacted(tmp_path: Path) -> None:
    body = f'{{"messages":[{{"content":"use {GITHUB} and {PROVIDER_KEY}"}}]}}'.encode()
    out = written(tmp_path / "c", body)
    assert GITHUB.encode() not in out and PROVIDER_KEY.encode() not in out
    assert b"[REDACTED:github-token:" in out and b"[REDACTED:provider-key:" in out


def test_bodies_without_secrets_stay_byte_exact(tmp_path: Path) -> None:
    body = '{"text":"caf\u00e9"}'.encode()[:-3]  # cut inside a UTF-8 character
    assert written(tmp_path / "c", body) == body


def test_redaction_can_be_turned_off(tmp_path: Path) -> None:
    body = f"token {GITHUB}".encode()
    assert written(tmp_path / "c", body, redact_secrets=False) == body
