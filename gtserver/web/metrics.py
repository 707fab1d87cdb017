"""The ``web`` listener's side of the metrics: the live state read at scrape
time from the running cores (:class:`LiveState`: rooms and members, live
matches, the matchmaking queue, parked EOT requests, the event log's
backlog), and the ``/metrics`` and ``/health`` resources. The instruments
are :mod:`gtserver.metrics`, shared by every part of the daemon.
"""

from __future__ import annotations

import hmac
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

import gtserver
from gtserver.metrics import ENABLED, REGISTRY, RUNNING

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

    def __init__(self, cores: weakref.WeakSet) -> None:
        self.cores = cores

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


LIVE = LiveState(RUNNING)
if ENABLED:
    REGISTRY.register(LIVE)
    REGISTRY.register(_BuildInfo())




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

    Healthy when the daemon serves, its bus (a node of a deployment) listens,
    and a trivial ``SELECT 1`` comes back from the store within ``timeout``
    seconds. Serving: the service has started (every listener listening) and
    is not stopping; given the core, the core runs (from the moment the store
    is open until the listeners have stopped).
    """

    def serving() -> bool:
        started = getattr(service, "started", None)
        return service.running and (not hasattr(service, "started")
                                    or (started is not None and started.called))

    from gtserver.store.settings import ping

    async def check() -> bool | str:
        if not serving():
            return "not serving: the daemon is starting or stopping"
        bus = getattr(getattr(service, "core", service), "bus", None)
        if bus is not None and not getattr(bus, "listening", True):
            return "the bus does not listen: messages from the other nodes are lost"
        try:
            await service.store.run(ping).addTimeout(timeout, reactor)
        except Exception as error:
            return f"the store does not answer: {error}"
        return True

    def run() -> Deferred:
        return ensureDeferred(check())

    return run
