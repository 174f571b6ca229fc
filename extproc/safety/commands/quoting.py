"""Quoting normalised words back into command text that reads the same again.

A :class:`~extproc.safety.commands.normalize.SimpleCommand`'s ``text`` is its
argv joined with single spaces. An argument that the lexer would otherwise
read differently (a blank, a quote, a backslash, ``$(``, an operator
character, a leading ``#``, a brace list, a reserved word or ``NAME=value`` in
the program position) is single-quoted, so that normalising the text again gives the same
argv. Everything else is left bare: ``rm -rf ~``, ``git push --force``,
``> /dev/sda``. Rules can therefore treat a space as the separator between
arguments (a quoted argument may itself hold spaces).
"""

from __future__ import annotations

from collections.abc import Iterable

from extproc.safety.commands.braces import has_braces

__all__ = ["RESERVED", "is_assignment", "quote", "quote_program", "render"]

#: Reserved words and grouping tokens the normaliser drops from the program position.
RESERVED = frozenset(
    {"!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "esac"}
)
_UNSAFE = frozenset(" \t\n;&|()<>\\'\"`")
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME = _NAME_START | frozenset("0123456789")


def is_assignment(text: str) -> bool:
    """``NAME=value`` or ``NAME+=value``: a variable assignment in the program position."""
    equals = text.find("=")
    if equals <= 0 or text[0] not in _NAME_START:
        return False
    name = text[:equals]
    if name.endswith("+"):
        name = name[:-1]
    return all(char in _NAME for char in name)


def quote(text: str) -> str:
    """``text`` as one word of command text: bare when safe, else single-quoted."""
    if (
        text
        and text[0] != "#"
        and _UNSAFE.isdisjoint(text)
        and "${" not in text
        and not has_braces(text)
    ):
        return text
    return _single_quoted(text)


def _single_quoted(text: str) -> str:
    # A quote inside is closed, double-quoted and reopened ('"'"'): no backslash, so the
    # Windows reading of the word (backslashes literal) stays the same.
    return "'" + text.replace("'", "'\"'\"'") + "'"


def quote_program(text: str) -> str:
    """The program name: also quoted when it would read as a reserved word or assignment."""
    if text in RESERVED or is_assignment(text):
        return _single_quoted(text)
    return quote(text)


def render(words: Iterable[str], redirects: Iterable[tuple[str, str | None]]) -> str:
    """Command text for ``words`` followed by redirections (operator, target)."""
    parts: list[str] = []
    for index, word in enumerate(words):
        parts.append(quote_program(word) if index == 0 else quote(word))
    for op, target in redirects:
        parts.append(op)
        if target is not None:
            parts.append(quote(target))
    return " ".join(parts)
