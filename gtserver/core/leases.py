"""Ownership in a deployment of several nodes: leases in the shared database.

Each room, session or queue that must live on exactly one node at a time has
a *home*: the node holding its lease (``vr-room:lobby``, ``eot-session:...``).
A node claims a lease when it needs one nobody holds, renews every lease it
holds every ``renew`` seconds, and a lease it stops renewing (the node was
killed) expires ``ttl`` seconds after its last renewal; then the next node to
need it takes it over.

Every node also holds ``node:NAME`` for itself: the live nodes are the
holders of those. :class:`Leases` checks them at each renewal and tells its
watchers when a node stops (``on_node_gone``) and when this node lost a lease
it held (``on_lost``: it could not renew it in time, and another node may
hold it now).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gtserver.store import Store, StoreError
from gtserver.store import leases as queries

NODE = "node:"


class Leases(Service):
    log = Logger()

    def __init__(self, store: Store, clock: Any, node: str, ttl: float = 5.0,
                 renew: float = 1.0) -> None:
        self.store = store
        self.clock = clock
        self.node = node
        self.ttl = ttl
        self.renew_interval = renew
        #: Names this node holds (renewed every ``renew`` seconds).
        self.held: set[str] = set()
        #: The live nodes at the last check (this one included).
        self.nodes: set[str] = set()
        self._node_gone: list[Callable[[str], None]] = []
        self._lost: list[Callable[[str], None]] = []
        self._loop: LoopingCall | None = None

    # watchers

    def on_node_gone(self, callback: Callable[[str], None]) -> None:
        self._node_gone.append(callback)

    def on_lost(self, callback: Callable[[str], None]) -> None:
        self._lost.append(callback)

    # claims

    def claim(self, name: str) -> Deferred:
        """Fires with the holder of ``name`` after trying to take it: this
        node's name if it is this node's now."""
        return ensureDeferred(self._claim(name))

    async def _claim(self, name: str) -> str:
        now = self.clock.seconds()
        holder = await self.store.run(queries.claim, name, self.node, now, now + self.ttl)
        if holder == self.node:
            self.held.add(name)
        return holder

    def holder(self, name: str) -> Deferred:
        """Fires with the live holder of ``name``, else None."""
        return self.store.run(queries.holder, name, self.clock.seconds())

    def release(self, name: str) -> Deferred:
        self.held.discard(name)
        return self.store.run(queries.release, [name], self.node)

    def holders(self, prefix: str) -> Deferred:
        """Fires with ``[(name, node)]`` of the live leases starting with ``prefix``."""
        return self.store.run(queries.held_with_prefix, prefix, self.clock.seconds())

    def alive(self, node: str) -> bool:
        """Whether ``node`` was alive at the last check."""
        return node in self.nodes

    # renewal

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(self.renew_interval, now=True)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        held, self.held = sorted(self.held), set()
        if not held:
            return None
        d = self.store.run(queries.release, held, self.node)
        d.addErrback(lambda failure: self.log.warn(
            "leases not released (they expire by themselves): {error}", error=failure.value))
        return d

    def check(self) -> Deferred:
        """Renew this node's leases and look for nodes that stopped."""
        return ensureDeferred(self._check()).addErrback(self._check_failed)

    async def _check(self) -> None:
        now = self.clock.seconds()
        mine = NODE + self.node
        if mine not in self.held:
            await self.store.run(queries.claim, mine, self.node, now, now + self.ttl)
            self.held.add(mine)
        names = sorted(self.held)
        kept = set(await self.store.run(queries.renew, names, self.node, now + self.ttl))
        for name in names:
            if name not in kept and name in self.held:
                self.held.discard(name)
                self.log.warn("lease {name} lost to another node", name=name)
                for callback in list(self._lost):
                    self._call(callback, name)
        live = {node for _name, node in await self.store.run(
            queries.held_with_prefix, NODE, self.clock.seconds())}
        live.add(self.node)
        gone, joined, self.nodes = self.nodes - live, live - self.nodes - {self.node}, live
        for node in sorted(joined):
            self.log.info("node {node} live", node=node)
        for node in sorted(gone):
            self.log.info("node {node} stopped", node=node)
            for callback in list(self._node_gone):
                self._call(callback, node)

    def _check_failed(self, failure: Any) -> None:
        if failure.check(StoreError):
            self.log.warn("leases not renewed: {error}", error=failure.value)
        else:
            self.log.failure("lease check failed", failure)

    def _call(self, callback: Callable[[str], None], name: str) -> None:
        try:
            callback(name)
        except Exception:
            self.log.failure("lease watcher failed")
