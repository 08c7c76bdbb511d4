"""End to end: `fastdistill replay` on the example pipeline, every service a process on the real
broker, the teacher simulator over HTTP.

One stack serves the module: an original run, then three replays of it as new runs. (a) From a
step after the teacher with nothing changed: the dataset files are byte-identical and the teacher
is not asked. (b) After raising keep_by_score's threshold, from the teacher: the teacher answers
every row from its cache (0 requests), only keep flags change. (c) After changing the teacher's
prompt template, with `--from auto`: the replay starts at the teacher, which is paid exactly once
for every row that reaches it, and not again by the same replay repeated. Steps are reconfigured
by rewriting the pipeline YAML and restarting that one service, as an operator would.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from fastdistill.plan import PipelinePlan
from fastdistill.replay import resolve_step
from fastdistill.runs import run_dir
from shared.pipeline import PipelineSpec
from tests.e2e.coordinator_stack import RELEASED_ROWS, SEEDS, Pipeline, pipeline_copy, running_pipeline

pytestmark = pytest.mark.kafka

#: Differs from the default template, yet the simulator still finds the question in it.
NEW_TEMPLATE = "Database schema: {{ schema }}\nQuestion: {{ instruction }}\nSQL:"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Pipeline]:
    folder = tmp_path_factory.mktemp("replay")
    with running_pipeline(folder, kafka_bootstrap, pipeline_copy(folder)) as pipeline:
        yield pipeline


@pytest.fixture(scope="module")
def original(pipe: Pipeline) -> str:
    run_id = f"orig-{uuid.uuid4().hex[:6]}"
    pipe.produce_all(SEEDS, run_id)
    assert pipe.wait(run_id)["released"]
    pipe.wait_state(run_id)
    return run_id


def _replay(pipe: Pipeline, original: str, *options: str) -> tuple[str, dict[str, Any]]:
    """A replay through the CLI; its run id and, once released, its published state."""
    run_id = f"{original}.replay-{uuid.uuid4().hex[:6]}"
    proc = pipe.cli("replay", original, "--run-id", run_id, *options)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == run_id
    assert pipe.wait(run_id)["released"]
    return run_id, pipe.wait_state(run_id)


def _reconfigure(pipe: Pipeline, step_id: str, **params: Any) -> None:
    """New params for one step in the pipeline YAML, and that step's service restarted on it."""
    raw = yaml.safe_load(pipe.path.read_text())
    next(s for s in raw["steps"] if s["id"] == step_id)["params"].update(params)
    pipe.path.write_text(yaml.safe_dump(raw, sort_keys=False))
    pipe.spec = PipelineSpec.load(pipe.path)
    svc = pipe.stack.services[step_id]
    svc.signal(signal.SIGTERM)
    assert svc.wait(30) is not None
    pipe.stack.restart(step_id)


def _by_sample(pipe: Pipeline, run_id: str) -> dict[str, dict[str, Any]]:
    return {row["sample_id"]: row for row in pipe.dataset(run_id)}


def _without(row: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != field}


def test_a_replay_with_nothing_changed_gives_identical_files(pipe: Pipeline, original: str) -> None:
    requests = pipe.teacher_requests()
    run_id, state = _replay(pipe, original, "--from", "sql_eval")

    assert pipe.teacher_requests() == requests
    final = pipe.spec.primary_leaf
    files = sorted(p.name for p in (run_dir(pipe.spec, original) / final).iterdir())
    assert files and files == sorted(p.name for p in (run_dir(pipe.spec, run_id) / final).iterdir())
    for name in files:
        same = (run_dir(pipe.spec, run_id) / final / name).read_bytes()
        assert same == (run_dir(pipe.spec, original) / final / name).read_bytes(), name

    # The run covers sql_eval's input stage onwards and says where it comes from.
    assert state["replay"] == {"replay_of": original, "from_step": "sql_eval"}
    assert set(state["stages"]) == {"rule_filter", "sql_eval", "score", "keep_by_score"}
    assert pipe.report_files(run_id)["replay"] == {
        "run_id": run_id,
        "replay_of": original,
        "from_step": "sql_eval",
    }
    first = state["stages"]["rule_filter"]
    assert first["rows_seen"] == pipe.state(original)["stages"]["rule_filter"]["rows_out"]


def test_b_downstream_change_recomputes_downstream_without_paying(pipe: Pipeline, original: str) -> None:
    _reconfigure(pipe, "keep_by_score", min_score=1.0)
    plan = PipelinePlan.build(pipe.spec)
    # what `--from auto` picks: the first step whose own stage carries another signature
    assert resolve_step(plan, pipe.kafka, plan.serde(), original, "auto") == "keep_by_score"

    requests = pipe.teacher_requests()
    run_id, state = _replay(pipe, original, "--from", "teacher")

    assert pipe.teacher_requests() == requests
    assert state["replay"] == {"replay_of": original, "from_step": "teacher"}
    assert "hash" not in state["stages"] and state["stages"]["teacher"]["rows_in"] > 0
    before, after = _by_sample(pipe, original), _by_sample(pipe, run_id)
    assert set(after) == set(before) and len(after) == RELEASED_ROWS
    for sample_id, row in after.items():
        old = before[sample_id]
        assert _without(row, "keep") == _without(old, "keep")
        assert row["keep"] == (old["keep"] and row["teacher_score"] >= 1.0)
    assert any(old["keep"] and not after[s]["keep"] for s, old in before.items())


def test_c_teacher_change_pays_once_per_row_reaching_it(pipe: Pipeline, original: str) -> None:
    _reconfigure(pipe, "teacher", template=NEW_TEMPLATE)
    requests = pipe.teacher_requests()
    run_id, state = _replay(pipe, original)  # --from auto: the teacher is the first step changed

    reaching = pipe.state(original)["stages"]["dedup"]["rows_out"]
    assert pipe.teacher_requests() - requests == reaching
    assert state["replay"] == {"replay_of": original, "from_step": "teacher"}
    assert state["stages"]["teacher"]["rows_in"] == reaching
    assert len(pipe.dataset(run_id)) == RELEASED_ROWS

    # The new generations are cached under the new signature: the same replay again pays nothing.
    requests = pipe.teacher_requests()
    again, _ = _replay(pipe, original)
    assert pipe.teacher_requests() == requests
    assert pipe.dataset(again) == pipe.dataset(run_id)


def test_replay_of_an_unknown_run_is_refused(pipe: Pipeline) -> None:
    proc = pipe.cli("replay", f"nope-{uuid.uuid4().hex[:6]}", "--from", "teacher")
    assert proc.returncode == 1 and "not a finished run" in proc.stderr
