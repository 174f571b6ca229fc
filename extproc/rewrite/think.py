"""Splitting ``<think>...</think>`` reasoning out of a model's plain text.

Open models often write their reasoning into the answer text between
``<think>`` and ``</think>`` (or ``<thinking>`` and ``</thinking>``) tags.
:class:`ThinkSplitter` turns such a streamed text into visible text and
reasoning segments; :func:`split_think` does it for a whole text.

* Tags match exactly and case-sensitively; a block opened by ``<think>`` is
  closed by ``</think>`` only (and ``<thinking>`` by ``</thinking>``), and a
  tag inside a block is reasoning text. Blocks may come anywhere, any number.
* Whitespace right after a closing tag is dropped (models put ``"\\n\\n"``
  there), even when it comes in later deltas.
* A tag split across deltas is still recognized: the end of a delta that may
  begin a tag is held (at most ``len("</thinking>") - 1`` characters), and
  released unchanged as soon as it turns out not to be one.
* ``opened=True`` starts inside a block that either closing tag ends (chat
  templates that put ``<think>`` into the prompt, so the answer starts with
  the reasoning).
* At :meth:`~ThinkSplitter.flush`, a block that was never closed is
  reasoning, and a held false tag start is released as what it is.

The concatenated output of feeding any split of a text and flushing is the
same as feeding it whole.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Segment", "SegmentKind", "ThinkSplitter", "split_think"]

SegmentKind = Literal["text", "reasoning"]
Segment = tuple[SegmentKind, str]

_OPEN: tuple[str, ...] = ("<think>", "<thinking>")
_CLOSE: dict[str, tuple[str, ...]] = {"<think>": ("</think>",), "<thinking>": ("</thinking>",)}
_ANY_CLOSE: tuple[str, ...] = ("</think>", "</thinking>")
_LONGEST = max(len(tag) for tag in (*_OPEN, *_ANY_CLOSE))


def _earliest(text: str, start: int, tags: tuple[str, ...]) -> tuple[int, str]:
    """The first of ``tags`` in ``text[start:]`` and where it is; ``(-1, "")`` if none."""
    best, found = -1, ""
    for tag in tags:
        index = text.find(tag, start)
        if index >= 0 and (best < 0 or index < best):
            best, found = index, tag
    return best, found


def _hold_from(text: str, start: int, tags: tuple[str, ...]) -> int:
    """Where an end of ``text[start:]`` that may begin one of ``tags`` starts (or ``len(text)``).

    Every tag has its only ``<`` first, so only the last ``<`` can start one.
    """
    index = text.rfind("<", max(start, len(text) - _LONGEST + 1))
    if index >= 0:
        rest = text[index:]
        if any(len(rest) < len(tag) and tag.startswith(rest) for tag in tags):
            return index
    return len(text)


def _add(segments: list[Segment], kind: SegmentKind, text: str) -> None:
    if not text:
        return
    if segments and segments[-1][0] == kind:
        segments[-1] = (kind, segments[-1][1] + text)
    else:
        segments.append((kind, text))


class ThinkSplitter:
    """Splits one streamed text into text and reasoning segments (module docstring)."""

    __slots__ = ("_held", "_opened", "_reasoning", "_strip", "_tags")

    def __init__(self, *, opened: bool = False) -> None:
        self._opened = opened
        self._reset()

    def _reset(self) -> None:
        self._reasoning = self._opened  # inside a block
        self._tags = _ANY_CLOSE if self._opened else _OPEN  # what ends the current mode
        self._held = ""  # may be the start of one of the tags
        self._strip = False  # right after a closing tag: drop whitespace

    @property
    def held(self) -> int:
        """Characters held back (a possible tag start)."""
        return len(self._held)

    @property
    def reasoning(self) -> bool:
        """True inside a reasoning block."""
        return self._reasoning

    def feed(self, delta: str) -> list[Segment]:
        """The segments that can go out now, adjacent ones of a kind merged."""
        segments: list[Segment] = []
        if not delta:
            return segments
        text = self._held + delta if self._held else delta
        size = len(text)
        pos = 0
        while True:
            if self._strip:
                while pos < size and text[pos].isspace():
                    pos += 1
                if pos == size:
                    self._held = ""
                    return segments
                self._strip = False
            index, tag = _earliest(text, pos, self._tags)
            kind: SegmentKind = "reasoning" if self._reasoning else "text"
            if index < 0:
                cut = _hold_from(text, pos, self._tags)
                _add(segments, kind, text[pos:cut])
                self._held = text[cut:]
                return segments
            _add(segments, kind, text[pos:index])
            pos = index + len(tag)
            if self._reasoning:
                self._reasoning, self._tags, self._strip = False, _OPEN, True
            else:
                self._reasoning, self._tags = True, _CLOSE[tag]

    def flush(self) -> list[Segment]:
        """What is held, as what it is; the splitter is then ready for a new text."""
        segments: list[Segment] = []
        _add(segments, "reasoning" if self._reasoning else "text", self._held)
        self._reset()
        return segments


def split_think(text: str, *, opened: bool = False) -> tuple[str, str]:
    """``(visible, reasoning)`` of a whole text; the reasoning of several blocks is joined."""
    splitter = ThinkSplitter(opened=opened)
    visible: list[str] = []
    reasoning: list[str] = []
    for kind, part in (*splitter.feed(text), *splitter.flush()):
        (reasoning if kind == "reasoning" else visible).append(part)
    return "".join(visible), "".join(reasoning)
