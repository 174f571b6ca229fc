"""Pure path arithmetic: a written path -> a normalised absolute path, and containment.

No filesystem access: ``..`` and ``.`` are resolved as text (``posixpath.normpath``
after joining), so a symlink inside a root that points outside it cannot be seen;
a path that climbs above a root with ``..`` is outside it.

POSIX paths (``/srv/proj/a.txt``) compare exactly. Windows paths (``C:\\Users\\x``,
``C:/Users/x``, ``\\\\server\\share\\x``) have their backslashes turned into slashes,
the drive letter upper-cased, and compare case-insensitively, as Windows does.
``~``, ``$HOME``, ``${HOME}``, ``$env:USERPROFILE`` and ``%USERPROFILE%`` stand for the
configured home directory; ``$PWD`` for the working directory.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

__all__ = ["Location", "is_absolute", "locate"]

_HOME_PREFIXES = ("$HOME", "${HOME}", "$env:USERPROFILE", "$env:HOME", "%USERPROFILE%")
_PWD_PREFIXES = ("$PWD", "${PWD}")


@dataclass(frozen=True, slots=True)
class Location:
    """A normalised absolute path: ``/a/b``, or ``C:/a/b`` (``windows``)."""

    path: str
    windows: bool

    @property
    def key(self) -> str:
        """What containment compares: Windows paths ignore case."""
        return self.path.casefold() if self.windows else self.path

    def within(self, root: Location) -> bool:
        """This path is ``root`` or below it."""
        if self.windows != root.windows:
            return False
        path, base = self.key, root.key
        if path == base:
            return True
        return path.startswith(base if base.endswith("/") else base + "/")


def _is_windows(path: str) -> bool:
    return (len(path) >= 2 and path[1] == ":" and path[0].isascii() and path[0].isalpha()) or (
        path.startswith("\\\\")
    )


def is_absolute(path: str) -> bool:
    """``path`` does not depend on the working directory (home-relative counts)."""
    return (
        path.startswith(("/", "~"))
        or path.startswith(_HOME_PREFIXES)
        or path.startswith(_PWD_PREFIXES)
        or _is_windows(path)
    )


def _expand(path: str, home: str | None, cwd: str) -> str | None:
    """``~`` and the home variables replaced by ``home`` (None: unknown), ``$PWD`` by ``cwd``."""
    if path == "~" or path.startswith(("~/", "~\\")):
        return None if home is None else home + path[1:]
    for prefix in _HOME_PREFIXES:
        if path == prefix or path.startswith((prefix + "/", prefix + "\\")):
            return None if home is None else home + path[len(prefix) :]
    for prefix in _PWD_PREFIXES:
        if path == prefix or path.startswith((prefix + "/", prefix + "\\")):
            return cwd + path[len(prefix) :]
    return path


def locate(path: str, *, cwd: str, home: str | None) -> Location | None:
    """Where ``path`` points, seen from the working directory ``cwd`` (absolute).

    None when it depends on an unknown home directory.
    """
    expanded = _expand(path, home, cwd)
    if expanded is None:
        return None
    windows = _is_windows(expanded) or (_is_windows(cwd) and not expanded.startswith("/"))
    if windows:
        text = expanded.replace("\\", "/")
        if not _is_windows(expanded) and not text.startswith("//"):
            base = cwd.replace("\\", "/")
            text = base[:2] + text if text.startswith("/") else base.rstrip("/") + "/" + text
        if text.startswith("//"):  # UNC: //server/share/...
            return Location(posixpath.normpath(text), True)
        drive, rest = text[:2].upper(), text[2:]
        return Location(drive + posixpath.normpath("/" + rest.lstrip("/")), True)
    if not expanded.startswith("/"):
        expanded = cwd.rstrip("/") + "/" + expanded
    normal = posixpath.normpath(expanded)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return Location(normal, False)
