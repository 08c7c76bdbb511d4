"""The text-to-SQL metric set (`sql`): execution and gold-match rates, error texts.

- exec_pass_rate = exec_pass True / rows whose exec_pass is not None (exec_evaluated);
  exec_error_rate = the others / exec_evaluated.
- gold_match_rate = gold_match True / rows whose gold_match is not None (sql_eval leaves it
  None without a gold query, and when the gold query failed).
- gold_errored = rows whose gold query failed (`gold_error` set), counted apart from
  gold_evaluated; gold_error_rate = gold_errored / rows with a gold query (gold_evaluated +
  gold_errored).
- tallies `exec_errors` and `gold_errors`: rows per error text (cut to MAX_TEXT_CHARS).

The teacher score's min/mean/max, which this report carried before, are now the `teacher_score`
column's statistics (every numeric column has them): same names, `teacher_score_mean` etc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from services.coordinator.metrics import (
    MAX_TEXT_CHARS,
    MetricSet,
    MetricValue,
    Row,
    merge_tally,
    rate,
    tally,
)

_COUNTERS = ("exec_evaluated", "exec_passed", "gold_evaluated", "gold_matched", "gold_errored")


@dataclass(eq=True)
class SqlMetrics(MetricSet):
    needs: ClassVar[frozenset[str]] = frozenset({"exec_pass"})
    metrics: ClassVar[tuple[str, ...]] = (
        "exec_evaluated",
        "exec_passed",
        "exec_pass_rate",
        "exec_error_rate",
        "gold_evaluated",
        "gold_matched",
        "gold_match_rate",
        "gold_errored",
        "gold_error_rate",
    )
    tallies: ClassVar[tuple[str, ...]] = ("exec_errors", "gold_errors")

    exec_evaluated: int = 0
    exec_passed: int = 0
    gold_evaluated: int = 0
    gold_matched: int = 0
    gold_errored: int = 0
    exec_errors: dict[str, int] = field(default_factory=dict)
    gold_errors: dict[str, int] = field(default_factory=dict)

    def add_rows(self, rows: list[Row]) -> None:
        for row in rows:
            exec_pass = row.get("exec_pass")
            if exec_pass is not None:
                self.exec_evaluated += 1
                self.exec_passed += bool(exec_pass)
            gold_match = row.get("gold_match")
            if gold_match is not None:
                self.gold_evaluated += 1
                self.gold_matched += bool(gold_match)
            error = row.get("exec_error")
            if error:
                tally(self.exec_errors, str(error)[:MAX_TEXT_CHARS])
            gold_error = row.get("gold_error")
            if gold_error is not None:
                self.gold_errored += 1
                tally(self.gold_errors, str(gold_error)[:MAX_TEXT_CHARS])

    def merge(self, other: SqlMetrics) -> None:
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        merge_tally(self.exec_errors, other.exec_errors)
        merge_tally(self.gold_errors, other.gold_errors)

    def values(self) -> dict[str, MetricValue]:
        return {
            "exec_evaluated": self.exec_evaluated,
            "exec_passed": self.exec_passed,
            "exec_pass_rate": rate(self.exec_passed, self.exec_evaluated),
            "exec_error_rate": rate(self.exec_evaluated - self.exec_passed, self.exec_evaluated),
            "gold_evaluated": self.gold_evaluated,
            "gold_matched": self.gold_matched,
            "gold_match_rate": rate(self.gold_matched, self.gold_evaluated),
            "gold_errored": self.gold_errored,
            "gold_error_rate": rate(self.gold_errored, self.gold_evaluated + self.gold_errored),
        }

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "exec_errors": dict(sorted(self.exec_errors.items())),
            "gold_errors": dict(sorted(self.gold_errors.items())),
        }

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COUNTERS} | self.counts()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SqlMetrics:
        # gold_errored/gold_errors came later: absent from an older snapshot means none.
        return cls(
            **{name: int(data.get(name, 0)) for name in _COUNTERS},
            exec_errors=dict(data.get("exec_errors", {})),
            gold_errors=dict(data.get("gold_errors", {})),
        )
