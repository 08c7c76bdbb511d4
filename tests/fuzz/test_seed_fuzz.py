"""5,000 generated seed files with malformed records through `read_seeds` (what `fastdistill
produce` runs).

Each example is a JSONL or CSV file of 1-3 valid and 1-3 malformed records in random order, laid
out the ways real files are: LF, CRLF or mixed line ends, blank (and, in JSONL, whitespace-only)
lines anywhere, sometimes a UTF-8 BOM, sometimes no final line end, and quoted CSV cells spanning
lines (LF or CRLF inside the cell). Every malformed record must become exactly one dead letter
that carries its bytes exactly as written (up to the cap, with the marker beyond it), its file
name and the physical line it starts on, with a readable reason naming `<file>:<line>` (and the
key, for a duplicate JSON key); the valid records must arrive unchanged with their origins; and
everything must encode with the pipeline's Avro schemas (a value that validates but cannot be
written would crash `produce` mid-run).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastdistill.ingest import BOM, read_seeds
from fastdistill.plan import PipelinePlan
from services.seeds.model import Seed
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA, MAX_RAW_BYTES, RecordOrigin
from tests.fast_loop import FAST
from tests.fuzz.malformed import (
    CSV_COLUMNS,
    REPO,
    SeedFileWriter,
    csv_cells,
    csv_row,
    malformed_csv_row,
    malformed_line,
    valid_seeds,
)

# 5,000 examples in `make test`; the fast loop's profile (`make test-fast`, tests/fast_loop.py)
# runs a tenth of them.
EXAMPLES = 500 if settings.get_current_profile_name() == FAST else 5_000
PLAN = PipelinePlan.build(PipelineSpec.load(REPO / "examples/text2sql/pipeline.yaml"))
SERDE = PLAN.serde()
VALID = valid_seeds()
#: Lines that are no record: in JSONL any whitespace-only line, in CSV only an empty one (a
#: space is a cell there).
BLANKS = {"jsonl": [b"", b" ", b"\t", b"  \t "], "csv": [b""]}


def _terminator(rng: random.Random, style: str) -> Callable[[], bytes]:
    return lambda: b"\r\n" if style == "crlf" or (style == "mixed" and rng.random() < 0.5) else b"\n"


def _maybe_multiline(rng: random.Random, seed: dict[str, Any]) -> dict[str, Any]:
    """Half the seeds get a line break inside a text field: a quoted cell over two lines in CSV."""
    if rng.random() < 0.5:
        return seed
    return seed | {"instruction": seed["instruction"] + rng.choice(["\n", "\r\n"]) + "Order by id."}


def _malformed(rng: random.Random, fmt: str, seed: dict[str, Any], base: dict[str, Any]) -> tuple[str, bytes]:
    if fmt == "jsonl":
        return malformed_line(rng, seed)
    kind, row = malformed_csv_row(rng, seed)
    if kind == "over_csv_limit" and seed is not base:
        # The csv module gives up on the line with the oversized cell and reads the record's
        # next lines as new records: one record there is one only on a single line.
        kind, row = malformed_csv_row(rng, base)
    return kind, row[:-1]  # without its "\n"


def _seed_file(rng: random.Random, fmt: str) -> SeedFileWriter:
    file = SeedFileWriter()
    terminator = _terminator(rng, rng.choice(["lf", "crlf", "mixed"]))
    if rng.random() < 0.3:
        file.put(BOM)
    if fmt == "csv":
        file.put(",".join(CSV_COLUMNS).encode() + terminator())
    entries = [None] * rng.randint(1, 3) + ["bad"] * rng.randint(1, 3)
    rng.shuffle(entries)
    for i, entry in enumerate(entries):
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            file.put(rng.choice(BLANKS[fmt]) + terminator())
        base = rng.choice(VALID)
        seed = _maybe_multiline(rng, base)
        end = b"" if i == len(entries) - 1 and rng.random() < 0.2 else terminator()
        if entry is None:
            raw = json.dumps(seed).encode() if fmt == "jsonl" else csv_row(csv_cells(seed))[:-1]
            file.record(raw, end, None, seed)
        else:
            kind, raw = _malformed(rng, fmt, seed, base)
            file.record(raw, end, kind)
    if file.data.endswith(b"\n") and rng.random() < 0.3:
        file.put(rng.choice(BLANKS[fmt]) + terminator())
    return file


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False), fmt=st.sampled_from(["jsonl", "csv"]))
def test_every_malformed_seed_is_one_dead_letter_with_its_bytes_and_line(
    tmp_path_factory: Any, rng: random.Random, fmt: str
) -> None:
    file = _seed_file(rng, fmt)
    path = tmp_path_factory.getbasetemp() / f"seeds.{fmt}"
    path.write_bytes(bytes(file.data))

    batch = read_seeds(path, Seed, "run-fuzz")

    kinds = [r.kind for r in file.malformed]
    # The valid records arrive, unchanged, each with its origin.
    assert [row["source_index"] for row in batch.rows] == [r.index for r in file.valid], kinds
    expected = [Seed.model_validate(r.seed).model_dump() for r in file.valid]
    assert [{k: v for k, v in row.items() if k != "source_index"} for row in batch.rows] == expected
    assert batch.origins == {r.index: RecordOrigin(path.name, r.line, r.raw) for r in file.valid}
    # Each malformed record is one dead letter with its bytes, file and physical line.
    assert len(batch.dead_letters) == len(file.malformed), kinds
    for record, letter in zip(file.malformed, batch.dead_letters, strict=True):
        prefix = f"{path.name}:{record.line}: "
        message = letter["error_message"]
        assert message.startswith(prefix) and len(message) > len(prefix) + 5, (record.kind, message)
        if record.kind == "duplicate_key":
            assert "duplicate key '" in message, message
        assert (letter["row_index"], letter["source_line"], letter["source_file"]) == (
            record.index,
            record.line,
            path.name,
        ), record.kind
        assert letter["raw"] == record.raw[:MAX_RAW_BYTES], (
            record.kind,
            record.raw[:200],
            letter["raw"][:200],
        )
        assert letter["raw_truncated"] == (len(record.raw) > MAX_RAW_BYTES)
        assert letter["step"] == "produce" and letter["run_id"] == "run-fuzz"
        # What produce writes must encode, and read back byte-exact.
        _, back = SERDE.decode(SERDE.encode(DEAD_LETTER_SCHEMA, letter))
        assert back["raw"] == letter["raw"] and back["error_message"] == message
        assert back["source_line"] == record.line
    record = {"run_id": "r", "stage": SEEDS_STAGE, "producer": "produce", "batch_seq": 0, "lineage": []}
    SERDE.encode(
        PLAN.schema_name(SEEDS_STAGE), record | {"rows": batch.rows, "end_of_run": None, "origin_ms": 0}
    )


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_the_cases_of_the_issue_one_by_one(tmp_path: Path) -> None:
    """A BOM, a duplicate key, CRLF, blank lines and a multi-line CSV cell, as a person writes them."""
    good = json.dumps(VALID[0]).encode()
    jsonl = _write(
        tmp_path,
        "s.jsonl",
        BOM + good + b"\r\n\r\n  \r\n" + b'{"task_id": "a", "task_id": "b"}\r\n' + good + b"\r\n{broken",
    )
    batch = read_seeds(jsonl, Seed, "r")
    assert [r["source_index"] for r in batch.rows] == [0, 2]  # the BOM no longer rejects record 0
    first, second = batch.dead_letters
    assert first["error_message"] == "s.jsonl:4: duplicate key 'task_id'"
    assert (first["raw"], first["source_line"], first["row_index"]) == (
        b'{"task_id": "a", "task_id": "b"}',
        4,
        1,
    )
    assert second["error_message"].startswith("s.jsonl:6: not JSON: ")
    assert (second["raw"], second["source_line"]) == (b"{broken", 6)

    header = ",".join(CSV_COLUMNS).encode()
    cells = csv_cells(VALID[1] | {"instruction": "two\r\nlines"})
    multi = csv_row(cells)[:-1]
    assert multi.count(b"\n") == 1
    csv_file = _write(tmp_path, "s.csv", BOM + header + b"\r\n" + multi + b"\r\n\r\n" + b"x,,\r\n" + multi)
    batch = read_seeds(csv_file, Seed, "r")
    assert [r["source_index"] for r in batch.rows] == [0, 2]
    assert batch.rows[0]["instruction"] == "two\r\nlines" and batch.rows[0]["task_id"] == VALID[1]["task_id"]
    (letter,) = batch.dead_letters
    assert letter["error_message"].startswith("s.csv:5: ") and "instruction" in letter["error_message"]
    assert (letter["raw"], letter["source_line"], letter["row_index"]) == (b"x,,", 5, 1)
    assert batch.origins[2] == RecordOrigin("s.csv", 6, multi)
