"""File sandbox: tool calls that write, move or delete files outside the allowed roots.

Off by default; ``sandbox: {enabled: true, roots: [/path/to/project]}`` turns
it on. Editor tools (Claude Code Write/Edit/MultiEdit/NotebookEdit, Codex
``apply_patch``, Gemini CLI ``write_file``/``replace``, Cline
``write_to_file``, any ``path``/``file_path`` argument of a writing tool)
and shell commands (redirections, ``rm``/``mv``/``cp`` targets and more) are
checked; ``strict`` also blocks writes whose targets cannot be determined.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from extproc.canonical import CanonicalRequest, ToolCallPart
from extproc.errors import PermissionDenied
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Stage
from extproc.pipeline.stages.arguments import tool_arguments
from extproc.pipeline.stages.policies import KeyPolicies
from extproc.pipeline.toolgate import Block, ToolCheck, ToolVerdict
from extproc.safety.sandbox import Sandbox

__all__ = ["SandboxStage"]


class SandboxStage(Stage):
    name = "sandbox"

    def __init__(
        self,
        sandbox: Sandbox | None,
        *,
        action: str = "steer",
        policies: KeyPolicies | None = None,
        on_block: Callable[[str], None] | None = None,
        home: str | None = None,
        strict: bool = False,
    ) -> None:
        """``sandbox`` None: only sessions that set a project dir are sandboxed."""
        error = action == "error"
        self._check = _SandboxCheck(sandbox, error, on_block) if sandbox is not None else None
        self._policies = policies

        @lru_cache(maxsize=256)
        def for_root(root: str) -> _SandboxCheck:
            return _SandboxCheck(Sandbox([root], home=home, strict=strict), error, on_block)

        self._for_root = for_root

    def tool_check(self, ctx: RequestContext, request: CanonicalRequest) -> ToolCheck | None:
        if not request.tools:
            return None
        session = ctx.session
        root = session.setting("project-dir") if session is not None else None
        if root:
            # The session's project dir (``!/set(project-dir=...)``) is its sandbox root.
            return self._for_root(str(root))
        if self._check is None:
            return None
        if self._policies is not None and self._policies.disabled(ctx, self.name):
            return None
        return self._check


class _SandboxCheck:
    name = "sandbox"

    def __init__(
        self, sandbox: Sandbox, error: bool, on_block: Callable[[str], None] | None
    ) -> None:
        self._sandbox = sandbox
        self._error = error
        self._on_block = on_block

    def check(self, call: ToolCallPart) -> ToolVerdict | None:
        violation = self._sandbox.check(call.name, tool_arguments(call.arguments))
        if violation is None:
            return None
        if self._on_block is not None:
            self._on_block("path")
        message = (
            f"The proxy blocked the {call.name} tool call: it writes to {violation.path!r}, "
            f"{violation.reason}. Work only inside the project directory."
        )
        error = PermissionDenied(message, code="sandbox_violation") if self._error else None
        return Block(message, error=error)
