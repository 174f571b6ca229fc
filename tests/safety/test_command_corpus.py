"""The dangerous-command corpora: full recall with the right rule, no false positives.

``corpus/commands_dangerous.txt``: ``rule-id<TAB>command``, each must be blocked by that
rule. ``corpus/commands_benign.txt``: one command a line, none may be blocked. In both,
``json:`` introduces a JSON string (a multi-line command, escapes) or an argv list (as
Codex's ``shell`` tool sends it); lines starting with ``# `` are comments.
"""

from __future__ import annotations

import json
from pathlib import Path

from extproc.safety.commands import BUILTIN_RULES, CommandGuard, commands_in_tool_call

CORPUS = Path(__file__).parent / "corpus"
GUARD = CommandGuard(BUILTIN_RULES)


def _lines(name: str) -> list[str]:
    lines = (CORPUS / name).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("# ")]


def _commands(text: str) -> list[str]:
    if not text.startswith("json:"):
        return [text]
    value = json.loads(text[len("json:") :])
    if isinstance(value, list):
        return commands_in_tool_call("shell", {"command": value})
    assert isinstance(value, str)
    return [value]


def _blocked(text: str) -> list[str]:
    return [found.rule.id for c in _commands(text) if (found := GUARD.check(c)) is not None]


def test_dangerous_recall() -> None:
    entries = [line.split("\t", 1) for line in _lines("commands_dangerous.txt")]
    assert len(entries) >= 150
    misses = []
    for rule, text in entries:
        got = _blocked(text)
        if rule not in got:
            misses.append((rule, text, got))
    recall = 1 - len(misses) / len(entries)
    print(f"\ndangerous corpus: {len(entries)} commands, recall {recall:.1%}")
    assert not misses, misses


def test_every_rule_has_corpus_entries() -> None:
    covered = {line.split("\t", 1)[0] for line in _lines("commands_dangerous.txt")}
    assert {rule.id for rule in BUILTIN_RULES} <= covered


def test_benign_false_positives() -> None:
    entries = _lines("commands_benign.txt")
    assert len(entries) >= 200
    false_positives = [(text, _blocked(text)) for text in entries if _blocked(text)]
    print(f"\nbenign corpus: {len(entries)} commands, {len(false_positives)} false positives")
    assert not false_positives, false_positives
