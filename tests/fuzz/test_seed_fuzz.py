"""10,000 generated malformed seeds through `read_seeds` (what `fastdistill produce` runs).

Each example is a file of three records, valid / malformed / valid, as JSONL or CSV. The
malformed one must become exactly one dead letter with a readable reason that names it, its
neighbours must arrive unchanged, and every record must encode with the pipeline's Avro
schemas (a value that validates but cannot be written would crash `produce` mid-run).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastdistill.ingest import read_seeds
from fastdistill.plan import PipelinePlan
from services.seeds.model import Seed
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA
from tests.fuzz.malformed import (
    CSV_COLUMNS,
    REPO,
    csv_cells,
    csv_row,
    malformed_csv_row,
    malformed_line,
    valid_seeds,
)

PLAN = PipelinePlan.build(PipelineSpec.load(REPO / "examples/text2sql/pipeline.yaml"))
SERDE = PLAN.serde()
VALID = valid_seeds()


def _file(folder: Path, fmt: str, before: dict[str, Any], bad: bytes, after: dict[str, Any]) -> Path:
    if fmt == "csv":
        body = (
            ",".join(CSV_COLUMNS).encode()
            + b"\n"
            + csv_row(csv_cells(before))
            + bad
            + csv_row(csv_cells(after))
        )
    else:
        body = json.dumps(before).encode() + b"\n" + bad + b"\n" + json.dumps(after).encode() + b"\n"
    path = folder / f"seeds.{fmt}"
    path.write_bytes(body)
    return path


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rng=st.randoms(use_true_random=False),
    fmt=st.sampled_from(["jsonl", "csv"]),
    before=st.sampled_from(VALID),
    after=st.sampled_from(VALID),
)
def test_every_malformed_seed_is_one_dead_letter_and_its_neighbours_arrive(
    tmp_path_factory: Any, rng: random.Random, fmt: str, before: dict[str, Any], after: dict[str, Any]
) -> None:
    generate = malformed_csv_row if fmt == "csv" else malformed_line
    kind, bad = generate(rng, rng.choice(VALID))
    path = _file(tmp_path_factory.getbasetemp(), fmt, before, bad, after)

    batch = read_seeds(path, Seed, "run-fuzz")

    assert [row["source_index"] for row in batch.rows] == [0, 2], (kind, bad[-150:])
    expected = [Seed.model_validate(seed).model_dump() for seed in (before, after)]
    assert [{k: v for k, v in row.items() if k != "source_index"} for row in batch.rows] == expected
    assert len(batch.dead_letters) == 1, kind
    (letter,) = batch.dead_letters
    prefix = f"{path.name} record 1: "
    assert letter["error_message"].startswith(prefix) and len(letter["error_message"]) > len(prefix) + 5, kind
    assert letter["row_index"] == 1 and letter["step"] == "produce" and letter["run_id"] == "run-fuzz"
    # Everything produce would write must encode: the dead letter and the valid rows' batch.
    assert (
        SERDE.decode(SERDE.encode(DEAD_LETTER_SCHEMA, letter))[1]["error_message"] == letter["error_message"]
    )
    record = {"run_id": "r", "stage": SEEDS_STAGE, "producer": "produce", "batch_seq": 0, "lineage": []}
    SERDE.encode(PLAN.schema_name(SEEDS_STAGE), record | {"rows": batch.rows, "end_of_run": None})
