"""The dangerous-command check: rules compiled once, one call per command text.

:class:`CommandGuard` normalises a command (:func:`~extproc.safety.commands.
normalize.parse`) and matches every simple command's text, from its start, against
all rules at once (one RE2 set, linear time), then confirms the candidates
(``unless`` searched anywhere, pipeline ``after`` matched from the start of an
earlier stage); ``raw`` rules are searched anywhere in the cleaned text. The first
hit is returned as :class:`Blocked`: commands in the order they would run,
rules in their given order for one command, then pipeline rules, then raw
rules.

Text that could not be read completely (over ``MAX_LENGTH``, nesting beyond
``MAX_DEPTH``, an unterminated quote or substitution) is checked as far as it
was read; with ``strict=True`` it is blocked (rule ``unparseable-command``) when
no rule matched first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import re2

from extproc.safety.commands.normalize import ParsedCommand, SimpleCommand, parse
from extproc.safety.commands.rules import CommandRule

__all__ = ["UNPARSEABLE", "Blocked", "CommandGuard"]

#: The synthetic rule of a command that cannot be read completely (``strict`` only).
UNPARSEABLE = CommandRule(
    id="unparseable-command",
    reason="the command could not be read completely (too long, nested too deeply, or an "
    "unterminated quote), so it cannot be checked",
    suggestion="split it into shorter, simpler commands without deep nesting",
    pattern="$^",
)


#: RE2's memory budget for the compiled rule set (its DFA cache among it).
_SET_MEMORY = 64 << 20


@dataclass(frozen=True)
class Blocked:
    """A command that must not run: the rule it broke and the offending simple command."""

    rule: CommandRule
    #: The normalised simple command (or, for raw rules, the cleaned command text).
    command: str


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: CommandRule
    unless: re2._Regexp[str] | None
    after: re2._Regexp[str] | None


def _compile(rule: CommandRule, field: str, pattern: str) -> re2._Regexp[str]:
    try:
        return re2.compile(pattern)
    except re2.error as exc:
        raise ValueError(f"command rule {rule.id!r}: invalid {field} {pattern!r}: {exc}") from exc


class CommandGuard:
    """Checks command texts against dangerous-command rules (compiled once, thread-safe)."""

    def __init__(
        self,
        rules: Iterable[CommandRule],
        *,
        disabled: Iterable[str] = (),
        strict: bool = False,
    ) -> None:
        off = frozenset(disabled)
        self.rules: tuple[CommandRule, ...] = tuple(rule for rule in rules if rule.id not in off)
        self.strict = strict
        options = re2.Options()
        options.max_mem = _SET_MEMORY
        self._set = re2.Set.MatchSet(options)  # patterns match from the start
        self._compiled: list[_Compiled] = []
        self._raw: list[tuple[CommandRule, re2._Regexp[str]]] = []
        for rule in self.rules:
            if rule.raw:
                self._raw.append((rule, _compile(rule, "pattern", rule.pattern)))
                continue
            _compile(rule, "pattern", rule.pattern)  # a precise error for a bad pattern
            unless = _compile(rule, "unless", rule.unless) if rule.unless else None
            after = _compile(rule, "after", rule.after) if rule.after else None
            self._compiled.append(_Compiled(rule, unless, after))
            try:
                self._set.Add(rule.pattern)
            except re2.error as exc:
                raise ValueError(f"command rule {rule.id!r}: {exc}") from exc
        self._empty = not self._compiled
        if not self._empty:
            self._set.Compile()

    def check(self, command: str) -> Blocked | None:
        """The first rule ``command`` breaks, or None when it may run."""
        parsed = parse(command)
        found = self._commands(parsed)
        if found is None and parsed.pipelines:
            found = self._pipelines(parsed)
        if found is None:
            found = self._raw_rules(parsed.text)
        if found is None and self.strict and not parsed.complete:
            found = Blocked(UNPARSEABLE, parsed.text)
        return found

    def _hits(self, text: str) -> list[int]:
        if self._empty:
            return []
        # The stubs say bool; RE2::Set gives the indexes of the patterns that match.
        matches = cast("list[int] | None", self._set.Match(text))
        return sorted(matches) if matches else []

    def _commands(self, parsed: ParsedCommand) -> Blocked | None:
        for command in parsed.commands:
            for index in self._hits(command.text):
                compiled = self._compiled[index]
                if compiled.after is not None:
                    continue
                if compiled.unless is not None and compiled.unless.search(command.text):
                    continue
                return Blocked(compiled.rule, command.text)
        return None

    def _pipelines(self, parsed: ParsedCommand) -> Blocked | None:
        for stages in parsed.pipelines:
            # Per pipeline rule, the first stage its ``after`` matches (computed once: a
            # long pipeline costs one pass per rule, not one per stage).
            first: dict[int, int] = {}
            for position in range(1, len(stages)):
                found = self._stage(stages, position, first)
                if found is not None:
                    return found
        return None

    def _stage(
        self, stages: tuple[SimpleCommand, ...], position: int, first: dict[int, int]
    ) -> Blocked | None:
        text = stages[position].text
        for index in self._hits(text):
            compiled = self._compiled[index]
            after = compiled.after
            if after is None:
                continue
            if compiled.unless is not None and compiled.unless.search(text):
                continue
            if index not in first:
                first[index] = next(
                    (i for i, stage in enumerate(stages) if after.match(stage.text)), len(stages)
                )
            if first[index] < position:
                pipeline = " | ".join(stage.text for stage in stages[: position + 1])
                return Blocked(compiled.rule, pipeline)
        return None

    def _raw_rules(self, text: str) -> Blocked | None:
        for rule, regex in self._raw:
            if regex.search(text):
                return Blocked(rule, text)
        return None
