from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from services.coordinator.quality import QUALITY_METRICS, QualityAgg

ROW = st.fixed_dictionaries(
    {},
    optional={
        "keep": st.one_of(st.none(), st.booleans()),
        "exec_pass": st.one_of(st.none(), st.booleans()),
        "gold_match": st.one_of(st.none(), st.booleans()),
        "teacher_score": st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0]), st.floats(0, 1)),
        "reject_reason": st.sampled_from(["ok", "too_short", "empty_output"]),
        "exec_error": st.one_of(st.none(), st.sampled_from(["", "no such table: t", "syntax error"])),
        "gold_error": st.one_of(st.none(), st.sampled_from(["", "timeout: no answer in 10000 ms"])),
    },
)


def _agg(rows: list[dict]) -> QualityAgg:
    agg = QualityAgg()
    agg.add_rows(rows)
    return agg


def test_hand_computed_report() -> None:
    rows = [
        {"keep": True, "exec_pass": True, "gold_match": True, "teacher_score": 1.0, "reject_reason": "ok"},
        {
            "keep": False,
            "exec_pass": False,
            "gold_match": False,
            "teacher_score": 0.0,
            "reject_reason": "too_short",
            "exec_error": "no such table: x",
        },
        {"keep": True, "exec_pass": True, "gold_match": None, "teacher_score": 0.5, "reject_reason": "ok"},
        {"exec_pass": None, "teacher_score": None},  # no keep: counts as kept
        # A broken gold: not a gold evaluation, its own count.
        {"keep": False, "exec_pass": True, "gold_match": None, "gold_error": "no such table: y"},
    ]
    report = _agg(rows).report("r", "keep_by_score")
    assert report == {
        "run_id": "r",
        "stage": "keep_by_score",
        "total": 5,
        "kept": 3,
        "rejected": 2,
        "p_keep": 0.6,
        "exec_evaluated": 4,
        "exec_passed": 3,
        "exec_pass_rate": 3 / 4,
        "gold_evaluated": 2,
        "gold_matched": 1,
        "gold_match_rate": 0.5,
        "gold_errored": 1,
        "gold_error_rate": 1 / 3,
        "teacher_score_min": 0.0,
        "teacher_score_max": 1.0,
        "teacher_score_mean": 0.5,
        "reject_reasons": {"ok": 2, "too_short": 1},
        "exec_errors": {"no such table: x": 1},
        "gold_errors": {"no such table: y": 1},
    }
    assert set(QUALITY_METRICS) <= set(report)


def test_stage_without_columns_reports_none_rates() -> None:
    metrics = _agg([{"source_index": 0}, {"source_index": 1}]).metrics()
    assert metrics["p_keep"] == 1.0
    assert metrics["exec_pass_rate"] is None and metrics["gold_match_rate"] is None
    assert metrics["teacher_score_mean"] is None
    assert QualityAgg().metrics()["p_keep"] is None


def test_gold_error_rate_is_none_without_gold() -> None:
    metrics = _agg([{"exec_pass": True, "gold_match": None}]).metrics()
    assert metrics["gold_errored"] == 0 and metrics["gold_error_rate"] is None


def test_snapshot_from_before_gold_errors_restores() -> None:
    # A coordinator's stored aggregate written before the gold error counts existed.
    old = _agg([{"exec_pass": True, "gold_match": True}]).to_json()
    del old["gold_errored"], old["gold_errors"]
    restored = QualityAgg.from_json(old)
    assert restored.gold_errored == 0 and restored.gold_errors == {}
    assert restored.metrics()["gold_matched"] == 1


def test_long_error_texts_are_truncated() -> None:
    report = _agg([{"exec_error": "x" * 1000}]).report("r", "s")
    assert list(report["exec_errors"]) == ["x" * 200]


@given(
    st.lists(ROW, max_size=40), st.lists(st.integers(0, 40), max_size=4), st.randoms(use_true_random=False)
)
def test_merging_any_split_gives_the_same_aggregate(rows: list[dict], cuts: list[int], rnd) -> None:
    whole = _agg(rows)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    bounds = [0, *sorted(cuts), len(shuffled)]
    merged = QualityAgg()
    for lo, hi in itertools.pairwise(bounds):
        merged.merge(QualityAgg.from_json(_agg(shuffled[lo:hi]).to_json()))
    assert merged.to_json() == whole.to_json()
    assert merged.report("r", "s") == whole.report("r", "s")


def test_metric_names_are_the_numeric_fields_of_the_report() -> None:
    report = _agg([{"exec_pass": True, "teacher_score": 1.0, "reject_reason": "ok"}]).report("r", "s")
    numeric = [k for k, v in report.items() if k not in ("run_id", "stage") and not isinstance(v, dict)]
    assert list(QUALITY_METRICS) == numeric
    assert list(_agg([]).metrics()) == list(QUALITY_METRICS)


def test_snapshot_is_json_text_and_round_trips() -> None:
    agg = _agg([{"keep": False, "teacher_score": 0.1, "exec_error": "boom", "reject_reason": "too_long"}])
    text = json.dumps(agg.to_json())
    restored = QualityAgg.from_json(json.loads(text))
    assert restored == agg
    assert json.dumps(restored.to_json()) == text
