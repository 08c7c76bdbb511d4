"""Three services as separate processes on the real broker: shout → stamp → sink.

20,000 rows must reach the dataset exactly once, also when the middle service is killed
with SIGKILL mid-run and restarted: transactions, not de-duplication at the sink, make
that true (the sink keeps every row it is given).
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from fastdistill.local_stack import LocalStack
from fastdistill.plan import PipelinePlan
from fastdistill.runs import run_dir, wait_for_release
from shared.config import KafkaSettings, RegistrySettings
from shared.pipeline import PipelineSpec
from shared.serde import AvroSerde
from tests.runtime.harness import (
    create_topics,
    read_all,
    rows_of,
    rows_out,
    wait_rows_out,
    write_pipeline,
    write_seeds,
)
from tests.schema_registry_stand_in import schema_registry

pytestmark = pytest.mark.kafka

N = 20_000


#: 0.5 ms of CPU a row: 20,000 rows keep the middle service busy ≥ 10 s, long enough for a kill or
#: a second instance (a few seconds to start and join) to land mid-run.
MID_RUN_ROW_COST_S = 0.0005


def _stack(
    tmp_path: Path, name: str, bootstrap: str, stamp_buffer: int, stamp_row_cost_s: float = 0.0
) -> tuple[LocalStack, PipelineSpec]:
    stamp = {
        "id": "stamp",
        "step": "tests.runtime.steps:Stamp",
        "max_buffered_rows": stamp_buffer,
        "params": {"row_cost_s": stamp_row_cost_s},
    }
    path = write_pipeline(tmp_path, name, [{"id": "shout", "step": "tests.runtime.steps:Shout"}, stamp])
    spec = PipelineSpec.load(path)
    create_topics(KafkaSettings(bootstrap_servers=bootstrap), spec)
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_SESSION_TIMEOUT_MS": "6000"}
    stack = LocalStack(path, tmp_path / "stack", env)
    stack.add_pipeline_services(with_coordinator=False)
    return stack, spec


def _dataset_indexes(spec: PipelineSpec, run_id: str) -> list[int]:
    lines = (run_dir(spec, run_id) / "stamp" / "data.jsonl").read_text().splitlines()
    return [json.loads(line)["source_index"] for line in lines]


def test_chain_moves_every_row_exactly_once(
    tmp_path: Path, kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    stack, spec = _stack(tmp_path, f"chain-{fresh_topic_prefix}", kafka_bootstrap, 2000)
    seeds = write_seeds(tmp_path / "seeds.jsonl", N)
    try:
        stack.start()
        stack.produce(seeds, "run-a")
        result = wait_for_release(spec, "run-a", 180, stack)
    finally:
        stack.stop()
    assert result["released"] and result["rows"] == N
    assert _dataset_indexes(spec, "run-a") == list(range(N))


def test_sigkill_of_the_middle_service_loses_and_duplicates_nothing(
    tmp_path: Path, kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    stack, spec = _stack(tmp_path, f"kill-{fresh_topic_prefix}", kafka_bootstrap, 200, MID_RUN_ROW_COST_S)
    seeds = write_seeds(tmp_path / "seeds.jsonl", N)
    try:
        stack.start()
        stack.produce(seeds, "run-k")
        done_before_kill = wait_rows_out(stack.services["stamp"].port, "stamp", N / 4)
        stack.kill("stamp")
        assert done_before_kill < N, "the kill must land mid-run"
        stack.restart("stamp")
        result = wait_for_release(spec, "run-k", 240, stack)
    finally:
        stack.stop()
    _assert_exactly_once(spec, "run-k", result)


def test_rebalance_and_sigterm_of_the_middle_service_lose_and_duplicate_nothing(
    tmp_path: Path, kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    """A second instance joins mid-run (partitions move to it), then the first one is asked to
    stop: it must end cleanly within its grace period, and its partitions move again."""
    stack, spec = _stack(tmp_path, f"rebal-{fresh_topic_prefix}", kafka_bootstrap, 200, MID_RUN_ROW_COST_S)
    seeds = write_seeds(tmp_path / "seeds.jsonl", N)
    try:
        stack.start()
        stack.produce(seeds, "run-r")
        first = stack.services["stamp"]
        wait_rows_out(first.port, "stamp", N / 5)
        second = stack.add("stamp-2", stack.cli("serve", "stamp"))
        stack.start(["stamp-2"])
        _wait_assigned(second.port)
        assert rows_out(first.port, "stamp") < N, "the join must land mid-run"
        assert stack.retire("stamp") == 0, "SIGTERM must end the service cleanly"
        result = wait_for_release(spec, "run-r", 240, stack)
        assert rows_out(second.port, "stamp") > 0
    finally:
        stack.stop()
    _assert_exactly_once(spec, "run-r", result)


def _wait_assigned(port: int, timeout_s: float = 60) -> None:
    """Until the service's consumer holds partitions (the rebalance that let it in is over)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                if json.loads(resp.read())["assigned"]:
                    return
        except OSError:
            pass  # not up yet, or busy in the rebalance
        time.sleep(0.1)
    raise AssertionError(f"no partitions assigned after {timeout_s}s")


def _assert_exactly_once(spec: PipelineSpec, run_id: str, result: dict[str, object]) -> None:
    indexes = _dataset_indexes(spec, run_id)
    assert len(indexes) == N, f"{len(indexes) - len(set(indexes))} duplicated, {N - len(set(indexes))} lost"
    assert indexes == list(range(N))
    assert result["rows"] == N


class _ConfluentWireOnly:
    """Decodes like the serde, and insists every message is in the Confluent wire format."""

    def __init__(self, serde: AvroSerde) -> None:
        self.serde = serde

    def decode(self, data: bytes) -> tuple[str, dict]:
        assert data[:1] == b"\x00", f"not the Confluent wire format: {data[:5].hex()}"
        return self.serde.decode(data)


def test_with_a_schema_registry_every_service_speaks_the_confluent_wire_format(
    tmp_path: Path, kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    n = 2_000
    with schema_registry() as (url, registry):
        stack, spec = _stack(tmp_path, f"registry-{fresh_topic_prefix}", kafka_bootstrap, 2000)
        stack.env["SCHEMA_REGISTRY_URL"] = url
        try:
            stack.start()
            stack.produce(write_seeds(tmp_path / "seeds.jsonl", n), "run-sr")
            result = wait_for_release(spec, "run-sr", 180, stack)
        finally:
            stack.stop()
        assert result["released"] and result["rows"] == n
        assert _dataset_indexes(spec, "run-sr") == list(range(n))
        # produce and both steps registered what they wrote, under `<topic>-value`
        # (Confluent's TopicNameStrategy), progress records included.
        written = {spec.topic("seeds"), spec.topic("shout"), spec.topic("stamp"), spec.progress_topic}
        assert {f"{topic}-value" for topic in written} <= set(registry.subjects)
        serde = PipelinePlan.build(spec).serde(RegistrySettings(url=url).client())
        kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
        reader = _ConfluentWireOnly(serde)
        for stage in ("seeds", "shout", "stamp"):
            records = read_all(kafka, reader, spec.topic(stage), until=lambda r: len(rows_of(r)) >= n)  # type: ignore[arg-type]
            assert sorted(row["source_index"] for row in rows_of(records)) == list(range(n))
