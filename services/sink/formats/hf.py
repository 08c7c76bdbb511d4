"""`hf`: one Hugging Face `datasets.DatasetDict` of every part, written with `save_to_disk`
into `hf/` under the run's folder: `datasets.load_from_disk("<run>/hf")["<key>"]`, where a
part's key is its folder with `/` as `.`: `<subset>`, `<subset>.<split>`, `<subset>.rejected`.

Columns are typed as in `data.parquet` (bool, int64, float64, string; nested values as their
canonical JSON text). Each part goes through an Arrow stream file that the dataset maps rather
than loads, so memory stays flat; its fingerprint is the SHA-256 of that file, so the same rows
give the same `state.json` in every run.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from services.sink.formats import FormatOptions, PartRows, ReleasedPart, SinkFormat, Written
from services.sink.formats.parquet import ROW_GROUP_SIZE


class HfOptions(FormatOptions):
    folder: str = Field("hf", pattern=r"^[\w.-]+$")


class HfDatasetFormat(SinkFormat):
    name: ClassVar[str] = "hf"
    Options: ClassVar[type[FormatOptions]] = HfOptions

    @property
    def folder(self) -> str:
        assert isinstance(self.options, HfOptions)
        return self.options.folder

    def write(self, parts: Sequence[ReleasedPart], root: Path) -> Written:
        # Imported here: `datasets` takes seconds to import, and only this format needs it.
        from datasets import Dataset, DatasetDict, disable_progress_bars  # type: ignore[import-untyped]
        from datasets.table import MemoryMappedTable  # type: ignore[import-untyped]

        disable_progress_bars()  # a service's log is no terminal

        target = root / self.folder
        scratch = root / f".{self.folder}-staging"
        shutil.rmtree(target, ignore_errors=True)
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            splits = {}
            for released in parts:
                if not self.writes(released.part):
                    continue
                path = scratch / f"{released.part.key}.arrow"
                fingerprint = _write_stream(released.rows, path)
                table = MemoryMappedTable.from_file(str(path))
                splits[released.part.key] = Dataset(table, fingerprint=fingerprint)
            # `datasets` gives an empty dataset 0 shards, which it then cannot load: one, then.
            empty = {key: 1 for key, ds in splits.items() if len(ds) == 0}
            DatasetDict(splits).save_to_disk(str(target), num_shards=empty)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        files = sorted(str(p.relative_to(root)) for p in target.rglob("*") if p.is_file())
        return Written(files)

    def write_part(self, rows: PartRows, folder: Path) -> Written:
        from services.sink.formats import Part

        return self.write([ReleasedPart(Part(folder.name), rows)], folder)


def _write_stream(rows: PartRows, path: Path) -> str:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, rows.schema) as writer:
        for table in rows.tables(ROW_GROUP_SIZE):
            writer.write_table(table)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
