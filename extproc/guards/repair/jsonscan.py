"""Where a JSON object or array ends, found incrementally and in linear time.

:class:`JsonEnd` is fed a growing text and tells, as early as the text
allows, whether the value that starts at ``start`` is complete (and where it
ends) or cannot be JSON (and where that became clear). It tracks brackets and
strings only, plus a few cheap checks that rule prose out quickly:

* an object's first token must be a string or ``}`` (``{x}``, ``{1, 2}`` fail);
* a top-level array's first token must be an object or ``]`` (``[link](url)``
  fails at once: arrays of tool calls are arrays of objects);
* outside strings only JSON's own characters may appear;
* strings may not hold raw control characters (strict JSON), so a stray
  quote in prose fails at the end of its line.

Passing these checks does not make the text JSON: callers decode the
finished span strictly. The scan keeps its position, so feeding more text
continues where it stopped; every character is looked at once.
"""

from __future__ import annotations

import re
from enum import Enum

#: Inside a string: the characters that end a run of plain string content.
_STRING_STOP = re.compile(r'["\\\x00-\x1f]')
#: Outside strings: brackets, quotes and anything JSON does not allow there.
_OUTSIDE_STOP = re.compile(r"[^ \t\r\n:,\-+.0-9eEtrufalsn]")
_SPACE = re.compile(r"[ \t\r\n]*")


class Scan(Enum):
    MORE = "more"
    DONE = "done"
    BAD = "bad"


class JsonEnd:
    """The end of the JSON object/array at ``start`` (``text[start]`` is ``{`` or ``[``)."""

    __slots__ = ("_escape", "_expect", "_in_string", "_stack", "pos")

    def __init__(self, start: int) -> None:
        #: Where the scan stands: the end when DONE, the offending char when BAD.
        self.pos = start
        self._stack: list[str] = []
        self._in_string = False
        self._escape = False
        #: Characters allowed as the next token (after ``{`` / a top-level ``[``).
        self._expect: str | None = None

    def advance(self, text: str, end: int) -> Scan:
        """Scan ``text[self.pos:end]``; DONE/BAD leave the answer in :attr:`pos`."""
        pos, stack = self.pos, self._stack
        while pos < end:
            if self._in_string:
                if self._escape:
                    self._escape = False
                    pos += 1
                    continue
                found = _STRING_STOP.search(text, pos, end)
                if found is None:
                    pos = end
                    break
                pos = found.start()
                char = text[pos]
                if char == '"':
                    self._in_string = False
                elif char == "\\":
                    self._escape = True
                else:
                    self.pos = pos
                    return Scan.BAD
                pos += 1
                continue
            if self._expect is not None:
                space = _SPACE.match(text, pos, end)
                pos = space.end() if space else pos
                if pos >= end:
                    break
                if text[pos] not in self._expect:
                    self.pos = pos
                    return Scan.BAD
                self._expect = None
            found = _OUTSIDE_STOP.search(text, pos, end)
            if found is None:
                pos = end
                break
            pos = found.start()
            char = text[pos]
            if char == '"':
                self._in_string = True
            elif char in "{[":
                stack.append(char)
                if char == "{":
                    self._expect = '"}'
                elif len(stack) == 1:
                    self._expect = "{]"
            elif char in "}]":
                if not stack or stack[-1] != ("{" if char == "}" else "["):
                    self.pos = pos
                    return Scan.BAD
                stack.pop()
                if not stack:
                    self.pos = pos + 1
                    return Scan.DONE
            else:
                self.pos = pos
                return Scan.BAD
            pos += 1
        self.pos = pos
        return Scan.MORE
