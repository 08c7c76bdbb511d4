"""A run's release: parts into files, the layout, RELEASED.json, a gate's rejection, the summary."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fastdistill.runs import release_summary
from services.sink.formats import build_format
from services.sink.release import GATE_REJECTED, REJECTED, RELEASED, finish, write_pending
from services.sink.subsets import SubsetStaging
from shared.pipeline import Condition

COLUMNS = ["source_index", "sample_id", "score", "keep", "reject_reason"]


def _rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "source_index": i,
            "sample_id": f"s{i:03d}",
            "score": i % 5 / 4,
            "keep": i % 4 != 0,
            "reject_reason": "too_short" if i % 8 == 0 else "ok",
        }
        for i in range(n)
    ]


def _subset(folder: Path, **kwargs: Any) -> SubsetStaging:
    subset = SubsetStaging("final", COLUMNS, folder, **kwargs)
    subset.add(_rows(40))
    return subset


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kept_rows_are_released_rejected_ones_aside_with_their_reason(tmp_path: Path) -> None:
    formats = [build_format("jsonl"), build_format("parquet")]
    pending = write_pending([_subset(tmp_path / "staging")], formats, tmp_path / "run" / ".pending", "final")
    path, record = finish(pending, tmp_path / "run", True, {"run_id": "r"})
    assert path == tmp_path / "run" / RELEASED and json.loads(path.read_text()) == record
    subset = record["subsets"]["final"]
    assert (record["rows"], subset["kept"], subset["rejected"]) == (30, 30, 10)
    # rule_filter's reason where it gave one, else the test that failed
    assert subset["rejected_because"] == {"keep=false": 5, "too_short": 5}
    assert subset["folders"] == {"kept": "final", "rejected": "final.rejected"}
    kept = [json.loads(line) for line in (tmp_path / "run/final/data.jsonl").read_text().splitlines()]
    assert [r["source_index"] for r in kept] == [i for i in range(40) if i % 4]
    rejected = [
        json.loads(line) for line in (tmp_path / "run/final.rejected/data.jsonl").read_text().splitlines()
    ]
    assert rejected[0] == {**_rows(1)[0], "rejected_because": "too_short"}
    assert rejected[1]["rejected_because"] == "keep=false" and rejected[1]["reject_reason"] == "ok"
    # every file listed, with its sha256; nothing left pending
    assert set(subset["files"]) == {
        "final/data.jsonl",
        "final/data.parquet",
        "final.rejected/data.jsonl",
        "final.rejected/data.parquet",
    }
    for name, digest in subset["files"].items():
        assert _digest(tmp_path / "run" / name) == digest
    assert not (tmp_path / "run" / ".pending").exists()
    assert subset["columns"]["final"] == [
        ["source_index", "int64"],
        ["sample_id", "string"],
        ["score", "float64"],
        ["keep", "bool"],
        ["reject_reason", "string"],
    ]


def test_a_select_and_a_split_decide_the_parts(tmp_path: Path) -> None:
    subset = _subset(
        tmp_path / "staging",
        select=Condition(field="score", **{"in": [0.75, 1.0]}),
        split=[("train", 0.5), ("test", 0.5)],
    )
    pending = write_pending([subset], [build_format("jsonl")], tmp_path / "run" / ".pending", "final")
    _, record = finish(pending, tmp_path / "run", True, {"run_id": "r"})
    summary = record["subsets"]["final"]
    assert summary["kept"] == 16 and summary["rejected"] == 24
    assert summary["rejected_because"] == {"select: score in [0.75,1.0]": 24}
    assert sum(summary["splits"].values()) == 16 and set(summary["splits"]) == {"train", "test"}
    for split, count in summary["splits"].items():
        lines = (tmp_path / "run" / "final" / split / "data.jsonl").read_text().splitlines()
        assert len(lines) == count and all(json.loads(line)["score"] >= 0.75 for line in lines)
    assert release_summary({"released": True, "dir": str(tmp_path / "run"), **record}) == [
        f"run r: 16 rows kept in {tmp_path / 'run' / 'final'}/ (train {summary['splits']['train']}, "
        f"test {summary['splits']['test']}); 24 rejected in {tmp_path / 'run' / 'final.rejected'}/"
    ]


def test_a_limit_counts_kept_and_rejected_rows_together(tmp_path: Path) -> None:
    pending = write_pending(
        [_subset(tmp_path / "staging")],
        [build_format("jsonl")],
        tmp_path / "run" / ".pending",
        "final",
        limit=10,
    )
    _, record = finish(pending, tmp_path / "run", True, {"run_id": "r"})
    summary = record["subsets"]["final"]
    # the 10 lowest source indices: 0..9, of which 0, 4, 8 are rejected (0 and 8 too short)
    assert (summary["kept"], summary["rejected"]) == (7, 3)
    assert summary["rejected_because"] == {"keep=false": 1, "too_short": 2}


def test_a_failed_gate_releases_nothing_and_keeps_the_files_aside(tmp_path: Path) -> None:
    pending = write_pending(
        [_subset(tmp_path / "staging")], [build_format("jsonl")], tmp_path / "run" / ".pending", "final"
    )
    verdict = {"run_id": "r", "passed": False, "failures": ["total 40.0000 < min_total 100.0000"]}
    path, record = finish(pending, tmp_path / "run", False, {"run_id": "r", "gate": verdict})
    assert path == tmp_path / "run" / REJECTED and not (tmp_path / "run" / RELEASED).exists()
    assert not (tmp_path / "run" / "final").exists()
    files = record["subsets"]["final"]["files"]
    assert set(files) == {f"{GATE_REJECTED}/final/data.jsonl", f"{GATE_REJECTED}/final.rejected/data.jsonl"}
    for name, digest in files.items():
        assert _digest(tmp_path / "run" / name) == digest
    assert release_summary({"released": False, "dir": str(tmp_path / "run"), **record}) == [
        f"run r: REJECTED by the quality gates, nothing released; the rows are kept aside in "
        f"{tmp_path / 'run' / GATE_REJECTED}/",
        "  gate: total 40.0000 < min_total 100.0000",
    ]


def test_several_subsets_are_released_side_by_side(tmp_path: Path) -> None:
    first = _subset(tmp_path / "staging" / "final")
    other = SubsetStaging("other", ["source_index", "text"], tmp_path / "staging" / "other")
    other.add([{"source_index": 1, "text": "b"}, {"source_index": 0, "text": "a"}])
    pending = write_pending([first, other], [build_format("jsonl")], tmp_path / "run" / ".pending", "final")
    _, record = finish(pending, tmp_path / "run", True, {"run_id": "r"})
    assert {s: (v["kept"], v["rejected"]) for s, v in record["subsets"].items()} == {
        "final": (30, 10),
        "other": (2, 0),
    }
    assert record["rows"] == 30  # the primary subset's kept rows
    assert (tmp_path / "run/other/data.jsonl").read_text() == (
        '{"source_index": 0, "text": "a"}\n{"source_index": 1, "text": "b"}\n'
    )
