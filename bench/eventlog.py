"""Micro-benchmark of the research event log's write path.

Not a test. Run from the checkout::

    python bench/eventlog.py                       # SQLite file in a temp dir
    python bench/eventlog.py --db postgresql://u@127.0.0.1:5432/db
    python bench/eventlog.py --events 500000 --rounds 5

Records ``--events`` good events through :class:`EventLog` (batches of 1,000)
and waits for them to be stored; against a bare baseline measured in the same
run that appends the same rows in the same batches with ``store.run`` directly.
Reports events per second and the ratio EventLog / bare, best of ``--rounds``.
The split path (a batch the store refuses) never runs here: this shows that
the happy path costs what a plain batched INSERT costs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from gtserver.core.events import EventLog  # noqa: E402
from gtserver.store import Statement, open_store  # noqa: E402
from gtserver.store import events as queries  # noqa: E402

BATCH = 1000


def rows(count: int) -> list[tuple]:
    return [(float(n), "vr", "msg", f"user{n % 50}", "lobby", None, "127.0.0.1:5000",
             json.dumps(f"line {n}")) for n in range(count)]


def clear():
    yield Statement("DELETE FROM events")


async def bare(store, events: list[tuple]) -> float:
    await store.run(clear)
    start = time.perf_counter()
    for offset in range(0, len(events), BATCH):
        await store.run(queries.append_events, events[offset:offset + BATCH])
    return time.perf_counter() - start


async def through_event_log(store, reactor, events: list[tuple]) -> float:
    await store.run(clear)
    log = EventLog(store, reactor, batch_size=BATCH)
    log.startService()
    start = time.perf_counter()
    for row in events:
        log.record(row[1], row[2], user=row[3], room=row[4], match=row[5], address=row[6],
                   data=row[7], time=row[0])
    await log.flush()
    elapsed = time.perf_counter() - start
    await log.stopService()
    assert log.written == len(events) and log.refused == 0, (log.written, log.refused)
    return elapsed


async def main(reactor, options) -> None:
    url = options.db or "sqlite:" + os.path.join(tempfile.mkdtemp(), "bench.sqlite")
    store = open_store(url, reactor)
    await store.start()
    events = rows(options.events)
    best_bare = best_log = float("inf")
    for _round in range(options.rounds):
        best_bare = min(best_bare, await bare(store, events))
        best_log = min(best_log, await through_event_log(store, reactor, events))
    await store.close()
    print(f"engine {store.engine}, {options.events} events, batches of {BATCH}, "
          f"best of {options.rounds}")
    print(f"  bare store.run      {options.events / best_bare:12,.0f} events/s")
    print(f"  EventLog            {options.events / best_log:12,.0f} events/s"
          f"   ratio {best_bare / best_log:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
