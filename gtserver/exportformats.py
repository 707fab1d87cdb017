"""Row writers of ``gtserver-export``: CSV, JSON Lines and Parquet, each
writing as it goes (Parquet one row group per page of rows)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any

from gtserver.tables import Column

FORMATS = ("csv", "jsonl", "parquet")
#: Rows per Parquet row group.
ROW_GROUP = 10000
#: The Parquet key-value metadata key holding the export's provenance (JSON).
PROVENANCE_KEY = "gtserver.provenance"


class MissingPyarrow(Exception):
    """Parquet was asked for without pyarrow installed."""


def csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return value


class CSVWriter:
    def __init__(self, output: Any, columns: Sequence[Column]) -> None:
        self.names = [column.name for column in columns]
        self.writer = csv.writer(output, lineterminator="\n")
        self.writer.writerow(self.names)

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow([csv_value(row.get(name)) for name in self.names])

    def flush(self) -> None:
        pass

    def close(self, provenance: dict[str, Any]) -> None:
        pass


class JSONLinesWriter:
    def __init__(self, output: Any, columns: Sequence[Column]) -> None:
        self.names = [column.name for column in columns]
        self.output = output

    def write(self, row: dict[str, Any]) -> None:
        self.output.write(json.dumps({name: row.get(name) for name in self.names},
                                     ensure_ascii=False) + "\n")

    def flush(self) -> None:
        pass

    def close(self, provenance: dict[str, Any]) -> None:
        pass


class ParquetWriter:
    def __init__(self, output: Any, columns: Sequence[Column]) -> None:
        try:
            import pyarrow
            import pyarrow.parquet
        except ImportError:
            raise MissingPyarrow(
                "Parquet needs pyarrow: pip install 'gtserver[parquet]'") from None
        self.pyarrow = pyarrow
        types = {"int": pyarrow.int64(), "float": pyarrow.float64(), "bool": pyarrow.bool_()}
        self.schema = pyarrow.schema([
            pyarrow.field(column.name, types.get(column.type, pyarrow.string()),
                          metadata={"unit": column.unit, "meaning": column.meaning})
            for column in columns])
        self.names = [column.name for column in columns]
        self.writer = pyarrow.parquet.ParquetWriter(output, self.schema)
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            batch = self.pyarrow.Table.from_pylist(self.rows, schema=self.schema)
            self.writer.write_table(batch)
            self.rows = []

    def close(self, provenance: dict[str, Any]) -> None:
        self.flush()
        self.writer.add_key_value_metadata({PROVENANCE_KEY: json.dumps(provenance,
                                                                       sort_keys=True)})
        self.writer.close()


def open_writer(form: str, output: Any, columns: Sequence[Column]) -> Any:
    """A writer of ``form`` onto ``output`` (text for CSV and JSON Lines,
    binary or a path for Parquet)."""
    return {"csv": CSVWriter, "jsonl": JSONLinesWriter, "parquet": ParquetWriter}[form](
        output, columns)
