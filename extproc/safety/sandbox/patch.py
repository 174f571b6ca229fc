"""The files a Codex ``apply_patch`` patch touches.

The format (``*** Begin Patch`` ... ``*** End Patch``) names each file on a
header line: ``*** Add File: p``, ``*** Update File: p``, ``*** Delete File: p``,
and a rename's destination on ``*** Move to: p``. Every one of them is written.
"""

from __future__ import annotations

__all__ = ["patch_paths"]

_HEADERS = ("*** Add File:", "*** Update File:", "*** Delete File:", "*** Move to:")


def patch_paths(patch: str) -> list[str]:
    """The paths the patch adds, updates, deletes or moves to, in order."""
    paths: list[str] = []
    for line in patch.splitlines():
        stripped = line.strip()
        if stripped.startswith(_HEADERS):
            path = stripped.split(":", 1)[1].strip()
            if path:
                paths.append(path)
    return paths
