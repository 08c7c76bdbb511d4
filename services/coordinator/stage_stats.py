"""A stage's statistics as the step that makes its rows computes them, for a stage whose topic
is not written (an inner step of an operator chain): the same manifest and quality aggregates
the coordinator folds from a topic, summed per transaction and carried in progress records.
Both aggregates merge by addition, so the coordinator's sum equals folding every row."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from services.coordinator.manifest import ManifestAgg
from services.coordinator.quality import QualityAgg


@dataclass
class StageSummary:
    #: the stage's dataset columns (the manifest hashes rows cut to them)
    columns: list[str]
    manifest: ManifestAgg = field(default_factory=ManifestAgg)
    quality: QualityAgg = field(default_factory=QualityAgg)

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        self.manifest.add_rows(rows, self.columns)
        self.quality.add_rows(rows)

    def to_json(self) -> dict[str, Any]:
        return {"manifest": self.manifest.to_json(), "quality": self.quality.to_json()}


def merge_stats(manifest: ManifestAgg, quality: QualityAgg, blob: str) -> None:
    """Add a progress record's `stats` to a stage's aggregates."""
    data = json.loads(blob)
    manifest.merge(ManifestAgg.from_json(data["manifest"]))
    quality.merge(QualityAgg.from_json(data["quality"]))
