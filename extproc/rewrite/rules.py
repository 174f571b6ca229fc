"""Text rewrite rules: literal or RE2 replacements, prepends and appends.

A :class:`TextRewriter` is compiled once from a sequence of :class:`TextRule`
and applied to whole texts (:meth:`TextRewriter.apply`); a
:class:`~extproc.rewrite.stream.StreamRewriter` applies the same rules to a
streamed text. Rules are user-written, so patterns are compiled with RE2 only
(linear-time matching on untrusted text), and every mistake in a rule is a
:class:`RuleError` naming it, raised when the rewriter is built.

Semantics of :meth:`TextRewriter.apply`:

* replace rules run in order, each over the output of the one before, and
  replace every non-overlapping occurrence (leftmost first, as
  :meth:`str.replace` and ``re.sub`` do);
* a literal rule's ``replacement`` is inserted verbatim; a pattern rule's may
  refer to groups (``\\1``, ``\\g<1>``, ``\\g<name>``) and use the escapes
  ``\\\\``, ``\\n``, ``\\t``, ``\\r``;
* a pattern that matches the empty string (``x*``) is refused, and the empty
  matches a pattern may still make in context (``\\b``) are ignored: a rule
  rewrites text, it never inserts at a position (prepend/append do that);
* then the prepend texts, in rule order, go before the text, and the append
  texts, in rule order, after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import re2

__all__ = ["Action", "Replacement", "RuleError", "TextRewriter", "TextRule"]

Action = Literal["replace", "prepend", "append"]

# RE2's DFA may use this much memory per pattern (its default is 8 MiB).
_MAX_MEM = 16 << 20
_DIGITS = "0123456789"
_ESCAPES = {"\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


@dataclass(frozen=True)
class TextRule:
    """One rewrite rule, as configured (validated when a rewriter is built).

    ``replace`` needs exactly one of ``find`` (a literal) and ``pattern`` (an
    RE2 regex); ``prepend`` and ``append`` need ``text`` and neither.
    ``max_match`` is the longest match a pattern rule can make: a stream holds
    that much text back (literal rules use ``len(find)`` and ignore it).
    """

    id: str
    action: Action
    find: str | None = None
    pattern: str | None = None
    replacement: str = ""
    text: str = ""
    max_match: int = 256


class RuleError(ValueError):
    """A rule is invalid; the message names it."""


class Replacement:
    """A compiled replace rule (used by the whole-text and the stream rewriters)."""

    __slots__ = ("context", "hold", "rule_id")

    def __init__(self, rule_id: str, hold: int, context: int) -> None:
        self.rule_id = rule_id
        #: The most characters a stream ever holds back for this rule.
        self.hold = hold
        #: Characters of already-emitted text the rule needs before new text.
        self.context = context

    def rewrite(self, text: str, start: int, *, final: bool) -> tuple[str, int]:
        """``text[start:cut]`` rewritten, and ``cut``; ``text[:start]`` is context only.

        With ``final`` the cut is ``len(text)``. Otherwise ``text[cut:]`` may
        still be (the start of) a match the text to come completes, and the
        caller holds it. ``start`` must be a position no match spans. When
        nothing was replaced, the result is a slice of ``text`` (``text``
        itself when it is all of it).
        """
        raise NotImplementedError


class _LiteralReplacement(Replacement):
    __slots__ = ("find", "replacement")

    def __init__(self, rule_id: str, find: str, replacement: str) -> None:
        super().__init__(rule_id, hold=len(find) - 1, context=0)
        self.find = find
        self.replacement = replacement

    def rewrite(self, text: str, start: int, *, final: bool) -> tuple[str, int]:
        find = self.find
        index = text.find(find, start)
        if index < 0:  # the common case: nothing to replace
            cut = len(text) if final else self._hold_from(text, start)
            return text[start:cut], cut
        parts: list[str] = []
        last = start
        while index >= 0:
            parts.append(text[last:index])
            parts.append(self.replacement)
            last = index + len(find)
            index = text.find(find, last)
        cut = len(text) if final else self._hold_from(text, last)
        parts.append(text[last:cut])
        return "".join(parts), cut

    def _hold_from(self, text: str, start: int) -> int:
        """Where the longest suffix of ``text[start:]`` that begins ``find`` starts.

        ``len(text)`` when there is none (``text[start:]`` holds no whole ``find``).
        """
        find, size = self.find, len(text)
        index = text.find(find[0], max(start, size - len(find) + 1))
        while index >= 0:
            if find.startswith(text[index:]):
                return index
            index = text.find(find[0], index + 1)
        return size


class _PatternReplacement(Replacement):
    __slots__ = ("max_match", "regex", "template")

    def __init__(
        self,
        rule_id: str,
        regex: re2._Regexp[str],
        template: tuple[str | int, ...],
        max_match: int,
    ) -> None:
        # ``max_match``, not one less: a match ending at the end of the text
        # seen so far may depend on the next character (``\b``, ``$``).
        super().__init__(rule_id, hold=max_match, context=1)
        self.regex = regex
        self.template = template
        self.max_match = max_match

    def rewrite(self, text: str, start: int, *, final: bool) -> tuple[str, int]:
        size = len(text)
        # Only a match starting before ``limit`` is surely the one the whole
        # text has there (every match is at most ``max_match`` long).
        limit = size if final else size - self.max_match
        if limit <= start:
            return "", start
        parts: list[str] = []
        last = start
        for match in self.regex.finditer(text, start):
            begin, end = match.span()
            if begin >= limit:
                break
            if begin == end:
                continue
            parts.append(text[last:begin])
            parts.append(self._expand(match))
            last = end
        cut = size if final else max(limit, last)
        if not parts:
            return text[start:cut], cut
        parts.append(text[last:cut])
        return "".join(parts), cut

    def _expand(self, match: re2._Match[str]) -> str:
        template = self.template
        if len(template) == 1 and isinstance(template[0], str):
            return template[0]
        return "".join(
            piece if isinstance(piece, str) else (match[piece] or "") for piece in template
        )


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _MAX_MEM
    return options


def _error_text(exc: re2.error) -> str:
    reason = exc.args[0] if exc.args else exc
    if isinstance(reason, bytes):
        return reason.decode("utf-8", "replace")
    return str(reason)


def _parse_template(rule_id: str, template: str, regex: re2._Regexp[str]) -> tuple[str | int, ...]:
    """``template`` as literal pieces and group numbers; unknown groups are errors."""
    pieces: list[str | int] = []
    literal: list[str] = []
    index = 0
    while index < len(template):
        char = template[index]
        if char != "\\":
            literal.append(char)
            index += 1
            continue
        following = template[index + 1 : index + 2]
        if following in _ESCAPES:
            literal.append(_ESCAPES[following])
            index += 2
            continue
        if following and following in "123456789":
            end = index + 2
            if template[end : end + 1] and template[end] in _DIGITS:
                end += 1
            ref = template[index + 1 : end]
        elif following == "g" and template[index + 2 : index + 3] == "<":
            end = template.find(">", index + 3)
            if end < 0:
                raise RuleError(f"rule {rule_id!r}: unterminated \\g< in replacement")
            ref = template[index + 3 : end]
            end += 1
        else:
            raise RuleError(
                f"rule {rule_id!r}: bad escape {template[index : index + 2]!r} in replacement"
            )
        if ref and all(char in _DIGITS for char in ref):
            group = int(ref)
        elif ref in regex.groupindex:
            group = regex.groupindex[ref]
        else:
            raise RuleError(f"rule {rule_id!r}: unknown group {ref!r} in replacement")
        if group > regex.groups:
            raise RuleError(f"rule {rule_id!r}: unknown group {ref!r} in replacement")
        if literal:
            pieces.append("".join(literal))
            literal = []
        pieces.append(group)
        index = end
    if literal or not pieces:
        pieces.append("".join(literal))
    return tuple(pieces)


def _compile_replace(rule: TextRule) -> Replacement:
    if (rule.find is None) == (rule.pattern is None):
        raise RuleError(f"rule {rule.id!r}: replace needs exactly one of find and pattern")
    if rule.text:
        raise RuleError(f"rule {rule.id!r}: replace takes no text (use replacement)")
    if rule.find is not None:
        if not rule.find:
            raise RuleError(f"rule {rule.id!r}: find is empty")
        return _LiteralReplacement(rule.id, rule.find, rule.replacement)
    assert rule.pattern is not None
    if isinstance(rule.max_match, bool) or not isinstance(rule.max_match, int):
        raise RuleError(f"rule {rule.id!r}: max_match must be an integer")
    if rule.max_match < 1:
        raise RuleError(f"rule {rule.id!r}: max_match must be at least 1")
    try:
        regex = re2.compile(rule.pattern, _options())
    except re2.error as exc:
        raise RuleError(
            f"rule {rule.id!r}: invalid pattern {rule.pattern!r}: {_error_text(exc)}"
        ) from None
    if regex.fullmatch("") is not None:
        raise RuleError(f"rule {rule.id!r}: pattern {rule.pattern!r} matches the empty string")
    template = _parse_template(rule.id, rule.replacement, regex)
    return _PatternReplacement(rule.id, regex, template, rule.max_match)


class TextRewriter:
    """Rules compiled for use; :meth:`apply` rewrites a whole text (module docstring)."""

    __slots__ = ("prefix", "replacements", "suffix")

    def __init__(self, rules: Iterable[TextRule]) -> None:
        replacements: list[Replacement] = []
        prepends: list[str] = []
        appends: list[str] = []
        seen: set[str] = set()
        for rule in rules:
            if not rule.id:
                raise RuleError("a rule has no id")
            if rule.id in seen:
                raise RuleError(f"rule {rule.id!r}: duplicate id")
            seen.add(rule.id)
            if rule.action == "replace":
                replacements.append(_compile_replace(rule))
            elif rule.action in ("prepend", "append"):
                if rule.find is not None or rule.pattern is not None or rule.replacement:
                    raise RuleError(
                        f"rule {rule.id!r}: {rule.action} takes text only "
                        "(no find, pattern or replacement)"
                    )
                if not rule.text:
                    raise RuleError(f"rule {rule.id!r}: {rule.action} needs text")
                (prepends if rule.action == "prepend" else appends).append(rule.text)
            else:
                raise RuleError(f"rule {rule.id!r}: unknown action {rule.action!r}")
        #: The compiled replace rules, in order.
        self.replacements: tuple[Replacement, ...] = tuple(replacements)
        #: The prepend texts, joined in rule order.
        self.prefix = "".join(prepends)
        #: The append texts, joined in rule order.
        self.suffix = "".join(appends)

    @property
    def empty(self) -> bool:
        """True when there are no rules: every text stays as it is."""
        return not (self.replacements or self.prefix or self.suffix)

    def apply(self, text: str) -> str:
        """``text`` rewritten; ``text`` itself when no rule changes it."""
        out = text
        for replacement in self.replacements:
            out = replacement.rewrite(out, 0, final=True)[0]
        if self.prefix or self.suffix:
            return self.prefix + out + self.suffix
        return out
