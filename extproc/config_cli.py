"""``python -m extproc config {check,show}``: validate a config, print the effective one.

* ``config check FILE [flags]``: every layer read and validated as ``serve``
  would (schema and routing plan); prints ``ok`` and a one-line summary and
  exits 0, or prints ``key.path: message`` lines and exits 2.
* ``config show [--config FILE] [flags]``: the effective config as YAML,
  secrets masked, each value followed by where it came from (``# default``,
  ``# from file``, ``# from env LLM_PROXY_PORT``, ``# from .env ...``,
  ``# from cli --port``).

Both take the same flags as ``serve`` (and ``--env-file``), so what they say
is what ``serve`` with those flags would run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from extproc.cli import Loaded, build_parser, load_from_args
from extproc.config import Config
from extproc.config.show import render_config
from extproc.errors import ConfigError

__all__ = ["main", "summary"]

_USAGE = "python -m extproc config {check FILE,show [--config FILE]} [flags]"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("check", "show"):
        print(f"usage: {_USAGE}", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    parser = build_parser()
    parser.prog = f"python -m extproc config {command}"
    if command == "check":
        parser.add_argument("file", type=Path, nargs="?", help="the config file to check")
    args = parser.parse_args(rest)
    if command == "check":
        if args.file is not None and args.config is not None:
            parser.error("give the file once: config check FILE")
        args.config = args.file if args.file is not None else args.config
        if args.config is None:
            parser.error("config check needs a FILE")
    try:
        loaded = load_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command == "check":
        print(f"ok: {args.config}: {summary(loaded.config)}")
    else:
        sys.stdout.write(render_config(loaded.config, loaded.provenance, _header(args, loaded)))
    return 0


def summary(config: Config) -> str:
    """One line: what the config serves and where."""

    def count(n: int, one: str, many: str) -> str:
        return f"{n} {one if n == 1 else many}"

    host = f"[{config.host}]" if ":" in config.host else config.host
    parts = [
        count(len(config.backends), "backend", "backends"),
        count(len(config.models), "model route", "model routes"),
        count(len(config.routing.aliases), "alias", "aliases"),
        f"listening on {host}:{config.port}"
        + (f" (Anthropic :{config.anthropic_port})" if config.anthropic_port else ""),
        "multi-user" if config.multi_user_mode else "single-user",
    ]
    return ", ".join(parts)


def _header(args: argparse.Namespace, loaded: Loaded) -> str:
    lines = [
        "The effective configuration (secrets masked); after each value, where it came from.",
        f"config file: {args.config or '(none)'}",
        f"env file: {loaded.env_file or '(none)'}",
    ]
    return "\n".join(lines)
