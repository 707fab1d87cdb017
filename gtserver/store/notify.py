"""The cross-node bus over PostgreSQL ``LISTEN``/``NOTIFY`` (an :class:`IBus`).

Each node listens, on a connection of its own, on two channels: its own
(``gtserver_`` and a hash of its name, so any name gives a safe identifier)
and :data:`BROADCAST`, which every node listens on. It sends on a second
connection with ``SELECT pg_notify(channel, payload), ...``.

Coalescing: the messages sent in one reactor turn (and those sent while the
previous statement is on its way) go out as one statement, and the messages
for one channel as few notifications as fit in :data:`MAX_PAYLOAD` bytes
each: ``{"s": sender, "n": number, "m": [[topic, body], ...]}``. A message
too large for a notification is stored in ``bus_messages`` in the same
statement (so it is committed before its notification is seen) and the
notification carries ``{"r": row id}`` in its place; the receiver takes it
(and deletes it; broadcast rows are left for every node and pruned after
:data:`KEEP_STORED` seconds, like rows whose receiver died).

Order: one sending connection and one statement at a time, so notifications
are committed, and PostgreSQL delivers them, in the order they were sent; a
notification never merges messages across one for another channel that a
receiver also gets (a direct message and a broadcast keep their order).
A receiver delivers a sender's messages in order, holding back those behind a
stored message until it is read.

What is lost: NOTIFY is not durable. Messages to a node whose listening
connection is down (it reconnects at once, then with a growing delay, and
logs the outage once) and a statement in flight when the sending connection
breaks are lost, as are the oldest messages queued beyond :data:`MAX_QUEUED`
while the database cannot be reached; callers that must know use
:class:`gtserver.core.bus.Calls` (with a timeout) or the store.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import secrets
from collections import deque
from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gtserver.core.bus import Handler, IBus, Topics
from gtserver.store.base import Statement, StoreError
from gtserver.store.postgres import (
    _abandonable,
    _close_quietly,
    connect_within,
    first_line,
)

#: Bytes of one notification's payload (the server refuses 8,000 and more).
MAX_PAYLOAD = 7900
#: The channel every node listens on.
BROADCAST = "gtserver_all"
#: Seconds a stored message is kept for its readers; pruned every half of that.
KEEP_STORED = 60.0
#: Messages waiting to be sent while the database is out of reach, at most.
MAX_QUEUED = 10_000
#: Seconds between attempts to reconnect: the first at once, then growing to the last.
RECONNECT_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)


@functools.lru_cache(maxsize=1024)
def channel_of(node: str) -> str:
    """The channel node ``node`` listens on: a lower-case identifier of
    fixed length whatever the name."""
    return "gtserver_" + hashlib.sha256(node.encode("utf-8")).hexdigest()[:24]


def encode(value: Any) -> str:
    """Compact JSON, ASCII only (so its length is its size in bytes, and any
    text, lone surrogates included, survives the trip)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


class _Notification:
    """One notification being packed: its channel and message texts."""

    def __init__(self, channel: str, overhead: int) -> None:
        self.channel = channel
        self.items: list[str] = []
        self.size = overhead

    def payload(self, sender: str, number: int) -> str:
        return f'{{"s":{sender},"n":{number},"m":[{",".join(self.items)}]}}'


def pack(outgoing: Sequence[tuple[str, str]], sender: str, max_payload: int = MAX_PAYLOAD
         ) -> tuple[list[_Notification], list[tuple[str, str, str]]]:
    """Messages ``(channel, text)`` in sending order as notifications, and the
    rows ``(id, channel, text)`` of those too large for one.

    A message joins the last notification of its channel unless that is
    full, or (so that every receiver keeps the sending order) a broadcast
    was packed after it, or, for a broadcast, anything was packed after it.
    """
    overhead = len(_Notification("", 0).payload(sender, 10 ** 20))
    notifications: list[_Notification] = []
    rows: list[tuple[str, str, str]] = []
    open_for: dict[str, int] = {}
    last_broadcast = -1
    for channel, text in outgoing:
        if overhead + len(text) > max_payload:
            row_id = secrets.token_hex(12)
            rows.append((row_id, channel, text))
            text = encode({"r": row_id})
        index = open_for.get(channel)
        joins = index is not None and (
            index == len(notifications) - 1 if channel == BROADCAST
            else index > last_broadcast)
        if not joins or notifications[index].size + len(text) + 1 > max_payload:
            notifications.append(_Notification(channel, overhead))
            index = open_for[channel] = len(notifications) - 1
            if channel == BROADCAST:
                last_broadcast = index
        notification = notifications[index]
        notification.size += len(text) + (1 if notification.items else 0)
        notification.items.append(text)
    return notifications, rows


def notify_statement(notifications: Sequence[tuple[str, str]],
                     rows: Sequence[tuple[str, str, str]], now: float) -> tuple[str, list]:
    """One statement (one transaction) storing ``rows`` and sending
    ``(channel, payload)`` notifications in order, with its parameters.

    The notifications are the rows of ``unnest`` of two arrays, sent in
    their order whatever their number (a select list of one ``pg_notify``
    each would stop at PostgreSQL's 1,664 columns)."""
    sql, parameters = "", []
    if rows:
        sql = ("WITH stored AS (INSERT INTO bus_messages (id, channel, body, created) "
               "SELECT id, channel, body, %s FROM unnest(%s::text[], %s::text[], %s::text[]) "
               "AS row (id, channel, body)) ")
        parameters += [now, *(list(column) for column in zip(*rows, strict=True))]
    sql += ("SELECT pg_notify(channel, payload) FROM unnest(%s::text[], %s::text[]) "
            "AS notification (channel, payload)")
    parameters += [[channel for channel, _ in notifications],
                   [payload for _, payload in notifications]]
    return sql, parameters


def take_stored(ids: Sequence[str], keep: bool):
    """Transaction: the stored messages ``ids`` as ``{id: text}``, deleted
    unless ``keep`` (broadcasts, which every node reads)."""
    marks = ", ".join("?" for _ in ids)
    if keep:
        rows = yield Statement(f"SELECT id, body FROM bus_messages WHERE id IN ({marks})",
                               tuple(ids))
    else:
        rows = yield Statement(
            f"DELETE FROM bus_messages WHERE id IN ({marks}) RETURNING id, body", tuple(ids))
    return dict(rows)


def prune_stored(before: float):
    """Transaction: drop the stored messages created before ``before``."""
    yield Statement("DELETE FROM bus_messages WHERE created < ?", (before,))


class _InOrder:
    """Runs the observers of a connection's notifications at once, in the
    order they arrived (txpostgres' default cooperator interleaves batches)."""

    @staticmethod
    def cooperate(iterator: Any) -> None:
        for _step in iterator:
            pass


def _listening_connection_class():
    """A txpostgres Connection that calls ``on_lost(error)`` once when the
    server hangs up (instead of raising from the reactor's read handler)."""
    import psycopg2
    from txpostgres import txpostgres

    class ListeningConnection(txpostgres.Connection):
        on_lost: Any = None

        def doRead(self) -> None:
            try:
                super().doRead()
            except psycopg2.Error as error:
                self._lost(error)

        def connectionLost(self, reason: Any) -> None:
            super().connectionLost(reason)
            self._lost(reason.value)

        def _lost(self, error: BaseException) -> None:
            callback, self.on_lost = self.on_lost, None
            if not self.broken:
                _close_quietly(self)  # (close() calls connectionLost: once is enough)
            if callback is not None:
                callback(error)

        @property
        def broken(self) -> bool:
            return self._connection is None or bool(self._connection.closed)

    return ListeningConnection


@implementer(IBus)
class PostgresBus(Service):
    """Node ``node``'s bus on the PostgreSQL database of ``store`` (started)."""

    log = Logger()

    def __init__(self, store: Any, node: str, max_payload: int = MAX_PAYLOAD,
                 keep_stored: float = KEEP_STORED, max_queued: int = MAX_QUEUED,
                 reconnect_delays: Sequence[float] = RECONNECT_DELAYS) -> None:
        self.setName("bus")
        self.store = store
        self.reactor = store.reactor
        self.node = node
        self.channel = channel_of(node)
        self.max_payload = max_payload
        self.keep_stored = keep_stored
        self.max_queued = max_queued
        self.reconnect_delays = tuple(reconnect_delays) or (0.0,)
        self._sender_text = encode(node)
        if len(self._sender_text) > 256:
            raise ValueError("a node name must be under 256 characters")
        self._topics = Topics()
        self._numbers = itertools.count(1)
        # sending
        self._outbox: list[tuple[str, str]] = []
        self._local: list[str] = []
        self._flush_call: Any = None
        self._sender: Any = None
        self._in_flight: Deferred | None = None
        self._send_outage: str | None = None
        self._send_failures = 0
        self._dropped = 0
        # receiving
        self._listener: Any = None
        self._listening: Deferred | None = None
        self._listen_waiters: list[Deferred] = []
        #: Per sender, its notifications waiting for stored messages: [items, texts].
        self._incoming: dict[str, deque[list]] = {}
        self._prune: LoopingCall | None = None
        #: Counters for tests and the benchmarks.
        self.stats = {"messages": 0, "notifications": 0, "statements": 0, "stored": 0,
                      "received": 0, "lost": 0}

    # IBus

    def send(self, node: str, topic: str, body: Any) -> None:
        text = encode([topic, body])  # not JSON: TypeError here, for any node
        if node != self.node:
            self._queue(channel_of(node), text)
        elif self.running:
            self._local.append(text)  # as JSON, so that it arrives as it would elsewhere
            self._schedule()

    def broadcast(self, topic: str, body: Any) -> None:
        self._queue(BROADCAST, encode([topic, body]))

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._topics.subscribe(topic, handler)

    # service

    def startService(self) -> None:
        super().startService()
        self._listening = ensureDeferred(self._keep_listening())
        self._listening.addErrback(lambda failure: failure.trap(CancelledError))
        self._prune = LoopingCall(self._prune_stored)
        self._prune.clock = self.reactor
        self._prune.start(self.keep_stored / 2, now=False)

    @property
    def listening(self) -> bool:
        """Whether messages sent to this node reach it now (for /health)."""
        return self._listener is not None

    def whenStarted(self) -> Deferred:
        """Fires once this node listens (messages sent to it arrive from then on)."""
        waiter: Deferred = Deferred()
        if self._listener is not None:
            waiter.callback(self)
        else:
            self._listen_waiters.append(waiter)
        return waiter

    def stopService(self) -> Deferred:
        """Stop listening, send what is queued, then close."""
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self._prune is not None and self._prune.running:
            self._prune.stop()
        if self._listening is not None:
            self._listening.cancel()
        self._stop_listening()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_turn()
        while self._in_flight is not None:
            await self._in_flight
        if self._sender is not None:
            _close_quietly(self._sender)
            self._sender = None

    # sending

    def _queue(self, channel: str, text: str) -> None:
        if not self.running:
            return
        self._outbox.append((channel, text))
        excess = len(self._outbox) - self.max_queued
        if self._send_outage is not None and excess > 0:
            del self._outbox[:excess]  # the database is out of reach: keep the latest
            self._dropped += excess
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self.reactor.callLater(0, self._flush_turn)

    def _flush_turn(self) -> None:
        local, self._local = self._local, []
        for text in local:
            topic, body = json.loads(text)
            self._deliver(self.node, topic, body)
        self._flush()

    def _flush(self) -> None:
        """Send everything queued in one statement, unless one is on its way
        (what is queued meanwhile goes in the next, once it is done)."""
        if self._in_flight is not None or not self._outbox:
            return
        self._in_flight = ensureDeferred(self._send_queued())

        def done(result: Any) -> None:
            self._in_flight = None
            if isinstance(result, Failure):
                self.log.failure("bus: sending failed", result)
            self._flush()

        self._in_flight.addBoth(done)

    async def _send_queued(self) -> None:
        try:
            sender = await self._sending_connection()
        except Exception as error:
            self._sending_failed(error)
            if self.running:
                delays = self.reconnect_delays
                await deferLater(self.reactor, delays[min(self._send_failures, len(delays) - 1)],
                                 lambda: None)
            else:
                self._outbox.clear()
            return
        outbox, self._outbox = self._outbox, []
        notifications, rows = pack(outbox, self._sender_text, self.max_payload)
        payloads = [(notification.channel,
                     notification.payload(self._sender_text, next(self._numbers)))
                    for notification in notifications]
        sql, parameters = notify_statement(payloads, rows, self.reactor.seconds())
        try:
            await self._timed(sender, sender.runOperation(sql, parameters))
        except Exception as error:
            _close_quietly(sender)
            self._sender = None
            self.stats["lost"] += len(outbox)
            self._sending_failed(error)
            return
        self._sent(len(outbox), len(notifications), len(rows))

    def _timed(self, connection: Any, work: Deferred) -> Deferred:
        """``work`` on ``connection``, abandoned (the connection closed) after
        the store's time limit."""
        outcome = _abandonable(connection, work)
        if self.store.timeout is not None:
            outcome.addTimeout(self.store.timeout, self.reactor)
        return outcome

    async def _sending_connection(self) -> Any:
        if self._sender is not None and not self._sender.broken:
            return self._sender
        self._sender = None
        connection = self.store._connection_class(self.reactor)
        await connect_within(connection, self.store.dsn, self.reactor,
                             self.store.connect_timeout)
        self._sender = connection
        return connection

    def _sending_failed(self, error: BaseException) -> None:
        self._send_failures += 1
        if self._send_outage is None:
            self._send_outage = first_line(error)
            self.log.warn("bus: cannot send to the other nodes ({error}); retrying",
                          error=self._send_outage)

    def _sent(self, messages: int, notifications: int, rows: int) -> None:
        for name, count in (("messages", messages), ("notifications", notifications),
                            ("statements", 1), ("stored", rows)):
            self.stats[name] += count
        self._send_failures = 0
        if self._send_outage is not None:
            self._send_outage = None
            dropped = f" ({self._dropped} queued messages dropped)" if self._dropped else ""
            self.log.info("bus: sending again{dropped}", dropped=dropped)
            self.stats["lost"] += self._dropped
            self._dropped = 0

    # listening

    async def _keep_listening(self) -> None:
        """Connect and listen; again whenever the connection is lost, after
        the delays of ``reconnect_delays``; one warning per outage."""
        attempts = 0
        outage: float | None = None
        while self.running:
            delay = self.reconnect_delays[min(attempts, len(self.reconnect_delays) - 1)]
            attempts += 1
            if delay:
                await deferLater(self.reactor, delay, lambda: None)
            try:
                self._listener, lost = await self._listen()
            except CancelledError:
                raise
            except Exception as error:
                if outage is None:
                    outage = self.reactor.seconds()
                    self.log.warn("bus: cannot listen ({error}); retrying",
                                  error=first_line(error))
                continue
            if outage is not None:
                self.log.info("bus: listening again after {seconds:.1f} s",
                              seconds=self.reactor.seconds() - outage)
            waiters, self._listen_waiters = self._listen_waiters, []
            for waiter in waiters:
                waiter.callback(self)
            error = await lost
            self._listener, attempts, outage = None, 0, self.reactor.seconds()
            self.log.warn("bus: listening connection lost ({error}); reconnecting, messages "
                          "to this node are lost until it is back", error=first_line(error))

    async def _listen(self) -> tuple[Any, Deferred]:
        """A connection listening on this node's channels, and a Deferred
        firing with the error that ends it."""
        connection = _listening_connection_class()(self.reactor, cooperator=_InOrder())
        await connect_within(connection, self.store.dsn, self.reactor,
                             self.store.connect_timeout)
        lost: Deferred = Deferred()
        connection.on_lost = lost.callback
        try:
            connection.addNotifyObserver(self._notified)
            await self._timed(connection, connection.runOperation(
                f"LISTEN {self.channel}; LISTEN {BROADCAST}"))
        except BaseException:
            connection.on_lost = None
            _close_quietly(connection)
            raise
        return connection, lost

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.on_lost = None
            _close_quietly(listener)

    def _notified(self, notify: Any) -> None:
        try:
            message = json.loads(notify.payload)
            sender, items = message["s"], message["m"]
        except (ValueError, KeyError, TypeError):
            self.log.warn("bus: a notification on {channel} is not gtserver's: {payload!r}",
                          channel=notify.channel, payload=notify.payload[:200])
            return
        if sender == self.node:
            return  # this node's own broadcast
        self._received(sender, items, notify.channel == BROADCAST)

    def _received(self, sender: str, items: list, broadcast: bool) -> None:
        stored = [item["r"] for item in items if isinstance(item, dict)]
        waiting = self._incoming.get(sender)
        if not stored and waiting is None:
            self._deliver_items(sender, items, {})
            return
        if waiting is None:
            waiting = self._incoming[sender] = deque()
        entry: list = [items, None]
        waiting.append(entry)
        if not stored:
            entry[1] = {}
            return

        def arrived(texts: Any) -> None:
            if isinstance(texts, Failure):
                self.log.warn("bus: {count} large messages from {sender} not read: {error}",
                              count=len(stored), sender=sender, error=texts.getErrorMessage())
                texts = {}
            entry[1] = texts
            self._drain(sender)

        self.store.run(take_stored, stored, broadcast).addBoth(arrived)

    def _drain(self, sender: str) -> None:
        waiting = self._incoming[sender]
        while waiting and waiting[0][1] is not None:
            items, texts = waiting.popleft()
            self._deliver_items(sender, items, texts)
        if not waiting:
            del self._incoming[sender]

    def _deliver_items(self, sender: str, items: list, texts: dict) -> None:
        for item in items:
            if isinstance(item, dict):
                text = texts.get(item["r"])
                if text is None:
                    self.stats["lost"] += 1
                    self.log.warn("bus: a large message from {sender} is gone", sender=sender)
                    continue
                item = json.loads(text)
            self._deliver(sender, item[0], item[1])

    def _deliver(self, sender: str, topic: str, body: Any) -> None:
        self.stats["received"] += 1
        self._topics.dispatch(sender, topic, body)

    def _prune_stored(self) -> Deferred:
        d = self.store.run(prune_stored, self.reactor.seconds() - self.keep_stored)
        d.addErrback(lambda failure: failure.trap(StoreError))
        return d
