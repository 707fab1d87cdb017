"""Prometheus metrics and the health check of the daemon (``/metrics``, ``/health``).

Everything is on one registry, :data:`REGISTRY`, in the Prometheus text
format through ``prometheus_client``. Two kinds of figures:

* *instruments* updated where things happen (connections, frames, requests,
  errors, moves, ticks, store transactions, logins). Each costs one counter
  or histogram update; labelled children are bound once (per listener, or
  cached per label set) so no event looks labels up by name;
* *live state* read at scrape time from the running cores
  (:class:`LiveState`): rooms and members, live matches, the matchmaking
  queue, parked EOT requests, the event log's backlog. Nothing is spent on
  these between scrapes.

No metric carries a user name, a room name or an address: labels are
listener names, request kinds, outcomes, games and engines, all bounded.

Setting the environment variable ``GTSERVER_METRICS=off`` replaces every
instrument with a no-op and registers no live state. It exists to measure
what metrics cost (``bench/README.md``); a daemon serves ``/metrics`` with
real figures only without it.
"""

from __future__ import annotations

import hmac
import os
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

import gtserver

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


# ------------------------------------------------------------------ live state

def _groups(values: Iterable[Any], key: Callable[[Any], tuple]) -> dict[tuple, int]:
    counts: dict[tuple, int] = {}
    for value in values:
        group = key(value)
        counts[group] = counts.get(group, 0) + 1
    return counts


class LiveState:
    """Reads the running cores' services at scrape time.

    A core registers itself while it runs (:func:`watch`). Services a core
    has not created (a listener that is off) are not created by a scrape:
    their figures are absent.
    """

    def __init__(self) -> None:
        self.cores: weakref.WeakSet = weakref.WeakSet()

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        from gtserver.eot.lobby import TableService
        from gtserver.uttt.matchmaking import UltimateMatches
        from gtserver.vr.rooms import RoomService

        cores = list(self.cores)
        backlog = GaugeMetricFamily("gtserver_event_log_backlog",
                                    "Research events waiting to be written to the store.")
        backlog.add_metric([], sum(core.events.backlog for core in cores))
        yield backlog
        for name, attribute, text in (
                ("gtserver_event_log_written", "written", "Research events written."),
                ("gtserver_event_log_refused", "refused",
                 "Research events the store refused, stored as unstorable_event instead."),
                ("gtserver_event_log_lost", "lost",
                 "Refused research events whose stand-in could not be stored either.")):
            family = CounterMetricFamily(name, text)
            family.add_metric([], sum(getattr(core.events, attribute) for core in cores))
            yield family

        rooms = _attached(cores, RoomService)
        if rooms:
            yield _gauge("gtserver_vr_rooms", "Live VR rooms (the lobby included).",
                         sum(len(service.rooms) for service in rooms))
            yield _gauge("gtserver_vr_members",
                         "VR room memberships (a user in two rooms counts twice).",
                         sum(len(room.members) for service in rooms
                             for room in service.rooms.values()))
            ticks = CounterMetricFamily("gtserver_vr_ticks", "VR pose ticks run.")
            ticks.add_metric([], sum(service.ticks for service in rooms))
            yield ticks

        uttt = _attached(cores, UltimateMatches)
        eot = _attached(cores, TableService)
        tables = [table for service in eot for table in service.tables.values()]
        if uttt or eot:
            live = GaugeMetricFamily("gtserver_matches_live",
                                     "Matches in memory and not finished, by source and game.",
                                     labels=["source", "game"])
            matches = [match for service in uttt for match in service.open.values()]
            matches += [table.match for table in tables if table.match is not None]
            counts = _groups((match for match in matches if not match.finished),
                             lambda match: (match.source, match.game_name))
            for labels, count in sorted(counts.items()):
                live.add_metric(list(labels), count)
            yield live

        if uttt:
            yield _gauge("gtserver_uttt_matchmaking_queue",
                         "uttt players waiting for a random opponent.",
                         sum(len(service.queue) for service in uttt))

        if eot:
            yield _gauge("gtserver_eot_sessions", "EOT sessions, waiting to fill or playing.",
                         len(tables))
            yield _gauge("gtserver_eot_parked_requests",
                         "EOT state requests parked until the state changes.",
                         sum(len(viewer.waiters) for table in tables
                             for viewer in table.parked))


def _attached(cores: list[Any], kind: type) -> list[Any]:
    """The services of class ``kind`` that listeners attached to ``cores``."""
    return [service for core in cores if (service := core.attached(kind)) is not None]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


class _BuildInfo:
    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("gtserver_build_info", "The running gtserver version.",
                                 labels=["version"])
        info.add_metric([gtserver.__version__], 1)
        yield info


LIVE = LiveState()
if ENABLED:
    REGISTRY.register(LIVE)
    REGISTRY.register(_BuildInfo())


def watch(core: Any) -> None:
    """Report ``core``'s live state at scrape time (from its start to its stop)."""
    LIVE.cores.add(core)


def unwatch(core: Any) -> None:
    LIVE.cores.discard(core)


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


# ------------------------------------------------------------------ resources

class MetricsResource(Resource):
    """``/metrics``: the registry in the Prometheus text format.

    Open by default (it holds no names or addresses). With ``token`` set,
    a request must carry ``Authorization: Bearer <token>``; others get 401.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry = REGISTRY,
                 token: bytes | None = None) -> None:
        super().__init__()
        self.registry = registry
        self.token = token

    def render_GET(self, request: Any) -> bytes:
        if self.token is not None and not self._authorized(request):
            request.setResponseCode(401)
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="gtserver metrics"')
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"a bearer token is required\n"
        output = generate_latest(self.registry)
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return output

    def _authorized(self, request: Any) -> bool:
        header = request.getHeader(b"authorization") or b""
        scheme, _, credentials = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(credentials.strip(), self.token)


class HealthResource(Resource):
    """``/health``: 200 ``ok`` when ``check()`` fires True, else 503 with the reason.

    ``check`` returns a Deferred (or a plain value) firing True when healthy,
    or a reason (a string, or False); a failure counts as unhealthy with its
    message as the reason. :func:`daemon_health` builds the daemon's check.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, check: Callable[[], Any]) -> None:
        super().__init__()
        self.check = check

    def render_GET(self, request: Any) -> Any:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        d = maybeDeferred(self.check)
        d.addCallbacks(lambda result: self._answer(request, result),
                       lambda failure: self._answer(request, failure.getErrorMessage()
                                                    or failure.type.__name__))
        d.addErrback(lambda failure: self.log.failure("health check answer failed", failure))
        return NOT_DONE_YET

    render_HEAD = render_GET

    @staticmethod
    def _answer(request: Any, result: Any) -> None:
        if getattr(request, "_disconnected", False) or request.finished:
            return
        if result is True:
            request.setResponseCode(200)
            body = b"ok\n"
        else:
            request.setResponseCode(503)
            reason = result if isinstance(result, str) and result else "unhealthy"
            body = reason.encode("utf-8", "replace") + b"\n"
        if request.method != b"HEAD":
            request.write(body)
        request.finish()


def daemon_health(service: Any, reactor: Any, timeout: float = 2.0) -> Callable[[], Deferred]:
    """The health check of a :class:`~gtserver.service.GtserverService` or of
    its :class:`~gtserver.core.Core` (what a listener plugin is given).

    Healthy when the daemon serves and a trivial ``SELECT 1`` comes back from
    the store within ``timeout`` seconds. Serving: the service has started
    (every listener listening) and is not stopping; given the core, the core
    runs (from the moment the store is open until the listeners have stopped).
    """

    def serving() -> bool:
        started = getattr(service, "started", None)
        return service.running and (not hasattr(service, "started")
                                    or (started is not None and started.called))

    from gtserver.store.settings import ping

    async def check() -> bool | str:
        if not serving():
            return "not serving: the daemon is starting or stopping"
        try:
            await service.store.run(ping).addTimeout(timeout, reactor)
        except Exception as error:
            return f"the store does not answer: {error}"
        return True

    def run() -> Deferred:
        return ensureDeferred(check())

    return run
