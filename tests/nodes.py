"""A deployment of real daemons: ``twistd gtserver --node NAME`` processes on
one throwaway PostgreSQL database (tests/pgcluster.py).

::

    nodes = await start_nodes(self, count=2, listeners=("vr", "uttt", "eot"))
    a, b = nodes                      # named "a", "b", ...
    a.port("vr")                      # its vr listener's port on 127.0.0.1
    await a.kill()                    # kill -9, waits until it has exited
    again = await start_node(self, a.url, "a", listeners=("vr",))  # the same node again

Each node listens on free loopback ports (``tcp:0``) of its own for the
listeners named, every other listener is off; a node is returned once it has
logged ``gtserver ready`` (its store open, its bus listening, its listeners
accepting). Nodes still running at the test's cleanup are killed.
"""

from __future__ import annotations

import inspect
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.task import deferLater

from tests.daemons import Daemon, all_builtin_listeners_off, environment, spawn_daemon
from tests.pgcluster import postgres_url

#: Options every node gets first (a later option of the same name wins).
DEFAULT_OPTIONS = ("--hash-cost", "4")
READY = re.compile(r"gtserver ready: \d+ listeners")
LISTENER_LINE = re.compile(r"\] listener (\S+) \(.*\) on tcp:127\.0\.0\.1:(\d+)$", re.M)


class Node:
    """One running (or ended) daemon of a deployment."""

    def __init__(self, name: str, url: str, daemon: Daemon, ports: dict[str, int]) -> None:
        self.name = name
        self.url = url
        self.daemon = daemon
        #: Listener name -> its port on 127.0.0.1.
        self.ports = ports

    def port(self, listener: str) -> int:
        return self.ports[listener]

    @property
    def output(self) -> str:
        """Its log so far."""
        return self.daemon.output

    @property
    def pid(self) -> int:
        return self.daemon.transport.pid

    @property
    def running(self) -> bool:
        return not self.daemon.ended.called

    def wait_for(self, pattern: str | re.Pattern) -> Deferred:
        """Fires with the first match of ``pattern`` in its log, so far or to come."""
        return self.daemon.wait_for(re.compile(pattern) if isinstance(pattern, str) else pattern)

    def kill(self) -> Deferred:
        """``kill -9``; fires once the process has exited."""
        return self.daemon.signal("KILL")

    def stop(self) -> Deferred:
        """SIGTERM (an orderly stop); fires with the exit status."""
        return self.daemon.signal("TERM")

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.ports}>"


def node_arguments(url: str, name: str, listeners: Iterable[str],
                   options: Iterable[str] = (), ports: Mapping[str, int] | None = None
                   ) -> list[str]:
    """The command line of one node (after ``twistd ... gtserver``)."""
    arguments = ["--db", url, "--node", name, *DEFAULT_OPTIONS, *all_builtin_listeners_off()]
    for listener in listeners:
        port = (ports or {}).get(listener, 0)
        arguments += ["--port", f"{listener}=tcp:{port}:interface=127.0.0.1"]
    return [*arguments, *options]


async def start_node(testcase: Any, url: str, name: str,
                     listeners: Iterable[str] = ("vr", "uttt", "eot"),
                     options: Iterable[str] = (), ports: Mapping[str, int] | None = None,
                     timeout: float = 60.0) -> Node:
    """Start node ``name`` on database ``url`` (a new one, or one that stopped
    again: same name, new ports unless ``ports`` gives them) and wait until it
    is ready; fails with its output if it ends or is not ready in ``timeout`` s."""
    listeners = tuple(listeners)
    directory = tempfile.mkdtemp(prefix=f"gtserver-node-{name}-")
    testcase.addCleanup(shutil.rmtree, directory, True)
    daemon = spawn_daemon(testcase, node_arguments(url, name, listeners, options, ports),
                          directory, env=environment(test_plugins=False))
    ready = daemon.wait_for(READY)
    timer = reactor.callLater(timeout, ready.cancel)
    try:
        await ready
    except Exception:
        await daemon.signal("KILL")
        raise AssertionError(f"node {name} did not start; output:\n{daemon.output}") from None
    finally:
        if timer.active():
            timer.cancel()
    found = {listener: int(port) for listener, port in LISTENER_LINE.findall(daemon.output)}
    missing = [listener for listener in listeners if listener not in found]
    if missing:
        raise AssertionError(f"node {name}: no start-up line of {missing}:\n{daemon.output}")
    return Node(name, url, daemon, {listener: found[listener] for listener in listeners})


async def start_nodes(testcase: Any, count: int = 2,
                      listeners: Iterable[str] = ("vr", "uttt", "eot"),
                      options: Iterable[str] = (), url: str | None = None,
                      names: Iterable[str] | None = None) -> list[Node]:
    """Start ``count`` nodes (named a, b, c, ... unless ``names`` are given)
    on one fresh database (or on ``url``) at the same time."""
    url = url or postgres_url(testcase)
    names = list(names) if names is not None else [chr(ord("a") + i) for i in range(count)]
    listeners, options = tuple(listeners), tuple(options)
    try:
        return await gatherResults(
            [Deferred.fromCoroutine(start_node(testcase, url, name, listeners, options))
             for name in names], consumeErrors=True)
    except FirstError as error:
        raise error.subFailure.value from None


async def eventually(check: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Call ``check()`` (it may return a Deferred or a coroutine) until it returns a true value;
    returns that value, or fails with the last one after ``timeout`` s."""
    deadline = reactor.seconds() + timeout
    while True:
        value = check()
        if isinstance(value, Deferred) or inspect.iscoroutine(value):
            value = await value
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"still {value!r} after {timeout:g} s")
        await deferLater(reactor, interval, lambda: None)
