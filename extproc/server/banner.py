"""The "first run" text the proxy prints once it is ready.

It tells a new user, for the configuration actually loaded, what to try: a
copy-paste ``curl`` line whose model really routes (the default backend's
model when there is one), the base URL for each SDK (OpenAI, Anthropic,
Gemini), which backend answers the default model and which backends still
lack a key.
"""

from __future__ import annotations

import ipaddress
import json
import shlex

from backends.catalog import CATALOG
from extproc.config import Config

__all__ = ["banner", "try_model"]

#: Characters that make a plain model name read as more than a model.
_SELECTOR_CHARS = set(":?|^![]")
_PROMPT = "Say hello in one short sentence."


def banner(config: Config) -> str:
    """The first-run text for ``config``: what to try and where to point each SDK."""
    base = f"http://{_client_host(config.host)}:{config.port}"
    lines = ["", f"LLM proxy ready on {base}", ""]
    model = try_model(config)
    if model is None:
        lines += [
            "  No model routes yet: add a backend with a key (and default_backend) to the",
            "  config; docs/backends.md lists every type.",
        ]
    else:
        lines += [
            f"  Try it (model {model!r}{_served_by(config)}):",
            "",
            f"    {_curl(config, base, model)}",
        ]
    key = "one of api_keys" if config.multi_user_mode else "any value"
    lines += [
        "",
        f"  Base URLs (API key: {key}):",
        f"    OpenAI      {base}/v1",
        f"    Anthropic   {base}/anthropic"
        + (
            f"   (Claude Code: http://{_client_host(config.host)}:{config.anthropic_port})"
            if config.anthropic_port
            else ""
        ),
        f"    Gemini      {base}   (google-genai: HttpOptions(base_url=..., api_version='v1beta'))",
    ]
    keyless = _keyless(config)
    if keyless:
        lines += [
            "",
            f"  No key for: {', '.join(keyless)} (requests to them fail: set the key the "
            "config reads, e.g. OPENAI_API_KEY, and restart).",
        ]
    return "\n".join([*lines, ""])


def try_model(config: Config) -> str | None:
    """A model name a request can use with this config (None: nothing routes).

    The default backend's model, as a plain name when that name reaches the
    default backend, else as ``backend:model``; without a default backend, the
    first model route, else the first model a backend lists.
    """
    if config.routing.static_route:
        return "default"  # every request goes to the static route, whatever it names
    if config.default_backend:
        backend, _, model = config.default_backend.partition(":")
        if not model:
            listed = [m for name in _members(config, backend) for m in config.backends[name].models]
            return f"{backend}:{listed[0]}" if listed else None
        if _plain_name_reaches(config, model, backend):
            return model
        return config.default_backend
    if config.models:
        return next(iter(config.models))
    owners = config.model_owners()
    return next(iter(owners), None)


def _plain_name_reaches(config: Config, model: str, backend: str) -> bool:
    if model == "default" or _SELECTOR_CHARS & set(model):
        return False
    if model in config.models or model in config.routing.aliases:
        return False
    owner = config.model_owners().get(model)
    return owner is None or owner in _members(config, backend)


def _members(config: Config, backend: str) -> list[str]:
    if backend in config.backends:
        return [backend]
    return config.families().get(backend, [])


def _served_by(config: Config) -> str:
    """Which backend answers the default model, when there is one."""
    if config.routing.static_route or not config.default_backend:
        return ""
    backend = config.default_backend.partition(":")[0]
    members = _members(config, backend)
    if members and all(config.backend_type(m) == "local" for m in members):
        return f", the local model on 127.0.0.1:{config.local_model.port}: no key, no network"
    return f", backend {backend!r}"


def _keyless(config: Config) -> list[str]:
    """Backends that need a key and have none."""
    out = []
    for name, backend in config.backends.items():
        needs = CATALOG[config.backend_type(name)].key_required and backend.auth != "none"
        if needs and (backend.api_key is None or not backend.api_key.get_secret_value().strip()):
            out.append(name)
    return out


def _curl(config: Config, base: str, model: str) -> str:
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": _PROMPT}]},
        separators=(", ", ": "),
    )
    auth = ' -H "authorization: Bearer $LLM_PROXY_KEY"' if config.multi_user_mode else ""
    return (
        f"curl -s {base}/v1/chat/completions -H 'content-type: application/json'{auth} "
        f"-d {shlex.quote(body)}"
    )


def _client_host(host: str) -> str:
    """Where a client on this machine reaches ``host`` (a wildcard means loopback)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        return "[::1]" if address.version == 6 else "127.0.0.1"
    return f"[{host}]" if address.version == 6 else host
