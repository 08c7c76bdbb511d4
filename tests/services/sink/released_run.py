"""A released run on disk, made by the sink's own release code without a broker, for the
commands that start from released files (export, push)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from services.sink import card
from services.sink.formats import build_format
from services.sink.release import CARD, finish, write_pending
from services.sink.subsets import SubsetStaging
from shared.pipeline import PipelineSpec
from tests.runtime.steps import Shout

REPO = Path(__file__).resolve().parents[3]
RUN_ID = "run-1"
COLUMNS = ["source_index", "sample_id", "instruction", "generations", "scores", "answer", "meta", "keep"]


def rows() -> list[dict[str, Any]]:
    return [
        {
            "source_index": i,
            "sample_id": f"s{i:03d}",
            "instruction": f"Question {i}?",
            "generations": [f"a{i}", f"b{i}"] if i % 5 else [f"only{i}"],
            "scores": [i % 3 / 2, 1 - i % 3 / 2] if i % 5 else [1.0],
            "answer": f"a{i}",
            "meta": {"n": i, "tags": ["x"] * (i % 2)},
            "keep": i % 7 != 0,
        }
        for i in range(60)
    ]


def released_run(tmp_path: Path, formats: list[Any]) -> Path:
    """A pipeline YAML whose sink writes under `tmp_path`, and its run RUN_ID released there
    with `formats`; returns the pipeline's path."""
    pipeline = {
        "name": "sinktest",
        "steps": [{"id": "answer", "step": "tests.runtime.steps:Shout"}],
        "sink": {
            "output_dir": str(tmp_path / "out"),
            # the YAML names the formats; the split below is the release's (RELEASED.json says it)
            "formats": formats,
        },
    }
    path = tmp_path / "pipeline.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    subset = SubsetStaging("answer", COLUMNS, tmp_path / "staging", split=[("train", 0.75), ("test", 0.25)])
    subset.add(rows())
    run_dir = tmp_path / "out" / "sinktest" / RUN_ID
    built = [build_format(f) if isinstance(f, str) else build_format(*next(iter(f.items()))) for f in formats]
    pending = write_pending([subset], built, run_dir / ".pending", "answer")
    spec = PipelineSpec.load(path)
    # The pipeline only names the formats; its one step stands for how the rows were made.
    context = card.CardContext(
        spec, RUN_ID, card.step_infos(spec, {"answer": Shout()}), None, None, None, None
    )
    (pending.folder / CARD).write_text(card.render(context, pending))
    pending.add_file(CARD)
    (run_dir / "reports").mkdir(parents=True)
    (run_dir / "reports" / "quality.json").write_text('[{"stage": "answer", "total": 60}]')
    finish(pending, run_dir, True, {"run_id": RUN_ID, "pipeline": "sinktest"})
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastdistill.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
