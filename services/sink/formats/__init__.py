"""Dataset formats as plug-ins: what the sink writes from a run's released parts.

A format is a `SinkFormat` subclass registered under a name in `SINK_FORMATS`, by the decorator
or by an entry point of the group `fastdistill.sink_formats` (how the built-in ones are
registered, see pyproject.toml; docs/datasets.md has an external example). A pipeline names its
formats in `sink.formats`, each a name or `{name: {options}}`; an unknown name or bad options
is a load-time error (`services.sink.checks`).

A release is made of *parts*: for each released stage (a subset) its kept rows, one part per
split when the sink splits them, and its rejected rows. A format gets every part in release
order and writes files under the run's folder; `write_part` is the one method most formats
implement (one part, one folder).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared.registry import Registry

if TYPE_CHECKING:  # pyarrow takes a while to import, and every service validates the sink section
    import pyarrow as pa

Record = dict[str, Any]


class PartRows(Protocol):
    """A part's rows in release order, readable several times."""

    columns: list[str]

    def __len__(self) -> int: ...

    @property
    def schema(self) -> pa.Schema: ...

    def line_blocks(self) -> Iterator[bytes]:
        """The released JSONL bytes (one object a line, keys in column order)."""
        ...

    def records(self) -> Iterator[Record]:
        """Each row as JSON reads it back (nested values as they are, bytes as base64 text)."""
        ...

    def tables(self, rows: int) -> Iterator[pa.Table]:
        """Arrow tables of `rows` rows with `schema` (nested values as canonical JSON text)."""
        ...


@dataclass(frozen=True)
class Part:
    """Where a part belongs: its subset (a released stage), its split, kept or rejected."""

    subset: str
    split: str | None = None
    rejected: bool = False

    @property
    def folder(self) -> str:
        """Its folder under the run's: `<subset>`, `<subset>/<split>` or `<subset>.rejected`."""
        if self.rejected:
            return f"{self.subset}.rejected"
        return self.subset if self.split is None else f"{self.subset}/{self.split}"

    @property
    def key(self) -> str:
        """Its name where parts share one namespace (a DatasetDict, a card's configs)."""
        return self.folder.replace("/", ".")


@dataclass
class ReleasedPart:
    part: Part
    rows: PartRows


@dataclass
class Written:
    #: files written, relative to the folder the format was given
    files: list[str] = field(default_factory=list)
    #: what a format wants on record about them (rows written, rows it skipped and why)
    notes: dict[str, Any] = field(default_factory=dict)
    #: SHA-256 hex of files whose bytes the format hashed as it wrote them (the others are
    #: read back to hash them)
    sha256: dict[str, str] = field(default_factory=dict)


class FormatOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The subsets (released stages) the format writes; None: every one. A training format
    #: reading fields that only one leaf of a DAG carries names that leaf here.
    subsets: list[str] | None = Field(default=None, min_length=1)


class SinkFormat(ABC):
    """A dataset format. Subclasses set `name`, their `Options` and implement `write_part`
    (or `write`, for a format that spans every part, such as one DatasetDict)."""

    name: ClassVar[str]
    Options: ClassVar[type[FormatOptions]] = FormatOptions
    #: Training formats write the kept parts only; data formats write the rejected ones too.
    writes_rejected: ClassVar[bool] = True

    def __init__(self, options: FormatOptions | None = None, **kwargs: Any) -> None:
        self.options = options if options is not None else self.Options(**kwargs)

    def reads(self) -> set[str]:
        """Fields the format reads from rows (checked against every kept subset at load)."""
        return set()

    def writes(self, part: Part) -> bool:
        """Whether the format writes `part` (its subset is chosen; a training format writes no
        rejected rows)."""
        chosen = self.options.subsets is None or part.subset in self.options.subsets
        return chosen and (self.writes_rejected or not part.rejected)

    def write(self, parts: Sequence[ReleasedPart], root: Path) -> Written:
        out = Written()
        for released in parts:
            if not self.writes(released.part):
                continue
            folder = root / released.part.folder
            folder.mkdir(parents=True, exist_ok=True)
            written = self.write_part(released.rows, folder)
            prefix = f"{released.part.folder}/"
            out.files += [prefix + name for name in written.files]
            out.notes |= {prefix + name: note for name, note in written.notes.items()}
            out.sha256 |= {prefix + name: digest for name, digest in written.sha256.items()}
        return out

    @abstractmethod
    def write_part(self, rows: PartRows, folder: Path) -> Written:
        """Write one part's files into `folder`."""


SINK_FORMATS: Registry[type[SinkFormat]] = Registry("fastdistill.sink_formats", "sink format")


def build_format(name: str, options: dict[str, Any] | None = None) -> SinkFormat:
    """The format `name` with its options validated (UnknownName or ValidationError)."""
    cls = SINK_FORMATS.get(name)
    return cls(cls.Options.model_validate(options or {}))
