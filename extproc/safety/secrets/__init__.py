"""Secret detection and redaction: built-in rules, a linear-time scanner, placeholders.

* :class:`SecretScanner` finds secrets (built-in :data:`BUILTIN_RULES`, the
  proxy's own keys as literals, minus an allow-list), with RE2 only.
* :class:`Placeholders` replaces them with ``[REDACTED:<kind>:<hmac>]``.
* :class:`Redactor` redacts a text or a JSON document; :class:`StreamRedactor`
  redacts a streamed channel chunk by chunk, holding back as little as it can.
"""

from extproc.safety.secrets.placeholder import PLACEHOLDER_PREFIX, Placeholders
from extproc.safety.secrets.redactor import Redactor
from extproc.safety.secrets.rules import BUILTIN_RULES, SecretRule
from extproc.safety.secrets.scanner import LITERAL_RULE_ID, Finding, SecretScanner
from extproc.safety.secrets.stream import StreamRedactor

__all__ = [
    "BUILTIN_RULES",
    "LITERAL_RULE_ID",
    "PLACEHOLDER_PREFIX",
    "Finding",
    "Placeholders",
    "Redactor",
    "SecretRule",
    "SecretScanner",
    "StreamRedactor",
]
