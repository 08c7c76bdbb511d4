"""`jsonl`: `data.jsonl`, one object per line with keys in column order (missing keys as null,
bytes as base64), rows in release order: the exact lines the sink staged as rows arrived."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

from services.sink.formats import PartRows, SinkFormat, Written


class JsonlFormat(SinkFormat):
    name: ClassVar[str] = "jsonl"
    FILE: ClassVar[str] = "data.jsonl"

    def write_part(self, rows: PartRows, folder: Path) -> Written:
        digest = hashlib.sha256()
        with open(folder / self.FILE, "wb") as fh:
            for block in rows.line_blocks():
                digest.update(block)
                fh.write(block)
        return Written([self.FILE], sha256={self.FILE: digest.hexdigest()})
