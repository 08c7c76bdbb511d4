"""End to end: the sink releases every leaf of a DAG as a named subset, split, in every format,
with a card; two runs of the same seeds give the same files. Real broker, every service a
process (the coordinator too, so the gate's verdict and the run state reach the card).

    seeds ─► shout ─┬─► split (2 rows a seed: tied source indices)      leaf: all rows kept
                    └─► candidates (candidates, scores, keep)           leaf: some rejected

The expected subsets are computed in process from the steps' own `process_row` and the seeds;
the split from SHA-256 of `text` by hand; neither uses the sink's code.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest

from fastdistill.local_stack import LocalStack
from fastdistill.runs import finished, release_summary, run_dir, run_states, wait_for_release
from shared.config import KafkaSettings
from shared.pipeline import PipelineSpec
from tests.e2e.sink_steps import Candidates
from tests.runtime.harness import create_topics, write_pipeline, write_seeds
from tests.runtime.steps import Shout, Split

pytestmark = pytest.mark.kafka

SEEDS = 300
SPLIT = {"train": 0.7, "valid": 0.15, "test": 0.15}
FORMATS: list[Any] = [
    "jsonl",
    "parquet",
    "hf",
    {"preference": {"prompt": "Q: {text}", "subsets": ["candidates"]}},
    {"chat": {"roles": {"user": "text", "assistant": "shout"}, "subsets": ["split"]}},
]


def _split_by_hand(text: str) -> str:
    point = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64
    upper = 0.0
    for name, ratio in sorted(SPLIT.items()):  # intervals in the order of the names
        upper += ratio
        if point < upper:
            return name
    return "valid"


def _expected(seeds: Path) -> dict[str, list[dict[str, Any]]]:
    shouted: list[dict[str, Any]] = []
    for i, line in enumerate(seeds.read_text().splitlines()):
        row = Shout().process_row({"source_index": i, **json.loads(line)})
        assert row is not None
        shouted.append(row)
    split = [part for row in shouted for part in Split(parts=2).process_row(row)]
    return {"split": split, "candidates": [Candidates().process_row(row) for row in shouted]}


class Stack:
    def __init__(self, folder: Path, bootstrap: str) -> None:
        steps: list[dict[str, Any]] = [
            {"id": "shout", "step": "tests.runtime.steps:Shout"},
            {"id": "split", "step": "tests.runtime.steps:Split", "params": {"parts": 2}, "inputs": ["shout"]},
            {"id": "candidates", "step": "tests.e2e.sink_steps:Candidates", "inputs": ["shout"]},
        ]
        sink = {"output_dir": str(folder / "out"), "formats": FORMATS, "split": SPLIT, "split_by": "text"}
        self.path = write_pipeline(
            folder, f"sink-{uuid.uuid4().hex[:8]}", steps, sink=sink, gates={"min_total": 1}
        )
        self.spec = PipelineSpec.load(self.path)
        create_topics(KafkaSettings(bootstrap_servers=bootstrap), self.spec)
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_SESSION_TIMEOUT_MS": "6000"}
        self.stack = LocalStack(self.path, folder / "stack", env)
        self.stack.add_pipeline_services()
        self.kafka = KafkaSettings(bootstrap_servers=bootstrap)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Stack]:
    built = Stack(tmp_path_factory.mktemp("sink"), kafka_bootstrap)
    try:
        built.stack.start(wait_healthy_s=120)
        yield built
    finally:
        built.stack.stop()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_seeds(tmp_path_factory.mktemp("seeds") / "seeds.jsonl", SEEDS)


@pytest.fixture(scope="module")
def runs(stack: Stack, seeds: Path) -> list[str]:
    """Two runs of the same seeds, one after the other."""
    ids = [f"sink-{n}-{uuid.uuid4().hex[:6]}" for n in ("one", "two")]
    for run_id in ids:
        stack.stack.produce(seeds, run_id, timeout_s=120)
        result = wait_for_release(stack.spec, run_id, 240, stack.stack)
        assert result["released"], result
    return ids


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_leaf_is_a_subset_of_kept_rows_by_split(stack: Stack, seeds: Path, runs: list[str]) -> None:
    expected = _expected(seeds)
    result = finished(stack.spec, runs[0])
    assert result is not None and set(result["subsets"]) == {"split", "candidates"}
    folder = run_dir(stack.spec, runs[0])
    for subset, rows in expected.items():
        kept = [r for r in rows if r.get("keep") is not False]
        rejected = [r for r in rows if r.get("keep") is False]
        summary = result["subsets"][subset]
        assert (summary["kept"], summary["rejected"]) == (len(kept), len(rejected))
        assert summary["rejected_because"] == ({"keep=false": len(rejected)} if rejected else {})
        for split in SPLIT:
            want = sorted(
                (r for r in kept if _split_by_hand(r["text"]) == split),
                key=lambda r: (r["source_index"], json.dumps(r, sort_keys=True, separators=(",", ":"))),
            )
            got = _jsonl(folder / subset / split / "data.jsonl")
            assert got == want, (subset, split)
            assert summary["splits"][split] == len(want)
            assert pq.read_table(folder / subset / split / "data.parquet").num_rows == len(want)
        got_rejected = _jsonl(folder / f"{subset}.rejected" / "data.jsonl")
        assert got_rejected == [r | {"rejected_because": "keep=false"} for r in rejected]
    lines = release_summary(result)
    assert any(f"{len(expected['split'])} rows kept in {folder / 'split'}/" in line for line in lines)


def test_training_formats_and_the_dataset_dict(stack: Stack, runs: list[str]) -> None:
    folder = run_dir(stack.spec, runs[0])
    loaded = datasets.load_from_disk(str(folder / "hf"))
    released = json.loads((folder / "RELEASED.json").read_text())
    assert set(loaded) == {
        *(f"{s}.{split}" for s in ("split", "candidates") for split in SPLIT),
        "split.rejected",
        "candidates.rejected",
    }
    for key, dataset in loaded.items():
        subset, _, part = key.partition(".")
        count = (
            released["subsets"][subset]["rejected"]
            if part == "rejected"
            else released["subsets"][subset]["splits"][part]
        )
        assert len(dataset) == count, key
    for split in SPLIT:
        chat = _jsonl(folder / "split" / split / "chat.jsonl")
        data = _jsonl(folder / "split" / split / "data.jsonl")
        assert chat == [
            {
                "messages": [
                    {"role": "user", "content": r["text"]},
                    {"role": "assistant", "content": r["shout"]},
                ]
            }
            for r in data
        ]
        pairs = _jsonl(folder / "candidates" / split / "preference.jsonl")
        rows = _jsonl(folder / "candidates" / split / "data.jsonl")
        # single candidates (i % 4 == 0) and ties (i % 4 == 1) give no pair
        assert len(pairs) == sum(r["source_index"] % 4 >= 2 for r in rows)
        for pair in pairs:
            assert pair["prompt"].startswith("Q: row ") and pair["score_chosen"] > pair["score_rejected"]
    assert not (folder / "candidates" / "train" / "chat.jsonl").exists()
    assert not (folder / "candidates.rejected" / "preference.jsonl").exists()


def test_two_runs_of_the_same_seeds_release_the_same_files(stack: Stack, runs: list[str]) -> None:
    first, second = (json.loads((run_dir(stack.spec, r) / "RELEASED.json").read_text()) for r in runs)
    for subset in first["subsets"]:
        assert first["subsets"][subset]["files"] == second["subsets"][subset]["files"]
        assert first["subsets"][subset]["splits"] == second["subsets"][subset]["splits"]
    same = {k: v for k, v in first["files"].items() if k != "README.md"}
    assert same == {k: v for k, v in second["files"].items() if k != "README.md"}
    assert any(name.startswith("hf/") for name in same) and "pipeline.yaml" in same


def test_the_card_says_how_the_dataset_was_made(stack: Stack, seeds: Path, runs: list[str]) -> None:
    folder = run_dir(stack.spec, runs[0])
    card = (folder / "README.md").read_text()
    assert f"SHA-256 `{hashlib.sha256(seeds.read_bytes()).hexdigest()}`" in card
    assert "Seed file `seeds.jsonl`" in card
    state = run_states(stack.spec, stack.kafka)[runs[0]]
    for stage, info in state["stages"].items():
        assert f"| {stage} | {info['rows_out']} |" in card
    assert "**Passed.**" in card and "### candidates" in card  # verdict, quality per stage
    assert "config_name: split" in card and "path: candidates/valid/data.parquet" in card
    for step in stack.spec.steps:
        assert f"| {step.id} | {step.step} | `" in card
    assert (folder / "pipeline.yaml").exists()
