"""Real ``twistd gtserver`` child processes for the tests.

The daemon runs from this checkout (on PYTHONPATH, which is how twistd finds
``twisted/plugins/gtserver_plugin.py``), with ``tests/plugins`` added so that
the tests' line protocol registers as a third-party listener would.
:func:`spawn_daemon` starts one and kills it at the test's cleanup if it is
still running; :class:`Daemon` searches its output as it arrives.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol

from gtserver.tap import Options

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = ("import sys; from twisted.scripts.twistd import run; "
          "sys.argv[0] = 'twistd'; run()")


def environment(test_plugins: bool = True) -> dict[str, str]:
    """The daemon's environment: this checkout, and the tests' plugins unless
    ``test_plugins`` is false (then exactly the installed listeners run)."""
    paths = [CHECKOUT, *([os.path.join(CHECKOUT, "tests", "plugins")] if test_plugins else [])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def all_builtin_listeners_off() -> list[str]:
    arguments = []
    for name in Options.protocols:
        arguments += ["--port", f"{name}=off"]
    return arguments


class Daemon(ProcessProtocol):
    """A twistd child process whose output is searched as it arrives."""

    def __init__(self) -> None:
        self.output = ""
        self.ended: Deferred = Deferred()
        self._watches: list[tuple[re.Pattern, Deferred]] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode(errors="replace")
        for watch in list(self._watches):
            match = watch[0].search(self.output)
            if match:
                self._watches.remove(watch)
                watch[1].callback(match)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        for _pattern, waiter in self._watches:
            waiter.errback(AssertionError(f"daemon ended first; output:\n{self.output}"))
        self._watches = []
        self.ended.callback(reason.value.exitCode)

    def wait_for(self, pattern: re.Pattern) -> Deferred:
        """Fires with the first match of ``pattern`` in the output (so far or
        to come); fails if the daemon ends without one."""
        waiter: Deferred = Deferred()
        match = pattern.search(self.output)
        if match:
            waiter.callback(match)
        elif self.ended.called:
            waiter.errback(AssertionError(f"daemon has ended; output:\n{self.output}"))
        else:
            self._watches.append((pattern, waiter))
        return waiter

    def signal(self, name: str) -> Deferred:
        """Send signal ``name`` (``"KILL"``, ``"TERM"``) unless the process has
        ended; returns :attr:`ended`."""
        if not self.ended.called:
            try:
                self.transport.signalProcess(name)
            except ProcessExitedAlready:
                pass
        return self.ended


def spawn_daemon(testcase: Any, arguments: list[str] | tuple[str, ...], directory: str,
                 twistd_options: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 inherit_socket: int | None = None) -> Daemon:
    """Start ``twistd gtserver ARGUMENTS`` in ``directory``; killed (SIGKILL)
    at the test's cleanup if it still runs. ``inherit_socket`` is passed as
    systemd passes an activated socket (file descriptor 3, LISTEN_FDS, LISTEN_PID)."""
    daemon = Daemon()
    command = [sys.executable, "-c", TWISTD, "--nodaemon", "--pidfile=", *twistd_options,
               "gtserver", *arguments]
    child_fds: dict[int, object] = {0: "w", 1: "r", 2: "r"}
    if inherit_socket is not None:
        child_fds[3] = inherit_socket
        # LISTEN_PID must be the daemon's own pid: a shell exports its own, then execs.
        activation = 'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=gtserver.socket'
        command = ["/bin/sh", "-c", activation + ' exec "$0" "$@"', *command]
    reactor.spawnProcess(daemon, command[0], command, env=env or environment(),
                         path=directory, childFDs=child_fds)
    testcase.addCleanup(daemon.signal, "KILL")
    return daemon

