"""The session settings in-chat commands may set, and how each value is checked."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from extproc.errors import InvalidRequest
from extproc.routing.selector import parse_route

__all__ = ["SETTINGS", "Setting", "SettingError", "canonical_key", "parse_value"]

_TRUE = frozenset({"on", "true", "yes", "1", "enable", "enabled"})
_FALSE = frozenset({"off", "false", "no", "0", "disable", "disabled"})
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@+:-]{0,199}")
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


class SettingError(ValueError):
    """A setting name or value the proxy cannot accept (the message says why)."""


def _switch(key: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingError(f"{key} takes on or off, not {raw!r}")


def _number(low: float, high: float) -> Callable[[str, str], float]:
    def parse(key: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingError(f"{key} takes a number, not {raw!r}") from None
        if not (low <= value <= high) or math.isnan(value):
            raise SettingError(f"{key} must be between {low:g} and {high:g}")
        return value

    return parse


def _budget(key: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{key} takes a whole number of tokens, not {raw!r}") from None
    if not 0 <= value <= 1_000_000:
        raise SettingError(f"{key} must be between 0 and 1000000 tokens")
    return value


def _effort(key: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in _EFFORTS:
        raise SettingError(f"{key} takes one of {', '.join(_EFFORTS)}, not {raw!r}")
    return value


def _model(key: str, raw: str) -> str:
    value = raw.strip()
    if not _MODEL.fullmatch(value):
        raise SettingError(f"{key} {raw!r} is not a model name")
    return value


def _expression(key: str, raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 1000:
        raise SettingError(f"{key} needs a routing expression, e.g. openai:gpt-4o|anthropic:claude")
    try:
        parse_route(value)
    except InvalidRequest as exc:
        raise SettingError(f"{key} {raw!r}: {exc.message}") from None
    return value


def _path(key: str, raw: str) -> str:
    value = raw.strip()
    if not (value.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", value)):
        raise SettingError(f"{key} must be an absolute path, not {raw!r}")
    if len(value) > 4096 or "\0" in value:
        raise SettingError(f"{key} is not a usable path")
    return value.rstrip("/\\") or "/"


def _prefix(key: str, raw: str) -> str:
    value = raw.strip()
    if not 1 <= len(value) <= 8 or any(c.isspace() or c.isalnum() or c in "`\\" for c in value):
        raise SettingError(f"{key} must be 1 to 8 punctuation characters, e.g. !/ or @@")
    return value


def _on_off(key: str, raw: str) -> str:
    return "on" if _switch(key, raw) else "off"


def _preset_name(key: str, raw: str) -> str:
    value = raw.strip().lower()
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", value):
        raise SettingError(f"{key} takes a preset name such as max or no-think, not {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    help: str
    parse: Callable[[str, str], Any]
    #: A safety stage this setting turns off (multi-user mode may forbid it).
    safety_stage: str | None = None


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("model", "the model every request of this session asks for", _model),
        Setting("backend", "a routing expression (backend:model, a|b failover)", _expression),
        Setting("temperature", "sampling temperature, 0 to 2", _number(0.0, 2.0)),
        Setting("top-p", "nucleus sampling, 0 to 1", _number(0.0, 1.0)),
        Setting("reasoning-effort", "none, minimal, low, medium, high, xhigh", _effort),
        Setting("thinking-budget", "reasoning token budget", _budget),
        Setting(
            "reasoning-preset", "a reasoning preset (max, medium, low, no-think)", _preset_name
        ),
        Setting("redaction", "secret redaction on/off", _switch, safety_stage="redaction"),
        Setting(
            "dangerous-commands",
            "dangerous-command protection on/off",
            _switch,
            safety_stage="commands",
        ),
        Setting("project-dir", "the sandbox root: file writes stay inside it", _path),
        Setting("loop-detection", "loop detection in answers on/off", _switch),
        Setting("compression", "context compression on/off", _on_off),
        Setting("command-prefix", "the prefix of in-chat commands", _prefix),
    )
}

#: Other spellings users type.
_ALIASES = {
    "top_p": "top-p",
    "topp": "top-p",
    "effort": "reasoning-effort",
    "reasoning": "reasoning-effort",
    "thinking": "thinking-budget",
    "budget": "thinking-budget",
    "preset": "reasoning-preset",
    "commands": "dangerous-commands",
    "command-protection": "dangerous-commands",
    "sandbox": "project-dir",
    "project": "project-dir",
    "prefix": "command-prefix",
    "loops": "loop-detection",
    "route": "backend",
}


def canonical_key(key: str) -> str:
    """The setting's name for ``key`` (``top_p`` → ``top-p``); SettingError when unknown."""
    name = key.strip().lower().replace("_", "-")
    name = _ALIASES.get(name, name)
    if name not in SETTINGS:
        raise SettingError(f"unknown setting {key!r}; settings: {', '.join(SETTINGS)}")
    return name


def parse_value(key: str, raw: str) -> Any:
    return SETTINGS[key].parse(key, raw)
