"""Zero-downtime config reload: ``SIGHUP`` and ``POST /v1/admin/reload``.

The config is re-read and validated; an invalid one is refused with the reason
and the running one kept. A valid one becomes a new application (routes,
backends, policies, stages) for new ext_proc streams, while streams already
open finish on the old one. When the Envoy bootstrap changes too (backends,
listeners, timeouts), Envoy is hot restarted: the new Envoy takes the
listening sockets over and the old one drains its connections. Each ext_proc
stream names the generation of the Envoy it comes from, so the draining Envoy
keeps getting the application that knows its clusters
(:meth:`extproc.processing.factory.Processors.install`).

Order, so that no request meets a config its Envoy does not know: the new
application is installed first (under the new generation; the old Envoy's
streams still get the old one), workers are told next, Envoy is restarted last.
If Envoy cannot restart, the old application is put back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from extproc.config import Config
from extproc.errors import ConfigError

__all__ = ["ReloadResult", "Reloader"]

log = logging.getLogger(__name__)

#: ``(HTTP status, JSON body)`` as ``POST /v1/admin/reload`` answers it.
ReloadResult = tuple[int, dict[str, Any]]


class _Envoy(Protocol):
    bootstrap: str

    async def hot_restart(self, bootstrap: str) -> None: ...


class _Apps(Protocol):
    """What the reloader switches: :class:`~extproc.processing.factory.Processors`."""

    app: Any

    def install(self, app: Any, generation: str) -> None: ...


def _refused(message: str, code: str, status: int = 400) -> ReloadResult:
    return status, {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "code": code,
        }
    }


class Reloader:
    """Re-reads the config and switches this process (and its Envoy, workers) to it.

    ``load`` reads and validates the config (raises :class:`ConfigError`);
    ``build_app(config, old_app)`` makes the new application, carrying the
    long-lived state (health board, sessions, lockouts) over from the old one;
    ``render(config)`` is the Envoy bootstrap text and ``generation(config)``
    its generation; ``notify_workers`` tells worker processes to reload.
    """

    def __init__(
        self,
        *,
        load: Callable[[], Config],
        generation: Callable[[Config], str],
        apps: _Apps | None = None,
        build_app: Callable[[Config, Any], Any] | None = None,
        retire_app: Callable[[Any, Any], Any] | None = None,
        envoy: _Envoy | None = None,
        render: Callable[[Config], str] | None = None,
        notify_workers: Callable[[], None] | None = None,
    ) -> None:
        self._load = load
        self._generation = generation
        self._apps = apps
        self._build_app = build_app
        self._retire_app = retire_app
        self._envoy = envoy
        self._render = render
        self._notify_workers = notify_workers
        self._lock = asyncio.Lock()
        #: How many reloads switched to a new config (for diagnostics and tests).
        self.reloads = 0
        #: The generation running now (what a failed Envoy restart goes back to).
        self._running_generation = ""

    async def reload(self) -> ReloadResult:
        async with self._lock:
            started = time.perf_counter()
            try:
                config = await asyncio.to_thread(self._load)
            except ConfigError as exc:
                log.error("config reload refused, the running config is kept: %s", exc)
                return _refused(
                    f"config refused, the running config is kept: {exc}", "invalid_config"
                )
            old_app = self._apps.app if self._apps is not None else None
            new_app = None
            if self._apps is not None and self._build_app is not None:
                try:
                    new_app = self._build_app(config, old_app)
                except ConfigError as exc:
                    log.error("config reload refused, the running config is kept: %s", exc)
                    return _refused(
                        f"config refused, the running config is kept: {exc}", "invalid_config"
                    )
                except Exception as exc:  # a config that validates but cannot be built
                    log.exception("config reload failed; the running config is kept")
                    return _refused(
                        f"cannot apply the config, the running config is kept: {exc}",
                        "reload_failed",
                        500,
                    )
            generation = self._generation(config)
            old_generation = self._running_generation
            if new_app is not None:
                assert self._apps is not None
                self._apps.install(new_app, generation)
            if self._notify_workers is not None:
                self._notify_workers()
            envoy = "unchanged"
            if self._envoy is not None and self._render is not None:
                bootstrap = self._render(config)
                if bootstrap != self._envoy.bootstrap:
                    try:
                        await self._envoy.hot_restart(bootstrap)
                    except Exception as exc:
                        log.error("Envoy hot restart failed; the running config is kept: %s", exc)
                        if old_app is not None and self._apps is not None:
                            self._apps.install(old_app, old_generation)
                        return _refused(
                            f"Envoy could not switch to the new config, the running config is "
                            f"kept: {exc}",
                            "reload_failed",
                            500,
                        )
                    envoy = "hot restarted"
            self._running_generation = generation
            if new_app is not None and self._retire_app is not None:
                self._retire_app(old_app, new_app)
            self.reloads += 1
            elapsed = (time.perf_counter() - started) * 1000
            log.info(
                "config reloaded in %.0f ms (generation %s; Envoy %s)", elapsed, generation, envoy
            )
            return 200, {
                "status": "reloaded",
                "generation": generation,
                "envoy": envoy,
                "workers": "notified" if self._notify_workers is not None else None,
                "milliseconds": round(elapsed, 1),
            }

    def started_with(self, config: Config) -> Reloader:
        """Record the generation of the config the process started with."""
        self._running_generation = self._generation(config)
        return self
