"""The web monitor's cost per live update: building and encoding the state.

Every ``--web-refresh`` seconds (1 by default) while someone watches, the
monitor builds the whole state and encodes it as JSON once for all viewers.
This measures that, in process, for a daemon holding many VR members and
live matches:

    python -m bench.web --members 2000 --rooms 100 --matches 1000

and prints milliseconds per update and the JSON size. The update runs on the
reactor, so its time is time the daemon serves nobody else; at 1 update a
second, 10 ms is 1 % of a core.
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

from twisted.internet.task import Clock

from gtserver.core import Core
from gtserver.eot.lobby import TableService
from gtserver.store import open_store
from gtserver.vr.rooms import RoomService, RoomSettings
from gtserver.web.monitor import Monitor


class Sink:
    def __init__(self, user: str, address: str) -> None:
        self.user = user
        self.address = address

    def deliver(self, room, events, shared, droppable) -> bool:
        return True


def build(members: int, rooms: int, matches: int) -> Monitor:
    clock = Clock()
    clock.advance(1_800_000_000)
    core = Core(open_store("sqlite::memory:"), clock)
    core.parent = SimpleNamespace(listeners=[])
    settings = RoomSettings(fps=1.0, history=50, changed_only=False, pose_log_rate=0.0)
    service = core.attach(RoomService(clock, core.events, settings,
                                      call_soon=lambda function: None,
                                      presence=core.presence))
    for number in range(members):
        sink = Sink(f"member-{number}", f"10.0.{number // 250}.{number % 250}:40000")
        service.join(sink, "lobby")
        room = f"room-{number % rooms}"
        service.join(sink, room)
        service.set_pose(sink, room, {"pos": {"x": 1.0, "y": 1.5, "z": 0.0},
                                      "rot": {"x": 0.0, "y": 0.0, "z": 0.0}})
        service.say(sink, room, "msg", "hello")
    service._dirty.clear()
    tables = core.attach(TableService(dict(core.games), core.events, clock, join_timeout=60,
                                      game_timeout=3600, finished_grace=60,
                                      tables_max=matches + 1))
    for number in range(matches):
        token = f"table-{number}"
        for seat in "ab":
            tables.join("TicTacToe", token, 2, f"p{number}{seat}")
        table = tables.tables[("TicTacToe", token)]
        to_move = table.match.game.current()[0]
        key = next(player.key for player in table.players if player.player_id == to_move)
        tables.move("TicTacToe", token, to_move, key, {"position": 4})
    core.events._buffer.clear()
    monitor = Monitor(core)
    monitor._sample()
    clock.advance(1)
    return monitor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--matches", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=50)
    options = parser.parse_args()
    monitor = build(options.members, options.rooms, options.matches)
    encoded = json.dumps(monitor.state())
    started, cpu = time.perf_counter(), time.thread_time()
    for _ in range(options.repeat):
        json.dumps(monitor.state())
    elapsed = (time.perf_counter() - started) / options.repeat
    cpu = (time.thread_time() - cpu) / options.repeat
    print(f"{options.members} members in {options.rooms} rooms, {options.matches} matches: "
          f"{cpu * 1000:.1f} ms CPU ({elapsed * 1000:.1f} ms wall) per update, "
          f"{len(encoded) / 1024:.0f} KiB of JSON")


if __name__ == "__main__":
    main()
