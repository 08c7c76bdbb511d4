"""The quality report of a stage: keep/reject counts, execution and gold rates, teacher scores.

Columns a stage does not have yet (say `exec_pass` before sql_eval) give None rates rather
than 0, so a gate on them reports the metric as missing instead of as a failure of the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.coordinator.timing import Summary

#: Numeric metrics of a quality report, the names quality gates may refer to.
QUALITY_METRICS = (
    "total",
    "kept",
    "rejected",
    "p_keep",
    "exec_evaluated",
    "exec_passed",
    "exec_pass_rate",
    "gold_evaluated",
    "gold_matched",
    "gold_match_rate",
    "teacher_score_min",
    "teacher_score_max",
    "teacher_score_mean",
)
#: Error texts can embed whole queries; the cap bounds the size of the counts' keys.
MAX_ERROR_CHARS = 200


def _count(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


@dataclass
class QualityAgg:
    total: int = 0
    kept: int = 0
    exec_evaluated: int = 0
    exec_passed: int = 0
    gold_evaluated: int = 0
    gold_matched: int = 0
    scores: Summary = field(default_factory=Summary)
    reject_reasons: dict[str, int] = field(default_factory=dict)
    exec_errors: dict[str, int] = field(default_factory=dict)

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.total += 1
            # Only an explicit False rejects: stages before rule_filter have no `keep` at all.
            self.kept += row.get("keep") is not False
            if row.get("exec_pass") is not None:
                self.exec_evaluated += 1
                self.exec_passed += bool(row["exec_pass"])
            if row.get("gold_match") is not None:
                self.gold_evaluated += 1
                self.gold_matched += bool(row["gold_match"])
            if row.get("teacher_score") is not None:
                self.scores.add(row["teacher_score"])
            if row.get("reject_reason") is not None:
                _count(self.reject_reasons, str(row["reject_reason"]))
            if row.get("exec_error"):
                _count(self.exec_errors, str(row["exec_error"])[:MAX_ERROR_CHARS])

    def merge(self, other: QualityAgg) -> None:
        for name in ("total", "kept", "exec_evaluated", "exec_passed", "gold_evaluated", "gold_matched"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.scores.merge(other.scores)
        for key, n in other.reject_reasons.items():
            _count(self.reject_reasons, key, n)
        for key, n in other.exec_errors.items():
            _count(self.exec_errors, key, n)

    def metrics(self) -> dict[str, float | None]:
        return {
            "total": self.total,
            "kept": self.kept,
            "rejected": self.total - self.kept,
            "p_keep": _rate(self.kept, self.total),
            "exec_evaluated": self.exec_evaluated,
            "exec_passed": self.exec_passed,
            "exec_pass_rate": _rate(self.exec_passed, self.exec_evaluated),
            "gold_evaluated": self.gold_evaluated,
            "gold_matched": self.gold_matched,
            "gold_match_rate": _rate(self.gold_matched, self.gold_evaluated),
            "teacher_score_min": self.scores.min,
            "teacher_score_max": self.scores.max,
            "teacher_score_mean": self.scores.mean,
        }

    def report(self, run_id: str, stage: str) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "stage": stage,
            **self.metrics(),
            "reject_reasons": dict(sorted(self.reject_reasons.items())),
            "exec_errors": dict(sorted(self.exec_errors.items())),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "kept": self.kept,
            "exec_evaluated": self.exec_evaluated,
            "exec_passed": self.exec_passed,
            "gold_evaluated": self.gold_evaluated,
            "gold_matched": self.gold_matched,
            "scores": self.scores.to_json(),
            "reject_reasons": dict(sorted(self.reject_reasons.items())),
            "exec_errors": dict(sorted(self.exec_errors.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QualityAgg:
        counts = {k: v for k, v in data.items() if k not in ("scores", "reject_reasons", "exec_errors")}
        return cls(
            **counts,
            scores=Summary.from_json(data["scores"]),
            reject_reasons=dict(data["reject_reasons"]),
            exec_errors=dict(data["exec_errors"]),
        )
