"""The runtime core (shared.runtime.runner) through the in-memory transport: no broker.

Ordering and commit content, abort and rewind, rebalances with work in flight, pause state
across rebalances, error policies, run stops, one-to-many steps, oversized rows, liveness.
The same runner runs against Kafka in tests/runtime/test_step_service.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fastdistill.plan import PipelinePlan
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA, dead_letter
from shared.runtime.progress import PROGRESS_SCHEMA, Progress
from shared.runtime.runner import RunnerSettings, StepFailed, StepRunner
from shared.runtime.transport import TopicPartition, TransportFatal
from tests.runtime import steps
from tests.runtime.memory_transport import MemoryBroker, MemoryTransport

SEED_SCHEMA = str(Path(__file__).with_name("text_seed.avsc"))
PARTITIONS = 2


@dataclass
class StopAll:
    """Run control: which runs are stopped, which were produced with `--no-cache`."""

    stopped: set[str] = field(default_factory=set)
    no_cache: set[str] = field(default_factory=set)
    closed: bool = False

    def poll(self, timeout: float = 0) -> None:
        pass

    def cache_enabled(self, run_id: str) -> bool:
        return run_id not in self.no_cache

    def close(self) -> None:
        self.closed = True


class Harness:
    def __init__(
        self,
        step: str,
        *,
        params: dict[str, Any] | None = None,
        before: list[dict[str, Any]] | None = None,
        chain: list[list[str]] | None = None,
        service: str = "s",
        stats: bool = False,
        **options: Any,
    ) -> None:
        """The runner of step `s` (`step`), reading the seeds or stages of `before` (only `s` runs);
        with `chain`, the runner of the chain named `service` (its first step)."""
        settings = {
            k: options.pop(k)
            for k in ("pause_after_full_s", "max_message_bytes", "progress_stall_s", "lag_every_s")
            if k in options
        }
        spec = PipelineSpec.model_validate(
            {
                "name": "core",
                "partitions": PARTITIONS,
                "seed_schema": SEED_SCHEMA,
                "seed_model": "tests.runtime.steps:TextSeed",
                "steps": [*(before or []), {"id": "s", "step": step, "params": params or {}, **options}],
                "chain": chain or "none",
            }
        )
        self.plan = PipelinePlan.build(spec)
        self.spec = spec
        self.serde = self.plan.serde()
        self.broker = MemoryBroker()
        for stage in spec.stages:
            self.broker.create(spec.topic(stage), PARTITIONS)
        self.broker.create(spec.dlq_topic, PARTITIONS)
        self.broker.create(spec.progress_topic, 1)
        self.wiring = self.plan.wiring(service)
        self.transport = MemoryTransport(self.broker, self.wiring.group_id, self.wiring.input_topics)
        self.control = StopAll()
        self.runner = StepRunner(
            self.plan.service_steps(service),
            self.wiring,
            self.serde,
            self.transport,
            self.broker,
            RunnerSettings(instance_id="t", commit_interval_s=0.005, shutdown_grace_s=1.0, **settings),
            self.control,
            stage_stats=self.plan.stage_stats if stats else None,
        )
        self._seq = 0

    # -- input -----------------------------------------------------------------------------------
    def batch(
        self,
        run_id: str,
        rows: list[dict[str, Any]],
        partition: int,
        stage: str = SEEDS_STAGE,
        *,
        origin_ms: int = 0,
        timestamp_ms: int = 0,
    ) -> None:
        self._write(run_id, rows, None, partition, stage, origin_ms, timestamp_ms)

    def end(self, run_id: str, stage: str = SEEDS_STAGE) -> None:
        eor = {"source_partition": 0, "source_partitions": 1, "rows_before": 0}
        for partition in range(PARTITIONS):
            self._write(run_id, [], eor, partition, stage)

    def _write(
        self,
        run_id: str,
        rows: list[dict[str, Any]],
        eor: dict[str, Any] | None,
        partition: int,
        stage: str = SEEDS_STAGE,
        origin_ms: int = 0,
        timestamp_ms: int = 0,
    ) -> None:
        record = {
            "run_id": run_id,
            "stage": stage,
            "producer": "test",
            "batch_seq": self._seq,
            "lineage": [],
            "rows": rows,
            "end_of_run": eor,
            "origin_ms": origin_ms,
        }
        self._seq += 1
        value = self.serde.encode(self.plan.schema_name(stage), record)
        self.broker.append(self.spec.topic(stage), partition, run_id, value, timestamp_ms)

    def raw(self, value: bytes, partition: int = 0) -> None:
        self.broker.append(self.spec.topic(SEEDS_STAGE), partition, None, value)

    # -- output ----------------------------------------------------------------------------------
    def records(self, topic: str) -> list[dict[str, Any]]:
        return [self.serde.decode(v)[1] for v in self.broker.values(topic)]

    def out_rows(self) -> list[dict[str, Any]]:
        return [row for rec in self.records(self.spec.topic("s")) for row in rec["rows"]]

    def markers(self) -> int:
        return sum(1 for rec in self.records(self.spec.topic("s")) if rec["end_of_run"] is not None)

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.records(self.spec.dlq_topic)

    def progress(self) -> list[Progress]:
        return [Progress.from_record(rec) for rec in self.records(self.spec.progress_topic)]

    def totals(self) -> dict[str, int]:
        fields = ("rows_in", "rows_out", "rows_dropped", "rows_errored", "rows_stopped")
        return {f: sum(getattr(p, f) for p in self.progress()) for f in fields}

    # -- running ---------------------------------------------------------------------------------
    async def run_until(self, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
        task = asyncio.ensure_future(self.runner.run())
        deadline = time.monotonic() + timeout_s
        try:
            while not done():
                if task.done():
                    task.result()
                    raise AssertionError("the runner ended before the condition held")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"condition not met in {timeout_s}s; health {self.runner.health()}")
                await asyncio.sleep(0.002)
        finally:
            self.runner.stop()
            await task

    def run(self, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
        asyncio.run(self.run_until(done, timeout_s))


def rows(start: int, n: int, failing: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    return [{"source_index": i, "text": f"row {i}", "fail": i in failing} for i in range(start, start + n)]


@pytest.fixture(autouse=True)
def _no_gates() -> None:
    steps.GATES.clear()


def test_rows_flow_in_order_and_the_marker_follows_them() -> None:
    h = Harness("tests.runtime.steps:Shout")
    h.batch("r", rows(0, 5), 0)
    h.batch("r", rows(5, 5), 1)
    h.batch("r", rows(10, 5), 0)
    h.end("r")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    out = h.out_rows()
    assert sorted(r["source_index"] for r in out) == list(range(15))
    assert all(r["shout"] == r["text"].upper() for r in out)
    # within a partition, the input order is kept
    p0 = [r["source_index"] for r in out if r["source_index"] in range(0, 5) or r["source_index"] >= 10]
    assert p0 == [*range(5), *range(10, 15)]
    # on every output partition, the rows from an input partition precede that partition's marker
    for o, messages in enumerate(h.broker.topics[h.spec.topic("s")]):
        records = [h.serde.decode(m.value)[1] for m in messages]
        kinds = [rec["end_of_run"]["source_partition"] if rec["end_of_run"] else "rows" for rec in records]
        assert sorted(k for k in kinds if k != "rows") == list(range(PARTITIONS))
        assert kinds.index(o) > max(i for i, k in enumerate(kinds) if k == "rows")
    assert h.totals() == {
        "rows_in": 15,
        "rows_out": 15,
        "rows_dropped": 0,
        "rows_errored": 0,
        "rows_stopped": 0,
    }
    ended = sorted(p for rec in h.progress() for p in rec.partitions_ended)
    assert ended == [0, 1]
    assert h.broker.committed[(h.wiring.group_id, (h.wiring.inputs[0].topic, 0))] == 3
    assert h.transport.closed and h.control.closed


def test_a_slow_message_holds_its_partition_only() -> None:
    h = Harness("tests.runtime.steps:Gated", max_in_flight=8)
    steps.GATES[0] = asyncio.Event()
    h.batch("r", rows(0, 1), 0)  # partition 0, offset 0: held by its gate
    h.batch("r", rows(1, 1), 0)  # partition 0, offset 1: done at once, must wait for offset 0
    h.batch("r", rows(2, 1), 1)  # partition 1: independent

    async def scenario() -> None:
        seeds0 = (h.wiring.inputs[0].topic, 0)
        seeds1 = (h.wiring.inputs[0].topic, 1)

        def committed(tp: TopicPartition) -> int:
            return h.broker.committed.get((h.wiring.group_id, tp), 0)

        task = asyncio.ensure_future(h.run_until(lambda: committed(seeds0) == 2))
        deadline = time.monotonic() + 5
        while committed(seeds1) != 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        # partition 1 went out; partition 0 holds both messages behind the open gate
        assert committed(seeds1) == 1 and committed(seeds0) == 0
        assert sorted(r["source_index"] for r in h.out_rows()) == [2]
        steps.GATES[0].set()
        await task

    asyncio.run(scenario())
    assert [r["source_index"] for r in h.out_rows()] == [0, 1, 2]  # partition 0's in offset order


def test_an_aborted_transaction_rewinds_state_and_input_to_the_last_commit() -> None:
    h = Harness("tests.runtime.steps:FirstText")
    h.batch("r", rows(0, 3), 0)
    h.batch("r", [{"source_index": 3, "text": "row 0", "fail": False}], 0)  # a duplicate of row 0
    h.end("r")
    h.transport.abort_next = 2
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    # the aborted attempts left nothing; the retry saw the dedup state as committed, not as aborted
    assert sorted(r["source_index"] for r in h.out_rows()) == [0, 1, 2]
    assert h.totals()["rows_in"] == 4 and h.totals()["rows_dropped"] == 1
    # the immediate store kept what was paid for across the aborts
    paid = h.broker.read(f"{h.wiring.state_topic_prefix}.paid")
    assert set(paid) == {"row 0", "row 1", "row 2"}


def test_a_revoke_commits_what_is_done_and_drops_what_is_in_flight() -> None:
    h = Harness("tests.runtime.steps:Gated", max_in_flight=8)
    steps.GATES[1] = asyncio.Event()
    h.batch("r", rows(0, 1), 0)
    h.batch("r", rows(1, 1), 0)  # in flight when the partition is revoked
    h.batch("r", rows(2, 1), 0)
    seeds0 = (h.wiring.inputs[0].topic, 0)

    async def scenario() -> None:
        task = asyncio.ensure_future(h.run_until(lambda: len(h.out_rows()) == 3))
        await _until(lambda: h.broker.committed.get((h.wiring.group_id, seeds0)) == 1)
        h.transport.rebalance(revoke=[seeds0], assign=[])
        await _until(lambda: seeds0 not in h.transport.assigned)
        steps.GATES[1].set()  # the cancelled row's gate opens: nothing may come of it
        await asyncio.sleep(0.05)
        assert [r["source_index"] for r in h.out_rows()] == [0]
        h.transport.rebalance(revoke=[], assign=[seeds0])
        await task

    asyncio.run(scenario())
    assert [r["source_index"] for r in h.out_rows()] == [0, 1, 2]


def test_lost_partitions_commit_nothing_and_are_read_again() -> None:
    h = Harness("tests.runtime.steps:Gated", max_in_flight=8)
    steps.GATES[0] = asyncio.Event()
    h.batch("r", rows(0, 2), 0)
    seeds0 = (h.wiring.inputs[0].topic, 0)

    async def scenario() -> None:
        task = asyncio.ensure_future(h.run_until(lambda: len(h.out_rows()) == 2))
        await _until(lambda: h.runner.in_flight == 1)
        h.transport.rebalance(revoke=[seeds0], assign=[seeds0], lost=True)
        await _until(lambda: not h.transport.events)
        assert h.out_rows() == [] and (h.wiring.group_id, seeds0) not in h.broker.committed
        steps.GATES[0].set()
        await task

    asyncio.run(scenario())
    assert sorted(r["source_index"] for r in h.out_rows()) == [0, 1]
    assert h.totals()["rows_in"] == 2  # the lost attempt counted nothing


def test_partitions_paused_before_a_rebalance_are_resumed_after_it() -> None:
    """The stall of the fault test: full for long, paused, revoked and re-assigned while paused.
    librdkafka (and the memory transport) keep the pause flag; the runner must resume them."""
    h = Harness("tests.runtime.steps:Gated", max_in_flight=4, max_buffered_rows=4, pause_after_full_s=0.0)
    for i in range(4):
        steps.GATES[i] = asyncio.Event()
    for start in range(0, 40, 2):
        h.batch("r", rows(start, 2), (start // 2) % PARTITIONS)
    everything = h.transport.all_partitions()

    async def scenario() -> None:
        task = asyncio.ensure_future(h.run_until(lambda: len(h.out_rows()) == 40))
        await _until(lambda: h.runner.pause.paused == set(everything))
        assert h.transport.paused == set(everything)
        # a long stop: the group drops the member and gives the partitions back
        h.transport.rebalance(revoke=everything, assign=everything, lost=True)
        await _until(lambda: not h.transport.events and h.runner.in_flight == 0)
        for gate in steps.GATES.values():
            gate.set()
        await task

    asyncio.run(scenario())
    assert sorted(r["source_index"] for r in h.out_rows()) == list(range(40))
    assert h.runner.pause.pauses >= 1 and h.runner.buffered_max <= 4
    assert not h.transport.paused


def test_collect_dead_letters_failing_rows_and_the_rest_flow() -> None:
    h = Harness("tests.runtime.steps:Shout", error_policy="COLLECT")
    h.batch("r", rows(0, 10, frozenset({3, 7})), 0)
    h.end("r")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    assert sorted(r["source_index"] for r in h.out_rows()) == [0, 1, 2, 4, 5, 6, 8, 9]
    letters = h.dead_letters()
    assert sorted(d["row_index"] for d in letters) == [3, 7]
    assert {d["error_type"] for d in letters} == {"ValueError"}
    assert all(d["run_id"] == "r" and d["step"] == "s" for d in letters)
    assert h.totals()["rows_errored"] == 2 and h.totals()["rows_dropped"] == 0


def test_ignore_drops_failing_rows_without_a_dead_letter() -> None:
    h = Harness("tests.runtime.steps:Shout", error_policy="IGNORE")
    h.batch("r", rows(0, 10, frozenset({3})), 0)
    h.end("r")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    assert len(h.out_rows()) == 9 and h.dead_letters() == []


@pytest.mark.parametrize("step", ["tests.runtime.steps:Shout", "tests.runtime.steps:Gated"])
def test_fail_fast_stops_the_runner_and_commits_nothing_of_that_message(step: str) -> None:
    h = Harness(step, error_policy="FAIL_FAST")
    h.batch("r", rows(0, 3), 0)
    h.batch("r", rows(3, 3, frozenset({4})), 0)
    with pytest.raises(StepFailed, match=r"step s failed on row source_index=4 .*ValueError: row 4 asked"):
        asyncio.run(asyncio.wait_for(h.runner.run(), 10))
    assert 3 not in [r["source_index"] for r in h.out_rows()]
    assert h.broker.committed.get((h.wiring.group_id, (h.wiring.inputs[0].topic, 0)), 0) <= 1


def test_undecodable_and_foreign_records_are_dead_lettered_with_their_bytes() -> None:
    h = Harness("tests.runtime.steps:Shout")
    h.raw(b"\x00garbage")
    wrong = h.serde.encode(DEAD_LETTER_SCHEMA, dead_letter(step="s", error_type="E", error_message="m"))
    h.raw(wrong, 1)
    h.batch("r", rows(0, 2), 0)
    h.end("r")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    letters = h.dead_letters()
    assert {d["error_type"] for d in letters} == {"UndecodableMessage"}
    assert any("not an Avro message of this pipeline" in d["error_message"] for d in letters)
    assert any("a dead_letter record is not input of step s" in d["error_message"] for d in letters)
    assert all(d["payload_encoding"] == "BASE64" for d in letters)
    assert len(h.out_rows()) == 2


@pytest.mark.parametrize("step", ["tests.runtime.steps:Shout", "tests.runtime.steps:Gated"])
def test_rows_of_a_stopped_run_are_dropped_and_its_markers_flow(step: str) -> None:
    h = Harness(step)
    h.control.stopped.add("stopped")
    h.batch("stopped", rows(0, 4), 0)
    h.batch("going", rows(4, 4), 1)
    h.end("stopped")
    h.end("going")
    h.run(lambda: h.markers() == 2 * PARTITIONS * PARTITIONS)
    assert sorted(r["source_index"] for r in h.out_rows()) == [4, 5, 6, 7]
    stopped = [p for p in h.progress() if p.run_id == "stopped"]
    assert sum(p.rows_stopped for p in stopped) == 4 and sum(p.rows_dropped for p in stopped) == 4


def test_a_run_stopped_while_rows_wait_for_a_slot_skips_them() -> None:
    h = Harness("tests.runtime.steps:Gated", max_in_flight=1)
    steps.GATES[0] = asyncio.Event()
    h.batch("r", rows(0, 3), 0)

    async def scenario() -> None:
        task = asyncio.ensure_future(h.run_until(lambda: sum(p.rows_in for p in h.progress()) == 3))
        await _until(lambda: h.runner.in_flight == 1)
        h.control.stopped.add("r")
        steps.GATES[0].set()
        await task

    asyncio.run(scenario())
    assert h.totals()["rows_stopped"] == 2 and [r["source_index"] for r in h.out_rows()] == [0]


def test_a_one_to_many_step_emits_every_child() -> None:
    h = Harness("tests.runtime.steps:Split", params={"parts": 4})
    h.batch("r", rows(0, 3), 0)
    h.end("r")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    out = h.out_rows()
    assert [(r["source_index"], r["part"]) for r in out] == [(i, p) for i in range(3) for p in range(4)]
    assert h.totals()["rows_in"] == 3 and h.totals()["rows_out"] == 12


def test_a_row_too_large_for_any_message_is_dead_lettered_and_the_rest_split() -> None:
    h = Harness("tests.runtime.steps:Shout", max_message_bytes=4096 + 3000)
    big = [{"source_index": 0, "text": "x" * 5000, "fail": False}]
    h.batch("r", big + rows(1, 60), 0)
    h.end("r")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    assert sorted(r["source_index"] for r in h.out_rows()) == list(range(1, 61))
    assert [d["error_type"] for d in h.dead_letters()] == ["MessageTooLarge"]
    assert len([rec for rec in h.records(h.spec.topic("s")) if rec["rows"]]) > 1
    assert h.totals()["rows_errored"] == 1


def test_a_fatal_transport_error_ends_the_runner() -> None:
    h = Harness("tests.runtime.steps:Shout")
    h.batch("r", rows(0, 2), 0)
    h.transport.fatal_next = True
    with pytest.raises(TransportFatal):
        asyncio.run(asyncio.wait_for(h.runner.run(), 10))


def test_liveness_names_an_instance_that_holds_readable_input_and_takes_none() -> None:
    h = Harness("tests.runtime.steps:Shout", progress_stall_s=0.2, lag_every_s=0.01)
    h.batch("r", rows(0, 2), 0)

    async def scenario() -> None:
        task = asyncio.ensure_future(h.run_until(lambda: h.runner.stalled(300) is not None, timeout_s=5))
        await _until(lambda: len(h.out_rows()) == 2)
        # paused behind the runner's back, as librdkafka did; then one more message arrives
        h.transport.paused.update(h.transport.all_partitions())
        h.batch("r", rows(2, 2), 0)
        await task

    asyncio.run(scenario())
    problem = h.runner.stalled(300)
    assert problem is not None and "consumed nothing" in problem and "1 records readable" in problem
    assert h.runner.health()["ok"] is False


def test_liveness_waits_for_the_broker_word_and_spares_a_full_instance() -> None:
    h = Harness("tests.runtime.steps:Shout", progress_stall_s=0.1, lag_every_s=0.01)
    h.transport.lag_unknown = True  # the broker does not answer: nothing can be judged
    h.batch("r", rows(0, 2), 0)

    async def scenario() -> None:
        task = asyncio.ensure_future(h.run_until(lambda: False, timeout_s=0.6))
        await _until(lambda: len(h.out_rows()) == 2)
        h.transport.paused.update(h.transport.all_partitions())
        h.batch("r", rows(2, 2), 0)
        with pytest.raises(TimeoutError):
            await task

    asyncio.run(scenario())
    assert h.runner.stalled(300) is None and h.runner.health()["ok"] is True
    h.runner.liveness.full = True
    h.transport.lag_unknown = False
    h.runner.liveness.measured(h.transport.lag(True), time.monotonic())
    assert h.runner.stalled(300) is None  # full: not consuming is the backpressure


def test_a_step_that_is_not_ready_holds_its_input_and_is_not_a_stall() -> None:
    """Step.ready() gives a reason: nothing is consumed, committed or dead-lettered, /healthz says
    why and stays healthy, liveness calls no stall however long it lasts with readable input;
    once ready, every row goes through."""
    h = Harness(
        "tests.runtime.steps:Holdable", progress_stall_s=0.1, lag_every_s=0.01, pause_after_full_s=0.05
    )
    steps.HOLD["reason"] = "endpoint http://x/v1 unreachable (connection refused) for 3 s"
    h.batch("r", rows(0, 3), 0)
    h.batch("r", rows(3, 3), 1)
    h.end("r")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        task = asyncio.ensure_future(
            h.run_until(lambda: h.markers() == PARTITIONS * PARTITIONS, timeout_s=10)
        )
        await asyncio.sleep(0.6)  # six times the stall limit
        seen["health"] = h.runner.health()
        seen["stalled"] = h.runner.stalled(300)
        seen["paused"] = sorted(h.transport.paused)
        seen["out"] = len(h.out_rows())
        seen["dead"] = len(h.dead_letters())
        seen["committed"] = dict(h.broker.committed)
        seen["progress"] = len(h.progress())
        steps.HOLD["reason"] = None
        await task

    try:
        asyncio.run(scenario())
    finally:
        steps.HOLD["reason"] = None
    assert seen["out"] == seen["dead"] == seen["progress"] == 0 and seen["committed"] == {}
    health = seen["health"]
    assert health["held"] == "endpoint http://x/v1 unreachable (connection refused) for 3 s"
    assert health["ok"] is True and health["stalled"] is None and seen["stalled"] is None
    assert health["in_flight"] == 0 and health["buffered_rows"] == 0
    # a long hold pauses the partitions (consume() then only serves rebalances)
    assert len(seen["paused"]) == PARTITIONS
    assert sorted(r["source_index"] for r in h.out_rows()) == list(range(6))
    assert h.dead_letters() == [] and h.runner.health()["held"] is None


def test_a_loop_that_stops_turning_is_named() -> None:
    h = Harness("tests.runtime.steps:Shout")
    h.runner.liveness.loop_at -= 100
    assert "loop stalled" in (h.runner.stalled(30) or "")


def test_stop_waits_for_rows_in_flight_and_commits_them() -> None:
    h = Harness("tests.runtime.steps:Gated", max_in_flight=4)
    steps.GATES[0] = asyncio.Event()
    h.batch("r", rows(0, 1), 0)

    async def scenario() -> None:
        task = asyncio.ensure_future(h.runner.run())
        await _until(lambda: h.runner.in_flight == 1)
        h.runner.stop()
        await asyncio.sleep(0.02)
        steps.GATES[0].set()
        await task

    asyncio.run(scenario())
    assert [r["source_index"] for r in h.out_rows()] == [0]


def test_progress_records_carry_timings_and_decode_as_written() -> None:
    h = Harness("tests.runtime.steps:Gated", max_in_flight=4)
    h.batch("r", rows(0, 3), 0)
    h.end("r")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    progress = h.progress()
    assert all(p.stage == "s" and p.producer == "t" and p.input_partitions == PARTITIONS for p in progress)
    assert sum(len(p.row_seconds) for p in progress) == 3
    assert sum(len(p.batch_seconds) for p in progress) == 1
    raw = h.broker.values(h.spec.progress_topic)[0]
    assert h.serde.decode(raw)[0] == PROGRESS_SCHEMA


def test_per_row_latencies_from_message_timestamps_and_batch_origins() -> None:
    """MarkTime per row: queue latency from the broker timestamp of the input message, weighted by
    its rows; end-to-end latency from the batch's origin, weighted by the rows emitted (a one-to-many
    step emits 3 per row), and the origin carried on to every output batch and marker."""
    h = Harness("tests.runtime.steps:Split", params={"parts": 3})
    now = int(time.time() * 1000)
    h.batch("r", rows(0, 4), 0, origin_ms=now - 30_000, timestamp_ms=now - 2_000)
    h.batch("r", rows(4, 2), 1, origin_ms=now - 60_000, timestamp_ms=now - 1_000)
    h.batch("old", rows(6, 1), 1)  # a writer that set neither: no latency, not a zero one
    h.end("r")
    started = time.time()
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    elapsed_ms = (time.time() - started) * 1000 + 1
    mine = [p for p in h.progress() if p.run_id == "r"]
    queue = [p.queue_ms for p in mine if p.queue_ms is not None]
    e2e = [p.e2e_ms for p in mine if p.e2e_ms is not None]
    assert sum(q.count for q in queue) == 6  # input rows; the markers have none
    assert sum(e.count for e in e2e) == 18  # output rows
    assert min(q.min_ms for q in queue) >= 1_000 and max(q.max_ms for q in queue) <= 2_000 + elapsed_ms
    assert min(e.min_ms for e in e2e) >= 30_000 and max(e.max_ms for e in e2e) <= 60_000 + elapsed_ms
    assert sum(e.sum_ms for e in e2e) >= 12 * 30_000 + 6 * 60_000
    # the broker stamps every message; an origin of 0 (a writer before origin_ms) means unknown
    old = [p for p in h.progress() if p.run_id == "old"]
    assert old and all(p.e2e_ms is None and p.queue_ms is not None for p in old)
    batches = [rec for rec in h.records(h.spec.topic("s")) if rec["run_id"] == "r"]
    assert {rec["origin_ms"] for rec in batches if rec["end_of_run"] is None} == {now - 30_000, now - 60_000}
    for rec in batches:
        if rec["end_of_run"] is None:
            assert rec["origin_ms"] == (now - 30_000 if rec["rows"][0]["source_index"] < 4 else now - 60_000)
    # a marker carries the origin of the marker it answers (the seeds' markers had none here)
    assert {rec["origin_ms"] for rec in batches if rec["end_of_run"] is not None} == {0}


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.002)


def test_health_and_metrics_are_served_while_the_service_runs() -> None:
    import json
    import urllib.request

    from fastdistill.local_stack import free_port
    from shared.runtime.health import serving

    port = free_port()
    status = {"ok": True, "step": "s"}
    stops: list[bool] = []

    async def scenario() -> tuple[dict[str, Any], int, bytes]:
        async with serving("127.0.0.1", port, lambda: status, lambda: stops.append(True)):

            def get(path: str) -> tuple[int, bytes]:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                        return resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    return exc.code, exc.read()

            code, body = await asyncio.to_thread(get, "/healthz")
            status["ok"] = False
            sick, _ = await asyncio.to_thread(get, "/healthz")
            _, metrics_body = await asyncio.to_thread(get, "/metrics")
            return json.loads(body) | {"code": code}, sick, metrics_body

    healthy, sick, metrics_body = asyncio.run(scenario())
    assert healthy == {"ok": True, "step": "s", "code": 200}
    assert sick == 503
    assert b"fd_rows_in_total" in metrics_body


class Sloppy(steps.Shout):
    """Adds a field it never declared, and on some rows a wrong type: a buggy step."""

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        out = row | {"shout": row["text"].upper()}
        if row["source_index"] == 1:
            out["undeclared"] = True
        if row["source_index"] == 2:
            out["shout"] = 42
        return out


def test_rows_that_do_not_fit_the_schema_are_dead_lettered_not_a_crash_loop() -> None:
    h = Harness("tests.runtime.test_runner_core:Sloppy")
    h.batch("r", rows(0, 4), 0)
    h.end("r")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    assert sorted(r["source_index"] for r in h.out_rows()) == [0, 3]
    letters = {d["row_index"]: d for d in h.dead_letters()}
    assert set(letters) == {1, 2}
    assert {d["error_type"] for d in letters.values()} == {"SchemaViolation"}
    assert "more fields than the schema specifies: undeclared" in letters[1]["error_message"]
    assert h.totals()["rows_errored"] == 2


def test_rows_held_by_a_step_for_long_are_backpressure_not_a_stall() -> None:
    """A batch-mode LLM step holds the rows of a job in flight for as long as the job runs: the
    runner takes no more than max_buffered_rows, pauses its input, and liveness calls no stall
    however long the wait with readable input; once the job ends, every row goes through."""
    h = Harness(
        "tests.runtime.steps:Parked",
        progress_stall_s=0.1,
        lag_every_s=0.01,
        pause_after_full_s=0.05,
        max_buffered_rows=40,
    )
    steps.PARKED["released"] = False
    for k in range(6):
        h.batch("r", rows(20 * k, 20), k % PARTITIONS)
    h.end("r")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        task = asyncio.ensure_future(
            h.run_until(lambda: h.markers() == PARTITIONS * PARTITIONS, timeout_s=10)
        )
        await asyncio.sleep(0.6)  # six times the stall limit, input readable all along
        seen["health"] = h.runner.health()
        seen["stalled"] = h.runner.stalled(300)
        seen["buffered_max"] = h.runner.buffered_max
        seen["paused"] = len(h.transport.paused)
        seen["out"] = len(h.out_rows())
        seen["readable"] = sum((h.transport.lag(True) or {}).values())
        steps.PARKED["released"] = True
        await task

    try:
        asyncio.run(scenario())
    finally:
        steps.PARKED["released"] = False
    health = seen["health"]
    assert seen["stalled"] is None and health["ok"] is True and health["stalled"] is None, health
    assert seen["readable"] > 0  # records were readable all along, and it was not a stall
    assert seen["buffered_max"] == health["buffered_rows"] == health["in_flight"] == 40
    assert seen["out"] == 0 and seen["paused"] == PARTITIONS
    assert sorted(r["source_index"] for r in h.out_rows()) == list(range(120))


def test_a_durable_store_flushes_through_the_transport_and_a_transactional_one_waits_for_none() -> None:
    """The hook batch mode needs: a job is recorded before it is paid for (Step StateStore.flush)."""
    h = Harness("tests.runtime.steps:Shout")
    durable = h.runner.state_store("jobs", durable_immediately=True, scope="global")
    durable.put("job|1", b"{}")
    assert durable.flush(1.0) is True and h.transport.flushes == 1
    assert h.broker.values(durable.topic) == [b"{}"]
    transactional = h.runner.state_store("keys")
    transactional.put("k", b"1")
    assert transactional.flush(1.0) is True and h.transport.flushes == 1
