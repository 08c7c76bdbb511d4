"""What both distilabel peers share: the seeds generator and the timing marks.

Imported by `bench/distilabel_cpu.py` and `bench/distilabel_teacher.py`, which run as scripts
in the bench's distilabel venv (their folder is on sys.path), never from FastDistill's own.
"""

# No `from __future__ import annotations`: distilabel reads step annotations at runtime.
import json
import time
from pathlib import Path
from typing import Any

from distilabel.steps import GeneratorStep
from pydantic import PrivateAttr


def mark(path: str, name: str) -> None:
    # Steps run in their own processes: a file is the simplest way out.
    Path(path, name).write_text(repr(time.time()))


class JsonlSeeds(GeneratorStep):  # type: ignore[misc]
    """The first `limit` seeds of a JSONL file (all when 0), projected on `fields`."""

    path: str
    marks: str
    fields: list[str]
    limit: int = 0
    _rows: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    def load(self) -> None:
        super().load()
        with open(self.path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
        if self.limit:
            rows = rows[: self.limit]
        self._rows = [{f: r.get(f) for f in self.fields} for r in rows]

    @property
    def outputs(self) -> list[str]:
        return self.fields

    def process(self, offset: int = 0) -> Any:
        rows = self._rows
        mark(self.marks, "first")
        for start in range(offset, len(rows), self.batch_size):
            yield rows[start : start + self.batch_size], start + self.batch_size >= len(rows)
