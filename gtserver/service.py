"""The service tree of the daemon: store, core, one listener per endpoint.

Start order: open the store (migrations included), record this run in it
(see gtserver.provenance), start the core, then accept connections (the
listeners bind earlier, in privilegedStartService).
Stop order is the reverse: stop accepting, stop the core (which flushes the
event log), then close the store once in-flight writes are done.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, maybeDeferred
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from gtserver.core import Core
from gtserver.logs import DaemonLog
from gtserver.provenance import record_run
from gtserver.store import Store


class StoreService(Service):
    """The store as a service: starting it opens the database and migrates
    its tables (:meth:`whenStarted` fires once that is done), stopping it
    closes the database once the writes in flight are done."""

    log = Logger()

    def __init__(self, store: Store) -> None:
        self.setName("store")
        self.store = store
        self._opened: Deferred | None = None

    def startService(self) -> None:
        Service.startService(self)
        self.log.info("store: {engine} at {where}", engine=self.store.engine,
                      where=self.store.describe())
        self._opened = ensureDeferred(self.store.start())

    def whenStarted(self) -> Deferred:
        """Fires once the database is open and migrated (fails if it cannot be)."""
        assert self._opened is not None, "the store service is not started"
        return self._opened

    def stopService(self) -> Deferred:
        Service.stopService(self)
        return ensureDeferred(self.store.close())


class ListenerService(StreamServerEndpointService):
    """Serves one protocol factory on one endpoint string.

    The endpoint is bound in :meth:`privilegedStartService` (before twistd
    drops privileges, so ports below 1024 work), but connections are only
    accepted from :meth:`startService` on, which the daemon calls once the
    store is open: until then clients wait in the listen backlog. A bind that
    fails is reported by :meth:`whenStarted`, not logged as a traceback.
    """

    log = Logger()

    def __init__(self, protocol_name: str, description: str, endpoint: str,
                 factory: Any, reactor: Any) -> None:
        self.protocol_name = protocol_name
        self.description = description
        #: The endpoint string (``self.endpoint`` is the parsed endpoint).
        self.endpoint_string = endpoint
        #: The TLS settings of an ``ssl:`` listener, replaced by reload_tls().
        self.tls: ReloadableTLS | None = None
        if self.is_tls:
            self.tls = ReloadableTLS()
            reactor = _ReloadableTLSReactor(reactor, self.tls)
        super().__init__(endpoints.serverFromString(reactor, endpoint), factory)
        self.setName(f"{protocol_name}@{endpoint}")
        self.port: Any = None
        self._bind_failure: Failure | None = None
        self._accepting = False
        self._waiters: list[Deferred] = []

    @property
    def is_tls(self) -> bool:
        return self.endpoint_string.split(":", 1)[0].lower() == "ssl"

    def privilegedStartService(self) -> None:
        """Bind the endpoint, without accepting connections yet."""
        Service.privilegedStartService(self)
        self.factory.noisy = False  # the start-up line says it all, once per endpoint
        self._waitingForPort = self.endpoint.listen(self.factory)
        self._waitingForPort.addCallbacks(self._bound, self._not_bound)

    def _bound(self, port: Any) -> Any:
        self.port = port
        pause = getattr(port, "stopReading", None)
        if pause is not None and not self.running:
            pause()
        set_tcp_nodelay(port)
        self._settle()
        return port

    def _not_bound(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            self._bind_failure = failure
        self._settle()
        return None

    def startService(self) -> None:
        """Accept connections (binding first if that is not done yet)."""
        Service.startService(self)
        if self._waitingForPort is None:
            self.privilegedStartService()
        self._settle()

    def _settle(self) -> None:
        """Once bound and started: accept, log the start-up line, tell waiters."""
        if self.running and self.port is not None and not self._accepting:
            self._accepting = True
            resume = getattr(self.port, "startReading", None)
            if resume is not None:
                resume()
            scope = " (every interface)" if binds_every_interface(self.port.getHost()) else ""
            self.log.info("listener {name} ({description}) on {where}{scope}",
                          name=self.protocol_name, description=self.description,
                          where=self.where(), scope=scope)
        if self._accepting or self._bind_failure is not None:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                self._fire(waiter)

    def _fire(self, waiter: Deferred) -> None:
        if self._bind_failure is not None:
            waiter.errback(self._bind_failure)
        else:
            waiter.callback(self.port)

    def whenStarted(self) -> Deferred:
        """Fires with the listening port once it accepts connections, or
        fails with the reason the endpoint could not be bound."""
        waiter: Deferred = Deferred()
        self._waiters.append(waiter)
        self._settle()
        return waiter

    def where(self) -> str:
        """Where the listener is bound, e.g. ``tls:127.0.0.1:5556``."""
        if self.port is None:
            return "not listening"
        return describe_address(self.port.getHost(), tls=self.is_tls)

    def reload_tls(self) -> bool:
        """Read the key and certificate files of an ``ssl:`` endpoint again;
        new connections get them, open ones keep theirs. Files that do not
        load (half written, a key that does not match) leave the previous ones
        in use. Returns whether anything was replaced."""
        if self.tls is None or self.port is None:
            return False
        try:
            replacement = read_tls_settings(self.endpoint_string)
        except Exception as error:  # whatever the key, certificate or parser raise
            self.log.warn("listener {name} on {where}: TLS files not reloaded, the previous "
                          "ones stay in use: {error}", name=self.protocol_name,
                          where=self.where(), error=error)
            return False
        self.tls.current = replacement
        self.log.info("listener {name} on {where}: TLS key and certificate reloaded",
                      name=self.protocol_name, where=self.where())
        return True

    def stopService(self) -> Deferred | None:
        """Stop listening (or stop trying to bind)."""
        Service.stopService(self)
        port, self.port = self.port, None
        waiting, self._waitingForPort = self._waitingForPort, None
        self._accepting = False
        if waiting is not None:
            waiting.cancel()  # a bind still under way
        if port is not None:
            return maybeDeferred(port.stopListening)
        return None


class ReloadableTLS:
    """The TLS settings (an old-style context factory) of one ``ssl:``
    listener, asked for a context at every connection, so that replacing
    ``current`` applies to the connections that follow."""

    def __init__(self, current: Any = None) -> None:
        self.current = current

    def getContext(self) -> Any:
        return self.current.getContext()


class _ReloadableTLSReactor:
    """The reactor, except that ``listenSSL`` serves a ReloadableTLS holding
    the context factory the endpoint parser built."""

    def __init__(self, reactor: Any, tls: ReloadableTLS) -> None:
        self._reactor = reactor
        self._tls = tls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> Any:
        self._tls.current = contextFactory
        return self._reactor.listenSSL(port, factory, self._tls, backlog=backlog,
                                       interface=interface)


class _CaptureTLS:
    """Stands in for the reactor to get the context factory an ``ssl:``
    endpoint string describes, without listening."""

    def __init__(self) -> None:
        self.context_factory: Any = None

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> None:
        self.context_factory = contextFactory


def read_tls_settings(description: str) -> Any:
    """A fresh, checked context factory for an ``ssl:`` endpoint string."""
    capture = _CaptureTLS()
    endpoints.serverFromString(capture, description).listen(None)
    capture.context_factory.getContext()  # a key that does not match fails here
    return capture.context_factory


def binds_every_interface(address: Any) -> bool:
    """Whether a listening address is the wildcard (reachable from every network)."""
    return getattr(address, "host", None) in ("0.0.0.0", "::")


def set_tcp_nodelay(port: Any) -> None:
    """Turn Nagle's algorithm off for every connection a TCP listening port accepts.

    Game traffic is small frames that must go out at once; with Nagle's
    algorithm on, a reply can wait for the peer's delayed ACK (tens of
    milliseconds). Accepted sockets inherit the option from the listening
    socket (Linux, the BSDs, macOS, Windows), so setting it here covers every
    protocol and TLS alike, before any connection exists and at no cost per
    connection. Ports that are not TCP (UNIX sockets) are left alone.
    """
    handle = getattr(port, "socket", None)
    if not isinstance(handle, socket.socket) or handle.family not in (
            socket.AF_INET, socket.AF_INET6):
        return
    handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def describe_address(address: Any, tls: bool = False) -> str:
    if hasattr(address, "port"):
        kind = "tls" if tls else address.type.lower()
        host = f"[{address.host}]" if ":" in address.host else address.host
        return f"{kind}:{host}:{address.port}"
    name = getattr(address, "name", None)
    if name is not None:
        return "unix:" + (name.decode(errors="replace") if isinstance(name, bytes) else name)
    return str(address)


class GtserverService(MultiService):
    """The whole daemon: the store, the core, any number of listeners.

    Its children are started in that order, each once the one before it is
    ready (the store open and migrated, a listener bound), and stopped in
    reverse, each once the one after it has stopped. The listeners bind in
    :meth:`privilegedStartService` when twistd calls it.
    """

    log = Logger()

    def __init__(self, store: Store, core: Core, listeners: list[ListenerService],
                 on_fatal: Callable[[str], None] | None = None,
                 freeze_heap: bool = False,
                 run_description: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.setName("gtserver")
        #: Whether start-up objects are frozen once serving (the daemon's
        #: process owns its heap; an embedding program or a test may not).
        self.freeze_heap = freeze_heap
        self.store = store
        self.core = core
        self.listeners = listeners
        self.on_fatal = on_fatal
        #: The log twistd writes through this service's observer, if any
        #: (set by makeService; see gtserver.logs).
        self.daemon_log: DaemonLog | None = None
        self.started: Deferred | None = None
        #: What is recorded as this run once the store is open (None: no run,
        #: as for a service tree built by hand), and the run's id once it is.
        self.run_description = run_description
        self.run_id: int | None = None
        StoreService(store).setServiceParent(self)
        core.setServiceParent(self)
        for listener in listeners:
            listener.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        # twistd starts logging after the service joins its application, with
        # the application's ILogObserver if it has one.
        if (self.daemon_log is not None and isinstance(parent, Componentized)
                and parent.getComponent(ILogObserver, None) is None):
            parent.setComponent(ILogObserver, self.daemon_log.observer)
        super().setServiceParent(parent)

    def reload(self) -> None:
        """What SIGHUP does: reopen the log file and reload the key and
        certificate files of ``ssl:`` listeners. Nothing else is reloaded."""
        notify_systemd(b"RELOADING=1\nMONOTONIC_USEC=%d" % (time.monotonic_ns() // 1000))
        if self.daemon_log is None:
            self.log.info("received SIGHUP: the log is twistd's own (--logger, --syslog "
                          "or a .tac file), nothing reopened")
        elif self.daemon_log.reopen():
            self.log.info("received SIGHUP: log file {path} reopened",
                          path=self.daemon_log.path)
        else:
            self.log.info("received SIGHUP: logging to standard output, nothing to reopen")
        for listener in self.listeners:
            listener.reload_tls()
        notify_systemd(b"READY=1")

    def startService(self) -> None:
        Service.startService(self)
        self.started = ensureDeferred(self._start())
        self.started.addErrback(self._start_failed)

    async def _start(self) -> GtserverService:
        for child in list(self):
            child.startService()
            when_started = getattr(child, "whenStarted", None)
            if when_started is not None:
                await when_started()
            if isinstance(child, StoreService) and self.run_description is not None:
                await self._record_run()
            if child is self.core and self.core.settings.node is not None:
                self._log_node()
        self.log.info("gtserver ready: {count} listeners", count=len(self.listeners))
        notify_systemd(b"READY=1")
        if self.freeze_heap:
            freeze_start_up_objects()
        return self

    async def _record_run(self) -> None:
        """Store this run; every event from now on carries its id."""
        assert self.run_description is not None
        self.run_id = await record_run(self.store, self.run_description,
                                       self.core.clock.seconds())
        self.core.events.run_id = self.run_id
        self.log.info("run {run_id} recorded (options sha256 {digest})", run_id=self.run_id,
                      digest=self.run_description["options_sha256"][:12])

    def _log_node(self) -> None:
        settings = self.core.settings
        self.log.info("node {node} of a deployment sharing {db} (leases of {ttl:g} s, "
                      "renewed every {renew:g} s)", node=settings.node,
                      db=self.store.describe(), ttl=settings.lease_ttl,
                      renew=settings.lease_renew)

    def _start_failed(self, failure: Any) -> Any:
        if failure.check(CancelledError) and not self.running:
            return None  # stopped while starting: not an error
        message = f"gtserver cannot start: {failure.getErrorMessage()}"
        self.log.critical(message)
        if self.on_fatal is None:
            return failure
        self.on_fatal(message)
        return None

    def stopService(self) -> Deferred:
        Service.stopService(self)
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        notify_systemd(b"STOPPING=1")
        if self.started is not None and not self.started.called:
            self.started.cancel()
        for child in reversed(list(self)):
            # a listener may be bound (privilegedStartService) but not started
            if child.running or isinstance(child, ListenerService):
                await maybeDeferred(child.stopService)
        self.log.info("gtserver stopped")


def exit_after_shutdown(reactor: Any, status: int = 1) -> Callable[[str], None]:
    """A fatal-error handler for twistd: stop the reactor, then exit non-zero.

    twistd itself always exits 0 once its reactor stops, so a daemon that could
    not start would otherwise look like a clean stop to systemd.
    """

    def leave() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)

    def fatal(message: str) -> None:
        reactor.addSystemEventTrigger("after", "shutdown", leave)
        if reactor.running:
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)

    return fatal


def freeze_start_up_objects() -> None:
    """Keep what start-up created out of every later full garbage collection.

    Modules, classes, functions and plugin code are tens of thousands of
    objects that live as long as the process; scanning them again in each
    full collection is what makes those collections long enough to show as
    latency spikes under load.
    """
    gc.collect()
    gc.freeze()


def notify_systemd(state: bytes) -> None:
    """Tell systemd about readiness (``Type=notify`` units); no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notifier:
            notifier.sendto(state, address)
    except OSError as error:
        GtserverService.log.warn("cannot notify systemd: {error}", error=error)


def exit_zero_on_sigterm(reactor: Any) -> None:
    """Make SIGTERM (``systemctl stop``) an ordinary stop that exits 0.

    twistd stops its reactor on SIGTERM and then kills itself with the same
    signal, so the process would otherwise end *by* SIGTERM rather than with
    a status. Handling the signal here leaves an orderly shutdown and exit 0.
    """
    from twisted.internet.error import ReactorNotRunning

    def stop() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # already stopping

    def on_sigterm(number: int, frame: Any) -> None:
        GtserverService.log.info("received SIGTERM, stopping")
        reactor.callFromThread(stop)

    reactor.callWhenRunning(signal.signal, signal.SIGTERM, on_sigterm)


def reload_on_sighup(reactor: Any, service: GtserverService) -> None:
    """Make SIGHUP (``systemctl reload``) reopen the log instead of killing
    the daemon, which is what it does to a process that does not handle it."""

    def on_sighup(number: int, frame: Any) -> None:
        reactor.callFromThread(service.reload)

    signal.signal(signal.SIGHUP, on_sighup)
