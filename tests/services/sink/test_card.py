"""The dataset card: what it must list, in the Hugging Face card format, and no secret."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastdistill.plan import PipelinePlan
from services.sink import card
from services.sink.formats import build_format
from services.sink.release import write_pending
from services.sink.subsets import SubsetStaging
from shared.pipeline import PipelineSpec

EXAMPLE = Path(__file__).resolve().parents[3] / "examples/text2sql/pipeline.yaml"
SECRET = "sk-live-do-not-print"


def _spec(**teacher: Any) -> PipelineSpec:
    raw = PipelineSpec.load(EXAMPLE).model_dump(mode="json", by_alias=True, exclude_unset=True)
    for step in raw["steps"]:
        if step["id"] == "teacher":
            step["params"]["llm"] |= teacher
    return PipelineSpec.model_validate(raw)


STATE = {
    "status": "done",
    "stages": {"seeds": {"rows_out": 3}, "keep_by_score": {"rows_out": 2, "rows_dropped": 0}},
    "dead_letters": {"teacher": {"TeacherError": 1}},
    "reports": {
        "quality": [
            {
                "run_id": "r",
                "stage": "keep_by_score",
                "total": 2,
                "kept": 1,
                "exec_pass_rate": 0.5,
                "reject_reasons": {"ok": 2},
            },
        ]
    },
}


def _card(tmp_path: Path, spec: PipelineSpec, verdict: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    plan = PipelinePlan.build(spec)
    subset = SubsetStaging(
        "keep_by_score", ["source_index", "sample_id", "teacher_model", "keep"], tmp_path / "s"
    )
    subset.add(
        [
            {"source_index": 0, "sample_id": "a", "teacher_model": "sim-1", "keep": True},
            {"source_index": 1, "sample_id": "b", "teacher_model": "sim-2", "keep": False},
        ]
    )
    formats = [build_format("jsonl"), build_format("parquet")]
    pending = write_pending([subset], formats, tmp_path / "run", "keep_by_score")
    context = card.CardContext(
        spec,
        "run-1",
        card.step_infos(spec, plan.steps),
        STATE,
        verdict,
        {"name": "seeds.jsonl", "sha256": "ab" * 32},
        None,
    )
    text = card.render(context, pending)
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, text[:200]
    return text, yaml.safe_load(match.group(1))


def test_the_card_lists_what_made_the_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://user:hunter2@127.0.0.1:8800/v1?token=abc")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    spec = _spec()
    text, front = _card(tmp_path, spec, {"run_id": "run-1", "passed": True, "failures": []})

    # Hugging Face front matter: the kept rows are the default config, the rejected ones another.
    assert front["configs"] == [
        {
            "config_name": "keep_by_score",
            "data_files": [{"split": "train", "path": "keep_by_score/data.parquet"}],
            "default": True,
        },
        {
            "config_name": "keep_by_score.rejected",
            "data_files": [{"split": "train", "path": "keep_by_score.rejected/data.parquet"}],
        },
    ]
    assert front["fastdistill"]["seed_file"] == {"name": "seeds.jsonl", "sha256": "ab" * 32}
    assert front["fastdistill"]["subsets"] == {"keep_by_score": {"kept": 1, "rejected": 1}}
    assert front["fastdistill"]["gate"] == {"passed": True, "failures": []}

    plan = PipelinePlan.build(spec)
    for step_id, step in plan.steps.items():  # every step's signature
        assert f"| {step_id} | {spec.step(step_id).step} | `{step.signature()}` |" in text
    assert (
        "| teacher | teacher-sim | http://127.0.0.1:8800/v1 (OPENAI_BASE_URL, as the sink sees it) |" in text
    )
    assert "`sim-1`, `sim-2`" in text  # the models named in the rows
    assert "| keep_by_score | 2 | 0 |" in text and "| seeds | 3 |" in text  # rows per stage
    assert "| exec_pass_rate | 0.5 |" in text and '"reject_reasons"' in text  # quality report
    assert "**Passed.**" in text and "min_exec_pass_rate" in text  # verdict and thresholds
    assert f"SHA-256 `{'ab' * 32}`" in text
    embedded = re.search(r"## Pipeline\n\n```yaml\n(.*?)```", text, re.S)
    assert embedded and yaml.safe_load(embedded.group(1))["steps"][3]["id"] == "teacher"
    for secret in (SECRET, "hunter2", "token=abc"):
        assert secret not in text


def test_secrets_in_params_and_urls_are_redacted(tmp_path: Path) -> None:
    spec = _spec(base_url="https://me:pw@llm.example.com/v1?api_key=k")
    text, _ = _card(
        tmp_path, spec, {"run_id": "run-1", "passed": False, "failures": ["total 2 < min_total 100"]}
    )
    assert "https://llm.example.com/v1" in text and "pw@" not in text and "api_key=k" not in text
    assert "**Failed**: nothing was released." in text and "- total 2 < min_total 100" in text
    assert card.redact(
        {"api_key": "k", "headers": {"X-Auth": "v"}, "nested": [{"password": "p"}], "n": 1}
    ) == {
        "api_key": card.REDACTED,
        "headers": card.REDACTED,
        "nested": [{"password": card.REDACTED}],
        "n": 1,
    }


def test_a_run_released_without_its_state_says_so(tmp_path: Path) -> None:
    spec = _spec()
    plan = PipelinePlan.build(spec)
    pending = write_pending(
        [SubsetStaging("keep_by_score", ["source_index"], tmp_path / "s")],
        [build_format("jsonl")],
        tmp_path / "run",
        "keep_by_score",
    )
    text = card.render(
        card.CardContext(spec, "r", card.step_infos(spec, plan.steps), None, None, None, None), pending
    )
    assert "without waiting for the gates" in text and "Not known to the sink" in text
    assert "Not recorded: the run was not produced by `fastdistill produce` from a file." in text
