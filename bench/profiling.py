"""Sample the extproc process with py-spy (when installed) and summarize where its time goes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def find_py_spy() -> str | None:
    """py-spy next to this interpreter (the virtualenv), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


@dataclass
class ProfileSummary:
    output: str
    samples: int
    rate: int
    top_self: list[tuple[str, int]] = field(default_factory=list)
    top_total: list[tuple[str, int]] = field(default_factory=list)
    threads: list[tuple[str, int]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        def rows(items: list[tuple[str, int]]) -> list[dict[str, Any]]:
            return [{"function": name, "samples": count} for name, count in items]

        return {
            "output": self.output,
            "samples": self.samples,
            "rate": self.rate,
            "top_self": rows(self.top_self),
            "top_total": rows(self.top_total),
            "threads": rows(self.threads),
        }


class PySpyRecorder:
    """``py-spy record`` attached to a PID for the duration of a ``with`` block."""

    def __init__(
        self, binary: str, pid: int, output: Path, rate: int = 500, native: bool = False
    ) -> None:
        self.binary = binary
        self.pid = pid
        self.output = output
        self.rate = rate
        self.native = native
        self.log_path = output.with_suffix(".log")
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PySpyRecorder:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.output.unlink()
        args = [self.binary, "record", "--pid", str(self.pid), "--output", str(self.output)]
        # --gil: only samples of the thread holding the GIL, i.e. Python actually running
        # (waits in epoll, waitpid and gRPC's C core release it and are left out)
        args += ["--format", "speedscope", "--rate", str(self.rate), "--function", "--gil"]
        if self.native:  # C frames too (grpc's Cython, upb, libc); slows the process a lot
            args.append("--native")
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        time.sleep(1.0)  # let it attach before the measured requests start
        if self._proc.poll() is not None:
            raise RuntimeError(f"py-spy exited early: {self.log_path.read_text(errors='replace')}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _frame_name(frame: dict[str, Any]) -> str:
    name = str(frame.get("name", "?"))
    file = str(frame.get("file", ""))
    line = frame.get("line")
    where = f"{file}:{line}" if file and line else file
    return f"{name} ({where})" if where else name


def summarize_speedscope(path: Path, rate: int, top: int = 15) -> ProfileSummary:
    """Self and inclusive sample counts per function from a py-spy speedscope file."""
    data = json.loads(path.read_text())
    names = [_frame_name(frame) for frame in data["shared"]["frames"]]
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    for profile in data.get("profiles", []):
        # py-spy writes stacks root first; weights are seconds, one sampling interval each
        for stack in profile.get("samples", []):
            if not stack:
                continue
            samples += 1
            threads[str(profile.get("name", "?"))] += 1
            self_counts[names[stack[-1]]] += 1
            for name in {names[index] for index in stack}:
                total_counts[name] += 1
    # frames on (nearly) every stack are the event loop's roots: not worth a line
    roots = {name for name, count in total_counts.items() if count >= 0.98 * samples}
    inclusive = [(name, count) for name, count in total_counts.most_common() if name not in roots]
    return ProfileSummary(
        output=str(path),
        samples=samples,
        rate=rate,
        top_self=self_counts.most_common(top),
        top_total=inclusive[:top],
        threads=threads.most_common(8),
    )
