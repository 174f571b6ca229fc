"""Finding secrets in text, in time linear in its length (RE2 only).

The common case (no secret) is one pass: every rule and every literal secret is
compiled into one RE2 alternation, and a text it does not match is done. When
it matches, an ``re2.Set`` tells which rules match anywhere (one more pass),
and only those run on their own, to find each secret's span.

Matching runs on the UTF-8 bytes of the text (encoded once), and byte offsets
are turned back into ``str`` offsets at the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import re2

from extproc.safety.secrets.rules import BUILTIN_RULES, WORD_STARTS, SecretRule

__all__ = ["LITERAL_RULE_ID", "MIN_LITERAL_LENGTH", "Finding", "SecretScanner"]

#: ``rule_id`` of a finding that is one of the configured (literal) secrets.
LITERAL_RULE_ID = "literal"
#: Literal secrets shorter than this are ignored (they would match ordinary text).
MIN_LITERAL_LENGTH = 8

# Continuation bytes of UTF-8: deleting them leaves one byte per character.
_CONTINUATION = bytes(range(0x80, 0xC0))
# The DFA of the combined pattern may use this much memory (RE2's default is 8 MiB).
_MAX_MEM = 64 << 20


@dataclass(frozen=True, slots=True)
class Finding:
    """A secret at ``text[start:end]``."""

    start: int
    end: int
    kind: str
    rule_id: str


@dataclass(frozen=True, slots=True)
class _Matcher:
    rule_id: str
    kind: str
    regex: re2._Regexp[str]
    group: int
    ignore: re2._Regexp[str] | None


def _options(*, never_capture: bool = False) -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _MAX_MEM
    options.never_capture = never_capture
    return options


def _compile(pattern: str, what: str, *, never_capture: bool = False) -> re2._Regexp[str]:
    try:
        return re2.compile(pattern, _options(never_capture=never_capture))
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"invalid {what} pattern {pattern!r}: {reason}") from None


class SecretScanner:
    """Finds built-in credential shapes, configured literal secrets, minus an allow-list.

    ``literals`` are ``(kind, value)`` pairs (values shorter than
    :data:`MIN_LITERAL_LENGTH` are ignored); ``allow`` are RE2 patterns: a
    finding whose secret text fully matches one of them is dropped. An invalid
    pattern raises :class:`ValueError` naming it.
    """

    def __init__(
        self,
        rules: Iterable[SecretRule] = BUILTIN_RULES,
        literals: Iterable[tuple[str, str]] = (),
        allow: Iterable[str] = (),
    ) -> None:
        rules = list(rules)
        matchers = [self._matcher(rule) for rule in rules]
        self._literal_kinds: dict[str, str] = {}
        for kind, value in literals:
            if len(value) >= MIN_LITERAL_LENGTH:
                self._literal_kinds.setdefault(value, kind)
        if self._literal_kinds:
            # longest first: at one position, RE2's leftmost-first alternation
            # then takes the longest literal
            ordered = sorted(self._literal_kinds, key=len, reverse=True)
            pattern = "|".join(re2.escape(value) for value in ordered)
            matchers.append(_Matcher(LITERAL_RULE_ID, "", _compile(pattern, "literal"), 0, None))
        self._matchers = tuple(matchers)
        allowed = [(_compile(p, "allow"), p) for p in allow]
        self._allow = (
            _compile("|".join(f"(?:{p})" for _, p in allowed), "allow") if allowed else None
        )
        patterns = [m.regex.pattern for m in self._matchers]
        self._prefilter = (
            _compile("|".join(f"(?:{p})" for p in patterns), "combined", never_capture=True)
            if patterns
            else None
        )
        self._set = _build_set(patterns)
        #: Word-like runs that may still grow into a secret (every prefix of every
        #: rule's and literal's word-like start), or None when a rule's starts are
        #: unknown (user patterns): then every trailing token is held.
        self.hold_prefixes: frozenset[str] | None = None
        if all(rule in BUILTIN_RULES for rule in rules):
            starts = [*WORD_STARTS, *(_word_run(v) for v in self._literal_kinds)]
            self.hold_prefixes = frozenset(
                start[:n] for start in starts for n in range(1, len(start) + 1)
            )

    @staticmethod
    def _matcher(rule: SecretRule) -> _Matcher:
        regex = _compile(rule.pattern, f"rule {rule.id!r}")
        if not 0 <= rule.group <= regex.groups:
            raise ValueError(
                f"rule {rule.id!r}: group {rule.group} out of range for pattern {rule.pattern!r}"
            )
        ignore = _compile(rule.ignore, f"rule {rule.id!r} ignore") if rule.ignore else None
        return _Matcher(rule.id, rule.kind, regex, rule.group, ignore)

    def find(self, text: str) -> list[Finding]:
        """Secrets in ``text``: sorted, non-overlapping (earliest start, then longest, wins)."""
        if not text or self._prefilter is None:
            return []
        data = text.encode("utf-8", "surrogatepass")
        first = self._prefilter.search(data)
        if first is None:
            return []
        # No match of any rule starts before the combined pattern's leftmost
        # match. The Set sees one byte more, for \b, \B or (?m)^ at that start.
        start = first.start()
        candidates: list[tuple[int, int, int, str, str]] = []
        for index in self._hits(data[start - 1 :] if start else data):
            self._collect(index, data, start, candidates)
        if not candidates:
            return []
        if not text.isascii():
            candidates = _to_str_offsets(data, candidates)
        return self._resolve(text, candidates)

    def _hits(self, data: bytes) -> list[int]:
        """Indices of the matchers that match somewhere in ``data`` (or a superset)."""
        if self._set is not None:
            # the stubs say bool; RE2 returns the list of matching indices, or
            # None (also when the Set's DFA ran out of memory: then try them all)
            matched = cast("list[int] | None", self._set.Match(data))
            if matched:
                return sorted(matched)
        return list(range(len(self._matchers)))

    def _collect(
        self, index: int, data: bytes, pos: int, out: list[tuple[int, int, int, str, str]]
    ) -> None:
        """Append the spans of matcher ``index`` found in ``data`` from ``pos`` on to ``out``."""
        matcher = self._matchers[index]
        regex, group = matcher.regex, matcher.group
        size = len(data)
        while pos <= size:
            match = regex.search(data, pos)
            if match is None:
                return
            start, end = match.span(group)
            if end > start >= 0:
                out.append((start, end, index, matcher.kind, matcher.rule_id))
                pos = end
            else:
                pos = max(match.end(), match.start() + 1)

    def _resolve(
        self, text: str, candidates: list[tuple[int, int, int, str, str]]
    ) -> list[Finding]:
        candidates.sort(key=lambda c: (c[0], -c[1], c[2]))
        findings: list[Finding] = []
        last_end = 0
        for start, end, index, kind, rule_id in candidates:
            if start < last_end:
                continue
            secret = text[start:end]
            matcher = self._matchers[index]
            if matcher.ignore is not None and matcher.ignore.fullmatch(secret) is not None:
                continue
            if self._allow is not None and self._allow.fullmatch(secret) is not None:
                continue
            if rule_id == LITERAL_RULE_ID:
                kind = self._literal_kinds.get(secret, "secret")
            findings.append(Finding(start, end, kind, rule_id))
            last_end = end
        return findings


def _build_set(patterns: list[str]) -> re2.Set | None:
    """An ``re2.Set`` of ``patterns`` (its indices are the matchers'), or ``None``."""
    if not patterns:
        return None
    options = _options()
    rset = re2.Set.SearchSet(options)
    try:
        for pattern in patterns:
            rset.Add(pattern)
        rset.Compile()
    except re2.error:
        return None
    return rset


def _to_str_offsets(
    data: bytes, candidates: list[tuple[int, int, int, str, str]]
) -> list[tuple[int, int, int, str, str]]:
    """Byte offsets into ``data`` → character offsets, in one pass over ``data``."""
    offsets = sorted({o for c in candidates for o in (c[0], c[1])})
    chars: dict[int, int] = {}
    last_byte = last_char = 0
    for offset in offsets:
        last_char += len(data[last_byte:offset].translate(None, _CONTINUATION))
        last_byte = offset
        chars[offset] = last_char
    return [(chars[s], chars[e], i, k, r) for s, e, i, k, r in candidates]


def _word_run(value: str) -> str:
    """The leading word-like run of ``value``: ASCII letters, only the first one upper case."""
    end = 1 if value[:1].isascii() and value[:1].isalpha() else 0
    while end < len(value) and "a" <= value[end] <= "z":
        end += 1
    return value[:end]
