"""Context compression for coding-agent conversations: pure engines, no wiring.

* :func:`compress_output`: one tool output, compressed by kind (pytest, grep,
  diff, any command), every removal marked ``[proxy: ...]``; idempotent.
* :func:`compact_history`: older tool results superseded by a newer one of
  the same file, command or search stubbed; the others compressed.
* :func:`quiet_pytest`, :func:`powershell_chains`, :func:`detect_powershell`:
  small rewrites of an agent's shell commands.
"""

from extproc.guards.compress.history import CompactionReport, compact_history
from extproc.guards.compress.output import (
    THRESHOLD,
    Compressed,
    Kind,
    compress_output,
    detect_kind,
    kind_of_command,
)
from extproc.guards.compress.shell import detect_powershell, powershell_chains, quiet_pytest

__all__ = [
    "THRESHOLD",
    "CompactionReport",
    "Compressed",
    "Kind",
    "compact_history",
    "compress_output",
    "detect_kind",
    "detect_powershell",
    "kind_of_command",
    "powershell_chains",
    "quiet_pytest",
]
