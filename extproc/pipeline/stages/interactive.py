"""In-chat commands: ``!/hello``, ``!/set(model=...)``, ``!/oneoff(...)`` (docs/commands.md).

Commands are read from the text of the conversation's newest user message
(all four dialects decode into the same text parts) and run against the
session. Command text is stripped from *every* user message before anything
goes upstream, so a client resending history never forwards an old command;
a turn that held only commands was answered by the proxy, so it and the
proxy's answer are dropped from the history the provider sees.

A message that holds only commands is answered by the proxy in the client's
dialect (no backend call); a malformed or unknown command is answered with a
message saying what is wrong and the request is not forwarded. The session's
settings then shape every request (:class:`~extproc.pipeline.context.Overrides`,
applied by the routing stage).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from extproc.canonical import CanonicalRequest, CanonicalResponse, Message, TextPart, Usage
from extproc.errors import PermissionDenied
from extproc.interactive.commands import (
    CommandEnv,
    CommandError,
    effective_route,
    help_text,
    route_legs,
    run_command,
)
from extproc.interactive.parse import Scan, scan
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Reject, RequestOutcome, Respond, Stage
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.sessions.ids import PROXY_ANSWER_PREFIX
from extproc.sessions.session import Session, SessionBook
from extproc.sessions.state import SessionState, SessionStoreError, copy_state

__all__ = ["InteractiveStage"]

log = logging.getLogger(__name__)

#: Text parts agents add to a user turn that the user did not type.
_AGENT_NOTES = ("<system-reminder>",)
_SYSTEM_ROLES = ("system", "developer")
#: Session settings that are canonical request parameters.
_PARAMS = (
    ("temperature", "temperature"),
    ("top-p", "top_p"),
    ("reasoning-effort", "reasoning_effort"),
)


class InteractiveStage(Stage):
    name = "interactive"

    def __init__(
        self,
        book: SessionBook | None,
        *,
        prefix: str,
        presets: Sequence[str],
        features: Sequence[str],
        describe_route: Callable[[str, RequestContext], str],
        route_error: Callable[[str, RequestContext], str | None],
        policies: KeyPolicies,
        safety_locked: bool,
        project_roots: Sequence[str] = (),
        count: Callable[[str], None] | None = None,
    ) -> None:
        self._book = book
        self._prefix = prefix
        self._presets = tuple(presets)
        #: Filled in by the composition root once every stage is built.
        self._features = features
        self._describe_route = describe_route
        self._route_error = route_error
        self._policies = policies
        self._safety_locked = safety_locked
        self._project_roots = tuple(project_roots)
        self._count = count

    def on_request(
        self, ctx: RequestContext, request: CanonicalRequest
    ) -> RequestOutcome | Awaitable[RequestOutcome]:
        session = ctx.session
        chosen = session.setting("command-prefix") if session is not None else None
        newest = _newest_user_turn(request)
        scans, prefix = _strip_history(
            request, newest, str(chosen) if chosen else None, self._prefix
        )
        if newest is not None and id(newest) in scans:
            return self._commands(ctx, request, session, prefix, scans[id(newest)], newest)
        if session is not None and session.state is not None:
            return self._apply(ctx, request, session)
        return None

    async def _commands(
        self,
        ctx: RequestContext,
        request: CanonicalRequest,
        session: Session | None,
        prefix: str,
        scanned: list[Scan],
        message: Message,
    ) -> RequestOutcome:
        answer = await self._run(ctx, request, session, prefix, scanned, message)
        if answer is not None:
            return answer
        if session is not None and session.state is not None:
            outcome = self._apply(ctx, request, session)
            if inspect.isawaitable(outcome):
                return await outcome
            return outcome
        return None

    # -- commands ----------------------------------------------------------------------

    async def _run(
        self,
        ctx: RequestContext,
        request: CanonicalRequest,
        session: Session | None,
        prefix: str,
        scanned: list[Scan],
        message: Message,
    ) -> RequestOutcome:
        commands = [c for s in scanned for c in s.commands]
        errors = [str(e) for s in scanned for e in s.errors]
        if not commands and not errors:
            return None
        working = copy_state(session.state) if session is not None and session.state else None
        if working is None:
            working = (
                session.new_state() if session is not None else SessionState.new("none", "local")
            )
        env = CommandEnv(
            state=working,
            session_id=session.id if session is not None else "(sessions off)",
            session_source=session.client.source
            if session is not None and session.client is not None
            else None,
            prefix=prefix,
            request_model=request.model,
            describe_route=lambda expression: self._describe_route(expression, ctx),
            model_allowed=lambda model: self._policies.model_allowed(ctx, model),
            route_error=lambda expression: self._route_error(expression, ctx),
            features=self._features,
            presets=self._presets,
            safety_locked=self._safety_locked,
            project_roots=self._project_roots,
        )
        lines: list[str] = [f"Malformed command: {e}" for e in errors]
        failed = bool(errors)
        for command in commands:
            if self._count is not None:
                self._count(command.name)
            try:
                lines.append(run_command(command, env))
            except CommandError as exc:
                failed = True
                lines.append(f"{prefix}{command.name}: {exc}")
                if str(exc).startswith("unknown command"):
                    lines.append(help_text(env))
        if not failed and env.changes and session is not None and self._book is not None:
            try:
                await self._save(session, env)
            except SessionStoreError as exc:
                lines.append(f"The session store failed ({exc}); nothing was saved.")
                failed = True
        if failed:
            lines.append("Nothing was sent to the model; fix the command and send it again.")
            return self._answer(ctx, request, "\n".join(lines))
        if _only_commands(message):
            if env.changes and (session is None or session.isolated):
                lines.append(
                    "Note: this client sends no session id, so these settings apply to "
                    "this message only (send an x-session-id header to keep them)."
                    if session is not None
                    else "Note: sessions are off in this proxy, so settings apply only to "
                    "the message they come with."
                )
            return self._answer(ctx, request, "\n".join(lines))
        if session is None:
            # No session to remember them: the settings shape this request only.
            _set_overrides(ctx, request, env.state)
        return None

    async def _save(self, session: Session, env: CommandEnv) -> None:
        assert self._book is not None
        if env.reset:
            await self._book.forget(session)
            session.state = None
        changes = list(env.changes)

        def mutate(state: SessionState) -> None:
            for change in changes:
                change(state)

        await self._book.change(session, mutate)

    def _answer(self, ctx: RequestContext, request: CanonicalRequest, text: str) -> Respond:
        ctx.state["interactive"] = "answered"
        parent = request.extra.get("previous_response_id")
        if isinstance(parent, str) and parent:
            ctx.state["chain_parent"] = parent
        return Respond(
            CanonicalResponse(
                id=f"{PROXY_ANSWER_PREFIX}{ctx.request_id or int(time.time() * 1000)}",
                model=request.model,
                created=int(time.time()),
                content=[TextPart(text=text)],
                finish_reason="stop",
                usage=Usage(),
            )
        )

    # -- the session's settings, every request ---------------------------------------------

    def _apply(
        self, ctx: RequestContext, request: CanonicalRequest, session: Session
    ) -> RequestOutcome | Awaitable[RequestOutcome]:
        """The session's settings for this request; awaitable when a one-off is used up."""
        state = session.state
        assert state is not None
        _set_overrides(ctx, request, state)
        route = ctx.overrides.route
        if route is not None:
            # The key's allowed models may have changed since the command was typed.
            for leg in route_legs(route):
                if not self._policies.model_allowed(ctx, leg):
                    return _refused(route, leg)
        if state.oneoff and self._book is not None:
            return self._consume_oneoff(session)
        return None

    async def _consume_oneoff(self, session: Session) -> RequestOutcome:
        assert self._book is not None

        def consume(stored: SessionState) -> None:
            stored.oneoff = None

        try:
            await self._book.change(session, consume)
        except SessionStoreError as exc:
            log.warning("session %s: the one-off route was not cleared: %s", session.id, exc)
        return None


def _refused(route: str, leg: str) -> Reject:
    return Reject(
        PermissionDenied(
            f"this session routes to {route!r}, but this key may not use {leg!r}; "
            "send !/unset(model, backend) or !/route-clear",
            code="model_not_allowed",
        )
    )


def _set_overrides(ctx: RequestContext, request: CanonicalRequest, state: SessionState) -> None:
    """What the session's settings ask of this request (routing applies them)."""
    route, why = effective_route(state, request.model)
    overrides = ctx.overrides
    if route is not None:
        overrides.route, overrides.why = route, why
    settings = state.settings
    for setting, param in _PARAMS:
        if setting in settings:
            overrides.params[param] = settings[setting]
    if "thinking-budget" in settings:
        overrides.thinking_budget = int(settings["thinking-budget"])
    if "reasoning-preset" in settings:
        overrides.preset = str(settings["reasoning-preset"])


def _newest_user_turn(request: CanonicalRequest) -> Message | None:
    """The newest turn when the user typed it (not a tool result of an agent loop).

    System messages after it do not count (Claude Code appends one after the
    user's turn), nor does a final assistant text the client prefilled.
    """
    messages = request.messages
    end = len(messages)
    if end and messages[-1].role == "assistant" and _prefill(messages[-1]):
        end -= 1
    for message in reversed(messages[:end]):
        if message.role in _SYSTEM_ROLES:
            continue
        if message.role == "user" and any(isinstance(p, TextPart) for p in message.content):
            return message
        return None
    return None


def _prefill(message: Message) -> bool:
    return bool(message.content) and all(isinstance(p, TextPart) for p in message.content)


def _user_text(part: object) -> bool:
    return isinstance(part, TextPart) and not part.text.lstrip().startswith(_AGENT_NOTES)


def _prefix_change(result: Scan, current: str) -> str:
    """The prefix after a turn's commands (``set(command-prefix=…)``, ``unset``, ``reset``)."""
    for command in result.commands:
        if command.name == "set":
            for key, value in command.kwargs:
                if key in ("command-prefix", "prefix") and value.strip():
                    current = value.strip()
        elif (
            command.name == "unset"
            and any(
                a.strip().lower().replace("_", "-") in ("command-prefix", "prefix", "all")
                for a in command.args
            )
        ) or command.name == "reset":
            current = ""
    return current


def _strip_history(
    request: CanonicalRequest, newest: Message | None, chosen: str | None, configured: str
) -> tuple[dict[int, list[Scan]], str]:
    """Remove command text from every user message: the scans by message, and
    the prefix the newest turn was read with.

    History turns are read with the prefix in force when they were typed: the
    configured one until a turn changed it (``!/set(command-prefix=@@)``), so
    old commands are never forwarded and later text that only looks like one
    stays as the user wrote it. The newest turn is read with the session's
    prefix (``chosen``; without one, the history's). A user turn left empty
    (it held only commands) is dropped together with the proxy's answer that
    follows it.
    """
    found: dict[int, list[Scan]] = {}
    newest_prefix = chosen or configured
    current = configured
    for message in request.messages:
        if message.role != "user":
            continue
        active = current
        if message is newest:
            active = newest_prefix = chosen or current
        scans: list[Scan] = []
        for i, part in enumerate(message.content):
            if not isinstance(part, TextPart) or active not in part.text:
                continue
            result = scan(part.text, active)
            if result.commands or result.errors:
                scans.append(result)
                message.content[i] = TextPart(text=result.remainder, extra=part.extra)
                current = _prefix_change(result, current) or configured
        if scans:
            found[id(message)] = scans
    if not found:
        return found, newest_prefix
    kept: list[Message] = []
    skip_answer = False
    for message in request.messages:
        if message.role in _SYSTEM_ROLES:
            kept.append(message)  # between a turn and its answer (Claude Code)
            continue
        if skip_answer and message.role == "assistant" and message is not request.messages[-1]:
            skip_answer = False
            continue
        skip_answer = False
        if id(message) in found and message is not newest and _only_commands(message):
            skip_answer = True
            continue
        if id(message) in found:
            message.content = [
                p for p in message.content if not (isinstance(p, TextPart) and not p.text)
            ]
        kept.append(message)
    request.messages = kept
    return found, newest_prefix


def _only_commands(message: Message) -> bool:
    """Nothing the user typed is left once the commands are gone."""
    for part in message.content:
        if not isinstance(part, TextPart):
            return False
        if _user_text(part) and part.text.strip():
            return False
    return True
