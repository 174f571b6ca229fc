"""Pure text-rewriting engines for answer filters.

:class:`TextRewriter` (whole texts) and :class:`StreamRewriter` (streamed
texts) apply configured replace/prepend/append rules; :class:`ThinkSplitter`
and :func:`split_think` separate ``<think>`` reasoning from visible text.
"""

from __future__ import annotations

from extproc.rewrite.rules import Action, RuleError, TextRewriter, TextRule
from extproc.rewrite.stream import StreamRewriter
from extproc.rewrite.think import Segment, SegmentKind, ThinkSplitter, split_think

__all__ = [
    "Action",
    "RuleError",
    "Segment",
    "SegmentKind",
    "StreamRewriter",
    "TextRewriter",
    "TextRule",
    "ThinkSplitter",
    "split_think",
]
