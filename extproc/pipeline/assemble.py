"""The composition root of the pipeline: config in, ordered stages out.

A stage's engine is imported only when the stage is on (each loads rule sets).

Access control (multi-user mode) runs first, then sessions, request dedup and
in-chat commands, and routing last; in between, the configurable stages run
in ``pipeline.order``, then any ``pipeline.custom`` stages. Each stage gets
only what it needs (its engine, the key policies, the session book, a metrics
callback); none reaches into a service locator.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from extproc.auth import Lockout
from extproc.config import Config
from extproc.errors import ConfigError, ProxyError
from extproc.interactive.presets import Presets
from extproc.observe.telemetry import Telemetry
from extproc.pipeline.context import RequestContext
from extproc.pipeline.runner import Pipeline
from extproc.pipeline.stage import Stage
from extproc.pipeline.stages import AccessControlStage, RoutingStage
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.routing import Resolver
from extproc.routing.resolver import RequestFacts
from extproc.sessions.dedup import DedupTable
from extproc.sessions.session import SessionBook
from extproc.state import LocalBus, StateBus, share

__all__ = [
    "build_dedup",
    "build_lockout",
    "build_pipeline",
    "build_session_book",
    "secret_literals",
]


def secret_literals(config: Config) -> list[tuple[str, str]]:
    """The proxy's own secrets, redacted exactly wherever they appear."""
    out = [
        ("provider-key", backend.api_key.get_secret_value())
        for backend in config.backends.values()
        if backend.api_key is not None
    ]
    out += [
        ("proxy-key", key.get_secret_value())
        for key in (*config.api_keys, *config.admin_keys)
        if not key.get_secret_value().startswith("sha256:")
    ]
    return out


def _redaction(
    config: Config, policies: KeyPolicies, telemetry: Telemetry, book: SessionBook | None
) -> Stage | None:
    section = config.redaction
    if not section.enabled or not (section.requests or section.answers):
        return None
    from extproc.pipeline.stages.redaction import RedactionStage
    from extproc.safety.secrets import BUILTIN_RULES as SECRET_RULES
    from extproc.safety.secrets import Placeholders, Redactor, SecretRule, SecretScanner

    disabled = set(section.disable_rules)
    rules = [r for r in SECRET_RULES if r.id not in disabled]
    rules += [
        SecretRule(id=p.id, kind=p.kind, pattern=p.pattern, group=p.group) for p in section.patterns
    ]
    scanner = SecretScanner(rules, literals=secret_literals(config), allow=section.allow)
    metrics = telemetry.metrics

    def count(direction: str, n: int) -> None:
        metrics.count_safety("redaction", direction, "secret", n)

    return RedactionStage(
        Redactor(scanner, Placeholders()),
        requests=section.requests,
        answers=section.answers,
        policies=policies,
        count=count,
    )


def _commands(
    config: Config, policies: KeyPolicies, telemetry: Telemetry, book: SessionBook | None
) -> Stage | None:
    section = config.commands
    if not section.enabled:
        return None
    from extproc.pipeline.stages.commands import CommandStage
    from extproc.safety.commands import BUILTIN_RULES as COMMAND_RULES
    from extproc.safety.commands import CommandGuard, CommandRule

    rules = [
        *COMMAND_RULES,
        *(
            CommandRule(
                id=r.id,
                reason=r.reason,
                suggestion=r.suggestion,
                pattern=r.pattern,
                unless=r.unless,
            )
            for r in section.add_rules
        ),
    ]
    guard = CommandGuard(rules, disabled=section.disable_rules, strict=section.strict)
    return CommandStage(
        guard,
        action=section.action,
        policies=policies,
        on_block=_counter(telemetry, "commands"),
    )


def _tool_access(
    config: Config, policies: KeyPolicies, telemetry: Telemetry, book: SessionBook | None
) -> Stage | None:
    section = config.tool_access
    if not section.rules:
        return None
    from extproc.pipeline.stages.tool_access import ToolAccessStage
    from extproc.safety.tool_access import ToolPolicy, ToolRule

    policy = ToolPolicy(
        [
            ToolRule(
                allow=tuple(r.allow),
                deny=tuple(r.deny),
                models=tuple(r.models),
                keys=tuple(r.keys),
                agents=tuple(r.agents),
            )
            for r in section.rules
        ]
    )
    return ToolAccessStage(
        policy,
        action=section.action,
        policies=policies,
        on_block=_counter(telemetry, "tool_access"),
    )


def _sandbox(
    config: Config, policies: KeyPolicies, telemetry: Telemetry, book: SessionBook | None
) -> Stage | None:
    section = config.sandbox
    # Off in the config, the stage still serves sessions that set a project dir.
    if not section.enabled and not config.interactive.enabled:
        return None
    if section.enabled and not section.roots:
        raise ConfigError("sandbox.enabled needs at least one entry in sandbox.roots")
    from extproc.pipeline.stages.sandbox import SandboxStage
    from extproc.safety.sandbox import Sandbox

    sandbox = (
        Sandbox(section.roots, home=section.home, strict=section.strict)
        if section.enabled
        else None
    )
    return SandboxStage(
        sandbox,
        action=section.action,
        policies=policies,
        on_block=_counter(telemetry, "sandbox"),
        home=section.home,
        strict=section.strict,
    )


def _steering(
    config: Config, policies: KeyPolicies, telemetry: Telemetry, book: SessionBook | None
) -> Stage | None:
    if not config.steering:
        return None
    from extproc.pipeline.stages.steering import SteeringStage

    metrics = telemetry.metrics

    def steered(rule: str) -> None:
        metrics.count_safety("steering", "steered", rule)

    # Sessions remember each rule's window.
    return SteeringStage(config.steering, book, policies=policies, on_steer=steered)


def _rewrites(
    config: Config, policies: KeyPolicies, telemetry: Telemetry, book: SessionBook | None
) -> Stage | None:
    if not config.rewrites:
        return None
    from extproc.pipeline.stages.rewrites import RewriteStage
    from extproc.rewrite import RuleError

    try:
        return RewriteStage(config.rewrites, policies)
    except RuleError as exc:
        raise ConfigError(f"rewrites: {exc}") from exc


def _reasoning(
    config: Config, policies: KeyPolicies, telemetry: Telemetry, book: SessionBook | None
) -> Stage | None:
    section = config.reasoning
    # Always on: the x-llmproxy-reasoning-mode header works without any config.
    from extproc.pipeline.stages.reasoning import ReasoningStage

    return ReasoningStage(section, policies)


def _counter(telemetry: Telemetry, stage: str) -> Callable[[str], None]:
    """Counts a stage's blocked tool calls in ``llm_proxy_safety_actions_total``."""
    metrics = telemetry.metrics

    def blocked(detail: str) -> None:
        metrics.count_safety(stage, "blocked", detail)

    return blocked


def _loop_detection(
    config: Config, policies: KeyPolicies, telemetry: Telemetry, book: SessionBook | None
) -> Stage | None:
    section = config.loop_detection
    if not section.enabled:
        return None
    from extproc.guards.loops import LoopConfig
    from extproc.pipeline.stages.loops import LoopStage

    try:
        thresholds = LoopConfig(
            min_period=section.min_period,
            max_period=section.max_period,
            min_repeats=section.min_repeats,
            long_period=section.long_period,
            long_min_repeats=section.long_min_repeats,
            min_chars=section.min_chars,
            code_min_repeats=section.code_min_repeats,
            code_min_chars=section.code_min_chars,
        )
    except ValueError as exc:
        raise ConfigError(f"loop_detection: {exc}") from exc
    metrics = telemetry.metrics

    def cut(where: str) -> None:
        metrics.count_safety("loop_detection", "cut", where)

    return LoopStage(thresholds, reasoning=section.reasoning, policies=policies, on_loop=cut)


def _tool_loops(
    config: Config, policies: KeyPolicies, telemetry: Telemetry, book: SessionBook | None
) -> Stage | None:
    section = config.tool_loops
    if not section.enabled:
        return None
    from extproc.guards.tool_loops import ToolLoopConfig
    from extproc.pipeline.stages.tool_loops import ToolLoopStage

    try:
        thresholds = ToolLoopConfig(
            same_call=section.same_call,
            same_output=section.same_output,
            window=section.window,
            refuse_after=section.refuse_after,
        )
    except ValueError as exc:
        raise ConfigError(f"tool_loops: {exc}") from exc
    metrics = telemetry.metrics

    def counted(action: str) -> None:
        metrics.count_safety("tool_loops", action, "loop")

    return ToolLoopStage(thresholds, policies=policies, count=counted)


def _tool_repair(
    config: Config, policies: KeyPolicies, telemetry: Telemetry, book: SessionBook | None
) -> Stage | None:
    section = config.tool_repair
    if not section.enabled or not (section.text_calls or section.arguments):
        return None
    from extproc.pipeline.stages.tool_repair import ToolRepairStage

    metrics = telemetry.metrics

    def repaired(kind: str) -> None:
        metrics.count_safety("tool_repair", "repaired", kind)

    return ToolRepairStage(
        text_calls=section.text_calls,
        arguments=section.arguments,
        max_hold=section.max_hold,
        policies=policies,
        count=repaired,
    )


def _compression(
    config: Config, policies: KeyPolicies, telemetry: Telemetry, book: SessionBook | None
) -> Stage | None:
    section = config.compression
    # Off in the config, the stage still serves sessions that turn it on.
    if not section.enabled and not (config.interactive.enabled and book is not None):
        return None
    from extproc.pipeline.stages.compression import CompressionStage

    metrics = telemetry.metrics

    def saved(tokens: int) -> None:
        metrics.save_tokens("compression", tokens)

    return CompressionStage(
        enabled=section.enabled,
        threshold_tokens=section.threshold_tokens,
        keep_latest=section.keep_latest,
        pytest_flags=section.pytest_flags.strip() or None,
        powershell=section.powershell,
        policies=policies,
        saved=saved,
    )


def _empty_answers(
    config: Config, policies: KeyPolicies, telemetry: Telemetry, book: SessionBook | None
) -> Stage | None:
    if not config.empty_answers.enabled:
        return None
    from extproc.pipeline.stages.empty_answers import EmptyAnswerStage

    metrics = telemetry.metrics

    def empty() -> None:
        metrics.count_safety("empty_answers", "error", "empty")

    return EmptyAnswerStage(policies, empty)


_BUILDERS: dict[
    str, Callable[[Config, KeyPolicies, Telemetry, SessionBook | None], Stage | None]
] = {
    "tool_repair": _tool_repair,
    "redaction": _redaction,
    "tool_access": _tool_access,
    "commands": _commands,
    "sandbox": _sandbox,
    "steering": _steering,
    "rewrites": _rewrites,
    "reasoning": _reasoning,
    "loop_detection": _loop_detection,
    "tool_loops": _tool_loops,
    "compression": _compression,
    "empty_answers": _empty_answers,
}


def _custom(name: str, config: Config) -> Stage:
    module_name, _, factory_name = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"pipeline.custom: cannot load {name!r}: {exc}") from exc
    stage = factory(config)
    if not isinstance(stage, Stage):
        raise ConfigError(f"pipeline.custom: {name!r} did not return a Stage")
    return stage


def build_lockout(config: Config) -> Lockout | None:
    """The proxy-key lockout multi-user mode uses (None: off, or single-user)."""
    section = config.auth.lockout
    if not (config.multi_user_mode and section.enabled):
        return None
    return Lockout(threshold=section.threshold, base_seconds=section.base, max_seconds=section.max)


def build_dedup(config: Config) -> DedupTable:
    """The window of recent requests that refuses an identical one resent."""
    return DedupTable(window=config.dedup.window, max_entries=config.dedup.max_entries)


def build_session_book(config: Config, bus: StateBus | None = None) -> SessionBook | None:
    """The session store the config names (None: sessions are off).

    ``sessions.store: redis`` replicates through ``bus``; with ``state.backend:
    redis`` and no ``sessions.store`` set, sessions are shared too.
    """
    section = config.sessions
    if not section.enabled:
        return None
    from extproc.sessions import MemorySessionStore, SessionStore, SQLiteSessionStore

    store: SessionStore
    kind = section.store
    if config.state.backend == "redis" and "store" not in section.model_fields_set:
        kind = "redis"
    if kind == "redis":
        if bus is None or not bus.shared:
            raise ConfigError("sessions.store: redis needs state.backend: redis")
        from extproc.sessions.redis_store import RedisSessionStore

        store = RedisSessionStore(bus, ttl_seconds=section.ttl, max_sessions=section.max_sessions)
    elif kind == "sqlite":
        store = SQLiteSessionStore(
            section.sqlite_path, ttl_seconds=section.ttl, max_sessions=section.max_sessions
        )
    else:
        store = MemorySessionStore(ttl_seconds=section.ttl, max_sessions=section.max_sessions)
    return SessionBook(store)


def _route_error(resolver: Resolver) -> Callable[[str, RequestContext], str | None]:
    def error(expression: str, ctx: RequestContext) -> str | None:
        try:
            resolver.route(expression, RequestFacts(client_key_id=ctx.client_key_id), peek=True)
        except ProxyError as exc:
            return exc.message
        return None

    return error


def _describe_route(resolver: Resolver) -> Callable[[str, RequestContext], str]:
    def describe(expression: str, ctx: RequestContext) -> str:
        try:
            facts = RequestFacts(client_key_id=ctx.client_key_id)
            decision = resolver.route(expression, facts, peek=True)
        except ProxyError as exc:
            return f"{expression} (cannot route now: {exc.message})"
        model = f" model {decision.model}" if decision.model else ""
        return f"{expression} -> {decision.cluster}{model}"

    return describe


def _session_stages(
    config: Config,
    resolver: Resolver,
    telemetry: Telemetry,
    book: SessionBook | None,
    policies: KeyPolicies,
    features: list[str],
    bus: StateBus,
    dedup: DedupTable | None = None,
) -> list[Stage]:
    """Sessions, request dedup and in-chat commands: right after access control.

    Dedup comes before the commands: a refused duplicate changes no setting.
    """
    stages: list[Stage] = []
    if book is not None:
        from extproc.pipeline.stages.sessions import SessionStage

        stages.append(
            SessionStage(
                book,
                header=config.sessions.header,
                heuristic=config.sessions.heuristic,
                multi_user=config.multi_user_mode,
            )
        )
    if book is not None and config.dedup.enabled:
        from extproc.pipeline.stages.dedup import DedupStage

        table = dedup
        if table is None:
            table = build_dedup(config)
            share(bus, "dedup", table)
        stages.append(DedupStage(table))
    interactive = config.interactive
    if interactive.enabled:
        from extproc.interactive.commands import COMMANDS
        from extproc.pipeline.stages.interactive import InteractiveStage

        metrics = telemetry.metrics

        known = {*COMMANDS, *interactive.presets}

        def counted(command: str) -> None:
            # Label values stay bounded: a name users made up counts as "unknown".
            metrics.count_safety(
                "interactive", "command", command if command in known else "unknown"
            )

        stages.append(
            InteractiveStage(
                book,
                prefix=interactive.prefix,
                presets=list(interactive.presets),
                features=features,
                describe_route=_describe_route(resolver),
                route_error=_route_error(resolver),
                policies=policies,
                safety_locked=config.multi_user_mode and not interactive.allow_safety_toggles,
                project_roots=config.sandbox.roots if config.multi_user_mode else (),
                count=counted,
            )
        )
    return stages


def build_pipeline(
    config: Config,
    resolver: Resolver,
    telemetry: Telemetry,
    book: SessionBook | None = None,
    bus: StateBus | None = None,
    *,
    lockout: Lockout | None = None,
    dedup: DedupTable | None = None,
) -> Pipeline:
    """The ordered stages; lockouts and dedup windows are shared through ``bus`` if given.

    ``lockout`` and ``dedup``: the ones to use (kept across a config reload,
    already shared); built from the config when not given.
    """
    bus = bus or LocalBus()
    safety_toggles = not config.multi_user_mode or config.interactive.allow_safety_toggles
    policies = KeyPolicies(config.key_policies, safety_toggles=safety_toggles)
    stages: list[Stage] = []
    features: list[str] = []
    if config.multi_user_mode:
        if lockout is None:
            lockout = build_lockout(config)
            if lockout is not None:
                share(bus, "lockout", lockout)
        stages.append(
            AccessControlStage(
                (k.get_secret_value() for k in config.api_keys),
                lockout=lockout,
                trusted_hops=config.auth.trusted_hops,
                policies=policies,
            )
        )
    stages += _session_stages(config, resolver, telemetry, book, policies, features, bus, dedup)
    for name in config.pipeline.order:
        stage = _BUILDERS[name](config, policies, telemetry, book)
        if stage is not None:
            stages.append(stage)
    stages.extend(_custom(name, config) for name in config.pipeline.custom)
    if book is not None:
        from extproc.pipeline.stages.sessions import ProviderLegStage

        stages.append(ProviderLegStage())
    presets = Presets(config.interactive.presets) if config.interactive.enabled else None
    stages.append(RoutingStage(resolver, route_header=config.route_header_allowed, presets=presets))
    # What !/hello lists: the stages that act (the sandbox only when configured;
    # it is also there for sessions that set a project dir).
    features.extend(
        s.name
        for s in stages
        if s.name not in ("provider_leg", "routing")
        and not (s.name == "sandbox" and not config.sandbox.enabled)
        and not (s.name == "compression" and not config.compression.enabled)
    )
    return Pipeline(
        stages, phase=telemetry.phase, max_tool_call_bytes=config.pipeline.max_tool_call_bytes
    )
