"""The protocol-agnostic core shared by every listener.

:class:`Core` is a ``MultiService`` holding the store, the shared services
(accounts, event log) and any *component* a protocol asks for. A component is
created once, by its class, on first request, so two protocols that need the
same service (say the ratings) share one instance::

    ratings = core.component(Ratings)

Components that are services are started and stopped with the core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from twisted.application.service import IService, MultiService

from gtserver.core.accounts import Accounts, Lifetimes
from gtserver.core.events import EventLog
from gtserver.core.login import LoginLimits
from gtserver.core.passwords import PasswordHasher
from gtserver.store import Store

T = TypeVar("T")


class Core(MultiService):
    def __init__(self, store: Store, clock: Any, config: Mapping[str, Any] | None = None,
                 hasher: PasswordHasher | None = None,
                 lifetimes: Lifetimes | None = None,
                 login_limits: LoginLimits | None = None,
                 games: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.setName("core")
        self.store = store
        self.clock = clock
        self.config: Mapping[str, Any] = dict(config or {})
        if login_limits is None:
            login_limits = LoginLimits.from_config(self.config)
        self.accounts = Accounts(store, clock, hasher, lifetimes or Lifetimes(), login_limits)
        self.accounts.setServiceParent(self)
        self.events = EventLog(store, clock)
        self.events.setServiceParent(self)
        #: The configured game table of this service (None: the installed games
        #: with their options' defaults, built by the match service).
        self.games = games
        self._components: dict[Any, Any] = {}

    def component(self, kind: Callable[[Core], T]) -> T:
        """The one instance of ``kind`` (built as ``kind.from_core(core)`` when
        ``kind`` has that class method, else as ``kind(core)``, on first use)."""
        if kind not in self._components:
            from_core = getattr(kind, "from_core", None)
            instance = from_core(self) if from_core is not None else kind(self)
            self._components[kind] = instance
            if IService.providedBy(instance):
                instance.setServiceParent(self)
        return self._components[kind]
