"""Run the proxy: the ext_proc gRPC server, its background parts and a supervised Envoy.

``serve`` is the composition root of a running proxy; :mod:`extproc.cli` parses
the command line and calls it. Two shapes:

* ``workers: 1`` (default): everything in this process (plus Envoy and the
  capture process as children);
* ``workers: N > 1``: this process supervises Envoy and N extproc worker
  processes (:mod:`extproc.server.workers`), each of them a ``workers: 1``
  extproc without Envoy on a port of its own.

Stopping (SIGTERM, SIGINT) is graceful in both: health goes NOT_SERVING, Envoy
stops accepting and the requests in flight finish, bounded by
``shutdown.drain_timeout``; then Envoy, the workers and the server stop.
SIGHUP calls the ``reload`` hook (and is forwarded to the workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from extproc.config import Config

__all__ = ["Reload", "serve"]

log = logging.getLogger("extproc")

#: The reload hook SIGHUP calls (re-read the config and apply it).
Reload = Callable[[], Awaitable[Any]]
#: Re-reads and validates the config (raises ConfigError): what a reload applies.
LoadConfig = Callable[[], Config]

#: Extra time, beyond the drain timeout, a stopping worker gets before SIGKILL (seconds).
_WORKER_STOP_GRACE = 5.0


async def serve(
    config: Config,
    *,
    with_envoy: bool,
    load: LoadConfig | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (exit code 0) or a fatal error (non-zero).

    ``load`` re-reads the config for a reload (SIGHUP, ``POST /v1/admin/reload``;
    None: reload is not available). ``argv`` is this process's command line
    without the program (default: ``sys.argv[1:]``); workers re-run it with
    their own port.
    """
    if config.workers > 1:
        argv = list(sys.argv[1:] if argv is None else argv)
        return await _supervise(config, with_envoy, argv, load)
    return await _serve_one(config, with_envoy, load)


# -- one process ---------------------------------------------------------------


async def _serve_one(config: Config, with_envoy: bool, load: LoadConfig | None) -> int:
    from extproc.envoy_config import bootstrap_generation
    from extproc.errors import ConfigError
    from extproc.observe.capture_feed import CaptureFeed
    from extproc.processing import App
    from extproc.processing.factory import Processors
    from extproc.server import start_grpc_server
    from extproc.server.capture_process import CaptureProcess, CaptureProcessError
    from extproc.server.envoy_process import EnvoyError, EnvoyProcess
    from extproc.server.local_model import LocalModelError, LocalModelServer
    from extproc.server.serving_state import ServingState
    from extproc.server.workers import worker_index
    from extproc.sessions import SessionStoreError

    index = worker_index()
    if index is not None:
        config = _as_worker(config, index)
    else:
        _warn_about(config)
    try:
        observability = _Observability.start(config)
    except Exception as exc:  # a database or port we cannot use: say so, exit non-zero
        log.error("cannot start observability: %s", exc)
        return 1
    try:
        app = App(config, observability.telemetry)
    except (SessionStoreError, ConfigError) as exc:  # e.g. a sqlite_path we cannot open
        log.error("cannot start sessions: %s", exc)
        observability.close()
        return 1
    # Shared state (state.backend: redis): the snapshot first; Redis being down
    # only means local state for now (it connects later).
    await app.state_bus.start()
    # In a worker the supervisor runs the observer filters' capture process.
    capture_here = config.capture.enabled and not (index is not None and config.capture.observers)
    feed = None
    if capture_here and not config.capture.observers:
        # The roles record; the capture process encodes and writes.
        feed = CaptureFeed(config.capture.queue_size)
    state = ServingState()
    processors = Processors(app, feed, generation=bootstrap_generation(config))
    try:
        server = await start_grpc_server(
            app, config.grpc_host, config.grpc_port, feed, state, processors=processors
        )
    except OSError as exc:
        log.error("%s", exc)
        if feed is not None:
            feed.close()
        if app.sessions is not None:
            await app.sessions.close()
        await app.state_bus.close()
        observability.close()
        return 1
    capture: CaptureProcess | None = None
    supervisor: asyncio.Task[None] | None = None
    if capture_here:
        capture = CaptureProcess(config, feed)
        try:
            await capture.start()
        except CaptureProcessError as exc:
            log.error("%s", exc)
            if feed is not None:
                feed.close()
            await server.stop(grace=0)
            await app.state_bus.close()
            observability.close()
            return 1
        observability.watch_capture(capture)
        supervisor = asyncio.ensure_future(capture.supervise())
    stop = _stop_on_signals()
    sighup = _OnSighup()
    envoy: EnvoyProcess | None = None
    local: LocalModelServer | None = None
    code = 0
    try:
        if index is None:
            local = await _start_local_model(config)
        if with_envoy:
            envoy = await _start_envoy(config)
        reloader = _reloader(config, load, processors, observability.telemetry, envoy, index)
        sighup.reload = reloader.reload if reloader is not None else None
        if index is None and with_envoy:
            _announce(config)
        if index is not None:
            log.info(
                "worker %d serving ext_proc on %s:%d", index, config.grpc_host, config.grpc_port
            )
        else:
            log.info(
                "serving ext_proc only on %s:%d (--no-envoy); point your Envoy at it "
                "(python -m extproc envoy-config prints a bootstrap)",
                config.grpc_host,
                config.grpc_port,
            )
        code = await _run_until_stopped(stop, envoy, local=local)
    except (EnvoyError, LocalModelError) as exc:
        log.error("%s", exc)
        code = 1
    finally:
        # Graceful: no new work, then the requests in flight finish (bounded).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.shutdown.drain_timeout
        await state.mark_draining()
        if envoy is not None and code == 0:
            from extproc.server.envoy_drain import drain_envoy

            await drain_envoy(config.admin_port, config.shutdown.drain_timeout)
        if state.active_streams:
            log.info("waiting for %d ext_proc stream(s) to finish", state.active_streams)
        if not await state.wait_idle(deadline - loop.time()):
            log.warning(
                "%d ext_proc stream(s) still open after %.0f s; stopping anyway",
                state.active_streams,
                config.shutdown.drain_timeout,
            )
        if envoy is not None:
            await envoy.stop()
        if local is not None:
            await local.stop()
        await server.stop(grace=1.0)
        app = processors.app  # the newest, after reloads
        if app.sessions is not None:
            # Pending session bookkeeping is written, then the store is closed.
            await app.sessions.close()
        # The last shared-state changes are sent (bounded), then the bus stops.
        await app.state_bus.close()
        if supervisor is not None:
            supervisor.cancel()
        if capture is not None:
            await capture.stop()
        await asyncio.to_thread(observability.close)
        log.info("stopped")
    return code


def _as_worker(config: Config, index: int) -> Config:
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


async def _supervise(
    config: Config, with_envoy: bool, argv: list[str], load: LoadConfig | None
) -> int:
    from extproc.server.capture_process import CaptureProcess, CaptureProcessError
    from extproc.server.envoy_process import EnvoyError, EnvoyProcess
    from extproc.server.local_model import LocalModelError, LocalModelServer
    from extproc.server.workers import WorkerError, WorkerPool, worker_ports

    _warn_about(config)
    problem = _port_clash(config)
    if problem:
        log.error("%s", problem)
        return 2
    stop = _stop_on_signals()
    sighup = _OnSighup()
    pool = WorkerPool(config, argv)
    loop = asyncio.get_running_loop()
    capture: CaptureProcess | None = None
    capture_watch: asyncio.Task[None] | None = None
    envoy: EnvoyProcess | None = None
    local: LocalModelServer | None = None
    code = 0
    try:
        local = await _start_local_model(config)
        if config.capture.enabled and config.capture.observers:
            # One capture process behind the observer filters, for all workers.
            capture = CaptureProcess(config, None)
            await capture.start()
            capture_watch = asyncio.ensure_future(capture.supervise())
        await pool.start()
        ports = worker_ports(config)
        log.info(
            "%d extproc workers serving on %s ports %d-%d (pids %s)",
            config.workers,
            config.grpc_host,
            ports[0],
            ports[-1],
            ", ".join(str(pid) for pid in pool.pids),
        )
        if with_envoy:
            envoy = await _start_envoy(config)
        reloader = _supervisor_reloader(config, load, pool, envoy)
        sighup.reload = reloader.reload if reloader is not None else None
        if with_envoy:
            _announce(config)
        code = await _run_until_stopped(stop, envoy, pool.all_failed, local=local)
    except (EnvoyError, WorkerError, CaptureProcessError, LocalModelError, OSError) as exc:
        log.error("%s", exc)
        code = 1
    finally:
        deadline = loop.time() + config.shutdown.drain_timeout
        if envoy is not None and code == 0:
            from extproc.server.envoy_drain import drain_envoy

            await drain_envoy(config.admin_port, config.shutdown.drain_timeout)
        # Each worker goes NOT_SERVING and lets its own streams finish.
        await pool.stop(max(deadline - loop.time(), 0.0) + _WORKER_STOP_GRACE)
        if envoy is not None:
            await envoy.stop()
        if local is not None:
            await local.stop()
        if capture_watch is not None:
            capture_watch.cancel()
        if capture is not None:
            await capture.stop()
        log.info("stopped")
    return code


def _forward_sighup(pool: Any) -> None:
    log.info("reload: telling the workers")
    pool.send_signal(signal.SIGHUP)


# -- reload ------------------------------------------------------------------------


def _reloader(
    config: Config,
    load: LoadConfig | None,
    processors: Any,
    telemetry: Any,
    envoy: Any,
    index: int | None,
) -> Any:
    """The reload of one extproc (and its Envoy); None when the config cannot be re-read."""
    if load is None:
        return None
    from extproc.envoy_config import bootstrap_generation, build_bootstrap, render
    from extproc.processing.app import rebuild_app
    from extproc.server.reload import Reloader

    def load_checked() -> Config:
        fresh = load()
        if fresh.workers != config.workers:
            log.warning("reload: 'workers' changes need a restart; keeping %d", config.workers)
        return fresh if index is None else _as_worker(fresh, index)

    def build(fresh: Config, old: Any) -> Any:
        app = rebuild_app(fresh, old, telemetry)
        app.admin.reload_hook = hook
        return app

    reloader = Reloader(
        load=load_checked,
        generation=bootstrap_generation,
        apps=processors,
        build_app=build,
        retire_app=_retire_later,
        envoy=envoy,
        render=lambda fresh: render(build_bootstrap(fresh)),
    ).started_with(config)
    hook = reloader.reload if index is None else _ask_supervisor(load)
    processors.app.admin.reload_hook = hook
    return reloader


def _ask_supervisor(load: LoadConfig) -> Any:
    """A worker's ``POST /v1/admin/reload``: check the config, then SIGHUP the supervisor."""
    from extproc.errors import ConfigError
    from extproc.server.workers import SUPERVISOR_PID_ENV

    async def hook() -> tuple[int, dict[str, Any]]:
        try:
            await asyncio.to_thread(load)
        except ConfigError as exc:
            return 400, {
                "error": {
                    "message": f"config refused, the running config is kept: {exc}",
                    "type": "invalid_request_error",
                    "code": "invalid_config",
                }
            }
        os.kill(int(os.environ[SUPERVISOR_PID_ENV]), signal.SIGHUP)
        return 202, {"status": "reloading", "scope": "the supervisor, Envoy and every worker"}

    return hook


def _supervisor_reloader(config: Config, load: LoadConfig | None, pool: Any, envoy: Any) -> Any:
    if load is None:
        return None
    from extproc.envoy_config import bootstrap_generation, build_bootstrap, render
    from extproc.server.reload import Reloader

    return Reloader(
        load=load,
        generation=bootstrap_generation,
        envoy=envoy,
        render=lambda fresh: render(build_bootstrap(fresh)),
        notify_workers=lambda: _forward_sighup(pool),
    ).started_with(config)


#: Old applications closed once their streams can no longer be open.
_RETIRE_AFTER = 120.0
_retiring: set[asyncio.Task[None]] = set()


def _retire_later(old: Any, new: Any) -> None:
    """Close what the old application owns and the new one does not (sessions store)."""
    if old is None or old.sessions is None or old.sessions is new.sessions:
        return

    async def close() -> None:
        await asyncio.sleep(_RETIRE_AFTER)
        await old.sessions.close()

    task = asyncio.ensure_future(close())
    _retiring.add(task)
    task.add_done_callback(_retiring.discard)


async def _start_local_model(config: Config) -> Any:
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


def _port_clash(config: Config) -> str | None:
    """Why the workers' port ranges cannot be used, or None."""
    from extproc.server.workers import worker_ports

    grpc = set(worker_ports(config))
    if max(grpc) > 65535:
        return f"workers: gRPC ports {min(grpc)}-{max(grpc)} go beyond 65535"
    fixed = {"port": config.port, "admin_port": config.admin_port}
    if config.anthropic_port:
        fixed["anthropic_port"] = config.anthropic_port
    if config.capture.enabled and config.capture.observers:
        fixed["capture.grpc_port"] = config.capture.grpc_port
    ranges = {"gRPC (grpc_port + worker index)": grpc}
    if config.metrics.enabled and config.metrics.port:
        ranges["metrics (metrics.port + worker index)"] = {
            config.metrics.port + i for i in range(config.workers)
        }
    for what, ports in ranges.items():
        for name, port in fixed.items():
            if port in ports:
                return f"workers: {name} {port} falls in the {what} ports {min(ports)}-{max(ports)}"
    if len(ranges) == 2 and set.intersection(*ranges.values()):
        return "workers: the gRPC and metrics port ranges overlap (grpc_port, metrics.port)"
    return None


# -- shared parts ------------------------------------------------------------------


async def _start_envoy(config: Config) -> Any:
    from extproc.envoy_config import build_bootstrap, render
    from extproc.server.envoy_process import EnvoyProcess, find_envoy

    envoy = EnvoyProcess(
        find_envoy(config.envoy.binary),
        render(build_bootstrap(config)),
        admin_port=config.admin_port,
        log_level=config.envoy.log_level,
        concurrency=config.envoy.concurrency,
        # A reload's old Envoy: connections are told to close within a few
        # seconds; streams still open get the drain timeout to finish.
        drain_seconds=min(5.0, config.shutdown.drain_timeout),
        parent_shutdown_seconds=config.shutdown.drain_timeout + 5.0,
    )
    await envoy.start()
    await envoy.wait_ready()
    return envoy


def _announce(config: Config) -> None:
    """Ready: the log line, and the first-run banner (what to try, where to point SDKs)."""
    from extproc.server.banner import banner

    base = f"http://{_url_host(config.host)}:{config.port}"
    anthropic = (
        f"; Anthropic clients: http://{_url_host(config.host)}:{config.anthropic_port}"
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


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


#: Reload tasks in flight (a reference keeps each alive until it is done).
_reloads: set[asyncio.Task[None]] = set()


class _OnSighup:
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


class _Observability:
    """The background parts of observability in this process: metrics server, usage writer."""

    def __init__(self, telemetry: Any) -> None:
        self.telemetry = telemetry

    @classmethod
    def start(cls, config: Config) -> _Observability:
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
                log.info("metrics on http://%s:%d/metrics", _url_host(config.metrics.host), port)
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


async def _run_until_stopped(
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


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _warn_about(config: Config) -> None:
    if not config.backends:
        log.warning("no backends configured: every generation request will be answered 404")
    from backends import get_type

    for name, backend in config.backends.items():
        if not get_type(config.backend_type(name)).key_required:
            continue
        if backend.api_key is None or not backend.api_key.get_secret_value():
            log.warning("backend %s has no api_key; requests go out unauthenticated", name)
