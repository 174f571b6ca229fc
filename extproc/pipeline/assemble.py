"""The composition root of the pipeline: config in, ordered stages out.

A stage's engine is imported only when the stage is on (each loads rule sets).

Access control (multi-user mode) runs first and routing last; in between,
the configurable stages run in ``pipeline.order``, then any ``pipeline.custom``
stages. Each stage gets only what it needs (its engine, the key policies, a
metrics callback); none reaches into a service locator.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from extproc.auth import Lockout
from extproc.config import Config
from extproc.errors import ConfigError
from extproc.observe.telemetry import Telemetry
from extproc.pipeline.runner import Pipeline
from extproc.pipeline.stage import Stage
from extproc.pipeline.stages import AccessControlStage, RoutingStage
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.routing import Resolver

__all__ = ["build_pipeline", "secret_literals"]


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


def _redaction(config: Config, policies: KeyPolicies, telemetry: Telemetry) -> Stage | None:
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


def _commands(config: Config, policies: KeyPolicies, telemetry: Telemetry) -> Stage | None:
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


def _tool_access(config: Config, policies: KeyPolicies, telemetry: Telemetry) -> Stage | None:
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


def _sandbox(config: Config, policies: KeyPolicies, telemetry: Telemetry) -> Stage | None:
    section = config.sandbox
    if not section.enabled:
        return None
    if not section.roots:
        raise ConfigError("sandbox.enabled needs at least one entry in sandbox.roots")
    from extproc.pipeline.stages.sandbox import SandboxStage
    from extproc.safety.sandbox import Sandbox

    sandbox = Sandbox(section.roots, home=section.home, strict=section.strict)
    return SandboxStage(
        sandbox, action=section.action, policies=policies, on_block=_counter(telemetry, "sandbox")
    )


def _counter(telemetry: Telemetry, stage: str) -> Callable[[str], None]:
    """Counts a stage's blocked tool calls in ``llm_proxy_safety_actions_total``."""
    metrics = telemetry.metrics

    def blocked(detail: str) -> None:
        metrics.count_safety(stage, "blocked", detail)

    return blocked


_BUILDERS: dict[str, Callable[[Config, KeyPolicies, Telemetry], Stage | None]] = {
    "redaction": _redaction,
    "tool_access": _tool_access,
    "commands": _commands,
    "sandbox": _sandbox,
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


def build_pipeline(config: Config, resolver: Resolver, telemetry: Telemetry) -> Pipeline:
    policies = KeyPolicies(config.key_policies)
    stages: list[Stage] = []
    if config.multi_user_mode:
        lockout_config = config.auth.lockout
        lockout = (
            Lockout(
                threshold=lockout_config.threshold,
                base_seconds=lockout_config.base,
                max_seconds=lockout_config.max,
            )
            if lockout_config.enabled
            else None
        )
        stages.append(
            AccessControlStage(
                (k.get_secret_value() for k in config.api_keys),
                lockout=lockout,
                trusted_hops=config.auth.trusted_hops,
                policies=policies,
            )
        )
    for name in config.pipeline.order:
        stage = _BUILDERS[name](config, policies, telemetry)
        if stage is not None:
            stages.append(stage)
    stages.extend(_custom(name, config) for name in config.pipeline.custom)
    stages.append(RoutingStage(resolver, route_header=config.route_header_allowed))
    return Pipeline(
        stages, phase=telemetry.phase, max_tool_call_bytes=config.pipeline.max_tool_call_bytes
    )
