"""Dataset files keep every row field but the volatile ones (how a row was fetched)."""

from __future__ import annotations

from pathlib import Path

from fastdistill.plan import PipelinePlan
from shared.pipeline import PipelineSpec
from shared.topic_schema import dataset_columns

PIPELINE = Path(__file__).resolve().parents[2] / "examples/text2sql/pipeline.yaml"


def test_example_dataset_leaves_out_teacher_fetch_details() -> None:
    spec = PipelineSpec.load(PIPELINE)
    fields = PipelinePlan.build(spec).fields[spec.primary_leaf]
    columns = dataset_columns(fields)
    assert [f["name"] for f in fields if f["name"] not in columns] == ["teacher_cached", "teacher_latency_ms"]
    assert {"source_index", "sample_id", "generation", "teacher_model", "sql", "keep"} <= set(columns)
