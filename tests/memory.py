"""The daemon in memory: protocol tests without sockets and without waiting.

:class:`MemoryDaemon` builds the service tree exactly as ``twistd gtserver``
does (:func:`gtserver.tap.build_service`, the installed plugins, their
options), with three things swapped for deterministic ones:

- the reactor is a ``MemoryReactorClock``, so the listeners "bind" without a
  socket and every timer of the core, the listeners' limits and Autobahn runs
  on the daemon's ``clock``, which moves only when a test advances it;
- the store is SQLite in memory run in the reactor thread
  (:class:`SynchronousStore`), so a transaction has finished when
  ``store.run`` returns;
- password hashes are computed at once instead of in a thread.

Nothing then happens outside :meth:`MemoryDaemon.flush`, which moves bytes
between every client and the server until no side has anything left to say.
"Nothing more arrives" is therefore an assertion on what a client holds
after a flush, never a wait. Clients are real Autobahn protocols
(:class:`MemoryWebSocketClient`) joined to the listener's factory through
:mod:`twisted.test.iosim`; stream protocols such as EOT get a
``StringTransport`` (:meth:`MemoryDaemon.stream`).
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from functools import partial
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.python.monkey import MonkeyPatcher
from twisted.test import iosim
from txaio._common import _BatchedTimer

import gtserver.core as core_package
from gtserver import tap
from gtserver.core.passwords import PasswordHasher
from gtserver.store.base import (
    Store,
    StoreError,
    StoreUnavailable,
    TransactionFunction,
    drive_synchronously,
)
from gtserver.store.sqlite import _configure, _translate

#: Where the clock of every memory daemon starts (2023-11-14 22:13:20 UTC).
START = 1_700_000_000.0
#: Flush rounds after which traffic is taken for a loop between the two sides.
MAX_ROUNDS = 10_000


class SynchronousStore(Store):
    """SQLite in memory, driven in the calling thread.

    The Deferred of :meth:`run` has fired when it is returned: a test that
    flushed has nothing in flight in the database either.
    """

    engine = "sqlite"

    def __init__(self, reactor: Any) -> None:
        super().__init__("sqlite::memory:", reactor)
        self._connection: sqlite3.Connection | None = None
        #: Deliver results on the next turn of the clock (``callLater(0)``)
        #: rather than at once, as a store in another thread or process
        #: does: requests of several connections then overlap.
        self.delay_results = False
        #: In a MemoryDeployment: its hub, the database its nodes share
        #: ([connection, nodes using it]), and whether this node was killed
        #: (then every transaction fails, as for a dead process).
        self.hub: Any = None
        self.shared: list[Any] | None = None
        self.killed = False

    async def _open(self) -> None:
        shared = self.shared
        if shared is not None and shared[0] is not None:
            self._connection = shared[0]  # another node opened it
        else:
            self._connection = sqlite3.connect(":memory:", isolation_level=None,
                                               detect_types=sqlite3.PARSE_DECLTYPES)
            _configure(self._connection)
        if shared is not None:
            shared[0] = self._connection
            shared[1] += 1

    def _run(self, function: TransactionFunction, args: tuple, kwargs: dict) -> Deferred:
        connection = self._connection
        if self.killed:
            return fail(StoreUnavailable("this node was killed"))
        if connection is None:
            raise StoreError("the store is not open")
        cursor = connection.cursor()
        try:
            cursor.execute("BEGIN")
            result = drive_synchronously(cursor, function, args, kwargs)
            cursor.execute("COMMIT")
        except Exception:
            failure = Failure()
            if connection.in_transaction:
                connection.rollback()
            return self._deliver(fail(failure).addErrback(_translate))
        return self._deliver(succeed(result))

    def _deliver(self, outcome: Deferred) -> Deferred:
        if not self.delay_results:
            return outcome
        later: Deferred = Deferred()
        self.reactor.callLater(0, outcome.chainDeferred, later)
        return later

    def bus(self, node: str) -> Any:
        """Node ``node``'s bus on the deployment's hub (see MemoryDeployment)."""
        if self.hub is None:
            return super().bus(node)
        return self.hub.bus(node)

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        shared = self.shared
        if shared is not None:
            shared[1] -= 1
            if shared[1] > 0:
                return  # the other nodes go on using it
            shared[0] = None
        if connection is not None:
            connection.close()


def _open_synchronous_store(url: str, reactor: Any = None, **ignored: Any) -> Store:
    return SynchronousStore(reactor)


def _run_now(function: Any, *arguments: Any) -> Deferred:
    return maybeDeferred(function, *arguments)


def _clock_timer(clock: Any) -> Any:
    """Autobahn's batched timer (open and close handshake timeouts, pings) on
    ``clock``, built as txaio builds it for its own (global) loop."""
    return _BatchedTimer(200.0, 1000, seconds_provider=clock.seconds,
                         delayed_call_creator=clock.callLater)


def give_clock(factory: Any, clock: Any) -> None:
    """Autobahn factories keep the global reactor (``factory.reactor``, and
    txaio's loop for their batched timer) for their own timers and for
    anything an adapter schedules through them: point both at ``clock``."""
    if hasattr(factory, "_batched_timer"):
        factory.reactor = clock
        factory._batched_timer = _clock_timer(clock)


class MemoryDaemon:
    """The daemon's service tree on a MemoryReactorClock, started and stopped
    with the test; ``listeners`` are the listener names to serve."""

    def __init__(self, testcase: Any, *arguments: str,
                 listeners: tuple[str, ...] = ("uttt",), store_delay: bool = False,
                 deployment: MemoryDeployment | None = None, node: str | None = None) -> None:
        self.testcase = testcase
        self.deployment = deployment
        self.node = node
        if deployment is None:
            self.clock = MemoryReactorClock()
            self.clock.advance(START)
            open_store: Any = _open_synchronous_store
        else:
            self.clock = deployment.clock
            open_store = deployment.open_store
        self.pumps: list[iosim.IOPump] = []
        self.streams: list[StreamConnection] = []
        self._peers = 0
        command = ["--db", "sqlite::memory:", "--hash-cost", "4"]
        if deployment is not None:
            command = ["--db", "postgresql://memory/deployment", "--node", node or "",
                       "--hash-cost", "4"]
        for name in tap.Options.protocols:
            command += ["--port", f"{name}=off"]
        for number, name in enumerate(listeners):
            command += ["--port", f"{name}=tcp:{10_000 + number}:interface=127.0.0.1"]
        command += list(arguments)
        options = tap.Options()
        options.parseOptions(command)
        patches = MonkeyPatcher(
            (tap, "open_store", open_store),
            (core_package, "PasswordHasher", partial(PasswordHasher, run_in_thread=_run_now)))
        self.service = patches.runWithPatches(tap.build_service, options, self.clock)
        self.core = self.service.core
        self.store = self.service.store
        for listener in self.service.listeners:
            give_clock(listener.factory, self.clock)
        self.service.startService()
        self.store.delay_results = store_delay
        if not self.service.started.called:
            raise AssertionError("the memory daemon did not start at once")
        testcase.successResultOf(self.service.started)
        testcase.addCleanup(self.stop)

    def factory(self, name: str) -> Any:
        """The server factory of listener ``name``."""
        return self.listener(name).factory

    def listener(self, name: str) -> Any:
        return next(item for item in self.service.listeners if item.protocol_name == name)

    def _host(self, name: str) -> IPv4Address:
        """The address listener ``name`` pretends to listen on."""
        port = int(self.listener(name).endpoint_string.split(":")[1])
        return IPv4Address("TCP", "127.0.0.1", port)

    def connect(self, name: str, client_class: type[MemoryWebSocketClient],
                peer: IPv4Address | None = None, open: bool = True) -> Any:
        """A client of ``client_class`` connected to WebSocket listener ``name``,
        after the opening handshake (unless ``open`` is false)."""
        host = self._host(name)
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{host.port}/", reactor=self.clock)
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0,
                                   serverConnectionDropTimeout=0)
        factory._batched_timer = _clock_timer(self.clock)
        factory.protocol = client_class
        client = factory.buildProtocol(host)
        client.daemon = self
        client.server = self.attach(name, client, peer)
        if open and not client.opened:
            raise AssertionError(f"the WebSocket opening handshake failed on {name}")
        return client

    def attach(self, name: str, client: Any, peer: IPv4Address | None = None) -> Any:
        """Join ``client`` (any protocol) to a new server protocol of listener
        ``name`` in memory, flush, and return the server protocol."""
        host = self._host(name)
        peer = peer or self._next_peer()
        server = self.factory(name).buildProtocol(peer)
        self.pumps.append(iosim.connect(
            server, iosim.FakeTransport(server, True, hostAddress=host, peerAddress=peer),
            client, iosim.FakeTransport(client, False, hostAddress=peer, peerAddress=host),
            greet=False, clock=self.clock))
        self.flush()
        return server

    def stream(self, name: str, peer: IPv4Address | None = None) -> StreamConnection:
        """A connection to stream listener ``name`` (EOT) on a StringTransport."""
        connection = StreamConnection(self, name, self._host(name), peer or self._next_peer())
        self.streams.append(connection)
        return connection

    def _next_peer(self) -> IPv4Address:
        self._peers += 1
        return IPv4Address("TCP", "127.0.0.1", 40_000 + self._peers)

    def flush(self) -> None:
        """Until nothing moves any more: move the bytes written on every
        connection, then run the calls due now (store results among them).

        Each round delivers what every client sent before any reply of the
        round is computed, so requests sent together are in flight together.
        In a deployment, every node's connections move (and the bus's
        messages, which are calls due now).
        """
        daemons = self.deployment.daemons if self.deployment is not None else [self]
        for _ in range(MAX_ROUNDS):
            moved = False
            for daemon in daemons:
                moved = daemon._move() or moved
            now = self.clock.seconds()
            due = any(call.getTime() <= now for call in self.clock.getDelayedCalls())
            if due:
                self.clock.advance(0)
            if not moved and not due:
                return
        raise AssertionError("the connections never went quiet")

    def _move(self) -> bool:
        moved = False
        for pump in list(self.pumps):
            moved = pump.pump(advanceClock=False) or moved
        for connection in self.streams:
            moved = connection.deliver_close() or moved
        return moved

    def result(self, awaitable: Any) -> Any:
        """The result of a Deferred or coroutine of the daemon, after a flush."""
        d = ensureDeferred(awaitable) if not isinstance(awaitable, Deferred) else awaitable
        self.flush()
        return self.testcase.successResultOf(d)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the daemon's clock, then flush."""
        self.clock.advance(seconds)
        self.flush()

    def drop_connections(self) -> None:
        """Every connection drops (no close handshake), then flush."""
        for pump in self.pumps:
            for side in (pump.clientIO, pump.serverIO):
                side.abortConnection()
        for connection in self.streams:
            connection.lose()
        self.flush()
        self.pumps.clear()
        self.streams.clear()

    def stop(self) -> Deferred:
        """Drop every connection, then stop the service tree (at once)."""
        self.drop_connections()
        if not self.service.running:
            return succeed(None)
        stopped = self.service.stopService()
        self.flush()
        if not stopped.called:
            raise AssertionError("the memory daemon did not stop at once")
        return stopped


class MemoryDeployment:
    """Several memory daemons (nodes) of one deployment: one clock, one
    store (SQLite in memory, standing in for the shared PostgreSQL) and a
    :class:`gtserver.core.bus.MemoryHub` for their bus. Every node's
    ``flush`` moves every node's connections and messages.
    """

    def __init__(self, testcase: Any, nodes: tuple[str, ...] = ("a", "b"),
                 *arguments: str, listeners: tuple[str, ...] = ("uttt",)) -> None:
        from gtserver.core.bus import MemoryHub
        self.testcase = testcase
        self.clock = MemoryReactorClock()
        self.clock.advance(START)
        self.hub = MemoryHub(self.clock)
        #: The deployment's database: [the connection, how many nodes use it].
        self.database: list[Any] = [None, 0]
        self.daemons: list[MemoryDaemon] = []
        self.nodes: dict[str, MemoryDaemon] = {}
        for node in nodes:
            self.start(node, *arguments, listeners=listeners)

    def open_store(self, url: str, reactor: Any = None, **ignored: Any) -> Store:
        """One node's store: its own view of the deployment's one database."""
        store = SynchronousStore(reactor)
        store.hub = self.hub
        store.shared = self.database
        return store

    def start(self, node: str, *arguments: str,
              listeners: tuple[str, ...] = ("uttt",)) -> MemoryDaemon:
        """Start (or restart) node ``node``."""
        daemon = MemoryDaemon(self.testcase, *arguments, listeners=listeners,
                              deployment=self, node=node)
        self.daemons.append(daemon)
        self.nodes[node] = daemon
        daemon.flush()
        return daemon

    def __getitem__(self, node: str) -> MemoryDaemon:
        return self.nodes[node]

    def flush(self) -> None:
        self.daemons[0].flush()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, a step at a time (each node's timers run in
        their order), flushing after each."""
        self.clock.advance(seconds)
        self.flush()

    def kill(self, node: str) -> None:
        """``kill -9`` of ``node``: its connections drop without a goodbye,
        its bus goes silent, its leases are neither renewed nor released."""
        daemon = self.nodes.pop(node)
        self.hub.stop(node)
        daemon.store.killed = True
        daemon.drop_connections()
        daemon.service.stopService()
        self.daemons.remove(daemon)
        daemon.stop = lambda: succeed(None)  # type: ignore[method-assign]
        self.flush()


class StreamConnection:
    """A client of a stream listener: the server protocol on a StringTransport.

    What the client sends goes straight to the protocol; what the server
    writes is ``received``. Once the server closes, a flush tells the
    protocol the connection is gone and fires ``closed`` with every byte
    received, as a TCP peer would see it.
    """

    def __init__(self, daemon: MemoryDaemon, name: str, host: IPv4Address,
                 peer: IPv4Address) -> None:
        self.daemon = daemon
        self.closed: Deferred = Deferred()
        self.lost = False
        self.protocol = daemon.factory(name).buildProtocol(peer)
        self.transport = StringTransport(hostAddress=host, peerAddress=peer)
        self.protocol.makeConnection(self.transport)

    @property
    def received(self) -> bytes:
        return self.transport.value()

    def write(self, data: bytes) -> None:
        """Send ``data`` to the server (unless either side closed), then flush."""
        if not self.lost and not self.transport.disconnecting:
            self.protocol.dataReceived(data)
        self.daemon.flush()

    def deliver_close(self) -> bool:
        """If the server closed: the connection is lost for both sides."""
        if self.transport.disconnecting and not self.lost:
            self.lose()
            return True
        return False

    def lose(self) -> None:
        """The client goes away (or the server's close has arrived)."""
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))
            self.closed.callback(self.received)


class Closed(Exception):
    """The connection was closed while a frame was expected."""


class MemoryWebSocketClient(WebSocketClientProtocol):
    """A real Autobahn client on an in-memory connection, keeping what arrives.

    ``inbox`` holds the payload of every message received and not yet taken;
    subclasses decode it (:meth:`decode`). Nothing is awaited: reading
    flushes the daemon first, then takes what is there.
    """

    daemon: MemoryDaemon
    server: Any

    def __init__(self) -> None:
        super().__init__()
        self.inbox: deque[Any] = deque()
        self.opened = False
        self.closed: Deferred = Deferred()
        self.close_code: int | None = None

    def decode(self, payload: bytes, is_binary: bool) -> Any:
        return payload

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.inbox.append(self.decode(payload, isBinary))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.closed.called:
            self.close_code = code
            self.closed.callback(code)

    def take(self) -> Any:
        """The next message, after a flush; fails if none arrived."""
        self.daemon.flush()
        if not self.inbox:
            if self.closed.called:
                raise Closed("connection closed")
            raise AssertionError("no message arrived")
        return self.inbox.popleft()

    def pending(self) -> list[Any]:
        """Every message not taken yet, after a flush."""
        self.daemon.flush()
        return list(self.inbox)

    def assert_nothing_more(self) -> None:
        """After a flush, no message is waiting."""
        left = self.pending()
        if left:
            raise AssertionError(f"unexpected messages: {left}")

    def closed_with(self) -> int | None:
        """The close code, after a flush; fails if the connection is still open."""
        self.daemon.flush()
        if not self.closed.called:
            raise AssertionError("the connection is still open")
        return self.close_code

    def drop(self) -> None:
        """Drop the connection (no close handshake), then flush."""
        if not self.closed.called:
            self.transport.abortConnection()
        self.daemon.flush()


class JSONClient(MemoryWebSocketClient):
    """A client whose messages are JSON text."""

    def decode(self, payload: bytes, is_binary: bool) -> Any:
        return json.loads(payload.decode("utf-8"))
