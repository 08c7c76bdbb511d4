"""A released run read back from its files: RELEASED.json and the parts it lists.

What `fastdistill export` and `fastdistill push` start from. Every file read is first checked
against the SHA-256 RELEASED.json gives it, so neither re-exports nor publishes a file that
changed since the release.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from services.sink.formats import Part
from services.sink.release import CARD, PIPELINE_YAML, REJECTED, RELEASED
from services.sink.writer import sha256


class NotReleased(Exception):
    """No released run there, or one whose files no longer match their checksums."""


@dataclass
class ReleasedRun:
    folder: Path
    record: dict[str, Any]

    @classmethod
    def open(cls, folder: Path) -> ReleasedRun:
        status = folder / RELEASED
        if not status.exists():
            why = "its gate rejected it" if (folder / REJECTED).exists() else "no RELEASED.json there"
            raise NotReleased(f"{folder} is not a released run: {why}")
        record = json.loads(status.read_text())
        if "subsets" not in record:
            raise NotReleased(f"{status} predates named subsets; re-run the pipeline to release it again")
        return cls(folder, record)

    @property
    def run_id(self) -> str:
        return str(self.record["run_id"])

    def files(self) -> dict[str, str]:
        """Every released file (relative path -> sha256), the card and pipeline YAML included."""
        out = dict(self.record["files"])
        for subset in self.record["subsets"].values():
            out |= subset["files"]
        return dict(sorted(out.items()))

    def verify(self, names: list[str] | None = None) -> None:
        files = self.files()
        for name in names if names is not None else list(files):
            if sha256(self.folder / name) != files[name]:
                raise NotReleased(f"{self.folder / name} changed since the release (its SHA-256 differs)")

    def parts(self) -> list[tuple[Part, list[tuple[str, str]]]]:
        """Every part with its (column, type) list, in release order."""
        out = []
        for stage, subset in self.record["subsets"].items():
            splits = subset["splits"]
            kept = [Part(stage, split) for split in splits] if splits else [Part(stage)]
            for part in [*kept, Part(stage, rejected=True)]:
                out.append((part, [(str(name), str(kind)) for name, kind in subset["columns"][part.folder]]))
        return out

    def rows(self, part: Part, columns: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        """The part's rows as released: from data.jsonl (exact), else data.parquet (with JSON-text
        columns decoded)."""
        files = self.files()
        for name in ("data.jsonl", "data.parquet"):
            relative = f"{part.folder}/{name}"
            if relative in files:
                self.verify([relative])
                path = self.folder / relative
                if name == "data.jsonl":
                    with open(path, "rb") as fh:
                        for line in fh:
                            yield json.loads(line)
                    return
                as_json = {c for c, kind in columns if kind == "json"}
                for batch in pq.ParquetFile(path).iter_batches():
                    for row in batch.to_pylist():
                        yield {
                            k: json.loads(v) if k in as_json and v is not None else v for k, v in row.items()
                        }
                return
        raise NotReleased(
            f"part {part.folder} of {self.folder} has neither data.jsonl nor data.parquet to read"
        )

    def publishable(self) -> list[str]:
        """What `push` uploads: the released files, RELEASED.json, and the coordinator's reports."""
        names = [*self.files(), RELEASED]
        names += [str(p.relative_to(self.folder)) for p in sorted((self.folder / "reports").glob("*.json"))]
        return names


__all__ = ["CARD", "PIPELINE_YAML", "NotReleased", "ReleasedRun"]
