"""``gtserver-export``: the research event log as CSV, for pandas, R and spreadsheets.

Reads the same database as the daemon (``--db``, same URL forms) in pages,
through the store layer, and writes one row per event::

    id,time,epoch,source,type,user,room,match,address,data

``time`` is ISO 8601 in UTC with microseconds, ``epoch`` the same instant in
seconds since 1970 (float); ``data`` is the event's JSON text in one quoted
column. See docs/export.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from gtserver.option_types import read_database_url
from gtserver.store import BadDatabaseURL, open_store, validate_url
from gtserver.store import events as queries

COLUMNS = ("id", "time", "epoch", "source", "type", "user", "room", "match", "address", "data")
PAGE = 10000


def parse_time(text: str) -> float:
    """Epoch seconds, or an ISO 8601 date/time (UTC unless it names an offset)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither epoch seconds nor an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds")


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtserver-export",
        description="Write gtserver's research event log as CSV (header row, one event "
                    "per row, times as ISO 8601 UTC and epoch seconds, data as JSON).")
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--db", default="sqlite:gtserver.sqlite",
                          help="database URL, as for the daemon (default: %(default)s)")
    database.add_argument("--db-file", metavar="PATH",
                          help="file holding the database URL, as for the daemon "
                               "(keeps a password out of the command line)")
    parser.add_argument("--source", action="append", default=[],
                        help="only events of this source: vr, uttt, eot, web (repeatable)")
    parser.add_argument("--room", action="append", default=[],
                        help="only events of this VR room (repeatable)")
    parser.add_argument("--match", action="append", default=[],
                        help="only events of this match id (repeatable)")
    parser.add_argument("--type", dest="types", action="append", default=[],
                        help="only events of this type, e.g. msg, join, transform, move "
                             "(repeatable)")
    parser.add_argument("--since", type=parse_time,
                        help="only events at or after this time (epoch seconds or ISO 8601)")
    parser.add_argument("--until", type=parse_time,
                        help="only events before this time (epoch seconds or ISO 8601)")
    parser.add_argument("-o", "--output", default="-",
                        help="CSV file to write (default: standard output)")
    return parser


async def export(reactor: Any, options: argparse.Namespace, output: TextIO) -> int:
    """Write every matching event to ``output``; returns the number of rows."""
    store = open_store(options.db, reactor)
    await store.start()
    try:
        writer = csv.writer(output, lineterminator="\n")
        writer.writerow(COLUMNS)
        count, after = 0, 0
        while True:
            rows = await store.run(
                queries.select_event_page, after, PAGE, sources=tuple(options.source),
                kinds=tuple(options.types), rooms=tuple(options.room),
                match_ids=tuple(options.match), since=options.since, until=options.until)
            for event_id, time, source, kind, user, room, match, address, data in rows:
                writer.writerow((event_id, iso(time), repr(float(time)), source, kind,
                                 user, room, match, address, data))
            count += len(rows)
            if len(rows) < PAGE:
                return count
            after = rows[-1][0]
    finally:
        await store.close()


def check_database(url: str) -> str | None:
    """An error message if the database cannot be exported from, else None."""
    try:
        validate_url(url)
    except BadDatabaseURL as error:
        return str(error)
    path = url[len("sqlite:"):] if url.startswith("sqlite:") else None
    if path and path != ":memory:" and not os.path.exists(path):
        return f"no database at {path}"
    return None


def discard_standard_output() -> None:
    """Point standard output at /dev/null, so that what is still buffered for
    a reader that has gone does not fail again when the process exits."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> None:
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    options = argument_parser().parse_args(argv)
    problem = None
    if options.db_file is not None:
        try:
            options.db = read_database_url(options.db_file)
        except ValueError as error:
            problem = str(error)
    problem = problem or check_database(options.db)
    if problem:
        print(f"gtserver-export: {problem}", file=sys.stderr)
        raise SystemExit(2)

    async def run(reactor: Any) -> None:
        if options.output == "-":
            try:
                await export(reactor, options, sys.stdout)
                sys.stdout.flush()
            except BrokenPipeError:
                discard_standard_output()  # the reader (head, less) has quit
            return
        with open(options.output, "w", encoding="utf-8", newline="") as output:
            count = await export(reactor, options, output)
        print(f"gtserver-export: {count} events written to {options.output}", file=sys.stderr)

    task.react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
