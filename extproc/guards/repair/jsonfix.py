"""Strict and lenient JSON decoding, and the compact encoding every engine emits.

Strict means RFC 8259: Python's ``json`` module also accepts ``NaN`` and
``Infinity``, which no other JSON parser does, so they are rejected here.
Lenient decoding is :mod:`json_repair` (a pure-Python parser: about 2 µs a
byte, so callers bound what they hand it), with its surprises handled:

* several top-level values (``{"a":1} {"b":2}``) come back as a list, or
  sometimes as the last value alone: callers that need one object check for
  a second value themselves (:func:`second_value_follows`);
* deep nesting raises :class:`RecursionError` (caught here);
* non-finite numbers come back as ``float('nan')``/``inf``: :func:`dumps`
  refuses them.
"""

from __future__ import annotations

import json
from typing import Any

import json_repair

#: json_repair is slow (pure Python); texts above this are not handed to it.
LENIENT_LIMIT = 256 * 1024


class NotJson(ValueError):
    """The text is not JSON (strict), or could not be repaired (lenient)."""


class NonFinite(NotJson):
    """``NaN``, ``Infinity`` or ``-Infinity``: Python reads them, JSON has none."""


class TooDeep(NotJson):
    """Nesting deeper than the decoder's recursion allows."""


def _no_constant(name: str) -> Any:
    raise NonFinite(f"non-finite number {name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def loads(text: str) -> Any:
    """Strict JSON (``NaN``/``Infinity`` rejected); :class:`NotJson` otherwise."""
    try:
        return _DECODER.decode(text)
    except NotJson:
        raise
    except RecursionError:
        raise TooDeep("nesting too deep") from None
    except ValueError as exc:
        raise NotJson(str(exc)) from None


def raw_decode(text: str, pos: int = 0) -> tuple[Any, int]:
    """One strict JSON value at ``text[pos:]`` (no leading whitespace): value, end."""
    try:
        return _DECODER.raw_decode(text, pos)
    except NotJson:
        raise
    except RecursionError:
        raise TooDeep("nesting too deep") from None
    except ValueError as exc:
        raise NotJson(str(exc)) from None


def loads_sequence(text: str) -> list[Any]:
    """Strict JSON values separated by whitespace and at most one ``,`` or ``;``.

    ``{...}\\n{...}`` (one call a line) and ``{...}; {...}`` (Llama) are how
    models write several calls. Raises :class:`NotJson` unless the whole text
    is such a sequence (of at least one value).
    """
    values: list[Any] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            break
        if values and text[pos] in ",;":
            pos += 1
            while pos < end and text[pos].isspace():
                pos += 1
        value, pos = raw_decode(text, pos)
        values.append(value)
    if not values:
        raise NotJson("no JSON value")
    return values


def _ends_with_value(text: str) -> bool:
    """Whether nothing but whitespace (or one ``,``) follows the first top-level value.

    json_repair silently ignores prose after a value (``{...} is what it
    sent``); this finds the value's end by brackets, with ``"`` and ``'``
    strings. A value that never closes (a truncated answer) counts as the end.
    """
    depth, quote, escape = 0, "", False
    for at, char in enumerate(text):
        if quote:
            if escape:
                escape = False
            elif char == "\\":
                escape = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth <= 0:
                return text[at + 1 :].strip() in ("", ",")
    return True


def lenient_loads(text: str, *, whole: bool = False, limit: int = LENIENT_LIMIT) -> Any:
    """``json_repair``'s reading of ``text``; :class:`NotJson` when it fails or is over ``limit``.

    ``whole``: refuse when text follows the (first) value, which json_repair
    would drop without a word.
    """
    if len(text) > limit:
        raise NotJson("too large to repair")
    if whole and not _ends_with_value(text):
        raise NotJson("text follows the JSON value")
    try:
        return json_repair.loads(text)
    except RecursionError:
        raise TooDeep("nesting too deep") from None
    except (ValueError, TypeError) as exc:
        raise NotJson(str(exc)) from None


def second_value_follows(text: str) -> bool:
    """Whether ``text`` starts with a complete strict JSON value followed by another one."""
    stripped = text.lstrip()
    try:
        _, end = raw_decode(stripped)
    except NotJson:
        return False
    rest = stripped[end:].lstrip()
    return rest[:1] in ("{", "[")


def dumps(value: Any) -> str:
    """Compact JSON (no spaces, UTF-8 kept); :class:`NotJson` for non-finite numbers."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except RecursionError:
        raise TooDeep("nesting too deep") from None
    except ValueError as exc:
        raise NonFinite(str(exc)) from None
