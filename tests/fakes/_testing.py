"""Helpers shared by the tests of the fake upstreams (``test_*_upstream.py``).

A minimal raw HTTP/1.1 client (:class:`RawConnection`) for the wire details the SDKs and httpx
hide (framing, chunks, keep-alive, resets), polling, the fakes' command line as a subprocess, and
the checks every fake's tests make the same way.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeUpstream

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks: list[bytes] | None  # the HTTP chunks when the body was chunked


class RawConnection:
    """A minimal HTTP/1.1 client on one socket, with its own buffer so timeouts are safe.

    ``headers`` are sent with every request (before the request's own); use it as a context
    manager to close the socket.
    """

    def __init__(
        self, port: int, timeout: float = 2.0, headers: dict[str, str] | None = None
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.headers = dict(headers or {})

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1"]
        all_headers = {**self.headers, **(headers or {})}
        if body is not None and "transfer-encoding" not in all_headers:
            all_headers.setdefault("content-type", "application/json")
            all_headers["content-length"] = str(len(body))
        lines += [f"{name}: {value}" for name, value in all_headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))

    def send_json(self, path: str, payload: Any) -> None:
        self.send("POST", path, json.dumps(payload).encode())

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed by the server")
        self.buffer += data

    def read_until(self, separator: bytes) -> bytes:
        while separator not in self.buffer:
            self._fill()
        data, _, self.buffer = self.buffer.partition(separator)
        return data + separator

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_head(self) -> tuple[int, dict[str, str]]:
        lines = self.read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return int(lines[0].split(" ")[1]), headers

    def read_chunk(self) -> bytes | None:
        """One HTTP chunk's payload; None for the terminating zero-size chunk."""
        size = int(self.read_until(b"\r\n").split(b";")[0], 16)
        if size == 0:
            self.read_until(b"\r\n")
            return None
        data = self.read_exact(size)
        assert self.read_exact(2) == b"\r\n"
        return data

    def read_chunks(self) -> list[bytes]:
        """The payloads of the remaining chunks of a body, up to the terminating chunk."""
        chunks: list[bytes] = []
        while (chunk := self.read_chunk()) is not None:
            chunks.append(chunk)
        return chunks

    def chunk_arrivals(self) -> list[float]:
        """The ``time.monotonic()`` at which each remaining chunk of a body arrived."""
        arrivals = []
        while self.read_chunk() is not None:
            arrivals.append(time.monotonic())
        return arrivals

    def read_response(self) -> RawResponse:
        status, headers = self.read_head()
        if headers.get("transfer-encoding") == "chunked":
            chunks = self.read_chunks()
            return RawResponse(status, headers, b"".join(chunks), chunks)
        body = self.read_exact(int(headers.get("content-length", "0")))
        return RawResponse(status, headers, body, None)

    def assert_silent(self, read: Callable[[], object], seconds: float) -> None:
        """Assert that ``read`` (one of the read methods) gets nothing for ``seconds``."""
        timeout = self.sock.gettimeout()
        self.sock.settimeout(seconds)
        with pytest.raises(TimeoutError):
            read()
        self.sock.settimeout(timeout)

    def peer_closed(self) -> bool:
        try:
            self._fill()
        except (EOFError, ConnectionResetError):
            return True
        return False


@contextmanager
def cli_process(module: str, *args: str, timeout: float = 5.0) -> Iterator[int]:
    """Run ``python -m tests.fakes.<module> --port 0 ARGS`` and yield the port it listens on.

    On the way out it is sent SIGTERM and must exit with 0 within ``timeout`` seconds.
    """
    command = [sys.executable, "-m", f"tests.fakes.{module}", "--port", "0", *args]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        yield int(line.split()[-1])
    finally:
        process.terminate()
        assert process.wait(timeout=timeout) == 0
        if process.stdout is not None:
            process.stdout.close()


def assert_fault_arguments_rejected(
    fake: FakeUpstream[Any], bad_knobs: list[dict[str, Any]]
) -> None:
    """``set_fault`` refuses each of ``bad_knobs``, ``clear_faults`` an unknown knob."""
    for bad in bad_knobs:
        with pytest.raises(ValueError):
            fake.set_fault(**bad)
    with pytest.raises(ValueError):
        fake.clear_faults("bogus")


def assert_requests_recorded(
    fake: FakeUpstream[Any], http: httpx.Client, chat_path: str, chat_body: Any
) -> None:
    """A model listing and a chat request on ``http`` are recorded as sent, then cleared."""
    http.get("/models", params={"limit": "2"}, headers={"X-Custom": "One"})
    http.post(chat_path, json=chat_body)
    first, second = fake.requests
    assert (first.method, first.path, first.query) == ("GET", "/v1/models", "limit=2")
    assert first.headers["x-custom"] == "One"
    assert first.body == b"" and first.json is None
    assert second.json == chat_body
    assert fake.chat_requests() == [second]
    fake.clear_requests()
    assert fake.requests == []
    assert fake.request_count == 2 and fake.chat_request_count == 1


def assert_openai_error(body: Any, *, type_: str, code: str | None) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["type"] == type_
    assert body["error"]["code"] == code
