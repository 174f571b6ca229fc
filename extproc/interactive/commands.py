"""The in-chat commands: a registry of name → handler.

A handler gets the parsed :class:`~extproc.interactive.parse.Command` and a
:class:`CommandEnv` (the session's working state and the facts commands may
show) and returns the line the user reads. Handlers that change the session
record a mutation with :meth:`CommandEnv.change`: it is applied to the working
state at once (a later command of the same message sees it) and again to the
stored state when the stage saves it (compare-and-set: a concurrent writer's
changes are kept).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from extproc.interactive.parse import Command
from extproc.interactive.settings import SETTINGS, SettingError, canonical_key, parse_value
from extproc.sessions.state import SessionState

__all__ = [
    "COMMANDS",
    "CommandEnv",
    "CommandError",
    "CommandSpec",
    "effective_route",
    "route_legs",
    "run_command",
]

#: The most legs a session's failover list may hold.
MAX_ROUTE_LEGS = 8
Mutation = Callable[[SessionState], None]


class CommandError(ValueError):
    """A command the proxy refuses (the message tells the user why)."""


@dataclass
class CommandEnv:
    """What one message's commands work on."""

    #: The session's state as this message's commands left it so far.
    state: SessionState
    session_id: str
    #: Where the session id came from (``header x-session-id``...), or None: isolated.
    session_source: str | None
    prefix: str
    #: The model the request named.
    request_model: str
    #: ``route(expression) -> "cluster (reason)"`` for the banner.
    describe_route: Callable[[str], str]
    #: Model names this client key may use (None: any).
    model_allowed: Callable[[str], bool]
    #: The active stages (for the banner).
    features: Sequence[str]
    #: Reasoning preset names from the config.
    presets: Sequence[str]
    #: Settings that turn a safety stage off are refused.
    safety_locked: bool = False
    #: Directories project-dir must stay inside (empty: any).
    project_roots: Sequence[str] = ()
    #: Why a routing expression cannot be routed now (None: it can).
    route_error: Callable[[str], str | None] = lambda expression: None
    changes: list[Mutation] = field(default_factory=list)
    #: The session is to be forgotten (``reset``).
    reset: bool = False

    def change(self, mutation: Mutation) -> None:
        mutation(self.state)
        self.changes.append(mutation)


Handler = Callable[[Command, CommandEnv], str]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    usage: str
    summary: str
    example: str
    run: Handler


def _no_args(cmd: Command) -> None:
    if cmd.args or cmd.kwargs:
        raise CommandError(f"{cmd.name} takes no arguments")


def _one_arg(cmd: Command) -> str:
    if cmd.kwargs or len(cmd.args) != 1 or not cmd.args[0].strip():
        raise CommandError(f"{cmd.name} takes one argument, e.g. {cmd.name}(openai:gpt-4o)")
    return cmd.args[0].strip()


def _check_value(key: str, value: Any, env: CommandEnv) -> None:
    setting = SETTINGS[key]
    if setting.safety_stage is not None and value is False and env.safety_locked:
        raise CommandError(
            f"{key} cannot be turned off here: the proxy's operator keeps it on for every client"
        )
    if key in ("model", "backend"):
        for leg in route_legs(str(value)):
            if not env.model_allowed(leg):
                raise CommandError(f"{key} {value!r}: this key may not use model {leg!r}")
        bare_backend = key == "model" and env.state.settings.get("backend")
        if not bare_backend and (key == "model" or any(c in str(value) for c in ":|^!")):
            problem = env.route_error(str(value))
            if problem is not None:
                raise CommandError(f"{key} {value!r} cannot be routed: {problem}")
    if key == "reasoning-preset" and value not in env.presets:
        raise CommandError(f"unknown reasoning preset {value!r}; presets: {', '.join(env.presets)}")
    if key == "project-dir" and env.project_roots:
        path = str(value)
        if not any(
            path == r.rstrip("/") or path.startswith(r.rstrip("/") + "/") for r in env.project_roots
        ):
            raise CommandError(
                f"project-dir {path!r} is outside the directories allowed here: "
                + ", ".join(env.project_roots)
            )


def route_legs(expression: str) -> list[str]:
    """The legs of a routing expression as typed (``backend:model``), without options.

    Key policies match them the way access control matches a request's model.
    """
    legs: list[str] = []
    for op in ("|", "^", "!"):
        expression = expression.replace(op, "\0")
    for part in expression.split("\0"):
        name = part.split("?", 1)[0].split("[", 1)[0].strip()
        if name:
            legs.append(name)
    return legs


def _set_value(env: CommandEnv, key: str, value: Any) -> None:
    _check_value(key, value, env)

    def mutate(state: SessionState) -> None:
        state.settings[key] = value

    env.change(mutate)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


# -- handlers ------------------------------------------------------------------------


def _set(cmd: Command, env: CommandEnv) -> str:
    if cmd.args or not cmd.kwargs:
        raise CommandError("set takes key=value pairs, e.g. set(model=gpt-4o, temperature=0.2)")
    done: list[str] = []
    for raw_key, raw_value in cmd.kwargs:
        try:
            key = canonical_key(raw_key)
            value = parse_value(key, raw_value)
        except SettingError as exc:
            raise CommandError(str(exc)) from None
        _set_value(env, key, value)
        done.append(f"{key} = {_show(value)}")
    return "Set " + ", ".join(done) + "."


def _unset(cmd: Command, env: CommandEnv) -> str:
    if cmd.kwargs or not cmd.args:
        raise CommandError("unset takes setting names, e.g. unset(model, temperature)")
    if [a.strip().lower() for a in cmd.args] == ["all"]:
        env.change(lambda state: state.settings.clear())
        return "All settings cleared."
    keys: list[str] = []
    for raw in cmd.args:
        try:
            keys.append(canonical_key(raw))
        except SettingError as exc:
            raise CommandError(str(exc)) from None

    def mutate(state: SessionState) -> None:
        for key in keys:
            state.settings.pop(key, None)

    env.change(mutate)
    return "Unset " + ", ".join(keys) + "."


def _model(cmd: Command, env: CommandEnv) -> str:
    value = _parse("model", _one_arg(cmd))
    _set_value(env, "model", value)
    note = ""
    if "backend" in env.state.settings:
        note = f" (backend {env.state.settings['backend']!r} still comes first: unset(backend))"
    return f"Model set to {value}{note}."


def _backend(cmd: Command, env: CommandEnv) -> str:
    value = _parse("backend", _one_arg(cmd))
    _set_value(env, "backend", value)
    return f"Backend set to {value}."


def _oneoff(cmd: Command, env: CommandEnv) -> str:
    value = _parse("backend", _one_arg(cmd))
    _check_value("backend", value, env)

    def mutate(state: SessionState) -> None:
        state.oneoff = value

    env.change(mutate)
    return f"The next request goes to {value}; the one after returns to the session's route."


def _parse(key: str, raw: str) -> Any:
    try:
        return parse_value(key, raw)
    except SettingError as exc:
        raise CommandError(str(exc)) from None


def _preset(name: str) -> Handler:
    def run(cmd: Command, env: CommandEnv) -> str:
        _no_args(cmd)

        def mutate(state: SessionState) -> None:
            state.settings["reasoning-preset"] = name

        env.change(mutate)
        return (
            f"Reasoning preset {name!r} on for this session (unset(reasoning-preset) to drop it)."
        )

    return run


def _route_create(cmd: Command, env: CommandEnv) -> str:
    legs = _route_legs(cmd, env, allow_empty=False)

    def mutate(state: SessionState) -> None:
        state.route = list(legs)

    env.change(mutate)
    return "Session route: " + " | ".join(legs) + "."


def _route_add(front: bool) -> Handler:
    def run(cmd: Command, env: CommandEnv) -> str:
        legs = _route_legs(cmd, env, allow_empty=False)
        if len(env.state.route) + len(legs) > MAX_ROUTE_LEGS:
            raise CommandError(f"a session route holds at most {MAX_ROUTE_LEGS} legs")

        def mutate(state: SessionState) -> None:
            state.route = [*legs, *state.route] if front else [*state.route, *legs]

        env.change(mutate)
        return "Session route: " + " | ".join(env.state.route) + "."

    return run


def _route_legs(cmd: Command, env: CommandEnv, *, allow_empty: bool) -> list[str]:
    if cmd.kwargs or (not cmd.args and not allow_empty):
        raise CommandError(f"{cmd.name} takes backend:model legs, e.g. {cmd.name}(openai:gpt-4o)")
    legs = [_parse("backend", arg) for arg in cmd.args]
    if len(legs) > MAX_ROUTE_LEGS:
        raise CommandError(f"a session route holds at most {MAX_ROUTE_LEGS} legs")
    for leg in legs:
        if any(op in leg for op in "|^!"):
            raise CommandError(f"{cmd.name}: give one leg per argument, not {leg!r}")
        _check_value("backend", leg, env)
    return legs


def _route_list(cmd: Command, env: CommandEnv) -> str:
    _no_args(cmd)
    route = env.state.route
    return "Session route: " + (" | ".join(route) if route else "(none)") + "."


def _route_clear(cmd: Command, env: CommandEnv) -> str:
    _no_args(cmd)

    def mutate(state: SessionState) -> None:
        state.route = []

    env.change(mutate)
    return "Session route cleared."


def effective_route(state: SessionState | None, request_model: str) -> tuple[str | None, str]:
    """The routing expression the session asks for (without consuming a one-off)."""
    if state is None:
        return None, ""
    if state.oneoff:
        return state.oneoff, "one-off"
    if state.route:
        return "|".join(state.route), "session route"
    settings = state.settings
    backend = settings.get("backend")
    model = settings.get("model")
    if backend:
        text = str(backend)
        if not any(c in text for c in ":|^!"):
            text = f"{text}:{model or request_model}"
        return text, "session backend"
    if model:
        return str(model), "session model"
    return None, ""


def _hello(cmd: Command, env: CommandEnv) -> str:
    _no_args(cmd)
    route, why = effective_route(env.state, env.request_model)
    target = route or env.request_model
    memory = (
        f"remembered; id from the {env.session_source}"
        if env.session_source
        else "not remembered: this client sends no session id (send x-session-id)"
    )
    lines = [
        "LLM interactive proxy",
        f"session: {env.session_id} ({memory})",
        f"route: {env.describe_route(target)}" + (f" [{why}]" if why else ""),
        "features: " + (", ".join(env.features) or "none"),
    ]
    if env.state.settings:
        lines.append("settings: " + _settings_text(env.state.settings))
    lines.append(f"Type {env.prefix}help for the commands.")
    return "\n".join(lines)


def _settings_text(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_show(v)}" for k, v in sorted(settings.items()))


def _session(cmd: Command, env: CommandEnv) -> str:
    _no_args(cmd)
    state = env.state
    lines = [
        f"session: {env.session_id}",
        "settings: " + (_settings_text(state.settings) or "(none)"),
        "one-off: " + (state.oneoff or "(none)"),
        "route: " + (" | ".join(state.route) or "(none)"),
        "last route: " + (state.last_route or "(none)"),
        "requests: " + str(state.counters.get("requests", 0)),
    ]
    return "\n".join(lines)


def _reset(cmd: Command, env: CommandEnv) -> str:
    _no_args(cmd)

    def mutate(state: SessionState) -> None:
        state.settings.clear()
        state.oneoff = None
        state.route = []

    env.change(mutate)
    env.reset = True
    return "Session reset: settings, one-off and route cleared."


def _help(cmd: Command, env: CommandEnv) -> str:
    if cmd.kwargs or len(cmd.args) > 1:
        raise CommandError("help takes at most one command name, e.g. help(set)")
    if cmd.args:
        return help_for(cmd.args[0], env)
    return help_text(env)


def help_for(name: str, env: CommandEnv) -> str:
    key = name.strip().lower().lstrip("!/")
    spec = COMMANDS.get(key)
    if spec is None and key in env.presets:
        return f"{env.prefix}{key}: reasoning preset {key!r} for this session."
    if spec is None:
        raise CommandError(f"unknown command {name!r}; {env.prefix}help lists them")
    text = f"{env.prefix}{spec.usage}\n{spec.summary}\nExample: {env.prefix}{spec.example}"
    if spec.name == "set":
        text += "\nSettings:\n" + "\n".join(f"  {s.key}: {s.help}" for s in SETTINGS.values())
    return text


def help_text(env: CommandEnv) -> str:
    lines = ["Commands (typed alone in a message, or before your prompt):"]
    lines += [f"  {env.prefix}{spec.usage} — {spec.summary}" for spec in COMMANDS.values()]
    if env.presets:
        lines.append("  " + ", ".join(env.prefix + p for p in env.presets) + " — reasoning presets")
    lines.append(f"{env.prefix}help(set) lists the settings.")
    return "\n".join(lines)


COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec(
            "hello", "hello", "the session, its route and the active features", "hello", _hello
        ),
        CommandSpec(
            "help", "help | help(command)", "this list, or one command", "help(set)", _help
        ),
        CommandSpec(
            "set",
            "set(key=value, ...)",
            "change session settings",
            "set(model=gpt-4o, temperature=0.2)",
            _set,
        ),
        CommandSpec(
            "unset", "unset(key, ...)", "back to the defaults", "unset(temperature)", _unset
        ),
        CommandSpec("model", "model(name)", "the session's model", "model(gpt-4o-mini)", _model),
        CommandSpec(
            "backend",
            "backend(expression)",
            "the session's routing expression",
            "backend(openai:gpt-4o|anthropic:claude-sonnet-4)",
            _backend,
        ),
        CommandSpec(
            "oneoff",
            "oneoff(backend:model)",
            "the next request only",
            "oneoff(anthropic:claude-haiku-4)",
            _oneoff,
        ),
        CommandSpec(
            "route-create",
            "route-create(leg, ...)",
            "a failover list for the session",
            "route-create(openai:gpt-4o, anthropic:claude-sonnet-4)",
            _route_create,
        ),
        CommandSpec(
            "route-append",
            "route-append(leg, ...)",
            "add last",
            "route-append(gemini:gemini-2.5-pro)",
            _route_add(False),
        ),
        CommandSpec(
            "route-prepend",
            "route-prepend(leg, ...)",
            "add first",
            "route-prepend(openai:gpt-4o)",
            _route_add(True),
        ),
        CommandSpec(
            "route-list",
            "route-list",
            "show the session's failover list",
            "route-list",
            _route_list,
        ),
        CommandSpec(
            "route-clear", "route-clear", "drop the failover list", "route-clear", _route_clear
        ),
        CommandSpec("session", "session", "show the session's state", "session", _session),
        CommandSpec("reset", "reset", "clear every session setting", "reset", _reset),
    )
}


def run_command(cmd: Command, env: CommandEnv) -> str:
    """Run one command; CommandError for unknown or refused ones."""
    spec = COMMANDS.get(cmd.name)
    if spec is not None:
        return spec.run(cmd, env)
    if cmd.name in env.presets:
        return _preset(cmd.name)(cmd, env)
    raise CommandError(f"unknown command {env.prefix}{cmd.name}")
