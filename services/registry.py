"""The step catalogue: the names a pipeline YAML may use for `step:`."""

from __future__ import annotations

from typing import Any

from services.canonicalize.step import CanonicalizeStep
from services.clean_sql.step import CleanSqlStep
from services.dedup.step import DedupStep
from services.filter_by_bool.step import FilterByBoolStep
from services.hashing.step import HashStep
from services.keep_by_score.step import KeepByScoreStep
from services.rule_filter.step import RuleFilterStep
from services.score.step import ScoreStep
from services.sql_eval.step import SqlEvalStep
from services.teacher.step import TeacherStep
from shared.step import Step

STEPS: dict[str, type[Step]] = {
    step.name: step
    for step in (
        CanonicalizeStep,
        HashStep,
        DedupStep,
        TeacherStep,
        CleanSqlStep,
        RuleFilterStep,
        FilterByBoolStep,
        SqlEvalStep,
        ScoreStep,
        KeepByScoreStep,
    )
}


class UnknownStepError(KeyError):
    """KeyError's own str() would quote the whole message; this one reads as written."""

    def __str__(self) -> str:
        return str(self.args[0])


def build_step(name: str, params: dict[str, Any] | None = None) -> Step:
    """A catalogue step configured with `params` (validated by the step's own Params model)."""
    try:
        step_class = STEPS[name]
    except KeyError:
        known = ", ".join(sorted(STEPS))
        raise UnknownStepError(f"unknown step {name!r}; known steps: {known}") from None
    return step_class(**(params or {}))
