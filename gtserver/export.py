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
import json
import os
import sys
import time as wall_clock
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import Any

from gtserver import codebook, tables
from gtserver import exportformats as writers
from gtserver.option_types import read_database_url
from gtserver.provenance import redact_database_url
from gtserver.store import BadDatabaseURL, open_store, validate_url
from gtserver.store import events as queries
from gtserver.store import runs as run_queries

COLUMNS = tuple(column.name for column in tables.TABLES["events"].columns)
#: The fields of an event as read from the store's pages.
EVENT_FIELDS = ("id", "time", "source", "kind", "user", "room", "match", "address", "data",
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
    parser.add_argument("--table", choices=tuple(tables.TABLES), default="events",
                        help="which table: events (every event, the default), moves, "
                             "matches, chat, poses, presence (docs/export.md)")
    parser.add_argument("--format", choices=writers.FORMATS,
                        help="csv, jsonl (JSON Lines) or parquet (needs pyarrow: "
                             "pip install 'gtserver[parquet]'); default: from the "
                             "extension of -o (.jsonl, .parquet), else csv")
    parser.add_argument("--pseudonymize", metavar="KEYFILE",
                        help="replace user names by pseudonyms keyed by this file's bytes "
                             "(p_ + 16 hex digits of HMAC-SHA256; the same key gives the "
                             "same pseudonyms) and drop addresses; chat text is kept")
    parser.add_argument("--codebook", metavar="DIR",
                        help="write codebook.md and codebook.json (every table, column, "
                             "event type and unit) into DIR and exit")
    parser.add_argument("-o", "--output", default="-",
                        help="file to write (default: standard output; not for Parquet); "
                             "its provenance goes to the sidecar file "
                             "OUTPUT.provenance.json (out.csv -> out.provenance.json)")
    parser.add_argument("--provenance", metavar="FILE",
                        help="where to write the export's provenance (JSON); default: the "
                             "sidecar of -o, none for standard output")
    return parser


def sidecar_path(output: str) -> str:
    """``out.csv`` -> ``out.provenance.json`` (also ``.jsonl``, ``.parquet``;
    any other name gains the suffix)."""
    stem, extension = os.path.splitext(output)
    known = extension.lower() in (".csv", ".jsonl", ".parquet")
    return (stem if known else output) + ".provenance.json"


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


def output_format(options: argparse.Namespace) -> str:
    """``--format``, else the output file's extension, else CSV."""
    if options.format:
        return options.format
    extension = os.path.splitext(options.output)[1].lower().lstrip(".")
    return {"jsonl": "jsonl", "parquet": "parquet"}.get(extension, "csv")


def output_columns(table: tables.Table, extra: list[tables.Column],
                   pseudonymized: bool) -> list[tables.Column]:
    """The table's columns, its data-dependent ones inserted before ``run``
    (``address`` dropped when pseudonymizing)."""
    columns = [c for c in table.columns if not (pseudonymized and c.name == "address")]
    return columns[:-1] + extra + columns[-1:]


async def event_pages(store: Any, options: argparse.Namespace,
                      kinds: tuple[str, ...] | None) -> AsyncIterator[list[dict]]:
    """The events the filters select, of ``kinds`` (None: any), page by page."""
    wanted = tuple(options.types)
    if kinds is not None:
        wanted = tuple(k for k in (wanted or kinds) if k in kinds)
        if not wanted:      # --type names none of the table's types: no rows
            return
    after = 0
    while True:
        rows = await store.run(
            queries.select_event_page, after, PAGE, sources=tuple(options.source),
            kinds=wanted, rooms=tuple(options.room), match_ids=tuple(options.match),
            since=options.since, until=options.until, with_run=True)
        yield [dict(zip(EVENT_FIELDS, row, strict=True)) for row in rows]
        if len(rows) < PAGE:
            return
        after = rows[-1][0]


async def data_columns(store: Any, options: argparse.Namespace,
                       table: tables.Table) -> list[tables.Column]:
    """A first pass for the columns that depend on the log: the moves'
    ``arg_NAME`` columns, the matches' per-seat columns."""
    if table.name == "moves":
        names: dict[str, Any] = {}
        async for page in event_pages(store, options, ("move", "move_refused")):
            for event in page:
                data = tables.decode_data(event["data"])
                move = data.get("move") if isinstance(data, dict) else None
                if isinstance(move, dict):
                    for name, value in move.items():   # one value per kind is enough
                        names.setdefault((name, tables.scalar_kind(value)), {name: value})
        return tables.argument_columns(names.values())
    if table.name == "matches":
        seats = 2
        async for page in event_pages(store, options, ("match_start",)):
            for event in page:
                data = tables.decode_data(event["data"])
                if isinstance(data, dict) and isinstance(data.get("players"), list):
                    seats = max(seats, len(data["players"]))
        return tables.seat_columns(seats)
    return []


async def export(reactor: Any, options: argparse.Namespace, output: Any,
                 argv: Sequence[str] | None = None) -> int:
    """Write the chosen table's rows to ``output`` (a text file for CSV and
    JSON Lines, a binary one for Parquet) and, if the options ask for one,
    the provenance file; returns the number of rows.

    ``argv`` is the command line recorded in the provenance (default:
    ``sys.argv``'s arguments)."""
    started = wall_clock.time()
    table = tables.TABLES[options.table]
    form = output_format(options)
    pseudonyms = None
    if options.pseudonymize:
        pseudonyms = tables.Pseudonyms(read_key(options.pseudonymize))
    store = open_store(options.db, reactor)
    await store.start()
    try:
        extra = await data_columns(store, options, table)
        columns = output_columns(table, extra, pseudonyms is not None)
        deriver = table.derive(columns)
        writer = writers.open_writer(form, output, columns)
        count, read = 0, 0
        per_run: Counter[int | None] = Counter()

        def write(rows: Any) -> None:
            nonlocal count
            for row in rows:
                writer.write(row)
                per_run[row.get("run")] += 1
                count += 1

        async for page in event_pages(store, options, table.kinds):
            read += len(page)
            for event in page:
                write(deriver.feed(pseudonyms.event(event) if pseudonyms else event))
            writer.flush()
        write(deriver.finish())
        target = provenance_path(options)
        provenance = await describe_export(
            store, options, sys.argv[1:] if argv is None else argv, started, count,
            per_run, columns, form, read)
        writer.close(provenance)
        if target is not None:
            write_json(target, provenance)
        return count
    finally:
        await store.close()


def read_key(path: str) -> bytes:
    """The pseudonym key: the file's bytes."""
    with open(path, "rb") as file:
        key = file.read()
    if not key:
        raise ValueError(f"the pseudonym key file {path} is empty")
    return key


async def describe_export(store: Any, options: argparse.Namespace, argv: Sequence[str],
                          started: float, count: int, per_run: Counter,
                          columns: Sequence[tables.Column], form: str,
                          events_read: int) -> dict[str, Any]:
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
        "table": options.table,
        "format": form,
        "pseudonymized": bool(options.pseudonymize),
        "output": options.output,
        "columns": [column.name for column in columns],
        "column_types": {column.name: column.type for column in columns},
        "events_read": events_read,
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


def database_problem(options: Any) -> str | None:
    """Resolve ``--db-file`` into ``options.db``; an error message if the
    database cannot be read from, else None (gtserver-export, gtserver-replay)."""
    if options.db_file is not None:
        try:
            options.db = read_database_url(options.db_file)
        except ValueError as error:
            return str(error)
    return check_database(options.db)


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
    if options.codebook:
        written = codebook.write_codebook(options.codebook)
        print(f"gtserver-export: codebook written to {', '.join(written)}", file=sys.stderr)
        return
    problem = database_problem(options) or check_output(options)
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
        if output_format(options) == "parquet":
            count = await export(reactor, options, options.output, arguments)
        else:
            with open(options.output, "w", encoding="utf-8", newline="") as output:
                count = await export(reactor, options, output, arguments)
        what = "events" if options.table == "events" else f"{options.table} rows"
        print(f"gtserver-export: {count} {what} written to {options.output}, "
              f"provenance to {provenance_path(options)}", file=sys.stderr)

    task.react(lambda reactor: ensureDeferred(run(reactor)))


def check_output(options: argparse.Namespace) -> str | None:
    """An error message if the format or pseudonym key cannot be used, else None."""
    if output_format(options) == "parquet":
        if options.output == "-":
            return "Parquet needs an output file (-o FILE.parquet)"
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            return "Parquet needs pyarrow: pip install 'gtserver[parquet]'"
    if options.pseudonymize:
        try:
            read_key(options.pseudonymize)
        except (OSError, ValueError) as error:
            return f"cannot use the pseudonym key: {error}"
    return None


if __name__ == "__main__":
    main()
