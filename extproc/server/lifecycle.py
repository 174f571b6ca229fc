"""What every way of running the proxy shares: signals, Envoy, the local model,
observability, the ready banner, waiting until something ends.

Used by :mod:`extproc.server.serve` (one extproc process) and
:mod:`extproc.server.supervisor` (a supervisor of worker processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from extproc.config import Config

__all__ = [
    "LoadConfig",
    "Observability",
    "OnSighup",
    "Reload",
    "announce",
    "as_worker",
    "run_until_stopped",
    "start_envoy",
    "start_local_model",
    "stop_on_signals",
    "url_host",
    "warn_about",
]

log = logging.getLogger("extproc")


#: The reload hook SIGHUP calls (re-read the config and apply it).
Reload = Callable[[], Awaitable[Any]]
#: Re-reads and validates the config (raises ConfigError): what a reload applies.
LoadConfig = Callable[[], Config]


def as_worker(config: Config, index: int) -> Config:
    """A worker's view of the config: its own metrics port, its index in its log lines."""
    formatter = logging.Formatter(
        f"%(asctime)s %(levelname)s %(name)s[worker {index}]: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
    if config.metrics.enabled and config.metrics.port:
        metrics = config.metrics.model_copy(update={"port": config.metrics.port + index})
        config = config.model_copy(update={"metrics": metrics})
    return config


# -- a supervisor of workers -----------------------------------------------------


async def start_local_model(config: Config) -> Any:
    """The bundled model server when ``local_model.enabled`` (None otherwise)."""
    from extproc.server.local_model import LocalModelServer

    local = LocalModelServer.from_config(config)
    if local is None:
        return None
    try:
        await local.start()
        await local.wait_ready()
    except BaseException:
        await local.stop()
        raise
    log.info("local model %s ready on %s (pid %s)", local.model, local.base_url, local.pid)
    return local


async def start_envoy(config: Config) -> Any:
    from extproc.envoy_config import build_bootstrap, render
    from extproc.server.envoy_process import EnvoyProcess, find_envoy
    from extproc.server.sizing import envoy_concurrency

    concurrency = envoy_concurrency(config.envoy.concurrency, config.workers)
    log.info(
        "Envoy with %d worker thread%s (%s)",
        concurrency,
        "" if concurrency == 1 else "s",
        "envoy.concurrency" if config.envoy.concurrency else "CPUs less extproc workers",
    )
    envoy = EnvoyProcess(
        find_envoy(config.envoy.binary),
        render(build_bootstrap(config)),
        admin_port=config.admin_port,
        log_level=config.envoy.log_level,
        concurrency=concurrency,
        # A reload's old Envoy: connections are told to close within a few
        # seconds; streams still open get the drain timeout to finish.
        drain_seconds=min(5.0, config.shutdown.drain_timeout),
        parent_shutdown_seconds=config.shutdown.drain_timeout + 5.0,
    )
    await envoy.start()
    await envoy.wait_ready()
    return envoy


def announce(config: Config) -> None:
    """Ready: the log line, and the first-run banner (what to try, where to point SDKs)."""
    from extproc.server.banner import banner

    base = f"http://{url_host(config.host)}:{config.port}"
    anthropic = (
        f"; Anthropic clients: http://{url_host(config.host)}:{config.anthropic_port}"
        if config.anthropic_port
        else ""
    )
    log.info(
        "proxy ready on %s (OpenAI base URL %s/v1, Gemini %s, Anthropic %s/anthropic%s);"
        " Envoy admin on 127.0.0.1:%d",
        base,
        base,
        base,
        base,
        anthropic,
        config.admin_port,
    )
    print(banner(config), flush=True)


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


#: Reload tasks in flight (a reference keeps each alive until it is done).
_reloads: set[asyncio.Task[None]] = set()


class OnSighup:
    """SIGHUP's handler, installed first thing (its default action ends the
    process); the reload joins it once the process can reload."""

    def __init__(self) -> None:
        self.reload: Reload | None = None
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._fire)

    def _fire(self) -> None:
        if self.reload is None:
            log.info("SIGHUP: reload not available (no --config file, or still starting)")
            return
        task = asyncio.ensure_future(_run_reload(self.reload))
        _reloads.add(task)
        task.add_done_callback(_reloads.discard)


async def _run_reload(reload: Reload) -> None:
    log.info("SIGHUP: reloading (pid %d)", os.getpid())
    try:
        await reload()
    except Exception:
        log.exception("reload failed; the running configuration stays")


class Observability:
    """The background parts of observability in this process: metrics server, usage writer."""

    def __init__(self, telemetry: Any) -> None:
        self.telemetry = telemetry

    @classmethod
    def start(cls, config: Config) -> Observability:
        from extproc.observe.telemetry import Telemetry

        telemetry = Telemetry.from_config(config)
        try:
            metrics = telemetry.metrics
            if config.metrics.enabled:
                try:
                    _, port = metrics.serve(config.metrics.host, config.metrics.port)
                except OSError as exc:
                    raise OSError(
                        f"cannot serve metrics on {config.metrics.host}:{config.metrics.port}: "
                        f"{exc} (set metrics.port, or metrics.enabled: false)"
                    ) from exc
                log.info("metrics on http://%s:%d/metrics", url_host(config.metrics.host), port)
            if telemetry.usage is not None:
                usage = telemetry.usage
                metrics.watch_queue(
                    "usage", depth=lambda: usage.queue_depth, dropped=lambda: usage.dropped
                )
                log.info("usage accounting to %s", _safe_url(config.usage.database))
            if config.capture.enabled:
                log.info(
                    "capturing wire traffic to %s (%s)",
                    Path(config.capture.directory).resolve(),
                    "observer filters" if config.capture.observers else "from the proxy's roles",
                )
            if config.tracing.enabled:
                log.info(
                    "tracing on%s",
                    f", exporting to {config.tracing.otlp_endpoint}"
                    if config.tracing.otlp_endpoint
                    else " (no otlp_endpoint: spans are not exported)",
                )
        except BaseException:
            telemetry.close()
            raise
        return cls(telemetry)

    def watch_capture(self, capture: Any) -> None:
        """The capture process's queue in this process's metrics."""
        self.telemetry.metrics.watch_queue(
            "capture", depth=lambda: capture.queue_depth, dropped=lambda: capture.dropped
        )

    def close(self) -> None:
        self.telemetry.close()


def _safe_url(url: str) -> str:
    """A database URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


async def run_until_stopped(
    stop: asyncio.Event, envoy: Any, failed: Any = None, *, local: Any = None
) -> int:
    waiters = {asyncio.ensure_future(stop.wait())}
    local_exit = asyncio.ensure_future(local.wait()) if local is not None else None
    if local_exit is not None:
        waiters.add(local_exit)
    envoy_exit = asyncio.ensure_future(envoy.wait()) if envoy is not None else None
    if envoy_exit is not None:
        waiters.add(envoy_exit)
    gave_up = asyncio.ensure_future(failed.wait()) if failed is not None else None
    if gave_up is not None:
        waiters.add(gave_up)
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if envoy_exit is not None and envoy_exit in done:
        log.error("Envoy exited unexpectedly with code %s; shutting down", envoy_exit.result())
        return 1
    if gave_up is not None and gave_up in done:
        log.error("no extproc worker left; shutting down")
        return 1
    if local_exit is not None and local_exit in done:
        log.error("the local model server exited with code %s; shutting down", local_exit.result())
        return 1
    log.info("shutting down")
    return 0


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def warn_about(config: Config) -> None:
    if not config.backends:
        log.warning("no backends configured: every generation request will be answered 404")
    from backends import get_type

    for name, backend in config.backends.items():
        if not get_type(config.backend_type(name)).key_required:
            continue
        if backend.api_key is None or not backend.api_key.get_secret_value():
            log.warning("backend %s has no api_key; requests go out unauthenticated", name)
