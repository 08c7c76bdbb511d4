"""Which rows of a released stage are kept, in which split, and why the others are rejected.

A released stage is a named subset. Its rows are kept when `sink.select` holds (a
`shared.pipeline.Condition`), or by default when `keep` is not false (a row without a `keep`
field, or with a null one, was rejected by nothing). Kept rows go to their split (`sink.split`
by the hash of `sink.split_by`, `services.sink.split`), the others to the subset's `rejected`
part with a `rejected_because` column: the row's own `reject_reason` where a step gave one
(`too_short`, ...), else the test that failed (`keep=false`, or the select's condition).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.coordinator.manifest import canonical_json
from services.sink.formats import Part
from services.sink.spec import REJECTED_BECAUSE, released_stages
from services.sink.split import split_of
from services.sink.staging import PartStager
from shared.pipeline import Condition

__all__ = ["REJECTED_BECAUSE", "SubsetStaging", "describe", "released_stages"]

#: reject_reason values that say the row passed its rule (rule_filter's), so not a reason
_NO_REASON = (None, "", "ok")
#: distinct models noted per column (a card lists them; a model per row would be no list)
_MAX_MODELS = 50


def describe(condition: Condition) -> str:
    """A condition as a reader would write it, e.g. `gold_match == true`."""
    if "equals" in condition.model_fields_set:
        return f"{condition.field} == {canonical_json(condition.equals)}"
    if "not_equals" in condition.model_fields_set:
        return f"{condition.field} != {canonical_json(condition.not_equals)}"
    if condition.in_ is not None:
        return f"{condition.field} in {canonical_json(condition.in_)}"
    return f"{condition.field} not in {canonical_json(condition.not_in)}"


@dataclass
class SubsetStaging:
    """One released stage's rows of one run, staged into its parts as they arrive."""

    stage: str
    columns: list[str]
    folder: Path
    select: Condition | None = None
    split: list[tuple[str, float]] | None = None
    split_by: str = "sample_id"
    kept: dict[str | None, PartStager] = field(init=False)
    rejected: PartStager = field(init=False)
    reasons: Counter[str] = field(default_factory=Counter)
    #: distinct values of the `*_model` columns (which model made a row), for the card
    models: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        splits: list[str | None] = [name for name, _ in self.split] if self.split else [None]
        self.kept = {s: PartStager(self.folder / self.part(s).folder, self.columns) for s in splits}
        rejected = Part(self.stage, rejected=True)
        self.rejected = PartStager(self.folder / rejected.folder, [*self.columns, REJECTED_BECAUSE])
        self._failed = f"select: {describe(self.select)}" if self.select is not None else "keep=false"
        self.models = {c: set() for c in self.columns if c.endswith("_model")}

    def part(self, split: str | None) -> Part:
        return Part(self.stage, split)

    def add(self, rows: list[dict[str, Any]]) -> None:
        select = self.select
        for row in rows:
            for column, seen in self.models.items():
                model = row.get(column)
                if isinstance(model, str) and len(seen) < _MAX_MODELS:
                    seen.add(model)
            kept = select.holds(row) if select is not None else row.get("keep") is not False
            if kept:
                name = split_of(row.get(self.split_by), self.split) if self.split else None
                self.kept[name].add(row)
                continue
            reason = row.get("reject_reason")
            if select is not None or reason in _NO_REASON or not isinstance(reason, str):
                reason = self._failed
            self.reasons[reason] += 1
            self.rejected.add({**row, REJECTED_BECAUSE: reason})

    def stagers(self) -> list[tuple[Part, PartStager]]:
        """Every part: the kept ones in split order, then the rejected one."""
        return [(self.part(s), stager) for s, stager in self.kept.items()] + [
            (Part(self.stage, rejected=True), self.rejected)
        ]

    def discard(self) -> None:
        for _, stager in self.stagers():
            stager.discard()
