"""The protocol-agnostic core shared by every listener.

:class:`Core` is a ``MultiService`` holding the store and the shared
services. Each service has a typed getter (``core.accounts``,
``core.match_store``, ...) that builds it once, on first use, from the core's
settings and the other services it needs; a service that needs itself,
directly or through others, is refused with :class:`DependencyCycle`. The
services are started with the core in the order they were built and stopped
in reverse, so the accounts service and the event log, built first, are
stopped last (after the features that record events while they stop). In a
deployment of several nodes the bus is built before them (stopped last:
the features' and the leases' last messages still go out), and the leases
just after (released once the features that hold them have stopped).
:meth:`Core.whenStarted` fires once the bus listens.

A feature's own services (the VR rooms, the EOT lobby, ...) are built by its
plugin's ``build_factory`` from the services it takes from here, and join
the tree with :meth:`Core.attach`. Readers that must not build a feature's
service (the web monitor) find the attached ones with :meth:`Core.attached`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, gatherResults

from gtserver import metrics
from gtserver.core.accounts import Accounts
from gtserver.core.bus import Calls, IBus
from gtserver.core.events import EventLog
from gtserver.core.friends import Friends
from gtserver.core.leases import Leases
from gtserver.core.match_store import MatchStore
from gtserver.core.passwords import PasswordHasher
from gtserver.core.peers import TrustedProxies
from gtserver.core.presence import Presence
from gtserver.core.ratings import Ratings
from gtserver.core.settings import CoreSettings
from gtserver.store import Store

T = TypeVar("T")
S = TypeVar("S", bound=IService)


class DependencyCycle(RuntimeError):
    """A shared service needs itself to be built."""


class _BuiltOnce(Generic[T]):
    """A getter of :class:`Core` that builds its value once, on first use."""

    def __init__(self, build: Callable[[Core], T]) -> None:
        self.build = build
        self.name = build.__name__
        self.__doc__ = build.__doc__

    def __get__(self, core: Core | None, owner: type) -> T:
        if core is None:
            return self  # type: ignore[return-value]
        built = core._built
        if self.name not in built:
            if self.name in core._building:
                chain = " -> ".join([*core._building, self.name])
                raise DependencyCycle(f"the core's services depend on each other: {chain}")
            core._building.append(self.name)
            try:
                value = self.build(core)
            finally:
                core._building.pop()
            built[self.name] = value
            if IService.providedBy(value):
                core.attach(value)
        return built[self.name]


def built_once(build: Callable[[Core], T]) -> T:
    """Make ``build`` a getter whose value is built once (typed as its value)."""
    return _BuiltOnce(build)  # type: ignore[return-value]


class Core(MultiService):
    def __init__(self, store: Store, clock: Any, settings: CoreSettings | None = None,
                 hasher: PasswordHasher | None = None,
                 games: Mapping[str, Any] | None = None, reactor: Any = None,
                 bus: IBus | None = None) -> None:
        """
        @param clock: the time of every service (an C{IReactorTime}).
        @param settings: the daemon's own settings (defaults if None).
        @param hasher: the password hasher (else one built from the settings).
        @param games: the games clients may choose, by name (else the installed ones).
        @param reactor: the reactor of the listeners' I/O (else the global one;
            tests pass a C{task.Clock} as C{clock} and keep the real reactor here).
        @param bus: the cross-node bus (else the store's, when the settings
            name a node; none for a single daemon).
        """
        super().__init__()
        self.setName("core")
        self.store = store
        self.clock = clock
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.settings = settings or CoreSettings()
        self._hasher = hasher
        self._games = games
        self._bus = bus
        self._built: dict[str, Any] = {}
        self._building: list[str] = []
        self._attached: list[IService] = []
        self._reactor_probe: metrics.ReactorProbe | None = None
        # First in, last out: whatever stops later may still log in, record
        # and (in a deployment) tell the other nodes; the leases are released
        # once the features that hold them have stopped.
        self.bus  # noqa: B018
        self.accounts  # noqa: B018
        self.events  # noqa: B018
        self.accounts.events = self.events  # logins are recorded
        self.calls  # noqa: B018 -- in a deployment: the leases and calls from the start

    def attach(self, service: S) -> S:
        """Start and stop ``service`` with the core (after those attached before it)."""
        service.setServiceParent(self)
        self._attached.append(service)
        return service

    def attached(self, kind: type[S]) -> S | None:
        """The first service of class ``kind`` attached so far, else None (for
        readers, such as the web monitor, that must not build one)."""
        for service in self._attached:
            if isinstance(service, kind):
                return service
        return None

    def startService(self) -> None:
        super().startService()
        metrics.watch(self)     # its live state shows in /metrics from now on
        self._reactor_probe = metrics.probe_for(self.clock)
        if self._reactor_probe is not None:
            self._reactor_probe.start()

    def whenStarted(self) -> Deferred:
        """Fires once every attached service that says when it has started
        (the bus: once it listens) has."""
        waiting = [service.whenStarted() for service in self._attached
                   if callable(getattr(service, "whenStarted", None))]
        return gatherResults(waiting, consumeErrors=True).addCallback(lambda _: self)

    def stopService(self) -> Any:
        metrics.unwatch(self)
        if self._reactor_probe is not None:
            self._reactor_probe.stop()
        return super().stopService()

    @built_once
    def accounts(self) -> Accounts:
        """Accounts, logins and session tokens."""
        hasher = self._hasher or PasswordHasher(log2_n=self.settings.hash_cost,
                                                threads=self.settings.hash_threads)
        return Accounts(self.store, self.clock, hasher, self.settings.lifetimes,
                        self.settings.login)

    @built_once
    def events(self) -> EventLog:
        """The research event log."""
        return EventLog(self.store, self.clock, reactor=self.reactor)

    @built_once
    def games(self) -> Mapping[str, Any]:
        """The games clients may choose, by name."""
        if self._games is not None:
            return self._games
        # The plugins import the features, and the features the core.
        from gtserver.registry import configured_games
        return configured_games({})

    @built_once
    def match_store(self) -> MatchStore:
        """The persistence of matches that outlive a restart."""
        return MatchStore(self.store, dict(self.games), self.events, self.clock)

    @built_once
    def ratings(self) -> Ratings:
        return Ratings(self.store, self.clock, self.events)

    @built_once
    def friends(self) -> Friends:
        return Friends(self.store, self.clock)

    @built_once
    def trusted_proxies(self) -> TrustedProxies:
        """The reverse proxies whose X-Forwarded-For header names the client."""
        return TrustedProxies(self.settings.trusted_proxies)

    @built_once
    def presence(self) -> Presence:
        """Who is connected now, and who disconnected recently."""
        return Presence(self.clock, self.events)

    # a deployment of several nodes (all None for a single daemon)

    @built_once
    def bus(self) -> IBus | None:
        """Messages to the other nodes (see :mod:`gtserver.core.bus`)."""
        if self._bus is not None:
            return self._bus
        if self.settings.node is None:
            return None
        return self.store.bus(self.settings.node)

    @built_once
    def leases(self) -> Leases | None:
        """Which node is home to each room, session and queue."""
        bus = self.bus
        if bus is None:
            return None
        return Leases(self.store, self.clock, bus.node, ttl=self.settings.lease_ttl,
                      renew=self.settings.lease_renew)

    @built_once
    def calls(self) -> Calls | None:
        """Requests to other nodes; those to a stopped node fail at once."""
        bus, leases = self.bus, self.leases
        if bus is None or leases is None:
            return None
        calls = Calls(bus, self.clock)
        leases.on_node_gone(calls.node_gone)
        return calls
