"""Loop detection for streamed model answers, cheap enough to be on by default.

A model stuck in a loop writes the SAME text verbatim again and again, with
nothing new: ``I'm sorry. I'm sorry. ...``, a paragraph ten times, one code
line fifty times. Structured formats repeat a *shape* instead (table rows with
the same separators, list items, log lines, similar test functions): their
lines differ in content, so they never form a long verbatim run. The detector
therefore looks for exact tandem repeats only -- a span ``text[x:y]`` with
``text[i] == text[i - p]`` for every ``i`` in ``[x + p, y)`` -- and raises an
alarm when the span is long enough to be degenerate (:class:`LoopConfig`):

* at least ``min_repeats`` periods back to back (``long_min_repeats`` once the
  period is ``long_period`` chars or more), and at least ``min_chars`` chars;
* inside a fenced code block (after an odd number of ```` ``` ````/``~~~``
  fence lines), ``code_min_repeats`` and ``code_min_chars``: code repeats lines
  legitimately, but a model writing one line fifty times is still caught;
* a period with fewer than ``min_distinct`` distinct letters or digits
  (``    }``, ``-----``, ``|   |``, ``0, 0, 0``, ``ha ha``) is "low content":
  it needs ``low_content_min_chars`` chars, twice that in code, four times
  that when the period spans lines (separators, ASCII art, blank lines);
* numbered-list markers at line starts (``12. ``, ``3) ``) compare equal
  whatever the number, so ``16. Honeydew`` / ``17. Honeydew`` ... is a loop
  (the number is not content: ``1. TODO`` / ``2. TODO`` is what is repeated);
  the digits read as ``#`` in :attr:`LoopFound.text`; offsets are unchanged;
* periods shorter than ``min_period`` are tracked at their smallest multiple of
  at least ``min_period`` chars (``ab`` as ``abababab``).

How it stays cheap (the text is processed once, in fixed steps of
``STEP_CHARS`` chars at absolute offsets, so any chunking gives the same
result):

* candidate periods come from anchored k-grams: the ``KEY_CHARS`` chars at
  each word start are looked up in a dict of their last offset; the distance
  is a candidate. A step with no word start (one long run of word chars)
  probes its last ``KEY_CHARS`` chars with one C-level ``rfind`` instead;
* each candidate (at most ``MAX_CANDIDATES``) keeps the start of its current
  run; a step extends it with one slice comparison (C ``memcmp``), a mismatch
  costs a binary search over the step. A candidate whose run breaks is
  dropped (a loop that resumes is found again);
* the text lives in a window of :attr:`LoopDetector.window` chars (enough to
  measure the longest run a threshold needs), the k-gram dict is pruned to
  the last ``max_period`` chars. Memory per stream is bounded, the work per
  char is constant: nothing is re-joined or re-scanned.

A detection is reported once, by the :meth:`LoopDetector.feed` call whose text
completes the step where the thresholds are first met: at most
``STEP_CHARS`` (plus a held list marker) after enough repetition was written.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = [
    "KEY_CHARS",
    "MAX_CANDIDATES",
    "STEP_CHARS",
    "LoopConfig",
    "LoopDetector",
    "LoopFound",
    "cut_loop",
    "find_loop",
]

STEP_CHARS = 32
"""The text is examined in steps of this many chars, at absolute offsets."""
KEY_CHARS = 16
"""Length of the anchored k-grams that propose candidate periods."""
MAX_CANDIDATES = 16
"""Candidate periods tracked at once (the shortest run is evicted first)."""
_PIECE = 1024
"""A long delta is taken this many chars at a time (bounds the buffer)."""
_TRIM = 1024
"""Dead text tolerated before the window is cut (amortizes the copy)."""
_TEXT_CHARS = 200
"""``LoopFound.text`` holds at most this much of the period."""

_ANCHOR = re.compile(r"(?<!\w)\w")
_FENCE = re.compile(r"\n[ \t]{0,12}(?:```|~~~)")
_FENCE_FIRST_LINE = re.compile(r"[ \t]{0,12}(?:```|~~~)")
_FENCE_REACH = 16  # the longest _FENCE match
# A numbered-list marker: its digits compare equal whatever the number.
_MARKER = re.compile(r"(?m)^[ \t]{0,8}(\d{1,6})(?=[.)][ \t])")
# The end of a line that may still become a marker: held back until decided.
_OPEN_MARKER = re.compile(r"[ \t]{0,8}(?:\d{1,6}[.)]?)?")
_OPEN_MARKER_CHARS = 15


@dataclass(frozen=True)
class LoopConfig:
    """When a verbatim repetition counts as a loop (see the module docstring).

    The defaults aim at no false alarm on structured answers (code, tables,
    lists, logs, refrains) while stopping a real loop after a few hundred chars
    of prose or about a thousand of code. On the SmolLM2 corpus
    (tests/guards/corpus/loops/real) the loops had periods of 9 to ~230 chars
    and every one is caught with these values; legitimate verbatim repetition
    (a refrain, a rhetorical "We will build the bridge because", a sentence a
    model says twice) stays under 3 back-to-back copies or under ~200 chars.
    """

    min_period: int = 8
    """Shortest period, in chars. A shorter cycle (``ab``, ``ha``) is tracked at
    its multiple of at least 8 chars; such units rarely carry content anyway."""
    max_period: int = 2000
    """Longest period looked for: a few paragraphs. The window (memory per
    stream) grows with it: about ``code_min_repeats * max_period`` chars."""
    min_repeats: int = 4
    """Periods back to back before an alarm, for periods under ``long_period``:
    a refrain or a repeated exclamation stays at 2-3."""
    long_period: int = 200
    """From this many chars a period is long (a paragraph): ``long_min_repeats``."""
    long_min_repeats: int = 3
    """Periods back to back before an alarm, for long periods: a model may write
    a paragraph twice (re-quoting its previous block), three times never."""
    min_chars: int = 400
    """Total repeated span (all periods) before an alarm: ~100 tokens, the cost
    of a late alarm; ``I'm sorry. `` is then on its 37th copy."""
    code_min_repeats: int = 6
    """``min_repeats`` and ``long_min_repeats`` inside a fenced code block: a
    mock-up may hold four or five identical cards or blocks."""
    code_min_chars: int = 800
    """``min_chars`` inside a fenced code block: a log excerpt with 15 identical
    40-char lines passes, one ``print`` line written 50 times does not."""
    min_distinct: int = 3
    """Distinct letters/digits a period needs to count as content: ``    }``,
    ``-----``, ``|   |``, ``0, 0, ``, ``ha ha`` have fewer."""
    low_content_min_chars: int = 1000
    """``min_chars`` for a low-content period, twice that in code, four times
    that when the period spans lines: an endless ``|   |   |`` table header line
    (seen from SmolLM2) is caught, separators and ASCII-art boxes are not."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_period <= self.max_period:
            raise ValueError("need 1 <= min_period <= max_period")
        if min(self.min_repeats, self.long_min_repeats, self.code_min_repeats) < 2:
            raise ValueError("a loop needs at least 2 repeats")
        if min(self.min_chars, self.code_min_chars, self.low_content_min_chars) < 1:
            raise ValueError("the *_chars thresholds must be positive")
        if self.long_period < 1 or self.min_distinct < 0:
            raise ValueError("long_period must be positive, min_distinct not negative")

    @property
    def min_alarm_chars(self) -> int:
        """No loop is found in less text than this (the smallest ``needed_span``)."""
        return min(self.min_chars, self.code_min_chars, self.low_content_min_chars)

    def needed_span(
        self, period: int, in_code: bool = False, content: bool = True, lines: bool = False
    ) -> int:
        """Chars of repetition (all periods) before an alarm, for this period.

        ``content``: the period has ``min_distinct`` letters/digits; ``lines``:
        it holds a line break (matters for low-content periods only).
        """
        if in_code:
            span = max(self.code_min_chars, self.code_min_repeats * period)
        elif period >= self.long_period:
            span = max(self.min_chars, self.long_min_repeats * period)
        else:
            span = max(self.min_chars, self.min_repeats * period)
        if not content:
            low = self.low_content_min_chars * (2 if in_code else 1) * (4 if lines else 1)
            span = max(span, low)
        return span


@dataclass(frozen=True)
class LoopFound:
    """A detected loop: ``text[start:end]`` repeats one period of ``period`` chars."""

    period: int
    """Length of the repeated unit, in chars."""
    repeats: int
    """Whole periods in the repetition when it was detected."""
    start: int
    """Offset in the answer where the repetition (its first period) starts."""
    text: str
    """The first period (at most 200 chars of it, for messages). It starts where
    the verbatim run starts, which may be mid-sentence (``. I'm sorry``)."""
    end: int
    """Offset just past the verified repetition: where the loop was detected."""


@functools.lru_cache(maxsize=64)
def _limits(config: LoopConfig) -> tuple[int, int, int]:
    """A detector's bounds for ``config``: longest run, window, k-grams kept (computed once)."""
    # The longest run a threshold needs (the span less one period) ...
    longest = max(
        config.needed_span(period, code, content, lines) - period
        for period in (config.min_period, config.long_period - 1, config.max_period)
        for code in (False, True)
        for content in (False, True)
        for lines in (False, True)
    )
    max_run = max(longest, config.max_period) + STEP_CHARS
    # ... and the text it is compared with, one period back.
    window = max_run + config.max_period + KEY_CHARS
    return max_run, window, config.max_period + 4 * STEP_CHARS


class LoopDetector:
    """Feed an answer's text deltas; :meth:`feed` returns the loop once it is found.

    One detector per streamed text channel. After a detection, further deltas
    are only counted. :meth:`finish` examines the last partial step (the end
    of the answer); ``feed`` after ``finish`` is an error.
    """

    __slots__ = (
        "_base",
        "_buf",
        "_config",
        "_consumed",
        "_done",
        "_fences",
        "_finished",
        "_found",
        "_held",
        "_line_start",
        "_max_run",
        "_runs",
        "_seen",
        "_seen_limit",
        "_units",
        "_window",
    )

    def __init__(self, config: LoopConfig = LoopConfig()) -> None:
        self._config = config
        self._max_run, self._window, self._seen_limit = _limits(config)
        self._buf = ""  # text[_base:], list markers normalized
        self._base = 0
        self._held = ""  # the end of the last line, while it may become a list marker
        self._line_start = True  # the text moved to _buf so far ends a line
        self._done = 0  # text[:_done] is examined (a multiple of STEP_CHARS)
        self._consumed = 0
        self._fences = 0  # fence lines in text[:_done]
        self._seen: dict[str, int] = {}  # anchored k-gram -> its last offset
        self._runs: dict[int, int] = {}  # period -> start of its run (text[i] == text[i-p])
        # period -> (run start, has content, spans lines, holds a fence), per run
        self._units: dict[int, tuple[int, bool, bool, bool]] = {}
        self._found: LoopFound | None = None
        self._finished = False

    @property
    def consumed(self) -> int:
        """Chars fed so far (all deltas, also those after a detection)."""
        return self._consumed

    @property
    def found(self) -> LoopFound | None:
        """The detection, once there is one."""
        return self._found

    @property
    def window(self) -> int:
        """Chars of history the detector needs (it holds at most :attr:`max_buffer`)."""
        return self._window

    @property
    def max_buffer(self) -> int:
        """Upper bound of the buffered chars in :meth:`footprint`."""
        return self._window + _TRIM + STEP_CHARS + _OPEN_MARKER_CHARS + _PIECE

    @property
    def max_keys(self) -> int:
        """Upper bound of the k-grams in :meth:`footprint`."""
        return self._seen_limit + STEP_CHARS

    def footprint(self) -> tuple[int, int, int]:
        """What the detector holds now: (buffered chars, k-grams, candidate periods)."""
        return len(self._buf) + len(self._held), len(self._seen), len(self._runs)

    def feed(self, delta: str) -> LoopFound | None:
        """Examine one more delta; the loop on the call where it is first found, else None."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self._consumed += len(delta)
        if self._found is not None or not delta:
            return None
        if len(delta) <= _PIECE:
            return self._take(delta)
        for at in range(0, len(delta), _PIECE):
            found = self._take(delta[at : at + _PIECE])
            if found is not None:
                return found
        return None

    def finish(self) -> LoopFound | None:
        """The answer ended: examine its last partial step; the loop if found there."""
        if self._finished:
            return None
        self._finished = True
        if self._found is not None:
            return None
        if self._held:
            held = self._normalize(self._held)
            self._held = ""
            self._buf += held
            self._line_start = held[-1] == "\n"
            found = self._advance()
            if found is not None:
                return found
        end = self._base + len(self._buf)
        if end > self._done:
            found = self._step(self._done, end)
            self._done = end
            if found is not None:
                self._found = found
                return found
        return None

    def _take(self, piece: str) -> LoopFound | None:
        """Move ``piece`` (after any held text) to the buffer, holding an undecided marker."""
        if self._held:
            piece = self._held + piece
            self._held = ""
        line = piece.rfind("\n") + 1
        if line or self._line_start:
            if len(piece) - line <= _OPEN_MARKER_CHARS and _OPEN_MARKER.fullmatch(piece, line):
                self._held = piece[line:]
                piece = piece[:line]
                if not piece:
                    return None
            piece = self._normalize(piece)
        buf = self._buf
        self._buf = ""
        buf += piece  # in place: the local holds the only reference
        self._buf = buf
        self._line_start = piece[-1] == "\n"
        if self._done + STEP_CHARS <= self._base + len(buf):
            return self._advance()
        return None

    def _normalize(self, piece: str) -> str:
        """``piece`` with its list markers' digits as ``#`` (it starts a line if _line_start)."""
        parts: list[str] = []
        last = 0
        for match in _MARKER.finditer(piece):
            if match.start() == 0 and not self._line_start:
                continue
            parts.append(piece[last : match.start(1)])
            parts.append("#" * (match.end(1) - match.start(1)))
            last = match.end(1)
        if not parts:
            return piece
        parts.append(piece[last:])
        return "".join(parts)

    def _advance(self) -> LoopFound | None:
        """Examine every complete step in the buffer, then drop text out of the window."""
        end = self._base + len(self._buf)
        while self._done + STEP_CHARS <= end:
            found = self._step(self._done, self._done + STEP_CHARS)
            self._done += STEP_CHARS
            if found is not None:
                self._found = found
                self._buf = self._held = ""
                self._seen.clear()
                self._runs.clear()
                self._units.clear()
                return found
            if len(self._seen) > self._seen_limit:
                oldest = self._done - self._config.max_period
                self._seen = {key: at for key, at in self._seen.items() if at >= oldest}
        dead = self._done - self._window - self._base
        if dead >= _TRIM:
            self._buf = self._buf[dead:]
            self._base += dead
        return None

    def _step(self, a: int, b: int) -> LoopFound | None:
        """Examine ``text[a:b]`` (all before is done); the loop if the thresholds are met."""
        config = self._config
        buf = self._buf
        base = self._base
        lo, hi = a - base, b - base

        # Fence lines ending in (a, b]: inside a code block the thresholds are stricter.
        scan = max(lo - 2, 0)
        if buf.find("```", scan, hi) >= 0 or buf.find("~~~", scan, hi) >= 0:
            for match in _FENCE.finditer(buf, max(lo - _FENCE_REACH, 0), hi):
                if match.end() > lo:
                    self._fences += 1
            if a == 0 and _FENCE_FIRST_LINE.match(buf, 0, hi) is not None:
                self._fences += 1

        # Extend the tracked runs over the step.
        runs = self._runs
        if runs:
            segment = buf[lo:hi]
            for period in list(runs):
                if buf[lo - period : hi - period] == segment:
                    continue
                kept = _matching_suffix(buf, lo, hi, period)
                if kept < KEY_CHARS:
                    del runs[period]
                    self._units.pop(period, None)
                else:
                    runs[period] = b - kept

        # New candidates: the anchored k-grams completed in this step.
        seen = self._seen
        min_period, max_period = config.min_period, config.max_period
        anchored = False
        for match in _ANCHOR.finditer(buf, max(lo - KEY_CHARS + 1, 0), hi - KEY_CHARS + 1):
            anchored = True
            at = match.start()
            key = buf[at : at + KEY_CHARS]
            previous = seen.get(key)
            seen[key] = at + base
            if previous is not None:
                self._candidate(at + base - previous, at + base, b, min_period, max_period)
        if not anchored and hi >= KEY_CHARS:
            # One long run of word chars (or none): probe the last k-gram directly.
            probe = buf[hi - KEY_CHARS : hi]
            found_at = buf.rfind(probe, max(hi - KEY_CHARS - max_period, 0), hi - 1)
            if found_at >= 0:
                at = b - KEY_CHARS
                self._candidate(at - found_at - base, at, b, min_period, max_period)

        return self._check(b) if runs else None

    def _candidate(self, distance: int, at: int, b: int, min_period: int, max_period: int) -> None:
        """``text[at : at + KEY_CHARS]`` occurred ``distance`` chars before: track the period?"""
        if distance < min_period:
            distance *= -(-min_period // distance)
        runs = self._runs
        if distance > max_period or distance in runs or at < distance:
            return
        buf, base = self._buf, self._base
        # The match must reach the end of the step: a run in progress.
        if buf[at - base : b - base] != buf[at - distance - base : b - distance - base]:
            return
        start = _run_start(buf, base, at, b, distance, max(b - self._max_run, distance))
        if len(runs) >= MAX_CANDIDATES:
            shortest = max(runs, key=runs.__getitem__)
            if runs[shortest] <= start:
                return
            del runs[shortest]
            self._units.pop(shortest, None)
        runs[distance] = start

    def _check(self, b: int) -> LoopFound | None:
        """The loop with the shortest period among the runs over their thresholds, if any."""
        config = self._config
        best: LoopFound | None = None
        for period, start in self._runs.items():
            span = b - start + period
            if span < config.needed_span(period) or (best is not None and best.period < period):
                continue
            info = self._units.get(period)
            if info is None or info[0] != start:
                unit = self._unit(period, start, b)
                content = sum(1 for char in set(unit) if char.isalnum()) >= config.min_distinct
                fence = "```" in unit or "~~~" in unit
                info = (start, content, "\n" in unit, fence)
                self._units[period] = info
            in_code = bool(self._fences & 1) and not info[3]
            if span >= config.needed_span(period, in_code, info[1], info[2]):
                text = self._unit(period, start, b)[:_TEXT_CHARS]
                best = LoopFound(period, span // period, start - period, text, b)
        return best

    def _unit(self, period: int, start: int, b: int) -> str:
        """The first period of the run (read from the last whole period in phase with it)."""
        first = start - period
        last = first + ((b - first) // period - 1) * period
        return self._buf[last - self._base : last + period - self._base]


def _matching_suffix(buf: str, lo: int, hi: int, period: int) -> int:
    """The longest ``n`` with ``buf[hi - n : hi] == buf[hi - n - period : hi - period]``,
    knowing that ``n = hi - lo`` fails."""
    good, bad = 0, hi - lo
    while bad - good > 1:
        middle = (good + bad) // 2
        if buf[hi - middle : hi] == buf[hi - middle - period : hi - period]:
            good = middle
        else:
            bad = middle
    return good


def _run_start(buf: str, base: int, at: int, b: int, period: int, limit: int) -> int:
    """The smallest offset ``s >= limit`` with ``text[s:b] == text[s - period : b - period]``,
    knowing that ``s = at`` holds (galloping back, then a binary search)."""
    end = b - base
    good = b - at  # a matching suffix length
    most = b - limit
    if good >= most:
        return limit
    length = good
    while True:
        length = min(length * 2, most)
        if buf[end - length : end] != buf[end - length - period : end - period]:
            bad = length
            break
        good = length
        if length == most:
            return limit
    while bad - good > 1:
        middle = (good + bad) // 2
        if buf[end - middle : end] == buf[end - middle - period : end - period]:
            good = middle
        else:
            bad = middle
    return b - good


def find_loop(text: str, config: LoopConfig = LoopConfig()) -> LoopFound | None:
    """The first loop in a whole answer (what feeding it in any chunks, then finishing, gives)."""
    detector = LoopDetector(config)
    return detector.feed(text) or detector.finish()


def cut_loop(text: str, found: LoopFound) -> str:
    """``text`` with the repetition cut to its first occurrence (and nothing after it)."""
    return text[: found.start + found.period]
