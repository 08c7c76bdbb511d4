"""What a stuck run looks like, taken before anyone lends it a hand: every service's /healthz
and Python stacks (py-spy, when installed), and every stage topic's ends and each step's
committed offsets, so an open transaction (last stable offset behind the high watermark) or a
group that stopped committing shows."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from bench.chaos_faults import health
from bench.chaos_supervisor import pipeline_services
from fastdistill.local_stack import LocalStack
from shared.config import KafkaSettings
from shared.kafka import clients
from shared.pipeline import PipelineSpec


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _stacks(stack: LocalStack, folder: Path) -> dict[str, str]:
    """py-spy dump of every live service into `folder`; what each file is, by service."""
    spy = _py_spy()
    if spy is None:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in pipeline_services(stack):
        svc = stack.services[name]
        if not svc.alive() or svc.proc is None:
            continue
        try:
            done = subprocess.run(
                [spy, "dump", "--pid", str(svc.proc.pid)], capture_output=True, text=True, timeout=30
            )
            text = done.stdout + done.stderr
        except subprocess.TimeoutExpired:
            text = "py-spy dump timed out"
        (folder / f"{name}.txt").write_text(text)
        written[name] = str(folder / f"{name}.txt")
    return written


def _ends(kafka: KafkaSettings, topics: list[str]) -> dict[str, dict[int, list[int]]]:
    """topic -> partition -> [last stable offset, high watermark]."""
    committed = clients.consumer(kafka, f"chaos-diag-{uuid.uuid4().hex[:8]}")
    uncommitted = clients.consumer(
        kafka, f"chaos-diag-{uuid.uuid4().hex[:8]}", **{"isolation.level": "read_uncommitted"}
    )
    out: dict[str, dict[int, list[int]]] = {}
    try:
        for topic in topics:
            n = clients.partition_count(committed, topic)
            out[topic] = {
                p: [
                    int(committed.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]),
                    int(uncommitted.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]),
                ]
                for p in range(n)
            }
    finally:
        committed.close()
        uncommitted.close()
    return out


def _committed(kafka: KafkaSettings, spec: PipelineSpec) -> dict[str, dict[str, int]]:
    """step -> "input topic[partition]" -> the offset its group committed."""
    out: dict[str, dict[str, int]] = {}
    for step in spec.steps:
        reader = clients.consumer(kafka, f"fd.{spec.name}.{step.id}")
        try:
            wanted = []
            for stage in spec.inputs(step.id):
                topic = spec.topic(stage)
                wanted += [TopicPartition(topic, p) for p in range(clients.partition_count(reader, topic))]
            out[step.id] = {
                f"{p.topic}[{p.partition}]": int(p.offset) for p in reader.committed(wanted, timeout=10)
            }
        finally:
            reader.close()
    return out


def diagnose(stack: LocalStack, spec: PipelineSpec, kafka: KafkaSettings, folder: Path) -> dict[str, Any]:
    report: dict[str, Any] = {
        "services": {
            name: {"alive": svc.alive(), "health": health(svc.port) if svc.alive() else None}
            for name, svc in ((n, stack.services[n]) for n in pipeline_services(stack))
        },
        "stacks": _stacks(stack, folder / "stacks"),
    }
    try:
        report["topic_ends"] = _ends(kafka, [spec.topic(stage) for stage in spec.stages])
        report["committed"] = _committed(kafka, spec)
    except (KafkaException, RuntimeError) as exc:
        report["broker"] = f"not answering: {exc}"
    return report
