"""The example's kept and rejected counts, from the independent in-process computation.

`tests.e2e.expected` applies every step's pure logic to the seeds with the simulator's answers;
nothing of the sink takes part. Its final rows split by `keep` are what the sink must release
as keep_by_score/ and keep_by_score.rejected/ (the end-to-end tests compare the two).
"""

from __future__ import annotations

from fastdistill.dev.teacher_sim.server import SimConfig
from shared.pipeline import PipelineSpec
from tests.e2e.coordinator_stack import KEPT_ROWS, PIPELINE, REJECTED_ROWS, RELEASED_ROWS, SEEDS
from tests.e2e.expected import compute, summary


def test_the_example_keeps_and_rejects_what_the_computation_says() -> None:
    spec = PipelineSpec.load(PIPELINE)
    expected = compute(spec, SEEDS, SimConfig(seeds_path=SEEDS))
    final = summary(list(expected.rows.values()))
    assert final["total"] == RELEASED_ROWS == expected.counts[spec.primary_leaf]
    assert final["kept"] == KEPT_ROWS
    assert final["total"] - final["kept"] == REJECTED_ROWS
    kept = [r for r in expected.rows.values() if r["keep"] is not False]
    assert len(kept) == KEPT_ROWS and all(r["teacher_score"] >= 0.5 for r in kept)
