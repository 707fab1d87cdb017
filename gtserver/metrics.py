"""Prometheus instruments shared by the core, the store and every listener.

Everything is on one registry, :data:`REGISTRY`, in the Prometheus text
format through ``prometheus_client``. This module holds the *instruments*,
updated where things happen (connections, frames, requests, errors, moves,
ticks, store transactions, logins): each costs one counter or histogram
update, labelled children bound once, so no event looks labels up by name.
It knows no listener: the live state read at scrape time and the ``/metrics``
and ``/health`` resources are the ``web`` listener's
(:mod:`gtserver.web.metrics`), which reads the cores that run
(:data:`RUNNING`, kept by :class:`gtserver.core.Core`).

No metric carries a user name, a room name or an address: labels are
listener names, request kinds, outcomes, games and engines, all bounded.

Setting the environment variable ``GTSERVER_METRICS=off`` replaces every
instrument with a no-op. It exists to measure what metrics cost
(``bench/README.md``); a daemon serves ``/metrics`` with real figures only
without it.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.interfaces import IReactorCore
from twisted.python.failure import Failure

#: False when ``GTSERVER_METRICS=off``: instruments are no-ops (benchmark baseline).
ENABLED = os.environ.get("GTSERVER_METRICS", "on").strip().lower() not in ("off", "0", "no")

# The ``_created`` series of every counter and histogram would double the
# output for a figure Prometheus does not need (it detects resets itself).
disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

#: Histogram buckets (seconds) for things that take micro- to milliseconds.
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5)
#: Buckets (seconds) for waiting times of people.
WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class _Noop:
    """Stands in for any instrument or child when metrics are off."""

    value = 0

    def labels(self, *args: Any, **kwargs: Any) -> _Noop:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, value: float) -> None:
        pass

    def __call__(self, *values: str) -> None:
        pass



# ------------------------------------------------------------------ instruments

class Tally:
    """One counter or gauge value, updated without a lock.

    Every update happens on the reactor thread, so the lock
    ``prometheus_client`` takes on each increment (to be safe across
    threads) is pure cost on paths that run for every frame. The hottest
    paths write ``tally.value += 1`` directly.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class TallyFamily:
    """A labelled counter or gauge of :class:`Tally` children, as a collector.

    ``family.labels(*values)`` binds a child once (keep it); ``family(*values)``
    increments the child of those label values (one dictionary lookup).
    Callers pass bounded label values only, never names or free text.
    """

    def __init__(self, name: str, documentation: str, labels: Iterable[str] = (),
                 kind: str = "counter") -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = list(labels)
        self.kind = kind
        self.children: dict[tuple, Tally] = {}
        if not self.label_names:
            self.children[()] = Tally()

    def labels(self, *values: str) -> Tally:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.label_names):
                raise ValueError(f"{self.name} takes labels {self.label_names}")
            child = self.children[values] = Tally()
        return child

    def __call__(self, *values: str) -> None:
        child = self.children.get(values)
        if child is None:
            child = self.labels(*values)
        child.value += 1

    def inc(self, amount: float = 1) -> None:
        self.children[()].value += amount

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for values, child in list(self.children.items()):
            family.add_metric(list(values), child.value)
        yield family

    def _family(self) -> Metric:
        kind = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        return kind(self.name, self.documentation, labels=self.label_names)


def _instrument(kind: Any, name: str, documentation: str, labels: Iterable[str] = (),
                **options: Any) -> Any:
    if not ENABLED:
        return _Noop()
    if kind in ("counter", "gauge"):
        family = TallyFamily(name, documentation, labels, kind)
        REGISTRY.register(family)
        return family
    return kind(name, documentation, list(labels), registry=REGISTRY, **options)


CONNECTIONS = _instrument("gauge", "gtserver_connections",
                          "Open connections per listener.", ["listener"])
FRAMES_RECEIVED = _instrument(
    "counter", "gtserver_frames_received",
    "Complete messages received per listener (WebSocket messages; EOT requests).",
    ["listener"])
FRAMES_SENT = _instrument(
    "counter", "gtserver_frames_sent",
    "Messages written per listener (WebSocket messages; EOT replies).", ["listener"])
REQUESTS = _instrument("counter", "gtserver_requests",
                       "Requests handled, by listener, request kind and outcome.",
                       ["listener", "kind", "outcome"])
ERRORS = _instrument(
    "counter", "gtserver_errors",
    "Errors per listener: internal (a bug, logged with its traceback), store (the "
    "database failed a request) and policy_close (a connection closed for misbehaving).",
    ["listener", "kind"])
VR_TICK_DURATION = _instrument(Histogram, "gtserver_vr_tick_duration_seconds",
                               "Time one VR pose tick took over every room.",
                               buckets=FAST_BUCKETS)
VR_TICK_LATENESS = _instrument(
    Histogram, "gtserver_vr_tick_lateness_seconds",
    "How much later than one tick interval after the previous tick a VR tick ran.",
    buckets=FAST_BUCKETS)
MATCHES_STARTED = _instrument("counter", "gtserver_matches_started",
                              "Matches started, by source (uttt, eot) and game.",
                              ["source", "game"])
MATCHES_FINISHED = _instrument(
    "counter", "gtserver_matches_finished",
    "Matches ended, by source, game and how (over: by the rules; aborted: by a "
    "player, the server or a timeout).", ["source", "game", "how"])
MOVES = _instrument("counter", "gtserver_moves", "Accepted moves, by source and game.",
                    ["source", "game"])
MATCHMAKING_WAIT = _instrument(
    Histogram, "gtserver_uttt_matchmaking_wait_seconds",
    "How long a uttt player waited in the random-opponent queue before being paired.",
    buckets=WAIT_BUCKETS)
EVENTS_DROPPED = _instrument(
    "counter", "gtserver_event_log_dropped",
    "Research events dropped because the event log's buffer was full (store down).")
STORE_TRANSACTION = _instrument(
    Histogram, "gtserver_store_transaction_seconds",
    "Time from submitting a store transaction to its outcome (waiting included).",
    ["engine"], buckets=FAST_BUCKETS)
STORE_FAILURES = _instrument(
    "counter", "gtserver_store_failures",
    "Store transactions that failed, by engine and reason (unavailable: the database "
    "did not answer or the store is closing; conflict; unstorable: values the database "
    "cannot hold; error: anything else).", ["engine", "reason"])
LOGIN_FAILURES = _instrument("counter", "gtserver_login_failures",
                             "Wrong passwords, over every listener.")
LOGIN_THROTTLED = _instrument(
    "counter", "gtserver_login_throttled",
    "Logins or registrations refused by a budget (account, address, registrations).",
    ["budget"])
REACTOR_LAG = _instrument(
    Histogram, "gtserver_reactor_tick_seconds",
    "How late a timer due every 50 ms fired: the time the reactor spent in other work "
    "(one iteration or more) before it got back to its timers.", buckets=FAST_BUCKETS)


class ListenerMetrics:
    """The instruments of one listener, bound once: ``connections``,
    ``received``, ``sent`` (:class:`Tally` children), ``request(kind, outcome)``
    and ``error(kind)`` (increment by label values)."""

    def __init__(self, listener: str) -> None:
        self.connections = CONNECTIONS.labels(listener)
        self.received = FRAMES_RECEIVED.labels(listener)
        self.sent = FRAMES_SENT.labels(listener)
        self._requests: dict[tuple[str, str], Tally] = {}
        self._errors: dict[str, Tally] = {}
        self.listener = listener

    def request(self, kind: str, outcome: str) -> None:
        child = self._requests.get((kind, outcome))
        if child is None:
            child = self._requests[kind, outcome] = REQUESTS.labels(self.listener, kind,
                                                                    outcome)
        child.value += 1

    def error(self, kind: str) -> None:
        child = self._errors.get(kind)
        if child is None:
            child = self._errors[kind] = ERRORS.labels(self.listener, kind)
        child.value += 1


def store_failure_reason(failure: Any) -> str:
    """The ``reason`` label of a failed store transaction."""
    from gtserver.store.base import Conflict, StoreUnavailable, Unstorable
    if failure.check(StoreUnavailable):
        return "unavailable"
    if failure.check(Conflict):
        return "conflict"
    if failure.check(Unstorable):
        return "unstorable"
    return "error"


class StoreTimer:
    """Times the transactions of one store and counts their failures."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.latency = STORE_TRANSACTION.labels(engine)

    def finished(self, started: float, result: Any) -> None:
        """``started``: ``time.perf_counter()`` at submission; ``result``: the outcome."""
        self.latency.observe(time.perf_counter() - started)
        if isinstance(result, Failure):
            STORE_FAILURES(self.engine, store_failure_reason(result))



#: The cores that run, whose live state a scrape reads (see :func:`watch`).
RUNNING: weakref.WeakSet = weakref.WeakSet()


def watch(core: Any) -> None:
    """Report ``core``'s live state at scrape time (from its start to its stop)."""
    RUNNING.add(core)


def unwatch(core: Any) -> None:
    RUNNING.discard(core)


# ------------------------------------------------------------------ reactor lag

class ReactorProbe:
    """Measures the reactor's iteration time with a timer due every ``interval``.

    Each time the timer fires it records how late it is (monotonic clock) and
    schedules itself again. A timer is late by the time the reactor spent in
    whatever it was doing when the timer came due: reading sockets, running
    callbacks, ticking rooms. So the histogram shows what any timer or I/O
    event waits for the loop: mostly near zero, with long iterations as a
    tail. A self-rescheduling ``callLater`` rather than a ``LoopingCall``
    because a LoopingCall skips the intervals it missed, hiding the lag;
    rather than wrapping the reactor's own iteration because that means
    patching reactor internals that differ between reactors. Cost: 20 tiny
    calls a second.
    """

    def __init__(self, reactor: Any, interval: float = 0.05) -> None:
        self.reactor = reactor
        self.interval = interval
        self._call: Any = None
        self._due = 0.0

    def start(self) -> None:
        if self._call is None and ENABLED:
            self._schedule()

    def stop(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _schedule(self) -> None:
        self._due = time.monotonic() + self.interval
        self._call = self.reactor.callLater(self.interval, self._fired)

    def _fired(self) -> None:
        REACTOR_LAG.observe(max(time.monotonic() - self._due, 0.0))
        self._schedule()


def probe_for(clock: Any) -> ReactorProbe | None:
    """A probe for ``clock`` if it is a real reactor (not a test's ``task.Clock``)."""
    return ReactorProbe(clock) if IReactorCore.providedBy(clock) else None
