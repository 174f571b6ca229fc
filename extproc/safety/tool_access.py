"""Tool access rules: which tools a request may offer the model, per scope.

Rules are data (:class:`ToolRule`). A :class:`ToolPolicy` compiles them once;
per request, :meth:`ToolPolicy.for_scope` picks the rules that apply to the
request's scope and returns a :class:`ToolFilter` (or ``None``: no rule
applies, every tool is allowed), which answers :meth:`ToolFilter.allows` per
tool name.

Patterns
    ``allow``, ``deny``, ``models`` and ``agents`` hold globs. A glob must
    match the *whole* string. ``*`` matches any run of characters (also none,
    and also ``/``, ``:`` and newlines); ``?`` exactly one character;
    ``[abc]`` or ``[a-z]`` one character of the set; ``[!abc]`` one character
    not in it (a ``]`` right after ``[`` or ``[!`` is a member: ``[]x]``). Every
    other character is literal; there are no backslash escapes (a literal
    ``*`` is ``[*]``). A name without wildcards is therefore an exact name.
    Tool-name globs are case-sensitive (agents call tools by exact name: write
    ``*[Dd]elete*`` to catch both spellings); model and agent globs ignore
    case. ``keys`` holds exact client key ids (``key-`` and 12 lower-case hex
    digits, as :func:`extproc.pipeline.context.key_id` makes them), never keys.

    Globs are translated to RE2 (linear time in the text, no backtracking), so
    untrusted tool names, model names and User-Agent headers cannot make
    matching slow. Invalid globs (empty, unterminated ``[``, reversed range)
    and invalid key ids raise ``ValueError`` when the rule is built.

Scope
    A rule applies to a request when each of its three scope lists matches;
    an empty list matches every request:

    * ``models``: some glob matches the scope's ``model`` (the routed model)
      or its ``requested_model`` (the name the client sent, when given);
    * ``keys``: the scope's ``key_id`` is one of them (a request without a
      key never matches a non-empty ``keys``);
    * ``agents``: some glob matches the whole User-Agent header (a request
      without one has the User-Agent ``""``).

Decision
    With ``A`` the rules that apply (in configuration order), a tool name ``T``
    is decided as follows:

    1. ``A`` is empty: ``T`` is allowed (``for_scope`` returns ``None``).
    2. Some ``deny`` glob of some rule in ``A`` matches ``T``: denied. Deny
       always wins over allow.
    3. Some rule in ``A`` has a non-empty ``allow`` (allow-list mode): ``T`` is
       allowed only if it matches an ``allow`` glob of some rule in ``A`` (the
       allow-lists of the applicable rules add up).
    4. Otherwise ``T`` is allowed.

    The outcome does not depend on the order of the rules; the order only
    decides which rule :meth:`ToolFilter.denial` names.

A rule with neither ``allow`` nor ``deny`` would do nothing and is rejected.
``for_scope`` results are cached (bounded LRU); scopes with very long strings
are evaluated without caching so that hostile headers cannot fill memory.
"""

from __future__ import annotations

import string
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import re2

__all__ = [
    "ToolFilter",
    "ToolPolicy",
    "ToolRule",
    "ToolScope",
    "compile_globs",
    "glob_to_regex",
    "matches_glob",
]

#: ``for_scope`` results kept (scopes repeat: one per agent, model and key).
_CACHE_SIZE = 1024
#: Scopes whose strings add up to more than this are not cached.
_MAX_CACHED_SCOPE_CHARS = 1024

_KEY_ID_PREFIX = "key-"
_KEY_ID_DIGITS = 12
_LOWER_HEX = frozenset("0123456789abcdef")
_WORD = frozenset(string.ascii_letters + string.digits + "_")


# -- globs ---------------------------------------------------------------------


def _literal(char: str) -> str:
    """``char`` as an RE2 literal (inside or outside a character class)."""
    return char if char in _WORD else f"\\x{{{ord(char):x}}}"


def glob_to_regex(glob: str) -> str:
    """The RE2 syntax for a glob (see the module docstring), without anchors or flags.

    To match as this module does, compile it with the ``(?s)`` flag (so that
    ``*`` and ``?`` also match newlines; add ``(?i)`` to ignore case) and use
    ``fullmatch``.

    Raises ``ValueError`` for an empty glob, an unterminated ``[`` or a
    reversed range such as ``[z-a]``.
    """
    if not isinstance(glob, str) or not glob:
        raise ValueError(f"invalid pattern {glob!r}: a pattern is a non-empty string")
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        char = glob[i]
        if char == "*":
            while i < n and glob[i] == "*":
                i += 1
            out.append(".*")
            continue
        if char == "?":
            out.append(".")
        elif char == "[":
            regex, i = _char_class(glob, i)
            out.append(regex)
            continue
        else:
            out.append(_literal(char))
        i += 1
    return "".join(out)


def _char_class(glob: str, start: int) -> tuple[str, int]:
    """The RE2 class for the ``[...]`` at ``glob[start]``, and the index after it."""
    i = start + 1
    negate = i < len(glob) and glob[i] == "!"
    if negate:
        i += 1
    members_start = i
    if i < len(glob) and glob[i] == "]":
        i += 1  # a ']' first in the set is a member
    end = glob.find("]", i)
    if end < 0:
        raise ValueError(f"invalid pattern {glob!r}: '[' at {start} is never closed by ']'")
    members = glob[members_start:end]
    parts: list[str] = []
    j = 0
    while j < len(members):
        low = members[j]
        if j + 2 < len(members) and members[j + 1] == "-":
            high = members[j + 2]
            if low > high:
                raise ValueError(f"invalid pattern {glob!r}: range {low}-{high} runs backwards")
            parts.append(f"{_literal(low)}-{_literal(high)}")
            j += 3
        else:
            parts.append(_literal(low))
            j += 1
    return ("[^" if negate else "[") + "".join(parts) + "]", end + 1


def compile_globs(globs: Sequence[str], *, ignore_case: bool = True) -> re2._Regexp[str]:
    """One RE2 matching any of ``globs`` (whole string: use ``fullmatch``)."""
    flags = "(?si)" if ignore_case else "(?s)"
    union = "|".join(f"(?:{glob_to_regex(glob)})" for glob in globs)
    try:
        return re2.compile(flags + union)
    except re2.error as exc:  # e.g. a pattern set beyond RE2's memory budget
        raise ValueError(f"invalid patterns {list(globs)!r}: {exc}") from exc


def matches_glob(regex: re2._Regexp[str] | None, text: str) -> bool:
    """``regex`` (from :func:`compile_globs`) matches all of ``text``; None matches nothing."""
    if regex is None:
        return False
    try:
        return regex.fullmatch(text) is not None
    except UnicodeEncodeError:
        # Untrusted text with lone surrogates cannot be UTF-8: match what is left.
        safe = text.encode("utf-8", "replace").decode("utf-8")
        return regex.fullmatch(safe) is not None


# -- rules ---------------------------------------------------------------------


def _strings(field: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{field} must be a list of strings, not {type(value).__name__}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{field} entries must be non-empty strings, got {item!r}")
    return items


def _check_key_id(value: str) -> None:
    digits = value[len(_KEY_ID_PREFIX) :]
    if (
        not value.startswith(_KEY_ID_PREFIX)
        or len(digits) != _KEY_ID_DIGITS
        or not _LOWER_HEX.issuperset(digits)
    ):
        raise ValueError(
            f"invalid key id {value!r}: keys lists key ids (key- and 12 lower-case hex "
            "digits, as logs and usage records show them), never the keys themselves"
        )


@dataclass(frozen=True)
class ToolRule:
    """Allow/deny tool-name globs, for the requests its scope lists match (empty: all)."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    #: Model-name globs (routed or requested model, any case).
    models: tuple[str, ...] = ()
    #: Exact client key ids (``key-xxxxxxxxxxxx``).
    keys: tuple[str, ...] = ()
    #: User-Agent globs (any case), e.g. ``claude-cli/*``, ``codex*``, ``GeminiCLI/*``.
    agents: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in ("allow", "deny", "models", "keys", "agents"):
            object.__setattr__(self, field, _strings(field, getattr(self, field)))
        if not self.allow and not self.deny:
            raise ValueError("a tool rule needs allow or deny patterns (it would do nothing)")
        for glob in (*self.allow, *self.deny, *self.models, *self.agents):
            glob_to_regex(glob)
        for key in self.keys:
            _check_key_id(key)


@dataclass(frozen=True)
class ToolScope:
    """What a request's tool rules depend on."""

    #: The routed model name (what the proxy will ask of the provider).
    model: str
    #: The client's key id (``extproc.pipeline.context.key_id``); None without a key.
    key_id: str | None
    #: The User-Agent header ("" when absent).
    user_agent: str
    #: The model name the client sent, when it differs from ``model``.
    requested_model: str | None = None


@dataclass(frozen=True)
class _CompiledRule:
    index: int
    rule: ToolRule
    models: re2._Regexp[str] | None
    keys: frozenset[str] | None
    agents: re2._Regexp[str] | None
    deny: re2._Regexp[str] | None

    @classmethod
    def of(cls, index: int, rule: ToolRule) -> _CompiledRule:
        return cls(
            index=index,
            rule=rule,
            models=compile_globs(rule.models, ignore_case=True) if rule.models else None,
            keys=frozenset(rule.keys) if rule.keys else None,
            agents=compile_globs(rule.agents, ignore_case=True) if rule.agents else None,
            deny=compile_globs(rule.deny, ignore_case=False) if rule.deny else None,
        )

    def applies(self, scope: ToolScope) -> bool:
        if self.keys is not None and scope.key_id not in self.keys:
            return False
        if self.models is not None and not (
            matches_glob(self.models, scope.model)
            or (
                scope.requested_model is not None
                and matches_glob(self.models, scope.requested_model)
            )
        ):
            return False
        return self.agents is None or matches_glob(self.agents, scope.user_agent)


# -- filter and policy -----------------------------------------------------------


class ToolFilter:
    """The decision for one scope: which tool names pass (module docstring: Decision)."""

    __slots__ = ("_allow", "_allow_list", "_deny", "_rules")

    def __init__(self, rules: Sequence[_CompiledRule]) -> None:
        self._rules = tuple(rules)
        deny = [glob for r in self._rules for glob in r.rule.deny]
        allow = [glob for r in self._rules for glob in r.rule.allow]
        self._deny = compile_globs(deny, ignore_case=False) if deny else None
        self._allow = compile_globs(allow, ignore_case=False) if allow else None
        self._allow_list = bool(allow)

    @property
    def rules(self) -> tuple[int, ...]:
        """Indexes (in the policy's rule list) of the rules that apply."""
        return tuple(r.index for r in self._rules)

    def allows(self, tool_name: str) -> bool:
        """Whether a tool of this name may be offered to / called by the model."""
        if matches_glob(self._deny, tool_name):
            return False
        return not self._allow_list or matches_glob(self._allow, tool_name)

    def denial(self, tool_name: str) -> str | None:
        """None when allowed; else why not (names the rule, never the key)."""
        if self.allows(tool_name):
            return None
        for compiled in self._rules:
            if matches_glob(compiled.deny, tool_name):
                return f"tool {tool_name!r} is denied by tool rule {compiled.index + 1}"
        rules = ", ".join(str(r.index + 1) for r in self._rules if r.rule.allow)
        return f"tool {tool_name!r} is not in the allow-list of tool rule(s) {rules}"


_K = TypeVar("_K")
_V = TypeVar("_V")


class _Lru(Generic[_K, _V]):
    """A small thread-safe LRU mapping."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _K) -> tuple[bool, _V | None]:
        with self._lock:
            if key not in self._items:
                return False, None
            self._items.move_to_end(key)
            return True, self._items[key]

    def put(self, key: _K, value: _V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class ToolPolicy:
    """Tool rules compiled once; ``for_scope`` per request (cached)."""

    def __init__(self, rules: Sequence[ToolRule], *, cache_size: int = _CACHE_SIZE) -> None:
        for rule in rules:
            if not isinstance(rule, ToolRule):
                raise ValueError(f"tool rules must be ToolRule, not {type(rule).__name__}")
        self._rules = tuple(_CompiledRule.of(i, rule) for i, rule in enumerate(rules))
        self._scopes: _Lru[ToolScope, ToolFilter | None] = _Lru(cache_size)
        # Many scopes share one set of applicable rules: share its compiled filter.
        self._filters: _Lru[tuple[int, ...], ToolFilter] = _Lru(cache_size)

    @property
    def rules(self) -> tuple[ToolRule, ...]:
        return tuple(r.rule for r in self._rules)

    def for_scope(self, scope: ToolScope) -> ToolFilter | None:
        """The filter for a request's scope; None when no rule applies (all tools allowed)."""
        if not self._rules:
            return None
        size = len(scope.model) + len(scope.user_agent) + len(scope.requested_model or "")
        cacheable = size <= _MAX_CACHED_SCOPE_CHARS
        if cacheable:
            found, cached = self._scopes.get(scope)
            if found:
                return cached
        result = self._evaluate(scope)
        if cacheable:
            self._scopes.put(scope, result)
        return result

    def _evaluate(self, scope: ToolScope) -> ToolFilter | None:
        applicable = [r for r in self._rules if r.applies(scope)]
        if not applicable:
            return None
        indexes = tuple(r.index for r in applicable)
        found, cached = self._filters.get(indexes)
        if found and cached is not None:
            return cached
        built = ToolFilter(applicable)
        self._filters.put(indexes, built)
        return built
