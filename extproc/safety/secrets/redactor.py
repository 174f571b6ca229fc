"""Redacting whole texts and JSON documents (tool-call arguments)."""

from __future__ import annotations

import json
from typing import Any

from extproc.safety.secrets.placeholder import Placeholders
from extproc.safety.secrets.scanner import SecretScanner

__all__ = ["Redactor"]


class Redactor:
    """A :class:`SecretScanner` and the :class:`Placeholders` that replace what it finds."""

    def __init__(
        self, scanner: SecretScanner | None = None, placeholders: Placeholders | None = None
    ) -> None:
        self.scanner = scanner if scanner is not None else SecretScanner()
        self.placeholders = placeholders if placeholders is not None else Placeholders()

    def redact_text(self, text: str) -> tuple[str, int]:
        """``(text with every secret replaced, number of secrets)``."""
        findings = self.scanner.find(text)
        if not findings:
            return text, 0
        return self.placeholders.redact(text, findings), len(findings)

    def redact_json_text(self, text: str) -> tuple[str, int]:
        """Redact every string value of a JSON document (keys are left alone).

        The document is re-serialized (compact, non-ASCII kept) only when a
        value changed; otherwise ``text`` comes back as it was. Text that is
        not JSON is redacted as plain text.
        """
        try:
            document = json.loads(text)
            redacted, count = self._redact_value(document)
        except (ValueError, RecursionError):
            return self.redact_text(text)
        if count == 0:
            return text, 0
        return json.dumps(redacted, ensure_ascii=False, separators=(",", ":")), count

    def _redact_value(self, value: Any) -> tuple[Any, int]:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, list):
            total = 0
            items = []
            for item in value:
                new, count = self._redact_value(item)
                items.append(new)
                total += count
            return (items, total) if total else (value, 0)
        if isinstance(value, dict):
            total = 0
            fields = {}
            for key, item in value.items():
                new, count = self._redact_value(item)
                fields[key] = new
                total += count
            return (fields, total) if total else (value, 0)
        return value, 0
