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
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from extproc.config import Config
from extproc.server.lifecycle import (
    LoadConfig,
    Observability,
    OnSighup,
    announce,
    as_worker,
    run_until_stopped,
    start_envoy,
    start_local_model,
    stop_on_signals,
    warn_about,
)
from extproc.server.supervisor import supervise

__all__ = ["serve"]

log = logging.getLogger("extproc")


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
        return await supervise(config, with_envoy, argv, load)
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
        config = as_worker(config, index)
    else:
        warn_about(config)
    try:
        observability = Observability.start(config)
    except Exception as exc:  # a database or port we cannot use: say so, exit non-zero
        log.error("cannot start observability: %s", exc)
        return 1
    try:
        app = App(config, observability.telemetry)
    except (SessionStoreError, ConfigError) as exc:  # e.g. a sqlite_path we cannot open
        log.error("cannot start sessions: %s", exc)
        observability.close()
        return 1
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
    # Shared state (state.backend: redis): connected after the gRPC port is
    # bound (an outgoing connection could otherwise take a port of the range
    # the workers listen on); Redis being down only means local state for now.
    await app.state_bus.start()
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
    stop = stop_on_signals()
    sighup = OnSighup()
    envoy: EnvoyProcess | None = None
    local: LocalModelServer | None = None
    code = 0
    try:
        if index is None:
            local = await start_local_model(config)
        if with_envoy:
            envoy = await start_envoy(config)
        reloader = _reloader(config, load, processors, observability.telemetry, envoy, index)
        sighup.reload = reloader.reload if reloader is not None else None
        if with_envoy:
            announce(config)
        elif index is not None:
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
        code = await run_until_stopped(stop, envoy, local=local)
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
    from extproc.processing import App
    from extproc.server.reload import Reloader

    def load_checked() -> Config:
        fresh = load()
        if fresh.workers != config.workers:
            log.warning("reload: 'workers' changes need a restart; keeping %d", config.workers)
        return fresh if index is None else as_worker(fresh, index)

    def build(fresh: Config, old: Any) -> Any:
        app = App(fresh, telemetry, carry=old)
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
