"""A throwaway PostgreSQL cluster for the test suite.

``postgres_url(testcase)`` gives each test a fresh, empty database in one
cluster per test process, started on first use (``initdb`` into a temporary
directory, ``pg_ctl start`` on a free loopback port, trust authentication) and
stopped when the process exits. The suite needs nothing but the PostgreSQL
server binaries; tests skip, with the reason, only where those are missing.

As root the server runs as the ``postgres`` user (PostgreSQL refuses root).
Tests that stop and restart the server (to see the daemon survive a lost
database) take a cluster of their own from :func:`private_cluster`.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest
from typing import Any

from twisted.internet.threads import deferToThread

SUPERUSER = "postgres"
_BINARIES = ("initdb", "pg_ctl", "psql")


def find_bindir() -> str | None:
    """The directory holding initdb, pg_ctl and psql, or None."""
    found = shutil.which("pg_ctl")
    candidates = [os.path.dirname(os.path.realpath(found))] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)
    for directory in candidates:
        if all(os.access(os.path.join(directory, name), os.X_OK) for name in _BINARIES):
            return directory
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    """One PostgreSQL server in a temporary directory, on a loopback port."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.directory = tempfile.mkdtemp(prefix="gtserver-pg-")
        self.data = os.path.join(self.directory, "data")
        self.port = free_port()
        self.running = False
        self._names = itertools.count(1)
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.directory, SUPERUSER, SUPERUSER)
        self._run("initdb", "--pgdata", self.data, "--username", SUPERUSER,
                  "--auth", "trust", "--encoding", "UTF8", "--no-locale", "--no-sync")

    def _command(self, program: str, *arguments: str) -> list[str]:
        command = [os.path.join(self.bindir, program), *arguments]
        return ["runuser", "-u", SUPERUSER, "--", *command] if self._as_postgres else command

    def _run(self, program: str, *arguments: str) -> str:
        result = subprocess.run(self._command(program, *arguments), stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, cwd=self.directory)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): "
                               f"{result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        server_options = (f"-p {self.port} -k {self.directory} "
                          "-c listen_addresses=127.0.0.1 -c fsync=off "
                          "-c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "start", "--wait", "--pgdata", self.data,
                  "--log", os.path.join(self.directory, "server.log"),
                  "-o", server_options)
        self.running = True

    def stop(self) -> None:
        """Stop the server at once (open connections are terminated)."""
        if self.running:
            self.running = False
            self._run("pg_ctl", "stop", "--wait", "--mode", "fast", "--pgdata", self.data)

    def server_pids(self) -> list[int]:
        """The postmaster's process id, then those of its children (backends
        and background workers), as they are now."""
        with open(os.path.join(self.data, "postmaster.pid")) as pid_file:
            postmaster = int(pid_file.readline())
        children = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[1]) == postmaster:
                children.append(int(entry))
        return [postmaster, *children]

    def freeze(self) -> None:
        """Stop every server process with SIGSTOP, as a hung machine or a
        network partition would look to clients: connections stay open, no
        answer comes. :meth:`thaw` resumes them."""
        self._frozen = self.server_pids()
        for pid in self._frozen:  # the postmaster first: it forks no more
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in reversed(getattr(self, "_frozen", [])):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self._frozen = []

    def destroy(self) -> None:
        try:
            self.thaw()
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def create_database(self) -> str:
        """A fresh empty database; returns its postgresql:// URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self._run("psql", "--no-psqlrc", "--quiet", "--host", "127.0.0.1",
                  "--port", str(self.port), "--username", SUPERUSER, "--dbname", "postgres",
                  "--command", f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    # Non-blocking variants for use while the reactor runs.

    def stop_later(self) -> Any:
        """Deferred: stop the server in a thread."""
        return deferToThread(self.stop)

    def start_later(self) -> Any:
        """Deferred: start the server again in a thread."""
        return deferToThread(self.start)


def _require_bindir() -> str:
    """The binaries' directory; skip the test without them, except in CI
    (``CI`` set), where PostgreSQL tests must run and their absence fails."""
    bindir = find_bindir()
    if bindir is None:
        reason = ("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
                  "/usr/lib/postgresql/*/bin; install the 'postgresql' package to run these tests")
        if os.environ.get("CI"):
            raise RuntimeError(reason)
        raise unittest.SkipTest(reason)
    return bindir


_shared: PostgresCluster | None = None


def shared_cluster() -> PostgresCluster:
    """The cluster of this test process, started on first use."""
    global _shared
    if _shared is None:
        cluster = PostgresCluster(_require_bindir())
        atexit.register(cluster.destroy)
        cluster.start()
        _shared = cluster
    return _shared


def postgres_url(testcase: Any) -> str:
    """A fresh database for one test, as a ``postgresql://`` URL.

    Raises SkipTest only when no PostgreSQL binaries are installed.
    """
    return shared_cluster().create_database()


def private_cluster(testcase: Any) -> PostgresCluster:
    """A started cluster of the test's own (to stop and restart at will);
    destroyed at the test's cleanup."""
    cluster = PostgresCluster(_require_bindir())
    testcase.addCleanup(cluster.destroy)
    cluster.start()
    return cluster
