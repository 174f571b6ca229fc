"""Context compression (off by default): fewer tokens for the same conversation.

On with ``compression: {enabled: true}`` or per session ``!/set(compression=on)``:

* above ``threshold_tokens``, the history is compacted
  (:func:`~extproc.guards.compress.compact_history`): an older tool result
  superseded by a newer one for the same resource (the same file read, the
  same command, the same search) becomes a one-line stub; other tool outputs
  are compressed by kind (pytest keeps failures and the summary, long command
  output is deduplicated with head and tail, grep is grouped by file, diff
  hunks are capped). The latest tool result is left whole unless
  ``keep_latest`` is off. Compressing twice changes nothing.
* coding-agent conveniences on the model's tool calls: a bare ``pytest`` gets
  quiet flags (``-q -rfE``); ``&&`` chains become PowerShell's
  ``a; if ($?) { b }`` when the agent's prompt says it runs Windows PowerShell.

The tokens saved are reported per request: ``x-llmproxy-tokens-saved`` on the
answer, ``tokens_saved`` in the access log's ``llm`` metadata, and
``llm_proxy_tokens_saved_total``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from extproc.canonical import CanonicalRequest, TextPart, ToolCallPart
from extproc.canonical.tokens import estimate_tokens
from extproc.guards.compress import compact_history, detect_powershell, powershell_chains
from extproc.guards.compress import quiet_pytest as quieted
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import RequestOutcome, Stage
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.pipeline.toolgate import Rewrite, ToolCheck, ToolVerdict

__all__ = ["CompressionStage"]
_COMMAND_KEYS = ("command", "cmd")


class CompressionStage(Stage):
    name = "compression"

    def __init__(
        self,
        *,
        enabled: bool,
        threshold_tokens: int,
        keep_latest: bool,
        pytest_flags: str | None,
        powershell: bool,
        policies: KeyPolicies | None = None,
        saved: Callable[[int], None] | None = None,
    ) -> None:
        self._enabled = enabled
        #: Off in the config (on only for sessions that ask): not timed per request.
        self.timed = enabled
        self._threshold = threshold_tokens
        self._keep_latest = keep_latest
        self._pytest_flags = pytest_flags
        self._powershell = powershell
        self._policies = policies
        self._saved = saved

    def _on(self, ctx: RequestContext) -> bool:
        session = ctx.session
        chosen = session.setting("compression") if session is not None else None
        on = self._enabled if chosen is None else chosen == "on"
        if on and self._policies is not None and self._policies.disabled(ctx, self.name):
            return False
        return on

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> RequestOutcome:
        if not self._on(ctx):
            return None
        if estimate_tokens(request) < self._threshold:
            return None
        report = compact_history(request.messages, keep_latest=self._keep_latest)
        if report.changed and report.tokens_saved > 0:
            # (A stub can be longer than a tiny result it replaces: nothing saved then.)
            ctx.tokens_saved = report.tokens_saved
            if self._saved is not None:
                self._saved(report.tokens_saved)
        return None

    def tool_check(self, ctx: RequestContext, request: CanonicalRequest) -> ToolCheck | None:
        if not request.tools or not self._on(ctx):
            return None
        powershell = self._powershell and _on_powershell(request)
        if self._pytest_flags is None and not powershell:
            return None
        return _ShellCheck(self._pytest_flags, powershell)


def _on_powershell(request: CanonicalRequest) -> bool:
    """What the agent says of its shell: system prompt, first user turn, tool descriptions."""
    texts = [
        p.text
        for m in request.messages[:3]
        if m.role in ("system", "developer", "user")
        for p in m.content
        if isinstance(p, TextPart)
    ]
    texts += [t.description or "" for t in request.tools or ()]
    return detect_powershell("\n".join(texts))


class _ShellCheck:
    """Rewrites the shell command of a tool call (``command``/``cmd``, or an argv's script)."""

    name = "compression"

    def __init__(self, pytest_flags: str | None, powershell: bool) -> None:
        self._pytest_flags = pytest_flags
        self._powershell = powershell

    def check(self, call: ToolCallPart) -> ToolVerdict | None:
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            return None
        if not isinstance(arguments, dict):
            return None
        changed = False
        for key in _COMMAND_KEYS:
            value = arguments.get(key)
            if isinstance(value, str):
                new = self._command(value)
                if new is not None:
                    arguments[key], changed = new, True
            elif isinstance(value, list) and value and isinstance(value[-1], str):
                new = self._command(value[-1])  # ["bash", "-lc", "<script>"]
                if new is not None:
                    arguments[key] = [*value[:-1], new]
                    changed = True
        if not changed:
            return None
        return Rewrite(arguments=json.dumps(arguments, ensure_ascii=False))

    def _command(self, command: str) -> str | None:
        out: Any = command
        if self._pytest_flags is not None:
            out = quieted(out, self._pytest_flags) or out
        if self._powershell:
            out = powershell_chains(out) or out
        return out if out != command else None
