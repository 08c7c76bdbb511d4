"""The quality report of a stage: keep/reject counts, execution and gold rates, teacher scores.

- p_keep = kept / total; only `keep is False` rejects, so rows without `keep` (stages before
  rule_filter) or with `keep` None count as kept.
- exec_pass_rate = exec_pass True / rows whose exec_pass is present and not None.
- gold_match_rate = gold_match True / rows whose gold_match is not None (sql_eval leaves it
  None without a gold query, and when the gold query failed).
- gold_errored = rows whose gold query failed (`gold_error` set), counted apart from
  gold_evaluated; gold_error_rate = gold_errored / rows with a gold query (gold_evaluated +
  gold_errored); `gold_errors` counts them by error text like `exec_errors`.
- teacher_score min/max/mean over rows with a teacher_score (the judge score of the gates).

Columns a stage does not have yet (say `exec_pass` before sql_eval) give None rates rather
than 0, so a gate on them reports the metric as missing instead of as a failure of the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from services.coordinator.timing import Summary


class QualityMetrics(TypedDict):
    """The numbers of a quality report: what quality gates (`min_<name>`, `max_<name>`) refer to."""

    total: int
    kept: int
    rejected: int
    p_keep: float | None
    exec_evaluated: int  # rows carrying exec_pass (not None)
    exec_passed: int
    exec_pass_rate: float | None
    gold_evaluated: int  # rows whose gold_match is not None
    gold_matched: int
    gold_match_rate: float | None
    gold_errored: int  # rows whose gold_error is set (not in gold_evaluated)
    gold_error_rate: float | None
    teacher_score_min: float | None
    teacher_score_max: float | None
    teacher_score_mean: float | None


class QualityReport(QualityMetrics):
    run_id: str
    stage: str
    reject_reasons: dict[str, int]
    exec_errors: dict[str, int]  # error text (cut to MAX_ERROR_CHARS) -> rows
    gold_errors: dict[str, int]  # the same for gold_error


#: Metric names, in report order.
QUALITY_METRICS: tuple[str, ...] = tuple(QualityMetrics.__annotations__)
#: The aggregate's plain counters, which merge by addition.
_COUNTERS = (
    "total",
    "kept",
    "exec_evaluated",
    "exec_passed",
    "gold_evaluated",
    "gold_matched",
    "gold_errored",
)
#: Counters added after snapshots were first stored: absent from an old snapshot means 0.
_NEWER_COUNTERS = frozenset({"gold_errored"})
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
    gold_errored: int = 0
    scores: Summary = field(default_factory=Summary)
    reject_reasons: dict[str, int] = field(default_factory=dict)
    exec_errors: dict[str, int] = field(default_factory=dict)
    gold_errors: dict[str, int] = field(default_factory=dict)

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
            if row.get("gold_error") is not None:
                self.gold_errored += 1
                _count(self.gold_errors, str(row["gold_error"])[:MAX_ERROR_CHARS])

    def merge(self, other: QualityAgg) -> None:
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.scores.merge(other.scores)
        for key, n in other.reject_reasons.items():
            _count(self.reject_reasons, key, n)
        for key, n in other.exec_errors.items():
            _count(self.exec_errors, key, n)
        for key, n in other.gold_errors.items():
            _count(self.gold_errors, key, n)

    def metrics(self) -> QualityMetrics:
        return QualityMetrics(
            total=self.total,
            kept=self.kept,
            rejected=self.total - self.kept,
            p_keep=_rate(self.kept, self.total),
            exec_evaluated=self.exec_evaluated,
            exec_passed=self.exec_passed,
            exec_pass_rate=_rate(self.exec_passed, self.exec_evaluated),
            gold_evaluated=self.gold_evaluated,
            gold_matched=self.gold_matched,
            gold_match_rate=_rate(self.gold_matched, self.gold_evaluated),
            gold_errored=self.gold_errored,
            gold_error_rate=_rate(self.gold_errored, self.gold_evaluated + self.gold_errored),
            teacher_score_min=self.scores.min,
            teacher_score_max=self.scores.max,
            teacher_score_mean=self.scores.mean,
        )

    def report(self, run_id: str, stage: str) -> QualityReport:
        return QualityReport(
            run_id=run_id,
            stage=stage,
            **self.metrics(),
            reject_reasons=dict(sorted(self.reject_reasons.items())),
            exec_errors=dict(sorted(self.exec_errors.items())),
            gold_errors=dict(sorted(self.gold_errors.items())),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in _COUNTERS},
            "scores": self.scores.to_json(),
            "reject_reasons": dict(sorted(self.reject_reasons.items())),
            "exec_errors": dict(sorted(self.exec_errors.items())),
            "gold_errors": dict(sorted(self.gold_errors.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QualityAgg:
        return cls(
            **{name: data.get(name, 0) if name in _NEWER_COUNTERS else data[name] for name in _COUNTERS},
            scores=Summary.from_json(data["scores"]),
            reject_reasons=dict(data["reject_reasons"]),
            exec_errors=dict(data["exec_errors"]),
            gold_errors=dict(data.get("gold_errors", {})),
        )
