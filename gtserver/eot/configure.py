"""Builds the EOT listener's factory from its settings and the core's services."""

from __future__ import annotations

from typing import Any

from gtserver.eot.lobby import TableService
from gtserver.eot.protocol import EOTFactory, Requests
from gtserver.eot.settings import EOTSettings


def build_factory(core: Any, settings: EOTSettings) -> EOTFactory:
    """The EOT factory, its tables attached to ``core`` (a L{gtserver.core.Core}).

    The table service gets its own copy of the core's configured games. In a
    deployment of several nodes (``core.bus`` set) the requests go through
    :class:`gtserver.eot.cluster.EOTCluster`, which runs each on its
    session's home node.
    """
    tables = settings.tables
    service = core.attach(TableService(
        dict(core.games), core.events, core.clock, join_timeout=tables.join_timeout,
        game_timeout=tables.game_timeout, finished_grace=tables.finished_grace,
        tables_max=tables.tables_max))
    requests: Any = Requests(service, settings.request_size_max)
    if core.bus is not None:
        from gtserver.eot.cluster import EOTCluster
        requests = core.attach(EOTCluster(requests, core.bus, core.calls, core.leases,
                                          core.store, core.clock))
    return EOTFactory(service, core.clock, request_size_max=settings.request_size_max,
                      connection_timeout=settings.connection_timeout, requests=requests)
