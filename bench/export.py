"""Benchmark of ``gtserver-export``: every table of a generated log, time and peak RSS.

Not a test. Run from the checkout::

    python bench/export.py                       # 1,000,000 events, every table, CSV
    python bench/export.py --events 100000 --format csv parquet

Fills a fresh SQLite log through the store's batch insert (``append_events``,
10,000 rows a transaction) with a mix like a busy lab's: EOT TicTacToe
matches (``match_start``, moves, one ``move_refused`` in ten matches,
``match_end``), rated uttt matches with their ``rating_change`` events, VR
logins, chat lines, buttons, poses and ticks, logouts. Then runs
``python -m gtserver.export --table T --format F -o FILE`` once per table and
format as a child process and reports, from ``os.wait4``, its wall time, its
CPU time and its peak RSS (``ru_maxrss``), plus the rows written and the file
size. Running it at two sizes shows whether memory stays flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, CHECKOUT)

BATCH = 10000
TABLES = ("events", "moves", "matches", "chat", "poses", "presence")


def generated_events(count: int):
    """``count`` event rows in EVENT_COLUMNS order, in time order."""
    now = 1764662400.0
    made = match = 0
    while made < count:
        match += 1
        match_id = f"m{match}"
        players = [f"user{match % 997}", f"user{(match * 7 + 1) % 997}"]
        block = []
        if match % 2:
            block.append(("eot", "match_start", None, None, match_id, None,
                          {"game": "TicTacToe", "players": players, "ranked": False}))
            for number, position in enumerate((4, 0, 8, 2, 6, 1, 3, 5, 7)):
                block.append(("eot", "move", players[number % 2], None, match_id,
                              "10.0.0.5:50412",
                              {"seat": number % 2, "move": {"position": position},
                               "game": "TicTacToe", "session": f"s{match}",
                               "player": number % 2}))
                if number == 3 and match % 10 == 1:
                    block.append(("eot", "move_refused", players[0], None, match_id,
                                  "10.0.0.5:50412",
                                  {"seat": 0, "move": {"position": 4},
                                   "message": "that position is taken"}))
            block.append(("eot", "match_end", None, None, match_id, None,
                          {"outcome": [0.5, 0.5], "aborted_by": None}))
        else:
            block.append(("uttt", "match_start", None, None, match_id, None,
                          {"game": "uttt", "players": players, "ranked": True}))
            for number in range(12):
                block.append(("uttt", "move", players[number % 2], None, match_id,
                              "10.0.0.6:50413",
                              {"seat": number % 2, "move": {"sub_x": number % 3,
                                                            "sub_y": 1, "x": 2, "y": 0}}))
            block.append(("uttt", "match_end", None, None, match_id, None,
                          {"outcome": [1.0, 0.0], "aborted_by": None}))
            for seat, (old, new) in enumerate(((1000, 1010), (1000, 990))):
                block.append(("uttt", "rating_change", players[seat], None, match_id, None,
                              {"old": old, "new": new, "score": 1.0 - seat}))
        member = players[0]
        block.append(("vr", "login", member, None, None, "10.0.0.7:50414", {"registered": False}))
        block.append(("vr", "join", member, "lobby", None, "10.0.0.7:50414", None))
        block.append(("vr", "msg", member, "lobby", None, "10.0.0.7:50414", "round over"))
        block.append(("vr", "button", member, "lobby", None, "10.0.0.7:50414", "cooperate"))
        for tick in range(20):
            block.append(("vr", "transform", member, "lobby", None, "10.0.0.7:50414",
                          {"pos": {"x": tick * 0.1, "y": 1.7, "z": 0.0},
                           "rot": {"x": 0.0, "y": tick * 3.0, "z": 0.0}}))
            block.append(("vr", "tick", None, "lobby", None, None,
                          {"tick": match * 20 + tick, "users": [member]}))
        block.append(("vr", "leave", member, "lobby", None, "10.0.0.7:50414", None))
        block.append(("vr", "logout", member, None, None, "10.0.0.7:50414",
                      {"since": now, "seconds": 30.0, "rooms": []}))
        for source, kind, user, room, match_of, address, data in block:
            if made == count:
                return
            now += 0.01
            yield (now, source, kind, user, room, match_of, address,
                   None if data is None else json.dumps(data))
            made += 1


async def fill(reactor, path: str, count: int) -> float:
    """Write ``count`` events into a new SQLite log at ``path``; seconds taken."""
    from gtserver.store import open_store
    from gtserver.store.events import append_events

    started = time.perf_counter()
    store = open_store(f"sqlite:{path}", reactor)
    await store.start()
    try:
        batch = []
        for row in generated_events(count):
            batch.append(row)
            if len(batch) == BATCH:
                await store.run(append_events, batch)
                batch = []
        await store.run(append_events, batch)
    finally:
        await store.close()
    return time.perf_counter() - started


def export_once(db: str, table: str, form: str, directory: str) -> dict:
    output = os.path.join(directory, f"{table}.{form}")
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "gtserver.export", "--db", f"sqlite:{db}", "--table", table,
         "--format", form, "-o", output], cwd=CHECKOUT, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    errors = child.stderr.read().decode()
    child.stderr.close()
    if status != 0:
        raise SystemExit(f"export of {table} as {form} failed: {errors}")
    with open(os.path.join(directory, f"{table}.provenance.json")) as file:
        rows = json.load(file)["rows"]
    return {"table": table, "format": form, "rows": rows, "seconds": elapsed,
            "cpu": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024,
            "size_mib": os.path.getsize(output) / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--format", nargs="+", default=["csv"],
                        choices=("csv", "jsonl", "parquet"))
    parser.add_argument("--table", nargs="+", default=list(TABLES), choices=TABLES)
    options = parser.parse_args()
    from twisted.internet import task, threads
    from twisted.internet.defer import ensureDeferred

    async def run(reactor):
        with tempfile.TemporaryDirectory(prefix="gtserver-bench-export-") as directory:
            db = os.path.join(directory, "log.sqlite")
            seconds = await fill(reactor, db, options.events)
            print(f"filled {options.events:,} events in {seconds:.1f} s "
                  f"({os.path.getsize(db) / 2 ** 20:.0f} MiB)")
            print(f"{'table':10} {'format':8} {'rows':>10} {'wall s':>8} {'cpu s':>8} "
                  f"{'peak RSS MiB':>13} {'file MiB':>9}")
            for form in options.format:
                for table in options.table:
                    result = await threads.deferToThread(export_once, db, table, form,
                                                         directory)
                    print(f"{table:10} {form:8} {result['rows']:>10,} "
                          f"{result['seconds']:>8.1f} {result['cpu']:>8.1f} "
                          f"{result['peak_rss_mib']:>13.1f} {result['size_mib']:>9.1f}",
                          flush=True)

    task.react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
