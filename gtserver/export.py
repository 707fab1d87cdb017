"""``gtserver-export``: the research event log as CSV, for pandas, R and spreadsheets.

Reads the same database as the daemon (``--db``, same URL forms) in pages,
through the store layer, and writes one row per event::

    id,time,epoch,source,type,user,room,match,address,data,run

``time`` is ISO 8601 in UTC with microseconds, ``epoch`` the same instant in
seconds since 1970 (float); ``data`` is the event's JSON text in one quoted
column; ``run`` the id of the daemon run that recorded the event (empty for
events from before runs were recorded).

Every export has its provenance: for ``-o out.csv`` the sidecar
``out.provenance.json``, for standard output the file ``--provenance`` names.
It holds the runs the rows come from (as recorded at each start), the
export's command line (the ``--db`` password redacted) and filters, the
schema version, the export time and the row counts. See docs/export.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time as wall_clock
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from gtserver.option_types import read_database_url
from gtserver.provenance import redact_database_url
from gtserver.store import BadDatabaseURL, open_store, validate_url
from gtserver.store import events as queries
from gtserver.store import runs as run_queries

COLUMNS = ("id", "time", "epoch", "source", "type", "user", "room", "match", "address", "data",
           "run")
PAGE = 10000
#: Version of the provenance file's layout (docs/export.md).
PROVENANCE_FORMAT = 1


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
                        help="CSV file to write (default: standard output); its provenance "
                             "goes to the sidecar file OUTPUT.provenance.json "
                             "(out.csv -> out.provenance.json)")
    parser.add_argument("--provenance", metavar="FILE",
                        help="where to write the export's provenance (JSON); default: the "
                             "sidecar of -o, none for standard output")
    return parser


def sidecar_path(output: str) -> str:
    """``out.csv`` -> ``out.provenance.json`` (any other name gains the suffix)."""
    stem, extension = os.path.splitext(output)
    return (stem if extension.lower() == ".csv" else output) + ".provenance.json"


def provenance_path(options: argparse.Namespace) -> str | None:
    """Where this export's provenance goes (None: nowhere)."""
    if options.provenance:
        return options.provenance
    if options.output != "-":
        return sidecar_path(options.output)
    return None


def redacted_command_line(argv: Sequence[str]) -> list[str]:
    """The command line with the password of a ``--db`` URL hidden."""
    redacted, after_db = [], False
    for argument in argv:
        if after_db:
            argument, after_db = redact_database_url(argument), False
        elif argument == "--db":
            after_db = True
        elif argument.startswith("--db="):
            argument = "--db=" + redact_database_url(argument[len("--db="):])
        redacted.append(argument)
    return redacted


def filters(options: argparse.Namespace) -> dict[str, Any]:
    """The export's filters as given (times as epoch seconds and ISO 8601)."""
    chosen: dict[str, Any] = {"source": options.source, "room": options.room,
                              "match": options.match, "type": options.types}
    for name in ("since", "until"):
        moment = getattr(options, name)
        chosen[name] = None if moment is None else {"epoch": moment, "time": iso(moment)}
    return chosen


async def export(reactor: Any, options: argparse.Namespace, output: TextIO,
                 argv: Sequence[str] | None = None) -> int:
    """Write every matching event to ``output`` and, if the options ask for
    one, the provenance file; returns the number of rows.

    ``argv`` is the command line recorded in the provenance (default:
    ``sys.argv``'s arguments)."""
    started = wall_clock.time()
    store = open_store(options.db, reactor)
    await store.start()
    try:
        writer = csv.writer(output, lineterminator="\n")
        writer.writerow(COLUMNS)
        count, after = 0, 0
        per_run: Counter[int | None] = Counter()
        while True:
            rows = await store.run(
                queries.select_event_page, after, PAGE, sources=tuple(options.source),
                kinds=tuple(options.types), rooms=tuple(options.room),
                match_ids=tuple(options.match), since=options.since, until=options.until,
                with_run=True)
            for event_id, time, source, kind, user, room, match, address, data, run in rows:
                writer.writerow((event_id, iso(time), repr(float(time)), source, kind,
                                 user, room, match, address, data, run))
                per_run[run] += 1
            count += len(rows)
            if len(rows) < PAGE:
                break
            after = rows[-1][0]
        target = provenance_path(options)
        if target is not None:
            provenance = await describe_export(
                store, options, sys.argv[1:] if argv is None else argv, started, count,
                per_run)
            write_json(target, provenance)
        return count
    finally:
        await store.close()


async def describe_export(store: Any, options: argparse.Namespace, argv: Sequence[str],
                          started: float, count: int, per_run: Counter) -> dict[str, Any]:
    """The provenance of one export (docs/export.md, "Provenance")."""
    recorded = await store.run(run_queries.runs_by_id,
                               [run for run in per_run if run is not None])
    core_version, applied, plugin_versions = await store.run(run_queries.schema_version)
    runs = []
    for run_id, run_started, version, commit, digest, details in recorded:
        runs.append({"id": run_id, "rows": per_run[run_id], "started": run_started,
                     "started_time": iso(run_started), "gtserver_version": version,
                     "source_commit": commit, "options_sha256": digest,
                     "recorded": json.loads(details)})
    return {
        "provenance_format": PROVENANCE_FORMAT,
        "exported": {"epoch": started, "time": iso(started)},
        "command": ["gtserver-export", *redacted_command_line(argv)],
        "database": redact_database_url(options.db),
        "filters": filters(options),
        "table": "events",
        "output": options.output,
        "columns": list(COLUMNS),
        "schema_version": {"core": core_version, "core_applied": applied,
                           "plugins": plugin_versions},
        "rows": count,
        "rows_without_run": per_run[None],
        "runs": runs,
    }


def write_json(path: str, value: Any) -> None:
    """Write ``value`` to ``path`` as indented JSON, replacing the file whole."""
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=2, sort_keys=True)
        file.write("\n")
    os.replace(partial, path)


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

    arguments = list(sys.argv[1:] if argv is None else argv)
    options = argument_parser().parse_args(arguments)
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
                await export(reactor, options, sys.stdout, arguments)
                sys.stdout.flush()
            except BrokenPipeError:
                discard_standard_output()  # the reader (head, less) has quit
            return
        with open(options.output, "w", encoding="utf-8", newline="") as output:
            count = await export(reactor, options, output, arguments)
        print(f"gtserver-export: {count} events written to {options.output}, provenance "
              f"to {provenance_path(options)}", file=sys.stderr)

    task.react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
