"""`up` and `serve` check the whole pipeline before a topic exists or a process starts: one line
per problem naming the file and the step, exit status 2, nothing created."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.kafka
def test_up_refuses_a_broken_pipeline_before_creating_anything(tmp_path: Path, kafka_bootstrap: str) -> None:
    raw = yaml.safe_load((REPO / "examples" / "text2sql" / "pipeline.yaml").read_text())
    raw["name"] = f"broken-{os.getpid()}-{int(time.time())}"
    raw["steps"][6]["step"] = "sql_evall"  # a misspelt step
    raw["steps"][5]["params"]["min_char"] = 8  # a misspelt param
    raw["steps"][4]["params"]["field"] = "generatoin"  # a field nobody writes
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "fastdistill.cli", "up", "--pipeline", str(path), "--seeds", str(path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith(f"{path}: step '") for line in lines)
    assert any("step 'sql_eval' (sql_evall): unknown step 'sql_evall'" in line for line in lines)
    typo = "step 'rule_filter' (rule_filter): unknown param 'min_char'; did you mean 'min_chars'?"
    assert any(typo in line for line in lines)
    assert any("step 'clean_sql' reads 'generatoin'" in line for line in lines)
    assert time.monotonic() - started < 30
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(f"fd.{raw['name']}.")]
