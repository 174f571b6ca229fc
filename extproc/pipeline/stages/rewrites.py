"""Rewrites: literal or RE2 replace/prepend/append on prompts and replies (docs/commands.md).

Rules are scoped by model (globs on the model the client asked for), client
key id and agent (User-Agent globs). ``system`` rules edit the system prompt
(a prepend or append creates one when the request has none), ``user`` rules
the text the user typed (tool results are left alone), ``reply`` rules the
model's answer text — streamed through a bounded hold, so a match split
across chunks is still replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import re2

from extproc.canonical import (
    CanonicalRequest,
    Message,
    StreamEvent,
    TextDelta,
    TextPart,
)
from extproc.config.sessions import RewriteConfig
from extproc.pipeline.answer import AnswerFilter, Emit
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import RequestOutcome, Stage
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.rewrite import StreamRewriter, TextRewriter, TextRule
from extproc.safety.tool_access import compile_globs, matches_glob

__all__ = ["RewriteStage"]


def _globs(globs: Sequence[str]) -> re2._Regexp[str] | None:
    if not globs:
        return None
    return compile_globs(globs)


@dataclass(frozen=True)
class _Scoped:
    rule: TextRule
    target: str
    models: re2._Regexp[str] | None
    keys: frozenset[str]
    agents: re2._Regexp[str] | None

    def applies(self, model: str, key: str | None, agent: str) -> bool:
        if self.models is not None and not matches_glob(self.models, model):
            return False
        if self.keys and key not in self.keys:
            return False
        return self.agents is None or matches_glob(self.agents, agent)


class RewriteStage(Stage):
    name = "rewrites"

    def __init__(self, rules: Sequence[RewriteConfig], policies: KeyPolicies | None = None) -> None:
        self._rules = [
            _Scoped(
                TextRule(
                    id=r.id,
                    action=r.action,
                    find=r.find,
                    pattern=r.pattern,
                    replacement=r.replacement,
                    text=r.text,
                    max_match=r.max_match,
                ),
                r.target,
                _globs(r.models),
                frozenset(r.keys),
                _globs(r.agents),
            )
            for r in rules
        ]
        # Fails at startup on a bad rule (RuleError names it).
        for scoped in self._rules:
            TextRewriter([scoped.rule])
        self._policies = policies
        self._cache: dict[tuple[int, ...], _Rules] = {}

    def _rewriter(self, ctx: RequestContext, model: str, target: str) -> _Rules | None:
        agent = ctx.headers.get("user-agent", "")
        key = ctx.client_key_id
        chosen = tuple(
            i
            for i, s in enumerate(self._rules)
            if s.target == target and s.applies(model, key, agent)
        )
        if not chosen:
            return None
        rules = self._cache.get(chosen)
        if rules is None:
            rules = self._cache[chosen] = _Rules([self._rules[i].rule for i in chosen])
        return rules

    def _off(self, ctx: RequestContext) -> bool:
        return self._policies is not None and self._policies.disabled(ctx, self.name)

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> RequestOutcome:
        if self._off(ctx):
            return None
        model = ctx.requested_model or request.model
        system = self._rewriter(ctx, model, "system")
        if system is not None:
            _rewrite_system(request, system)
        user = self._rewriter(ctx, model, "user")
        if user is not None:
            for message in request.messages:
                if message.role == "user":
                    _rewrite_message(message, user)
        return None

    def answer_filter(self, ctx: RequestContext, request: CanonicalRequest) -> AnswerFilter | None:
        if self._off(ctx):
            return None
        # The model the client asked for (routing has replaced request.model by now).
        reply = self._rewriter(ctx, ctx.requested_model or request.model, "reply")
        return _ReplyFilter(reply) if reply is not None else None


class _Rules:
    """One request's rules of one target: replacements apart from prepend/append texts."""

    def __init__(self, rules: Sequence[TextRule]) -> None:
        whole = TextRewriter(rules)
        self.prefix = whole.prefix
        self.suffix = whole.suffix
        replace = [r for r in rules if r.action == "replace"]
        self.replace = TextRewriter(replace) if replace else None


def _rewrite_message(message: Message, rewriter: _Rules) -> None:
    """Replace rules on every text part; prepend before the first, append after the last."""
    texts = [i for i, p in enumerate(message.content) if isinstance(p, TextPart)]
    if not texts:
        return
    for n, i in enumerate(texts):
        part = message.content[i]
        assert isinstance(part, TextPart)
        text = part.text
        if rewriter.replace is not None:
            text = rewriter.replace.apply(text)
        if n == 0 and rewriter.prefix:
            text = rewriter.prefix + text
        if n == len(texts) - 1 and rewriter.suffix:
            text = text + rewriter.suffix
        if text is not part.text:
            message.content[i] = TextPart(text=text, extra=part.extra)


def _rewrite_system(request: CanonicalRequest, rewriter: _Rules) -> None:
    system = [m for m in request.messages if m.role in ("system", "developer")]
    if system:
        for message in system:
            _rewrite_message(message, rewriter)
        return
    text = rewriter.prefix + rewriter.suffix
    if text:
        request.messages.insert(
            0, Message(role="system", content=[TextPart(text=text)], plain=True)
        )


class _ReplyFilter(AnswerFilter):
    """Replace rules over the streamed text; prepend before it, append at its end."""

    name = "rewrites"

    def __init__(self, rewriter: _Rules) -> None:
        self._prefix = rewriter.prefix
        self._suffix = rewriter.suffix
        self._stream = StreamRewriter(rewriter.replace) if rewriter.replace is not None else None
        self._started = False

    @property
    def holding(self) -> bool:
        return self._stream is not None and self._stream.held > 0

    def on_events(self, events: Sequence[StreamEvent]) -> Emit | None:
        out: list[StreamEvent] = []
        changed = False
        for event in events:
            if not isinstance(event, TextDelta):
                if self.holding:
                    assert self._stream is not None
                    rest = self._stream.flush()
                    if rest:
                        out.append(TextDelta(text=rest))
                    changed = True
                out.append(event)
                continue
            text = self._stream.feed(event.text) if self._stream is not None else event.text
            if not self._started and self._prefix and event.text:
                text = self._prefix + text
                self._started = True
            if text is event.text:
                out.append(event)
                continue
            changed = True
            if text:
                out.append(TextDelta(text=text))
        return Emit(out) if changed else None

    def on_flush(self) -> Emit | None:
        text = self._stream.flush() if self._stream is not None else ""
        if not self._started and self._prefix:
            self._started = True
            text = self._prefix + text
        if self._suffix:
            text += self._suffix
            self._suffix = ""
        return Emit([TextDelta(text=text)]) if text else None
