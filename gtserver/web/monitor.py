"""What the web monitor shows and the controls it offers, as plain data.

:class:`Monitor` reads the live services through their read-only
``snapshot()`` methods (rooms, matches, matchmaking, EOT sessions, presence)
and never creates a service that no listener asked for. A sampler runs every
``refresh`` seconds while the web listener is up: it keeps the counts from
which rates (messages and pose frames a second) are computed, checks now and
then that the store answers, and pushes the state to live subscribers (the
page's server-sent event stream).

Every control is recorded in the research event log (source ``web``, kind
``operator_*``) with who used it and from where.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gtserver import __version__
from gtserver.core.presence import DEFAULT_DROPOUT_MINUTES
from gtserver.store import settings as queries

SOURCE = "web"
#: Seconds between two checks that the store answers.
STORE_CHECK_INTERVAL = 5.0
#: Seconds of samples the rates are computed over.
RATE_WINDOW = 5.0
#: Longest system message, in characters.
MAX_MESSAGE = 2000
#: Largest share of the reactor thread's time the live updates may take: a
#: state that costs more to build and encode is sent less often.
MAX_SHARE = 0.05


class ControlError(Exception):
    """A control that was refused: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def connection_count(factory: Any) -> int | None:
    """Open connections of a listener's factory, if it keeps them."""
    connections = getattr(factory, "connections", None)
    return None if connections is None else len(connections)


# The services are imported when first read, so that the monitor works with
# whichever listeners are installed; each is None unless a listener attached it.

def _room_service(core: Any) -> Any:
    from gtserver.vr.rooms import RoomService
    return core.attached(RoomService)


def _uttt_service(core: Any) -> Any:
    from gtserver.uttt.matchmaking import UltimateMatches
    return core.attached(UltimateMatches)


def _eot_service(core: Any) -> Any:
    from gtserver.eot.lobby import TableService
    return core.attached(TableService)


class Monitor:
    log = Logger()

    def __init__(self, core: Any, refresh: float = 1.0,
                 dropout_window: float = 60.0 * DEFAULT_DROPOUT_MINUTES) -> None:
        """``dropout_window``: seconds a disconnection stays in the dropout view."""
        self.core = core
        self.clock = core.clock
        self.refresh = refresh
        self.dropout_window = dropout_window
        self.started = self.clock.seconds()
        self.store_status: dict[str, Any] = {"reachable": None, "checked": None, "error": None}
        self._store_check: Deferred | None = None
        #: (time, {room name: (messages, ticks)}), oldest first.
        self._samples: deque[tuple[float, dict[str, tuple[int, int]]]] = deque()
        #: Called with the state's JSON at every sample (the live streams).
        self.subscribers: set[Callable[[str], None]] = set()
        self._sampler: LoopingCall | None = None
        #: No live update before this time (see MAX_SHARE).
        self._next_push = 0.0

    # lifecycle (the web listener's factory starts and stops it)

    def start(self) -> None:
        if self._sampler is None:
            self._sampler = LoopingCall(self._sample)
            self._sampler.clock = self.clock
            self._sampler.start(self.refresh, now=True)

    def stop(self) -> None:
        if self._sampler is not None and self._sampler.running:
            self._sampler.stop()
        self._sampler = None

    def _sample(self) -> None:
        try:
            now = self.clock.seconds()
            rooms = _room_service(self.core)
            counts = ({name: (room.messages, room.ticks) for name, room in rooms.rooms.items()}
                      if rooms is not None else {})
            self._samples.append((now, counts))
            while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
                self._samples.popleft()
            checked = self.store_status["checked"]
            if checked is None or now - checked >= STORE_CHECK_INTERVAL:
                self.check_store()
            if self.subscribers and now >= self._next_push:
                started = time.thread_time()
                encoded = json.dumps(self.state())
                for subscriber in list(self.subscribers):
                    subscriber(encoded)
                cost = time.thread_time() - started
                self._next_push = now + cost / MAX_SHARE
        except Exception:
            self.log.failure("web monitor sample failed")

    # the store

    def check_store(self) -> Deferred:
        """Ask the store to answer; fires with True or False (and remembers it)."""
        if self._store_check is not None:
            return self._chained(self._store_check)
        d = self.core.store.run(queries.ping)

        def answered(_: Any) -> bool:
            self.store_status.update(reachable=True, error=None)
            return True

        def failed(failure: Any) -> bool:
            self.store_status.update(reachable=False, error=failure.getErrorMessage())
            return False

        def done(result: bool) -> bool:
            self.store_status["checked"] = self.clock.seconds()
            self._store_check = None
            return result

        d.addCallbacks(answered, failed)
        d.addCallback(done)
        self._store_check = d
        return self._chained(d)

    @staticmethod
    def _chained(d: Deferred) -> Deferred:
        result: Deferred = Deferred()

        def relay(value: Any) -> Any:
            result.callback(value)
            return value

        d.addCallback(relay)
        return result

    # the state

    def state(self) -> dict[str, Any]:
        core = self.core
        now = self.clock.seconds()
        service = core.parent
        events = core.events
        rooms = _room_service(core)
        uttt = uttt_state = _uttt_service(core)
        eot = eot_state = _eot_service(core)
        matches: list[dict[str, Any]] = []
        if uttt is not None:
            uttt_state = uttt.snapshot()
            matches += uttt_state.pop("matches")
        if eot is not None:
            eot_state = eot.snapshot()
            matches += eot_state.pop("matches")
        matches.sort(key=lambda match: -match["age"])  # oldest first
        return {
            "time": now,
            "server": {"version": __version__, "started": self.started,
                       "uptime": now - self.started},
            "listeners": [{"name": listener.protocol_name,
                           "description": listener.description,
                           "endpoint": listener.endpoint_string,
                           "where": listener.where(),
                           "connections": connection_count(listener.factory)}
                          for listener in getattr(service, "listeners", ())],
            "store": {"engine": core.store.engine, **self.store_status,
                      "backlog": events.backlog, "written": events.written,
                      "dropped": events.dropped_total, "refused": events.refused,
                      "lost": events.lost},
            "rooms": self._rooms(rooms, now) if rooms is not None else None,
            "matches": matches,
            "uttt": uttt_state,
            "eot": eot_state,
            "presence": core.presence.snapshot(self.dropout_window),
        }

    def _rooms(self, service: Any, now: float) -> list[dict[str, Any]]:
        rooms = service.snapshot()
        if self._samples:
            then, counts = self._samples[0]
            elapsed = now - then
        else:
            elapsed, counts = 0.0, {}
        for room in rooms:
            before = counts.get(room["name"])
            if elapsed > 0 and before is not None:
                room["messages_per_second"] = max(0, room["messages"] - before[0]) / elapsed
                room["ticks_per_second"] = max(0, room["ticks"] - before[1]) / elapsed
            else:
                room["messages_per_second"] = room["ticks_per_second"] = None
        return rooms

    # controls

    def _record(self, action: str, who: str, address: str | None, *, room: str | None = None,
                match: str | None = None, data: Any = None) -> None:
        self.core.events.record(SOURCE, f"operator_{action}", user=who, room=room,
                                match=match, address=address, data=data)

    def _rooms_or_fail(self) -> Any:
        rooms = _room_service(self.core)
        if rooms is None:
            raise ControlError(404, "there is no VR listener")
        return rooms

    def room_message(self, room: str, text: str, who: str, address: str | None) -> None:
        rooms = self._rooms_or_fail()
        if room not in rooms.rooms:
            raise ControlError(404, f"there is no open room {room!r}")
        if len(text) > MAX_MESSAGE:
            raise ControlError(400, f"a message is at most {MAX_MESSAGE} characters")
        try:
            rooms.announce(room, text)
        except ValueError as error:
            raise ControlError(400, str(error)) from None
        self._record("message", who, address, room=room, data={"text": text})

    def close_room(self, room: str, who: str, address: str | None) -> int:
        rooms = self._rooms_or_fail()
        if room not in rooms.rooms:
            raise ControlError(404, f"there is no open room {room!r}")
        try:
            count = rooms.close_room(room, "This room was closed by the experimenter.")
        except ValueError as error:
            raise ControlError(400, str(error)) from None
        self._record("close_room", who, address, room=room, data={"connections": count})
        return count

    def pause_room(self, room: str, paused: bool, who: str, address: str | None) -> None:
        rooms = self._rooms_or_fail()
        if room not in rooms.rooms:
            raise ControlError(404, f"there is no open room {room!r}")
        rooms.set_paused(room, paused)
        self._record("pause" if paused else "resume", who, address, room=room)

    def disconnect_user(self, user: str, listener: str | None, who: str,
                        address: str | None) -> int:
        presence = self.core.presence
        connections = presence.of_user(user, listener)
        if not connections:
            where = f" on {listener}" if listener else ""
            raise ControlError(404, f"{user!r} is not connected{where}")
        for connection in connections:
            presence.close(connection, "disconnected by the experimenter")
        self._record("disconnect", who, address, data={"target": user, "listener": listener,
                                                       "connections": len(connections)})
        return len(connections)

    async def end_match(self, match_id: str, who: str, address: str | None) -> None:
        uttt, eot = _uttt_service(self.core), _eot_service(self.core)
        match = await uttt.open_match(match_id) if uttt is not None else None
        if match is not None:
            from gtserver.uttt.matchmaking import UnknownMatch
            try:
                await uttt.end_by_operator(match_id)
            except UnknownMatch as error:
                raise ControlError(404, str(error)) from None
        else:
            match = eot.live_match(match_id) if eot is not None else None
            if match is None or not eot.end_match(match_id):
                raise ControlError(404, f"there is no live match {match_id!r}")
        self._record("end_match", who, address, match=match_id,
                     data={"game": match.game_name, "players": [s.name for s in match.seats]})
