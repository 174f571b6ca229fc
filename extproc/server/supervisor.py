"""``workers: N > 1``: this process supervises Envoy and N extproc workers.

Each worker (:mod:`extproc.server.workers`) is a ``workers: 1`` extproc
without Envoy on a port of its own. Stopping drains Envoy, then each worker
goes NOT_SERVING and lets its own streams finish; SIGHUP reloads Envoy (hot
restart when its bootstrap changes) and is forwarded to every worker.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from extproc.config import Config
from extproc.server.lifecycle import (
    LoadConfig,
    OnSighup,
    announce,
    run_until_stopped,
    start_envoy,
    start_local_model,
    stop_on_signals,
    warn_about,
)

__all__ = ["supervise"]

log = logging.getLogger("extproc")

#: Extra time, beyond the drain timeout, a stopping worker gets before SIGKILL (seconds).
_WORKER_STOP_GRACE = 5.0


async def supervise(
    config: Config, with_envoy: bool, argv: list[str], load: LoadConfig | None
) -> int:
    from extproc.server.capture_process import CaptureProcess, CaptureProcessError
    from extproc.server.envoy_process import EnvoyError, EnvoyProcess
    from extproc.server.local_model import LocalModelError, LocalModelServer
    from extproc.server.workers import WorkerError, WorkerPool, worker_ports

    warn_about(config)
    problem = _port_clash(config)
    if problem:
        log.error("%s", problem)
        return 2
    stop = stop_on_signals()
    sighup = OnSighup()
    pool = WorkerPool(config, argv)
    loop = asyncio.get_running_loop()
    capture: CaptureProcess | None = None
    capture_watch: asyncio.Task[None] | None = None
    envoy: EnvoyProcess | None = None
    local: LocalModelServer | None = None
    code = 0
    try:
        local = await start_local_model(config)
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
            envoy = await start_envoy(config)
        reloader = _supervisor_reloader(config, load, pool, envoy)
        sighup.reload = reloader.reload if reloader is not None else None
        if with_envoy:
            announce(config)
        code = await run_until_stopped(stop, envoy, pool.all_failed, local=local)
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
