"""docs/extending.md's worked example, run from a package outside the source tree.

examples/extending/fd_example_plugins adds a step (`word_count`), an LLM client (`echo`), a sink
format (`csv`) and a quality metric set (`length`) by entry points only. It is installed from a
copy into a fresh venv beside the project's wheel, and everything runs from a temporary folder:
the package's own tests, `fastdistill steps`, `fastdistill validate`, and the example pipeline
through `fastdistill up` on the real broker, whose released files and quality report must hold
what the four plug-ins produce.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.packaging.venvs import (
    NOT_SOURCE,
    REPO,
    borrow_dependencies,
    install,
    new_venv,
    outside_env,
    run,
)

pytestmark = pytest.mark.kafka

EXAMPLE = REPO / "examples" / "extending"
PLUGINS = EXAMPLE / "fd_example_plugins"


@pytest.fixture(scope="module")
def venv(project_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extending")
    venv = new_venv(root / "venv")
    # Dependencies from this environment, not an index: the install takes seconds. The project
    # comes from its wheel, the plug-ins from a copy (a build writes into its source folder).
    borrow_dependencies(venv)
    install(venv, "--no-deps", "--no-index", str(project_wheel))
    plugins = root / PLUGINS.name
    shutil.copytree(PLUGINS, plugins, ignore=NOT_SOURCE)
    install(venv, "--no-deps", "--no-index", "--no-build-isolation", str(plugins))
    return venv


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The example's pipeline and seeds in a folder of their own, under a name of their own (the
    broker is shared with other test sessions)."""
    work = tmp_path / "work"
    work.mkdir()
    raw = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    raw["name"] = f"plugins{uuid.uuid4().hex[:8]}"
    (work / "pipeline.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copy(EXAMPLE / "seeds.jsonl", work)
    return work


def test_the_plugins_are_found_by_name_and_pass_their_own_tests(
    venv: Path, tmp_path: Path, work: Path
) -> None:
    env = outside_env(venv, tmp_path)
    python = str(venv / "bin" / "python")
    code = (
        "import json, fastdistill, fd_example_plugins, services, shared\n"
        "print(json.dumps([m.__file__ for m in (fastdistill, fd_example_plugins, services, shared)]))"
    )
    for path in json.loads(run([python, "-c", code], tmp_path, env).stdout):
        assert Path(path).is_relative_to(venv) and not Path(path).is_relative_to(REPO), path
    # The package's unit tests (its copy's folder: pytest from the borrowed dependencies).
    tests = run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], venv.parent / PLUGINS.name, env
    )
    assert "5 passed" in tests.stdout, tests.stdout

    fastdistill = str(venv / "bin" / "fastdistill")
    steps = run([fastdistill, "steps"], tmp_path, env | {"COLUMNS": "200"}).stdout
    assert "│ word_count" in steps and "output: str = 'word_count'" in steps
    checked = run([fastdistill, "validate", "pipeline.yaml"], work, env)
    assert "2 steps, leaves: count" in checked.stderr
    # Misspelt plug-in names are found at load, and the plug-ins are among the known ones.
    pipeline = (work / "pipeline.yaml").read_text()
    typos = [
        (
            "provider: echo",
            "provider: ech0",
            "llm.provider: unknown LLM client 'ech0'; known: anthropic, echo, openai",
        ),
        (
            "min_length_chars_mean",
            "min_length_chars_meen",
            "unknown quality gate(s) min_length_chars_meen on stage",
        ),
    ]
    for right, wrong, problem in typos:
        (work / "typo.yaml").write_text(pipeline.replace(right, wrong))
        argv = [fastdistill, "validate", "typo.yaml"]
        refused = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2
        assert problem in " ".join(refused.stderr.split()), refused.stderr  # rich wraps long lines


def test_the_example_pipeline_runs_the_plugins_end_to_end(
    venv: Path, tmp_path: Path, work: Path, kafka_bootstrap: str
) -> None:
    env = outside_env(venv, tmp_path, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    up = [
        str(venv / "bin" / "fastdistill"),
        "up",
        "-p",
        "pipeline.yaml",
        "--seeds",
        "seeds.jsonl",
        "--exit-when-done",
    ]
    started = time.monotonic()
    run([*up, "--prometheus-port", "0", "--timeout-s", "80"], work, env, timeout=110)
    took = time.monotonic() - started

    name = yaml.safe_load((work / "pipeline.yaml").read_text())["name"]
    (status,) = (work / "out" / name).glob("*/RE*ED.json")
    assert status.name == "RELEASED.json", status.read_text()
    released = json.loads(status.read_text())
    # The echo client answers with the first max_tokens (6) words of the prompt; word_count counts them.
    seeds = [json.loads(line) for line in (work / "seeds.jsonl").read_text().splitlines()]
    answers = [" ".join(seed["instruction"].split()[:6]) for seed in seeds]
    with open(status.parent / "count" / "data.csv", newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    assert lines == [["task_id", "generation", "words"]] + [
        [seed["task_id"], answer, str(len(answer.split()))]
        for seed, answer in zip(seeds, answers, strict=True)
    ]
    assert released["rows"] == len(seeds)
    # The length set runs where the pipeline names it, with the numbers of those answers.
    reports = {r["stage"]: r for r in json.loads((status.parent / "reports" / "quality.json").read_text())}
    chars = [len(a) for a in answers]
    for stage in ("answer", "count"):
        assert reports[stage]["metric_sets"] == ["length"]
        assert reports[stage]["length_texts"] == len(seeds)
        assert reports[stage]["length_chars_min"] == min(chars)
        assert reports[stage]["length_chars_max"] == max(chars)
        assert reports[stage]["length_chars_mean"] == pytest.approx(sum(chars) / len(chars))
    assert reports["seeds"]["metric_sets"] == []
    # The gate on the plug-in's metric was evaluated (and passed) on the leaf.
    assert released["gate"]["passed"] is True
    print(f"fastdistill up of the plug-in pipeline: {took:.1f} s")
