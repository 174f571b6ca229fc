"""Children die with the process that started them, and are spawned without Python in the fork.

A ``preexec_fn`` runs Python between ``fork`` and ``exec`` in a process full
of gRPC and asyncio threads; it once crashed a new Envoy (SIGSEGV) about one
hot restart in eight. The link is made by ``setpriv --pdeathsig`` instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from extproc.server.children import child_kwargs, linked
from tests.harness import wait_for


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_no_python_runs_between_fork_and_exec() -> None:
    assert "preexec_fn" not in child_kwargs()
    assert child_kwargs(new_session=True) == {"start_new_session": True}


def test_a_linked_child_dies_when_its_parent_is_killed() -> None:
    # A parent that starts `sleep` the way the proxy starts Envoy, then is kill -9'ed.
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        from extproc.server.children import child_kwargs, linked
        child = subprocess.Popen(linked(["sleep", "600"]), **child_kwargs(new_session=True))
        print(child.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        wait_for(lambda: _cmdline(child).startswith("sleep"), 10, what="sleep to exec")
        assert linked(["x"])[-1] == "x"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        wait_for(lambda: not _alive(child), 10, what="the child to die with its parent")
    finally:
        parent.kill()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""
