"""The file sandbox: tool calls may write only below the allowed roots.

:class:`Sandbox` finds what a tool call writes (:func:`~extproc.safety.sandbox.paths.
paths_written`), resolves each path without touching the filesystem
(:mod:`extproc.safety.sandbox.resolve`: relative paths from ``cwd``, ``..`` and ``.``
folded, ``~``/``$HOME`` as ``home``, Windows paths case-insensitive), and answers
the first one outside every root as a :class:`Violation`.

* ``/dev/null``, ``/dev/stdout`` and ``/dev/stderr`` (and Windows ``NUL``/``$null``)
  are always allowed.
* A path under ``~`` when ``home`` is not configured is outside (its place is unknown).
* ``strict=True``: a write whose targets could not be determined (a variable, a
  command substitution, an editor tool without its path) is a violation too;
  otherwise it is let through.

Limits: symlinks are invisible (a link inside a root that points outside is followed
by the tool, not by this check); so are programs that write where their own
configuration says (``npm install -g``, ``pip install --user``); commands run
through ``docker exec``, ``kubectl exec`` or ``ssh`` write on another machine and
are not looked into.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from extproc.safety.sandbox.paths import WriteTargets, paths_written
from extproc.safety.sandbox.resolve import Location, locate

__all__ = ["ALWAYS_ALLOWED", "Sandbox", "Violation"]

#: Write targets that are never files.
ALWAYS_ALLOWED = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})
_WINDOWS_NULL = frozenset({"nul", "$null", "nul:"})


@dataclass(frozen=True)
class Violation:
    """A write outside the sandbox: the path and why it is refused."""

    path: str
    reason: str


class Sandbox:
    """Allowed write roots for agent tool calls (pure string logic, thread-safe)."""

    def __init__(
        self,
        roots: Sequence[str],
        *,
        home: str | None = None,
        cwd: str | None = None,
        strict: bool = False,
    ) -> None:
        if not roots:
            raise ValueError("a sandbox needs at least one root")
        self.home = home
        self.strict = strict
        located: list[Location] = []
        for root in roots:
            location = locate(root, cwd="/", home=home)
            if location is None or not (root.startswith("/") or location.windows):
                raise ValueError(f"sandbox root {root!r} must be an absolute path")
            located.append(location)
        self._roots = tuple(located)
        self.roots = tuple(root.path for root in located)
        start = locate(cwd, cwd=self.roots[0], home=home) if cwd else self._roots[0]
        self.cwd = (start or self._roots[0]).path
        self._outside = f"outside the allowed directories ({', '.join(self.roots)})"

    def check(self, tool_name: str, arguments: Mapping[str, Any]) -> Violation | None:
        """The first write of the tool call outside the roots, or None."""
        return self.check_targets(paths_written(tool_name, arguments))

    def check_targets(self, targets: WriteTargets) -> Violation | None:
        for path in targets.paths:
            if path in ALWAYS_ALLOWED or path.lower() in _WINDOWS_NULL:
                continue
            location = locate(path, cwd=self.cwd, home=self.home)
            if location is None:
                return Violation(path, f"in the home directory, {self._outside}")
            if location.path in ALWAYS_ALLOWED:
                continue
            if not any(location.within(root) for root in self._roots):
                return Violation(location.path, self._outside)
        if self.strict and targets.unparsed:
            what = targets.unresolved[0] if targets.unresolved else "(unknown)"
            return Violation(
                what,
                "a target the proxy cannot determine (a variable, a command substitution or "
                "a missing path), and the sandbox is strict",
            )
        return None
