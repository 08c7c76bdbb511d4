"""Services bind loopback unless a deployment says otherwise: under `fastdistill up` (LocalStack)
nothing listens beyond 127.0.0.1; compose and k8s ask for 0.0.0.0 explicitly."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import yaml

from fastdistill.local_stack import LocalStack
from shared.config import KafkaSettings
from shared.pipeline import PipelineSpec
from tests.runtime.harness import create_topics, write_pipeline

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.kafka
def test_every_local_service_listens_on_loopback_only(tmp_path: Path, kafka_bootstrap: str) -> None:
    path = write_pipeline(tmp_path, "bind", [{"id": "shout", "step": "tests.runtime.steps:Shout"}])
    create_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), PipelineSpec.load(path))
    stack = LocalStack(path, tmp_path / "stack", {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap})
    stack.start_teacher_sim(REPO / "examples" / "text2sql" / "seeds.jsonl")
    stack.add_pipeline_services()
    try:
        stack.start()
        for svc in stack.services.values():
            assert svc.proc is not None
            listening = [
                c.laddr
                for c in psutil.Process(svc.proc.pid).net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            ]
            assert listening, f"{svc.name} listens nowhere"
            assert all(addr.ip == "127.0.0.1" for addr in listening), f"{svc.name}: {listening}"
    finally:
        stack.stop()


def test_compose_and_k8s_listen_beyond_loopback_explicitly() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["x-fastdistill"]["environment"]["FD_METRICS_HOST"] == "0.0.0.0"
    kustomization = yaml.safe_load((REPO / "k8s" / "base" / "kustomization.yaml").read_text())
    literals = [lit for gen in kustomization["configMapGenerator"] for lit in gen.get("literals", [])]
    assert "FD_METRICS_HOST=0.0.0.0" in literals
