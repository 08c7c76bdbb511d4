"""The wheel, installed into a fresh virtual environment outside the source tree, runs the example.

An editable install hides missing package data: here the Avro schemas, the local broker's
pom/log4j/server template and the example's files must all come out of the wheel. The wheel
(tests/packaging/venvs.py) goes into a venv with its declared dependencies only, and every
command runs from a temporary folder with no variable pointing back at the checkout.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from fastdistill.dev import local_broker
from fastdistill.dev.teacher_sim.server import SimConfig
from fastdistill.local_stack import free_port_pair
from shared.pipeline import PipelineSpec
from tests.e2e.expected import compute
from tests.packaging.venvs import REPO, install, new_venv, outside_env, run

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def venv(project_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = new_venv(tmp_path_factory.mktemp("wheel-venv") / "venv")
    # The wheel and its declared dependencies only. The bytecode is compiled here, once, not by
    # each of the dozen services importing it at startup.
    install(venv, str(project_wheel))
    return venv


def test_nothing_resolves_to_the_checkout(venv: Path, tmp_path: Path) -> None:
    code = (
        "import json, fastdistill, schemas, services, shared\n"
        "print(json.dumps([m.__file__ for m in (fastdistill, schemas, services, shared)]))"
    )
    done = run([str(venv / "bin" / "python"), "-c", code], tmp_path, outside_env(venv, tmp_path))
    for path in json.loads(done.stdout):
        assert Path(path).is_relative_to(venv) and not Path(path).is_relative_to(REPO), path


def test_the_example_runs_from_the_wheel_and_is_released(
    venv: Path, tmp_path: Path, kafka_bootstrap: str
) -> None:
    env = outside_env(venv, tmp_path, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    fastdistill = str(venv / "bin" / "fastdistill")
    run([fastdistill, "example", "text2sql", "work"], tmp_path, env)
    work = tmp_path / "work"
    example = work / "examples" / "text2sql"
    assert sorted(p.name for p in example.iterdir()) == ["pipeline.yaml", "seeds.jsonl", "shop.sqlite"]
    for name in ("pipeline.yaml", "seeds.jsonl", "shop.sqlite"):
        assert (example / name).read_bytes() == (REPO / "examples" / "text2sql" / name).read_bytes()
    # The broker is shared with other test sessions: a name of its own keeps topics and groups apart.
    raw = yaml.safe_load((example / "pipeline.yaml").read_text())
    raw["name"] = f"wheel{uuid.uuid4().hex[:8]}"
    (example / "pipeline.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    # The README's command, run where `fastdistill example` put the files (the default pipeline).
    up = [fastdistill, "up", "--seeds", "examples/text2sql/seeds.jsonl", "--exit-when-done"]
    run([*up, "--prometheus-port", "0", "--timeout-s", "300"], work, env, timeout=420)

    spec = PipelineSpec.load(example / "pipeline.yaml")
    (status,) = (work / spec.sink.output_dir / spec.name).glob("*/RE*ED.json")
    assert status.name == "RELEASED.json"
    released = json.loads(status.read_text())
    run_dir = status.parent
    assert released["gate"]["passed"] is True
    dataset = run_dir / spec.primary_leaf / "data.jsonl"
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    # The rows the checkout computes in process, without Kafka: the wheel's steps, schemas and
    # example database gave the same dataset (its kept rows: `keep` true).
    expected = compute(spec, example / "seeds.jsonl", SimConfig(seeds_path=example / "seeds.jsonl"))
    want = [expected.rows[i] for i in sorted(expected.rows) if expected.rows[i]["keep"]]
    assert released["subsets"][spec.primary_leaf]["kept"] == len(rows) == len(want) > 0
    for got, row in zip(rows, want, strict=True):
        assert {k: got[k] for k in row} == row, row["source_index"]


def test_the_local_broker_starts_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    # A wheel user's first `fastdistill up` fetches the jars with Maven into $XDG_CACHE_HOME;
    # the checkout's jars stand in for that download here.
    cache = tmp_path / "xdg-cache" / "fastdistill" / "kafka"
    cache.mkdir(parents=True)
    (cache / "lib").symlink_to(local_broker.ensure_jars())
    port = free_port_pair()
    env = outside_env(venv, tmp_path)
    fastdistill = str(venv / "bin" / "fastdistill")
    try:
        up = run([fastdistill, "dev", "broker", "up", "--port", str(port)], tmp_path, env, timeout=180)
        assert up.stdout.strip() == f"127.0.0.1:{port}"
        assert local_broker.answers(port)
        data = cache / f"data-{port}"
        assert f"127.0.0.1:{port}" in (data / "server.properties").read_text()
        # Started with the wheel's log4j config, not the checkout's.
        cmdline = psutil.Process(int((data / "broker.pid").read_text())).cmdline()
        (log4j,) = venv.glob("lib/python*/site-packages/fastdistill/dev/broker/log4j2.properties")
        assert f"-Dlog4j2.configurationFile={log4j}" in cmdline
    finally:
        run([fastdistill, "dev", "broker", "down", "--port", str(port)], tmp_path, env, timeout=120)
    assert not local_broker.answers(port)
