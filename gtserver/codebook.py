"""The export's codebook: every table, column, event type and unit, as
Markdown for people (``codebook.md``) and JSON for programs (``codebook.json``)."""

from __future__ import annotations

import json
import os
from typing import Any

from gtserver import __version__ as gtserver_version
from gtserver.tables import EVENT_KINDS, TABLES

CODEBOOK_FORMAT = 1
PSEUDONYMS = ("With --pseudonymize KEYFILE every user name (the user column, and the "
              "names inside event data: players, users, names, observed, user, name) is "
              "replaced by p_ and the first 16 hex digits of HMAC-SHA256(key, name), the "
              "address column and addresses inside data are dropped; chat text and move "
              "arguments are kept.")


def describe() -> dict[str, Any]:
    """The codebook as plain data."""
    return {
        "codebook_format": CODEBOOK_FORMAT,
        "gtserver_version": gtserver_version,
        "formats": {"csv": "header row; empty cell for a missing value; true/false for "
                           "booleans; json columns hold JSON text",
                    "jsonl": "one JSON object per row, keys in column order, null for a "
                             "missing value; json columns hold JSON text",
                    "parquet": "one typed column each (int64, float64, bool, string); "
                               "the provenance in the file's key-value metadata "
                               "(gtserver.provenance), each column's unit and meaning in "
                               "its field metadata"},
        "pseudonyms": PSEUDONYMS,
        "tables": [{"name": table.name, "meaning": table.meaning,
                    "event_types": list(table.kinds) if table.kinds else "all",
                    "columns": [{"name": c.name, "type": c.type, "unit": c.unit,
                                 "meaning": c.meaning} for c in table.columns],
                    "notes": table.notes} for table in TABLES.values()],
        "event_types": EVENT_KINDS,
    }


def markdown(book: dict[str, Any]) -> str:
    lines = [f"# gtserver export codebook (gtserver {book['gtserver_version']})", "",
             "Written by `gtserver-export --codebook DIR`; docs/export.md explains the "
             "tables in prose.", "", "## Formats", ""]
    lines += [f"- `{name}`: {text}" for name, text in book["formats"].items()]
    lines += ["", "## Pseudonyms", "", book["pseudonyms"], ""]
    for table in book["tables"]:
        lines += [f"## Table `{table['name']}`", "", table["meaning"] + ".", ""]
        kinds = table["event_types"]
        lines += ["Event types read: " + ("all" if kinds == "all"
                                         else ", ".join(f"`{k}`" for k in kinds)), ""]
        lines += ["| column | type | unit | meaning |", "|---|---|---|---|"]
        lines += [f"| `{c['name']}` | {c['type']} | {c['unit']} | {c['meaning']} |"
                  for c in table["columns"]]
        lines += [""] + [note for note in table["notes"]] + ([""] if table["notes"] else [])
    lines += ["## Event types", "", "| type | meaning |", "|---|---|"]
    lines += [f"| `{kind}` | {text} |" for kind, text in book["event_types"].items()]
    return "\n".join(lines) + "\n"


def write_codebook(directory: str) -> list[str]:
    """Write ``codebook.md`` and ``codebook.json`` into ``directory``; their paths."""
    os.makedirs(directory, exist_ok=True)
    book = describe()
    paths = [os.path.join(directory, "codebook.md"), os.path.join(directory, "codebook.json")]
    with open(paths[0], "w", encoding="utf-8") as file:
        file.write(markdown(book))
    with open(paths[1], "w", encoding="utf-8") as file:
        json.dump(book, file, indent=2)
        file.write("\n")
    return paths
