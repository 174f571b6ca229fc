"""Steering rules: a tool call matching a trigger is swallowed once, with advice.

The first matching call in a session (``steering`` in the config: a bare
``pytest`` running the whole suite, ``python -c`` one-liners, ``cat >``
heredoc edits...) does not reach the agent: the client gets the rule's
message instead, and the model reads it next turn. A repeat within the
rule's window goes through — the model was told and insisted. The window is
remembered in the session; without one (a client that sends no session id)
the history tells: the advice already sits in an earlier assistant turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import re2

from extproc.canonical import CanonicalRequest, TextPart, ToolCallPart
from extproc.config.sessions import SteeringRuleConfig
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Stage
from extproc.pipeline.stages.arguments import tool_arguments
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.pipeline.toolgate import Block, ToolCheck, ToolVerdict
from extproc.safety.commands import commands_in_tool_call
from extproc.safety.tool_access import compile_globs, matches_glob
from extproc.sessions.session import Session, SessionBook
from extproc.sessions.state import SessionState

__all__ = ["SteeringStage"]


@dataclass(frozen=True)
class _Rule:
    id: str
    trigger: re2._Regexp[str]
    tools: re2._Regexp[str] | None
    message: str
    window: float


class SteeringStage(Stage):
    name = "steering"

    def __init__(
        self,
        rules: Sequence[SteeringRuleConfig],
        book: SessionBook | None,
        *,
        policies: KeyPolicies | None = None,
        on_steer: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules = [
            _Rule(
                r.id,
                re2.compile(r.trigger),
                compile_globs(r.tools) if r.tools else None,
                r.message,
                r.window,
            )
            for r in rules
        ]
        self._book = book
        self._policies = policies
        self._on_steer = on_steer
        self._clock = clock

    def tool_check(self, ctx: RequestContext, request: CanonicalRequest) -> ToolCheck | None:
        if not self._rules or not request.tools:
            return None
        if self._policies is not None and self._policies.disabled(ctx, self.name):
            return None
        return _SteeringCheck(self, ctx.session, _advised(request, self._rules))

    def _steer(self, session: Session | None, rule: _Rule) -> None:
        if self._on_steer is not None:
            self._on_steer(rule.id)
        if session is None or self._book is None or session.isolated:
            return
        fired = self._clock()

        def mutate(state: SessionState) -> None:
            state.steering[rule.id] = fired

        self._book.record(session, mutate)


def _advised(request: CanonicalRequest, rules: Sequence[_Rule]) -> frozenset[str]:
    """Rules whose advice already sits in the conversation's assistant turns."""
    found: set[str] = set()
    for message in request.messages:
        if message.role != "assistant":
            continue
        for part in message.content:
            if isinstance(part, TextPart):
                found.update(r.id for r in rules if r.message in part.text)
    return frozenset(found)


class _SteeringCheck:
    name = "steering"

    def __init__(
        self, stage: SteeringStage, session: Session | None, advised: frozenset[str]
    ) -> None:
        self._stage = stage
        self._session = session
        self._advised = advised

    def check(self, call: ToolCallPart) -> ToolVerdict | None:
        stage = self._stage
        arguments = tool_arguments(call.arguments)
        commands = commands_in_tool_call(call.name, arguments) or [call.arguments]
        now = stage._clock()
        fired = self._session.state.steering if self._session and self._session.state else {}
        for rule in stage._rules:
            if rule.tools is not None and not matches_glob(rule.tools, call.name):
                continue
            if not any(rule.trigger.search(c) for c in commands):
                continue
            last = fired.get(rule.id)
            if rule.id in self._advised or (last is not None and now - last < rule.window):
                continue  # told before, and the model insists: let it run
            stage._steer(self._session, rule)
            return Block(rule.message)
        return None
