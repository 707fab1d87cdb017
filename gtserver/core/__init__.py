"""The protocol-agnostic core shared by every listener.

:class:`Core` is a ``MultiService`` holding the store, the shared services
(accounts, event log) and any *component* a protocol asks for. A component is
created once, by its class, on first request, so two protocols that need the
same service (say the match service) share one instance::

    matches = core.component(MatchService)

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
from gtserver.web import metrics

T = TypeVar("T")


class Core(MultiService):
    def __init__(self, store: Store, clock: Any, config: Mapping[str, Any] | None = None,
                 hasher: PasswordHasher | None = None,
                 lifetimes: Lifetimes | None = None,
                 login_limits: LoginLimits | None = None) -> None:
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
        self._components: dict[Any, Any] = {}
        self._reactor_probe: metrics.ReactorProbe | None = None

    def component(self, kind: Callable[[Core], T]) -> T:
        """The one instance of ``kind`` (built as ``kind(core)`` on first use)."""
        if kind not in self._components:
            instance = kind(self)
            self._components[kind] = instance
            if IService.providedBy(instance):
                instance.setServiceParent(self)
        return self._components[kind]

    def existing(self, kind: Callable[[Core], T]) -> T | None:
        """The instance of ``kind`` if some listener asked for it, else None."""
        return self._components.get(kind)

    def startService(self) -> None:
        super().startService()
        metrics.watch(self)     # its live state shows in /metrics from now on
        self._reactor_probe = metrics.probe_for(self.clock)
        if self._reactor_probe is not None:
            self._reactor_probe.start()

    def stopService(self) -> Any:
        metrics.unwatch(self)
        if self._reactor_probe is not None:
            self._reactor_probe.stop()
        return super().stopService()
