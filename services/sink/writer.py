"""Deterministic dataset files: the same rows, in any arrival order, give byte-identical files.

Rows are ordered by `source_index` (rows without one last; ties broken by the canonical JSON
of the released record, so even duplicated indices cannot make the order depend on arrival).
`data.jsonl` holds one object per line with keys in `columns` order (missing keys as null,
bytes as base64); `data.parquet` holds exactly those values with an explicit schema
(`services.sink.columns`, `services.sink.formats.parquet`). Both are written by format plug-ins
from a part staged and merged as the sink does it (`services.sink.staging`), so the files of
`write_dataset` are the sink's files for the same rows.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.coordinator.manifest import canonical_json
from services.sink.formats import PartRows, SinkFormat, build_format
from services.sink.formats.parquet import PARQUET_COMPRESSION, PARQUET_OPTIONS, ROW_GROUP_SIZE
from services.sink.staging import PartStager, sort_key
from shared.registry import UnknownName

__all__ = [
    "DEFAULT_FORMATS",
    "PARQUET_COMPRESSION",
    "PARQUET_OPTIONS",
    "ROW_GROUP_SIZE",
    "DatasetFiles",
    "sha256",
    "write_dataset",
    "write_part",
]

DEFAULT_FORMATS = ("jsonl", "parquet")


class DatasetFiles(dict[str, str]):
    """File name -> SHA-256 hex of each file written, plus the folder they are in.

    A plain dict to JSON encoders and `==`, so the sink can record it in its release status.
    """

    def __init__(self, folder: Path, sha256: Mapping[str, str]) -> None:
        super().__init__(sha256)
        self.folder = folder

    @property
    def sha256(self) -> dict[str, str]:
        return dict(self)

    @property
    def paths(self) -> dict[str, Path]:
        return {name: self.folder / name for name in self}


def formats_named(names: Sequence[str]) -> list[SinkFormat]:
    """Formats by name with default options; an unknown one is a ValueError naming it."""
    try:
        return [build_format(name) for name in names]
    except UnknownName as exc:
        raise ValueError(str(exc)) from None


def write_part(rows: PartRows, folder: Path, formats: Sequence[SinkFormat]) -> DatasetFiles:
    """Every format's files of one part in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    for fmt in formats:
        written = fmt.write_part(rows, folder)
        hashes |= {name: written.sha256.get(name) or sha256(folder / name) for name in written.files}
    return DatasetFiles(folder, hashes)


def write_dataset(
    rows: list[dict[str, Any]],
    folder: Path,
    columns: list[str] | None,
    formats: list[str] | None = None,
) -> DatasetFiles:
    """Write `data.<format>` files (default: jsonl and parquet) under `folder`.

    `columns=None` takes every key, in order of first appearance in the rows sorted by
    (source index, canonical JSON of the row).
    """
    chosen = formats_named(DEFAULT_FORMATS if formats is None else formats)
    if columns is None:
        ordered = sorted(rows, key=lambda r: (sort_key(r), canonical_json(r)))
        columns = list(dict.fromkeys(itertools.chain.from_iterable(ordered)))
    staging = Path(
        tempfile.mkdtemp(prefix=".staging-", dir=folder.parent if folder.parent.exists() else None)
    )
    try:
        stager = PartStager(staging, columns)
        for row in rows:
            stager.add(row)
        return write_part(stager.merge(), folder, chosen)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
