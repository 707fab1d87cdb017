"""The cross-node bus: messages between the nodes of one deployment.

Several daemons started with the same PostgreSQL database and a ``--node``
name form one deployment. The features talk to the other nodes only through
an :class:`IBus`: a message has a *topic* (which handler gets it) and a
JSON-encodable body, and goes either to one node (:meth:`IBus.send`) or to
every other node (:meth:`IBus.broadcast`). Messages from one node to another
arrive in the order they were sent; nothing is promised across senders.

The engines: :class:`MemoryHub` joins buses in one process (the in-memory
tests), :mod:`gtserver.store.notify` carries them over PostgreSQL
``LISTEN``/``NOTIFY``. A single daemon without ``--node`` has no bus at all:
its features take the local paths they always took.

:class:`Calls` builds request and reply on top of a bus: a feature serves a
topic on its home node and other nodes call it, with timeouts, cancellation
and a clear error when the node called stops.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from gtserver.core.errors import CoreError

#: A topic's handler: called with the sending node's name and the message body.
Handler = Callable[[str, Any], None]


class IBus(Interface):
    """Messages between the nodes of one deployment."""

    node = Attribute("This node's name (``--node``).")

    def send(node: str, topic: str, body: Any) -> None:
        """Send ``body`` (JSON-encodable) to ``topic``'s handler on ``node``
        (this node included); in order per receiving node."""

    def broadcast(topic: str, body: Any) -> None:
        """Send ``body`` to ``topic``'s handler on every other node."""

    def subscribe(topic: str, handler: Handler) -> None:
        """Call ``handler(sender, body)`` for every message of ``topic``
        (one handler per topic; a second replaces the first)."""


class BusError(CoreError):
    """Base of the failures of a call to another node."""


class NodeGone(BusError):
    """The node called stopped (or stopped answering) before it replied."""


class CallTimeout(BusError):
    """No reply within the call's timeout."""


class RemoteError(BusError):
    """The node called refused the request; ``kind`` is its error class's name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Topics:
    """The handlers of a bus, one per topic (every engine's receiving end)."""

    log = Logger()

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def subscribe(self, topic: str, handler: Handler) -> None:
        self.handlers[topic] = handler

    def dispatch(self, sender: str, topic: str, body: Any) -> None:
        """Hand ``body`` to its topic's handler (none: dropped); a failing
        handler is logged, never raised into the bus."""
        handler = self.handlers.get(topic)
        if handler is None:
            return
        try:
            handler(sender, body)
        except Exception:
            self.log.failure("bus handler of {topic} failed", topic=topic)


@implementer(IBus)
class MemoryBus:
    """One node's bus on a :class:`MemoryHub`."""

    def __init__(self, hub: MemoryHub, node: str) -> None:
        self.hub = hub
        self.node = node
        self.topics = Topics()

    def send(self, node: str, topic: str, body: Any) -> None:
        self.hub.post(self.node, node, topic, body)

    def broadcast(self, topic: str, body: Any) -> None:
        for node in list(self.hub.buses):
            if node != self.node:
                self.hub.post(self.node, node, topic, body)

    def subscribe(self, topic: str, handler: Handler) -> None:
        self.topics.subscribe(topic, handler)

    def received(self, sender: str, topic: str, body: Any) -> None:
        self.topics.dispatch(sender, topic, body)


class MemoryHub:
    """Buses of several nodes in one process, as PostgreSQL would join them.

    Messages are delivered on a later turn of ``clock`` (``callLater(0)``),
    in order, never synchronously, so tests see the asynchrony of a real
    deployment. A node taken off the hub (:meth:`stop`) gets nothing more,
    like a killed daemon.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.buses: dict[str, MemoryBus] = {}
        #: Messages posted so far (for tests that count cross-node traffic).
        self.posted = 0

    def bus(self, node: str) -> MemoryBus:
        bus = self.buses[node] = MemoryBus(self, node)
        return bus

    def stop(self, node: str) -> None:
        self.buses.pop(node, None)

    def post(self, sender: str, node: str, topic: str, body: Any) -> None:
        self.posted += 1
        self.clock.callLater(0, self._deliver, sender, node, topic, body)

    def _deliver(self, sender: str, node: str, topic: str, body: Any) -> None:
        bus = self.buses.get(node)
        if bus is not None and sender in self.buses:
            bus.received(sender, topic, body)


class Calls:
    """Requests to other nodes and their replies, over a bus.

    A served function takes the caller's node and the request body and
    returns a reply (or a Deferred of one); a :class:`CoreError` it raises
    reaches the caller as :class:`RemoteError` with the error's class name.
    A call fails with :class:`CallTimeout` after ``timeout`` seconds (none
    if None), with :class:`NodeGone` once :meth:`node_gone` is told the node
    stopped; cancelling it tells the node called to cancel its work.
    """

    log = Logger()
    REQUEST, REPLY, CANCEL = "call", "call-reply", "call-cancel"

    def __init__(self, bus: IBus, clock: Any) -> None:
        self.bus = bus
        self.clock = clock
        self._ids = itertools.count(1)
        #: Calls waiting for a reply: id -> (node, Deferred, timeout call).
        self._waiting: dict[int, tuple[str, Deferred, Any]] = {}
        #: Requests being served: (caller, id) -> the served Deferred.
        self._serving: dict[tuple[str, int], Deferred] = {}
        self._served: dict[str, Callable[[str, Any], Any]] = {}
        bus.subscribe(self.REQUEST, self._request)
        bus.subscribe(self.REPLY, self._reply)
        bus.subscribe(self.CANCEL, self._cancel)

    def serve(self, topic: str, function: Callable[[str, Any], Any]) -> None:
        self._served[topic] = function

    def call(self, node: str, topic: str, body: Any, timeout: float | None = None) -> Deferred:
        """The reply of ``node``'s function for ``topic`` to ``body``."""
        call_id = next(self._ids)

        def cancel(_: Deferred) -> None:
            entry = self._waiting.pop(call_id, None)
            if entry is not None:
                self._stop_timer(entry[2])
                self.bus.send(node, self.CANCEL, {"id": call_id})

        waiter: Deferred = Deferred(cancel)
        timer = None
        if timeout is not None:
            timer = self.clock.callLater(timeout, self._timed_out, call_id)
        self._waiting[call_id] = (node, waiter, timer)
        self.bus.send(node, self.REQUEST, {"id": call_id, "topic": topic, "body": body})
        return waiter

    def node_gone(self, node: str) -> None:
        """``node`` stopped: its calls fail, its requests are cancelled."""
        for call_id, (called, _waiter, _timer) in list(self._waiting.items()):
            if called == node:
                self._fail(call_id, NodeGone(f"node {node} stopped"))
        for key in [key for key in self._serving if key[0] == node]:
            served = self._serving.pop(key, None)
            if served is not None:
                served.cancel()

    def _timed_out(self, call_id: int) -> None:
        entry = self._waiting.get(call_id)
        if entry is not None:
            self._fail(call_id, CallTimeout(f"node {entry[0]} did not answer in time"),
                       timer_fired=True)

    def _fail(self, call_id: int, error: BusError, timer_fired: bool = False) -> None:
        node, waiter, timer = self._waiting.pop(call_id)
        if not timer_fired:
            self._stop_timer(timer)
        waiter.errback(error)

    @staticmethod
    def _stop_timer(timer: Any) -> None:
        if timer is not None and timer.active():
            timer.cancel()

    def _request(self, sender: str, message: dict) -> None:
        call_id, topic = message["id"], message["topic"]
        function = self._served.get(topic)
        if function is None:
            self.bus.send(sender, self.REPLY, {"id": call_id, "error": "NoSuchTopic",
                                               "message": f"nothing serves {topic!r}"})
            return
        served = maybeDeferred(function, sender, message["body"])
        key = (sender, call_id)
        self._serving[key] = served

        def replied(result: Any) -> None:
            self._serving.pop(key, None)
            if isinstance(result, Failure):
                if result.check(CancelledError):
                    return
                if not result.check(CoreError):
                    self.log.failure("serving {topic} failed", result, topic=topic)
                error = result.value
                self.bus.send(sender, self.REPLY, {
                    "id": call_id, "error": type(error).__name__,
                    "message": str(error) if result.check(CoreError) else "internal error"})
            else:
                self.bus.send(sender, self.REPLY, {"id": call_id, "reply": result})

        served.addBoth(replied)

    def _reply(self, sender: str, message: dict) -> None:
        entry = self._waiting.pop(message["id"], None)
        if entry is None:
            return  # timed out or cancelled meanwhile
        _node, waiter, timer = entry
        self._stop_timer(timer)
        if "error" in message:
            waiter.errback(RemoteError(message["error"], message["message"]))
        else:
            waiter.callback(message.get("reply"))

    def _cancel(self, sender: str, message: dict) -> None:
        served = self._serving.pop((sender, message["id"]), None)
        if served is not None:
            served.cancel()
