"""A throwaway PostgreSQL cluster for tests.

CI machines have the server binaries (Debian's ``postgresql`` package, installed by
deploy/install.sh) but no server running. :func:`postgres_cluster` makes one in a
temporary directory: ``initdb -A trust -U postgres``, then ``pg_ctl start`` on a free
127.0.0.1 port with its socket inside that directory, durability off (a test database).
As root it runs both as the ``postgres`` system user (``runuser -u postgres --``), since
PostgreSQL refuses to run as root. It yields a DSN and removes everything at the end.

The session fixture :func:`usage_postgres_dsn` lives here so that every test directory can
use it: a ``conftest.py`` imports it (tests/observe and tests/e2e do). Each import is a
fixture of its own to pytest, so the cluster behind them is shared and reference-counted:
one server per test session however many directories use it. :func:`scratch_database`
gives a test module a database of its own on that server.

    python -m tests.observe.postgres    # start one, print its DSN, stop on Enter
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH nor under "
    "/usr/lib/postgresql/*/bin: run deploy/install.sh (it installs Debian's 'postgresql')"
)


class PostgresUnavailable(RuntimeError):
    """The binaries are missing or the cluster could not start."""


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (PATH first, newest version next)."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        bindir = Path(os.path.realpath(initdb)).parent
        if (bindir / "pg_ctl").exists():
            return bindir
    candidates = glob.glob("/usr/lib/postgresql/*/bin")

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    for candidate in sorted(candidates, key=version, reverse=True):
        bindir = Path(candidate)
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root but 'runuser' is missing (util-linux)")
    return [runuser, "-u", "postgres", "--", *argv]


def _run(argv: list[str], cwd: Path, what: str, timeout: float = 60.0) -> None:
    result = subprocess.run(
        _as_server_user(argv),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "LC_ALL": "C", "LANG": "C"},
    )
    if result.returncode != 0:
        raise PostgresUnavailable(
            f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )


def _wait_ready(dsn: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def postgres_cluster(bindir: Path | None = None, *, timeout: float = 30.0) -> Iterator[str]:
    """Start a fresh cluster; yield ``postgresql://postgres@127.0.0.1:PORT/postgres``."""
    bindir = bindir or find_bindir()
    if bindir is None:
        raise PostgresUnavailable(INSTALL_HINT)
    root = Path(tempfile.mkdtemp(prefix="usage-pg-"))
    data, sockets, logfile = root / "data", root / "sock", root / "server.log"
    started = False
    try:
        sockets.mkdir()
        if os.geteuid() == 0:
            try:
                server_user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root but there is no 'postgres' system user: " + INSTALL_HINT
                ) from None
            for path in (root, sockets):
                os.chown(path, server_user.pw_uid, server_user.pw_gid)
        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            root,
            "initdb",
        )
        last_error: Exception | None = None
        for _ in range(3):  # another process may take the free port before the server does
            port = _free_port()
            options = (
                f"-h 127.0.0.1 -p {port} -k {sockets} -F "
                "-c full_page_writes=off -c synchronous_commit=off -c max_connections=50"
            )
            try:
                _run(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-l",
                        str(logfile),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        str(int(timeout)),
                        "start",
                    ],
                    root,
                    "pg_ctl start",
                    timeout=timeout + 10,
                )
            except PostgresUnavailable as exc:
                log = logfile.read_text(errors="replace") if logfile.exists() else ""
                last_error = PostgresUnavailable(f"{exc}\nserver log:\n{log}")
                continue
            started = True
            dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            _wait_ready(dsn, timeout)
            break
        else:
            assert last_error is not None
            raise last_error
        yield dsn
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run(
                    [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                    root,
                    "pg_ctl stop",
                )
        shutil.rmtree(root, ignore_errors=True)


class _SharedCluster:
    """One cluster for every user of the session fixture; stopped when the last one ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._stack: contextlib.ExitStack | None = None
        self._dsn = ""

    def acquire(self, bindir: Path) -> str:
        with self._lock:
            if self._stack is None:
                stack = contextlib.ExitStack()
                self._dsn = stack.enter_context(postgres_cluster(bindir))
                self._stack = stack
            self._users += 1
            return self._dsn

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._stack is not None:
                stack, self._stack = self._stack, None
                stack.close()


_SHARED = _SharedCluster()


@pytest.fixture(scope="session")
def usage_postgres_dsn() -> Iterator[str]:
    """A DSN of a PostgreSQL server started for this test session.

    Fails (never skips) when PostgreSQL is not installed: CI must exercise this path.
    """
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    try:
        dsn = _SHARED.acquire(bindir)
    except PostgresUnavailable as exc:
        pytest.fail(f"could not start PostgreSQL: {exc}", pytrace=False)
    try:
        yield dsn
    finally:
        _SHARED.release()


@contextlib.contextmanager
def scratch_database(dsn: str, prefix: str = "scratch") -> Iterator[str]:
    """A new, empty database on the server of ``dsn``; yields its DSN, drops it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    with postgres_cluster() as url:
        print(url, flush=True)
        input("PostgreSQL is running; press Enter to stop it. ")
