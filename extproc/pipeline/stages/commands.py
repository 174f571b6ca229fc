"""Dangerous-command protection: tool calls that would run a destructive shell command.

Every tool call whose arguments hold a shell command (Claude Code ``Bash``,
Codex ``shell``/``exec_command``, Gemini CLI ``run_shell_command``, Cline
``execute_command``, or any ``command``/``cmd``/``script`` argument) is
normalised and checked against the rules (``commands`` in the config). A hit
swallows the call and tells the agent what was blocked, why, and what to do
instead (``action: steer``), or ends the answer with a 403 (``action: error``).
"""

from __future__ import annotations

from collections.abc import Callable

from extproc.canonical import CanonicalRequest, ToolCallPart
from extproc.errors import PermissionDenied
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Stage
from extproc.pipeline.stages.arguments import tool_arguments
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.pipeline.toolgate import Block, ToolCheck, ToolVerdict
from extproc.safety.commands import CommandGuard, commands_in_tool_call

__all__ = ["CommandStage"]


class CommandStage(Stage):
    name = "commands"

    def __init__(
        self,
        guard: CommandGuard,
        *,
        action: str = "steer",
        policies: KeyPolicies | None = None,
        on_block: Callable[[str], None] | None = None,
    ) -> None:
        self._check = _CommandCheck(guard, action == "error", on_block)
        self._policies = policies

    def tool_check(self, ctx: RequestContext, request: CanonicalRequest) -> ToolCheck | None:
        if self._policies is not None and self._policies.disabled(ctx, self.name):
            return None
        if not request.tools:
            return None  # no tools declared: the model cannot call any
        return self._check


class _CommandCheck:
    """Stateless, shared by every answer."""

    name = "commands"

    def __init__(
        self, guard: CommandGuard, error: bool, on_block: Callable[[str], None] | None
    ) -> None:
        self._guard = guard
        self._error = error
        self._on_block = on_block

    def check(self, call: ToolCallPart) -> ToolVerdict | None:
        arguments = tool_arguments(call.arguments)
        for command in commands_in_tool_call(call.name, arguments):
            blocked = self._guard.check(command)
            if blocked is None:
                continue
            rule = blocked.rule
            if self._on_block is not None:
                self._on_block(rule.id)
            message = (
                f"The proxy blocked the {call.name} tool call `{_short(blocked.command)}` "
                f"(rule {rule.id}): {rule.reason}. It was not run."
            )
            if rule.suggestion:
                message += f" Instead: {rule.suggestion}"
            error = (
                PermissionDenied(message, code="dangerous_command_blocked") if self._error else None
            )
            return Block(message, error=error)
        return None


def _short(command: str, limit: int = 200) -> str:
    command = command.replace("`", "'")
    return command if len(command) <= limit else command[: limit - 1] + "…"
