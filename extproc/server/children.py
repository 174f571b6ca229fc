"""Child processes that die with their supervisor.

Every process the proxy starts (Envoy, the capture process, extproc workers, a
local model server) is linked to the supervisor's life: on Linux the kernel
sends the child ``SIGKILL`` the moment its parent dies, however it dies
(``kill -9``, an OOM kill, a crash), through ``prctl(PR_SET_PDEATHSIG)``.
Without it an orphaned Envoy keeps the client and admin ports and answers 503
to everything, and the next start fails with "Address already in use".

The signal is set by util-linux's ``setpriv --pdeathsig KILL``, which then
execs the real program (same pid): not by a ``preexec_fn``, which runs Python
in the forked child of a process full of threads (gRPC's, asyncio's) and there
crashed now and then (a new Envoy dead of SIGSEGV before its ``exec``)::

    await asyncio.create_subprocess_exec(*linked(argv), **child_kwargs())

A Python child started with ``multiprocessing`` (spawn) calls
:func:`die_with_parent` itself, first thing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["child_kwargs", "die_with_parent", "linked"]

log = logging.getLogger(__name__)

#: ``<linux/prctl.h>``: PR_SET_PDEATHSIG.
_PR_SET_PDEATHSIG = 1

_libc: Any = None


def _prctl() -> Callable[..., int] | None:
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc.prctl  # type: ignore[no-any-return]


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """In a child: ask the kernel for ``sig`` when the parent dies (Linux).

    ``parent_pid`` is the supervisor's pid read before the fork: if it already
    died between the fork and this call, the child is an orphan and exits now.
    """
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def linked(argv: Sequence[str]) -> list[str]:
    """``argv``, run so that it dies with this process (Linux, with util-linux's setpriv)."""
    setpriv = _setpriv()
    if setpriv is None:
        return list(argv)
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


@functools.cache
def _setpriv() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    found = shutil.which("setpriv")
    if found is None:
        log.warning(
            "setpriv (util-linux) is not installed: child processes will outlive a killed proxy"
        )
    return found


def child_kwargs(*, new_session: bool = False) -> dict[str, Any]:
    """Keyword arguments for spawning a child (never a ``preexec_fn``: see above).

    ``new_session`` puts the child in its own session (no terminal signals from
    the user's Ctrl-C: the supervisor stops it in order).
    """
    return {"start_new_session": True} if new_session else {}
