"""Redacting a streamed text channel as it flows, holding back as little as possible.

One :class:`StreamRedactor` per channel (an answer's text, one tool call's
arguments). Each :meth:`~StreamRedactor.feed` returns what can go to the client
now; :meth:`~StreamRedactor.finish` the rest. Concatenated, the output is the
one-shot redaction of the whole text (the same placeholders), as long as no
hold had to be cut short.

What is held back, and why:

* the trailing token (the run after the last whitespace, or the last JSON
  escape ``\\n``/``\\t``/``\\r``): it may still grow into a secret;
* a finding that ends at the end of the buffer: it may still grow;
* a ``-----BEGIN ... PRIVATE KEY-----`` block with no END line yet, and a
  BEGIN line whose body has not arrived yet: the whole block is one secret.

A small lookbehind of already-emitted raw text (never re-emitted) gives the
scanner its context, so ``aws_secret_access_key = `` in one chunk and the value
in the next is still caught. Each feed scans the lookbehind, the held text and
the new text only; a growing token is appended without a scan, and an open
key block is only searched for its END line.

Every hold is bounded. Past ``max_token_hold``, a token is emitted (redacted)
except its last quarter; a secret longer than that is redacted whole and the
rest of it swallowed. Past ``max_block_hold``, a key block is replaced by one
placeholder and everything up to its END line is swallowed (fail closed).
"""

from __future__ import annotations

import re2

from extproc.safety.secrets.redactor import Redactor
from extproc.safety.secrets.rules import PRIVATE_KEY_END
from extproc.safety.secrets.scanner import Finding

__all__ = ["StreamRedactor"]

_ESCAPES = ("\\n", "\\t", "\\r")
# Before a value: an assignment or a quote (the value token is held, not emitted).
_ASSIGNMENT = frozenset("=:\"'")
# What a swallowed token is made of (every long token rule's alphabet).
_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_.~-"
_KEY_KIND = "private-key"
_BLOCK_TAIL = 128

_options = re2.Options()
_options.log_errors = False
_options.never_capture = True
# A BEGIN line at the end of the buffer whose body has not started yet (or a
# partial BEGIN line): it may still become a private key, so it is held.
_PENDING_BEGIN = re2.compile(
    r"-----BEGIN[ A-Z0-9]*(?:-{1,5}(?:(?:\s|\\[rn]){0,8}\\?[A-Za-z0-9+/=:-]{0,15})?)?\z",
    _options,
)
_END_LINE = re2.compile(PRIVATE_KEY_END, _options)

_NONE, _SWALLOW_TOKEN, _SWALLOW_BLOCK = 0, 1, 2


def _word_like(tail: str) -> bool:
    """ASCII letters, at most the first upper case, at most 16 (``Hello``, ``wor``)."""
    return (
        len(tail) <= 16
        and tail.isascii()
        and tail.isalpha()
        and (len(tail) == 1 or tail[1:].islower())
    )


def _token_start(text: str) -> int:
    """Index just past the last separator (whitespace, or a ``\\n``-style escape); 0 if none.

    Whitespace is Python's (``str.isspace``); no rule's secret contains any.
    """
    if not text or text[-1].isspace():
        start = len(text)
    else:
        start = len(text) - len(text.rsplit(None, 1)[-1])
    for escape in _ESCAPES:
        index = text.rfind(escape, start)
        if index >= 0:
            start = index + 2
    return start


class StreamRedactor:
    """Redacts one streamed text channel chunk by chunk (see the module docstring)."""

    def __init__(
        self,
        redactor: Redactor,
        *,
        max_token_hold: int = 1024,
        max_block_hold: int = 16384,
        lookbehind: int = 128,
    ) -> None:
        if max_token_hold < 16 or max_block_hold < max_token_hold or lookbehind < 0:
            raise ValueError("need max_block_hold >= max_token_hold >= 16 and lookbehind >= 0")
        self._scanner = redactor.scanner
        self._placeholders = redactor.placeholders
        self._max_token = max_token_hold
        self._max_block = max_block_hold
        self._lookbehind_size = lookbehind
        self._reset()

    def _reset(self) -> None:
        self._lookbehind = ""  # raw text already emitted: context, never re-emitted
        self._held = ""  # raw text not emitted yet
        self._held_is_token = True  # no separator in _held: nothing can be emitted
        self._block_open = False  # _held starts with a key block that has no END yet
        self._block_checked = 0  # _held length when its END was last looked for
        self._swallow = _NONE
        self._swallow_tail = ""
        self.redacted = 0  # secrets redacted so far (metrics)

    @property
    def held(self) -> int:
        """Characters received but not emitted yet."""
        return len(self._held)

    def feed(self, text: str) -> str:
        """Redacted text that can go out now (possibly empty)."""
        if self._swallow != _NONE:
            text = self._swallowing(text)
        if not text:
            return ""
        if self.pass_whole(text):
            return text
        if self._block_open:
            self._held += text
            region = self._held[max(0, self._block_checked - 8) :]
            if "-----END" not in region and len(self._held) <= self._max_block:
                self._block_checked = len(self._held)
                return ""
            return self._drain(final=False)
        if (
            self._held_is_token
            and len(self._held) + len(text) <= self._max_token
            and _token_start(self._held[-1:] + text) == 0
        ):
            self._held += text  # the token grows: nothing new can be emitted
            return ""
        self._held += text
        out = self._drain(final=False)
        return text if out == text else out  # the same object when nothing changed

    def pass_whole(self, text: str, *, final: bool = False) -> bool:
        """True when ``text`` may go out unchanged, as it is (it is then taken as sent).

        That is: nothing is held, no secret is in it (with the lookbehind as
        context), and its last token cannot still grow into one. One call can
        judge the text of several events at once. ``final``: nothing follows
        ``text`` (a whole answer), so only a secret inside it matters.
        """
        if self._held or self._block_open or self._swallow != _NONE:
            return False
        if final:
            off = len(self._lookbehind)
            if any(f.end > off for f in self._scanner.find(self._lookbehind + text)):
                return False
        elif not self._quiet(text):
            return False
        self._remember(text)
        return True

    def finish(self) -> str:
        """The rest of the text, redacted. The redactor is then ready for a new channel."""
        # Nothing held: nothing to emit (the lookbehind went out already).
        out = "" if self._swallow != _NONE or not self._held else self._drain(final=True)
        redacted = self.redacted
        self._reset()
        self.redacted = redacted
        return out

    # --- internals -----------------------------------------------------------

    def _quiet(self, text: str) -> bool:
        """``text`` may be emitted whole: no secret in it, none that may start at its end."""
        prefixes = self._scanner.hold_prefixes
        if prefixes is None or len(text) > self._max_token:
            return False
        start = _token_start(text)
        tail = text[start:]
        if tail:
            if not _word_like(tail):
                return False
            if tail in prefixes:
                return False
            before = (self._lookbehind + text[:start]).rstrip()
            if before[-1:] in _ASSIGNMENT or before[-6:].lower() == "bearer":
                return False  # a value may follow: hold it like any other token
        if "-----BEGIN"[: min(len(text), 10)] in text[-10:] or "-----BEGIN" in text:
            return False
        off = len(self._lookbehind)
        return not any(f.end > off for f in self._scanner.find(self._lookbehind + text))

    def _remember(self, text: str) -> None:
        """``text`` went out: keep the end of it as the lookbehind."""
        emitted = self._lookbehind + text
        self._lookbehind = emitted[max(0, len(emitted) - self._lookbehind_size) :]

    def _swallowing(self, text: str) -> str:
        """Drop the rest of a secret cut short by a bound; return what follows it."""
        if self._swallow == _SWALLOW_TOKEN:
            rest = text.lstrip(_TOKEN_CHARS)
            if rest:
                self._swallow = _NONE
            return rest
        combined = self._swallow_tail + text
        end = _END_LINE.search(combined)
        if end is None:
            self._swallow_tail = combined[-_BLOCK_TAIL:]
            return ""
        self._swallow = _NONE
        self._swallow_tail = ""
        return combined[end.end() :]

    def _drain(self, *, final: bool) -> str:
        buf = self._lookbehind + self._held
        off, size = len(self._lookbehind), len(buf)
        findings = self._scanner.find(buf)
        cut, block, key_finding = size, False, False
        if not final:
            cut = off + _token_start(self._held)
            pending = _PENDING_BEGIN.search(self._held) if "-----BEGIN" in self._held else None
            if pending is not None and off + pending.start() < cut:
                cut, block = off + pending.start(), True
            for finding in reversed(findings):
                if finding.start < cut and (finding.end > cut or finding.end == size):
                    cut = finding.start
                    block = key_finding = finding.kind == _KEY_KIND
                elif finding.end <= cut:
                    break
            cut = max(cut, off)
            if block and size - cut > self._max_block:
                return self._force_block(buf, off, cut, findings)
            if not block and size - cut > self._max_token:
                cut = self._forced_token_cut(findings, off, cut, size)
        out = self._render(buf, off, cut, findings)
        self._advance(buf, off, cut)
        self._block_open = key_finding and "-----END" not in self._held
        self._block_checked = len(self._held)
        return out

    def _forced_token_cut(self, findings: list[Finding], off: int, cut: int, size: int) -> int:
        """Where to cut a token held past ``max_token_hold``: keep its last quarter held."""
        limit = size - self._max_token // 4
        for finding in findings:
            if finding.start < limit and (finding.end > limit or finding.end == size):
                if finding.end < size:
                    return finding.end  # complete: emit it redacted
                if finding.start > cut:
                    return finding.start  # still growing: hold it whole
                # a secret longer than the bound: redact what came, swallow the rest
                self._swallow = _SWALLOW_TOKEN
                return size
        return max(limit, off)

    def _force_block(self, buf: str, off: int, cut: int, findings: list[Finding]) -> str:
        """A key block held past ``max_block_hold``: one placeholder, then swallow to its END."""
        out = self._render(buf, off, cut, findings)
        block = buf[cut:]
        out += self._placeholders.placeholder(_KEY_KIND, block)
        self.redacted += 1
        if _END_LINE.search(block) is None:
            self._swallow = _SWALLOW_BLOCK
            self._swallow_tail = block[-_BLOCK_TAIL:]
        self._lookbehind = ""
        self._held = ""
        self._held_is_token = True
        self._block_open = False
        return out

    def _render(self, buf: str, off: int, cut: int, findings: list[Finding]) -> str:
        """``buf[off:cut]`` with the findings that end inside it replaced."""
        parts: list[str] = []
        last = off
        for finding in findings:
            if finding.end <= off:
                continue
            if finding.end > cut:
                break
            start = max(finding.start, off)
            parts.append(buf[last:start])
            secret = buf[finding.start : finding.end]
            parts.append(self._placeholders.placeholder(finding.kind, secret))
            self.redacted += 1
            last = finding.end
        parts.append(buf[last:cut])
        return "".join(parts)

    def _advance(self, buf: str, off: int, cut: int) -> None:
        """Move ``buf[off:cut]`` from held to emitted; keep a lookbehind of it."""
        self._held = buf[cut:]
        self._held_is_token = _token_start(self._held) == 0
        if self._swallow != _NONE:
            self._lookbehind = ""
            return
        # The window may start inside a token: a match made possible by that
        # false start could only reach the new text if the whole window were one
        # token, that is after a token was cut short by its bound.
        self._lookbehind = buf[max(0, cut - self._lookbehind_size) : cut]
