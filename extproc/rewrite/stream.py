"""Rewriting a streamed text as it flows, holding back as little as possible.

One :class:`StreamRewriter` per streamed text (an answer's text). Each
:meth:`~StreamRewriter.feed` returns what can go to the client now;
:meth:`~StreamRewriter.flush` the rest.

The invariant: for any split of a text into deltas, the concatenated output
of feeding them and then flushing equals :meth:`TextRewriter.apply` of the
whole text. It holds exactly for literal rules, and for a pattern rule as
long as no match its pattern makes in the text (or in a beginning of it) is
longer than its ``max_match``.

Each replace rule is one stage, fed what the stage before it emitted (as
:meth:`TextRewriter.apply` runs each rule over the output of the one before).
What a stage holds back, and why:

* a literal rule: the longest end of its text that begins ``find`` (usually
  nothing), so a ``find`` split across deltas is still replaced;
* a pattern rule: the last ``max_match`` characters (or from the start of a
  match that reaches into them); a match ending where the text so far ends
  may depend on the next character (``\\b``, ``$``), hence not one less.
  One character of already-emitted text is kept as context for ``\\b`` and
  ``^``, never re-emitted.

So a stage never holds more than its rule's ``max_match`` (``len(find) - 1``
for a literal), and each feed works on the new text and what is held, never
on the whole text so far. The prepend text goes out with the first non-empty
feed, even when all of that delta is held; the append text with the flush.
"""

from __future__ import annotations

from extproc.rewrite.rules import Replacement, TextRewriter

__all__ = ["StreamRewriter"]


class _Stage:
    """One replace rule over a stream."""

    __slots__ = ("_behind", "_held", "_rule")

    def __init__(self, rule: Replacement) -> None:
        self._rule = rule
        self._behind = ""  # emitted input text, context only
        self._held = ""  # input text not emitted yet

    @property
    def held(self) -> int:
        return len(self._held)

    def feed(self, delta: str) -> str:
        text = self._behind + self._held + delta if self._behind or self._held else delta
        start = len(self._behind)
        out, cut = self._rule.rewrite(text, start, final=False)
        context = self._rule.context
        if context:
            self._behind = text[max(0, cut - context) : cut]
        self._held = text[cut:]
        return out

    def finish(self, delta: str) -> str:
        text = self._behind + self._held + delta
        out, _ = self._rule.rewrite(text, len(self._behind), final=True)
        self._behind = ""
        self._held = ""
        return out


class StreamRewriter:
    """Rewrites one streamed text delta by delta (see the module docstring)."""

    __slots__ = ("_prefix", "_stages", "_started", "_suffix")

    def __init__(self, rewriter: TextRewriter) -> None:
        self._stages = tuple(_Stage(rule) for rule in rewriter.replacements)
        self._prefix = rewriter.prefix
        self._suffix = rewriter.suffix
        self._started = False

    @property
    def held(self) -> int:
        """Characters held back, over all stages (each at most its rule's ``max_match``)."""
        return sum(stage.held for stage in self._stages)

    def feed(self, delta: str) -> str:
        """Rewritten text that can go out now (possibly empty; ``delta`` itself if unchanged)."""
        if not delta:
            return ""
        out = delta
        for stage in self._stages:
            out = stage.feed(out)
            if not out:
                break
        if not self._started:
            self._started = True
            if self._prefix:
                return self._prefix + out
        return out

    def flush(self) -> str:
        """The rest of the text, rewritten, and the append text; ready for a new stream then."""
        out = ""
        for stage in self._stages:
            out = stage.finish(out)
        if not self._started:
            out = self._prefix + out
        self._started = False
        return out + self._suffix
