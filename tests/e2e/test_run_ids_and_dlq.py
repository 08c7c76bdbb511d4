"""End to end, with the `fastdistill` CLI as a subprocess against the example pipeline (every
service a process, the real broker, the teacher simulator over HTTP):

- a run id is single-use (issue 11 item 3): two `produce` of one run id at the same moment, then
  a third after them: exactly one is accepted, the others exit 2 with one line saying why, and
  the run's dataset and reports are those of a run produced once;
- `fastdistill dlq` reads the dead-letter topic: reasons grouped with counts and an example,
  and with `--raw N` whole records with their bytes (escaped) and `<file>:<line>`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastdistill.ingest import BOM
from tests.e2e.coordinator_stack import SEEDS, Pipeline, pipeline_copy, running_pipeline

pytestmark = pytest.mark.kafka

HEAD = 60
#: Fields that describe how a row was made in this run, not what it is.
PER_RUN_FIELDS = {"teacher_cached", "teacher_latency_ms"}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Pipeline]:
    folder = tmp_path_factory.mktemp("run-ids")
    # The example's gates with a total a 60-seed run reaches.
    gates = {"min_total": 20, "min_exec_pass_rate": 0.5}
    with running_pipeline(folder, kafka_bootstrap, pipeline_copy(folder, gates)) as pipeline:
        yield pipeline


def _head(folder: Path) -> Path:
    path = folder / "head.jsonl"
    path.write_text("".join(SEEDS.read_text().splitlines(keepends=True)[:HEAD]))
    return path


def _dataset(pipe: Pipeline, run_id: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in PER_RUN_FIELDS} for row in pipe.dataset(run_id)]


def _counts(reports: dict[str, Any]) -> dict[str, int]:
    return {m["stage"]: m["count"] for m in reports["manifest"]}


def test_a_run_id_produced_twice_is_refused_and_the_run_is_unaffected(pipe: Pipeline, tmp_path: Path) -> None:
    seeds = _head(tmp_path)
    run_id, clean = f"twice-{uuid.uuid4().hex[:6]}", f"once-{uuid.uuid4().hex[:6]}"
    # Two at once (a client retrying after an unclear outcome while the first still runs).
    racers = [pipe.produce(seeds, run_id), pipe.produce(seeds, run_id)]
    outcomes = [(p.wait(120), *p.communicate()) for p in racers]
    assert sorted(code for code, _, _ in outcomes) == [0, 2], outcomes
    (winner,) = [o for o in outcomes if o[0] == 0]
    (loser,) = [o for o in outcomes if o[0] == 2]
    assert winner[1].strip() == run_id
    assert loser[1] == "" and re.fullmatch(rf"refused: run id '{run_id}' .*single-use\)\n", loser[2]), loser
    # Once more, after both.
    again = pipe.cli("produce", str(seeds), "--run-id", run_id)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == f"refused: run id '{run_id}' was produced already (run ids are single-use)\n"

    pipe.produce_all(seeds, clean)
    assert pipe.wait(run_id)["released"] and pipe.wait(clean)["released"]
    assert _dataset(pipe, run_id) == _dataset(pipe, clean)
    reports, reference = pipe.report_files(run_id), pipe.report_files(clean)
    assert _counts(reports)["seeds"] == HEAD
    assert _counts(reports) == _counts(reference)
    quality = {q["stage"]: q["total"] for q in reports["quality"]}
    assert quality == {q["stage"]: q["total"] for q in reference["quality"]}
    state = pipe.wait_state(run_id)
    assert state["stages"]["seeds"]["rows_seen"] == HEAD and state["dead_letters"] == {}


BAD = {
    5: b'{"task_id": "u1", "schema": "s", "instruction": "caf\xe9 \x1b[2J"}',  # Latin-1, a terminal escape
    7: b'{"task_id": "t1", "schema": "s", "instruction": ',  # cut short
    8: b'{"task_id": "d1", "schema": "s", "instruction": "q", "task_id": "d2"}',
    11: b'{"task_id": "m1", "instruction": "no schema"}',
    12: b'{"task_id": "m2", "schema": "s"}',
}


def _seed_file_with_bad_rows(folder: Path) -> Path:
    """A CRLF file with a BOM, blank lines and the BAD records on their physical lines."""
    good = iter(SEEDS.read_bytes().splitlines())
    lines = [BAD.get(n, b"" if n in (3, 10) else next(good)) for n in range(1, 14)]
    path = folder / "bad.jsonl"
    path.write_bytes(BOM + b"\r\n".join(lines) + b"\r\n")
    return path


def test_dlq_groups_reasons_and_shows_raw_records(pipe: Pipeline, tmp_path: Path) -> None:
    seeds = _seed_file_with_bad_rows(tmp_path)
    run_id = f"dlq-{uuid.uuid4().hex[:6]}"
    pipe.produce_all(seeds, run_id)

    summary = pipe.cli("dlq", run_id, "--step", "produce")
    assert summary.returncode == 0, summary.stderr
    lines = summary.stdout.splitlines()
    assert lines[0] == f"5 dead letters in {pipe.spec.dlq_topic} of run {run_id} step produce"
    table = [line.split(None, 3) for line in lines[2:]]
    assert lines[1].split() == ["count", "step", "error_type", "example"]
    assert [row[:3] for row in table] == [
        ["2", "produce", "ValidationError"],
        ["2", "produce", "ValueError"],
        ["1", "produce", "DuplicateKey"],
    ]
    examples = {row[2]: row[3] for row in table}
    assert examples["ValidationError"] == "bad.jsonl:11: schema: Field required"
    at = BAD[5].index(b"\xe9")
    assert examples["ValueError"] == f"bad.jsonl:5: not UTF-8 (invalid continuation byte at byte {at})"
    assert examples["DuplicateKey"] == "bad.jsonl:8: duplicate key 'task_id'"

    whole = pipe.cli("dlq", run_id, "--raw", "5")
    assert whole.returncode == 0, whole.stderr
    out = whole.stdout
    assert "\x1b" not in out and "\r" not in out  # hostile bytes never reach the terminal raw
    records = out.split("--- dead letter ")[1:]
    assert len(records) == 5
    for record, (line, raw) in zip(records, sorted(BAD.items()), strict=True):
        assert re.search(rf"^file:line: +bad\.jsonl:{line}$", record, re.M), record
        assert re.search(rf"^raw: +{len(raw)} bytes\n  {re.escape(repr(raw))}\n", record, re.M), record
        assert f"  hex {raw[:64].hex(' ')}" in record
    # Line 5 is the 4th record: line 3 is blank (and line 1 starts with the BOM, not a record).
    assert re.search(r"^row_index: +3$", records[0], re.M)

    everything = pipe.cli("dlq")
    assert everything.returncode == 0
    assert everything.stdout.startswith(f"5 dead letters in {pipe.spec.dlq_topic}\n")
