"""`csv`: `data.csv` per part, a header of column names then one line per row, in release order.

Text as it is, null as an empty cell, numbers and booleans as JSON writes them, nested values
(lists, records) as canonical JSON text. Option `columns` picks and orders the columns (default:
every dataset column); `delimiter` is one character.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from services.sink.formats import FormatOptions, PartRows, SinkFormat, Written


class CsvOptions(FormatOptions):
    columns: list[str] | None = Field(default=None, min_length=1)
    delimiter: str = Field(",", min_length=1, max_length=1)


class CsvFormat(SinkFormat):
    name: ClassVar[str] = "csv"
    Options: ClassVar[type[FormatOptions]] = CsvOptions
    FILE: ClassVar[str] = "data.csv"

    @property
    def csv(self) -> CsvOptions:
        # SinkFormat.options is typed as the base; the registry built it from `Options`.
        assert isinstance(self.options, CsvOptions)
        return self.options

    def reads(self) -> set[str]:
        # Checked against every released subset when the pipeline loads.
        return set(self.csv.columns or ())

    def write_part(self, rows: PartRows, folder: Path) -> Written:
        columns = self.csv.columns or rows.columns
        with open(folder / self.FILE, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter=self.csv.delimiter, lineterminator="\n")
            writer.writerow(columns)
            for record in rows.records():
                writer.writerow([cell(record.get(column)) for column in columns])
        return Written([self.FILE], notes={self.FILE: {"rows": len(rows)}})


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
