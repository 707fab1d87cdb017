"""Helpers shared by the test modules: a real daemon on loopback port 0."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred

from gtserver.store import events as event_queries
from gtserver.tap import Options, build_service, make_options_class

LOOPBACK = "tcp:0:interface=127.0.0.1"


def parse_options(*arguments: str, protocols: dict[str, Any] | None = None) -> Any:
    """Parsed options of the installed protocols (or of ``protocols`` only)."""
    options = (Options if protocols is None else make_options_class(protocols))()
    options.parseOptions(list(arguments))
    return options


def select_events(after_id: int = 0, limit: int = 10000, source: str | None = None,
                  kinds: tuple[str, ...] = (), room: str | None = None,
                  match_id: str | None = None, since: float | None = None,
                  until: float | None = None):
    """Transaction: one page of the research log in id order, filtered by at most
    one value of each column but the kinds; rows are ``(id, *EVENT_COLUMNS)``."""
    def one(value: str | None) -> tuple[str, ...]:
        return () if value is None else (value,)

    return (yield from event_queries.select_event_page(
        after_id, limit, sources=one(source), kinds=tuple(kinds), rooms=one(room),
        match_ids=one(match_id), since=since, until=until))


def sqlite_url(testcase: Any) -> str:
    """A fresh SQLite file for one test (kept across restarts within it)."""
    directory = tempfile.mkdtemp(prefix="gtserver-test-")
    testcase.addCleanup(_remove_tree, directory)
    return "sqlite:" + os.path.join(directory, "test.sqlite")


def _remove_tree(directory: str) -> None:
    import shutil
    shutil.rmtree(directory, ignore_errors=True)


class RunningServer:
    """A started GtserverService and where its listeners are bound."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.core = service.core
        self.store = service.store

    def factory(self, name: str) -> Any:
        """The protocol factory of listener ``name`` (shared by its endpoints)."""
        return next(item.factory for item in self.service.listeners
                    if item.protocol_name == name)

    def port(self, name: str, index: int = 0) -> int:
        """The TCP port of the ``index``-th endpoint of listener ``name``."""
        listeners = [item for item in self.service.listeners if item.protocol_name == name]
        return listeners[index].port.getHost().port

    async def stop(self) -> None:
        if self.service.running:
            await self.service.stopService()


async def start_server(testcase: Any, *arguments: str, db: str | None = None,
                       listeners: dict[str, str] | None = None,
                       protocols: dict[str, Any] | None = None,
                       freeze_heap: bool = False) -> RunningServer:
    """Start the daemon with ``arguments``; stopped again at test cleanup.

    Every installed listener (or every one of ``protocols``, if given) is off
    unless named in ``listeners`` (``{name: endpoint}``, loopback port 0 by
    default). Password hashing runs at the lowest cost so tests stay fast.
    """
    arguments_list = ["--db", db or sqlite_url(testcase), "--hash-cost", "4"]
    for name in (Options.protocols if protocols is None else protocols):
        arguments_list += ["--port", f"{name}=off"]
    for name, endpoint in (listeners or {}).items():
        arguments_list += ["--port", f"{name}={endpoint or LOOPBACK}"]
    arguments_list += list(arguments)
    service = build_service(parse_options(*arguments_list, protocols=protocols), reactor,
                            freeze_heap=freeze_heap)
    service.startService()
    server = RunningServer(service)
    testcase.addCleanup(lambda: ensureDeferred(server.stop()))
    await service.started
    return server
