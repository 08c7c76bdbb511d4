"""Everything the coordinator knows about one run, folded incrementally from the topics.

A run is done when every stage topic has drained on all its partitions (end-of-run markers
from every upstream partition) and, for each step, the progress records of every input
partition's final transaction have arrived. The second condition matters because a step
writes its marker and its progress record in one transaction but to different topics, which
the coordinator may read in either order; without it the counts and timings could miss the
last transaction.

A run made by `fastdistill produce` is also not done before every seed row it produced has been
seen: each of its seed markers carries `rows_before`, the run's row count, and the seeds stage
must have counted exactly that many rows. (Markers drained alone do not say it: a second produce
of the same run id, refused now, ended its partitions with the first copy's markers.)

The state is a snapshot (`to_json`) the coordinator writes to a compacted topic together with
its offsets, so restoring it and reading on yields exactly the reports of an uninterrupted run.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from typing import Any, TypedDict

from services.coordinator.gates import GateConfigError, evaluate_gates, parse_gates
from services.coordinator.layout import QualityLayout
from services.coordinator.manifest import ManifestAgg, iso_ms
from services.coordinator.metrics import MetricValue
from services.coordinator.quality import QualityAgg
from services.coordinator.stage_stats import merge_stats
from services.coordinator.timing import StepTiming, timing_report
from shared.pipeline import SEEDS_STAGE
from shared.runtime.markers import MarkerTracker

#: 2: quality aggregates by layout (columns, metric sets); 1 (the fixed SQL report) still restores.
SNAPSHOT_VERSION = 2
_RESTORABLE = (1, 2)
#: The dead letters of the seeds stage are those of `fastdistill produce` (rows it refused).
SEED_DEAD_LETTER_STEP = "produce"
#: Where the HTML report is written, relative to the run's folder (the sink links it from there).
REPORT_HTML = "reports/report.html"
_COUNTS = ("rows_in", "rows_out", "rows_dropped", "rows_errored", "rows_stopped", "batches")


class StageView(TypedDict, total=False):
    """One stage in a run's public state: the step's own counters (`_COUNTS`, from its progress
    records; absent for the seeds stage, which has no step) and what the coordinator counted."""

    rows_in: int
    rows_out: int
    rows_dropped: int
    rows_errored: int
    rows_stopped: int
    batches: int
    #: rows the coordinator read from the stage topic
    rows_seen: int
    drained_partitions: int
    partitions: int | None


class RunView(TypedDict):
    """A run's public state, as the coordinator publishes it on the runs topic and `status`,
    `report`, `replay` and the sink read it (its `snapshot` field, the restore state, aside)."""

    run_id: str
    status: str
    started_ms: int | None
    finished_ms: int | None
    stages: dict[str, StageView]
    dead_letters: dict[str, dict[str, int]]
    replay: dict[str, str] | None
    verdict: dict[str, Any] | None
    early_stop: dict[str, Any] | None
    reports: dict[str, Any] | None
    report_html: str | None


@dataclass
class StepProgress:
    """Exactly-once sums of a step's progress records (each is written in the step's transaction)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTS, 0))
    partitions_ended: set[int] = field(default_factory=set)
    input_partitions: int = 0
    timing: StepTiming = field(default_factory=StepTiming)

    def add(self, record: dict[str, Any]) -> None:
        for name in _COUNTS:
            self.counts[name] += int(record.get(name) or 0)
        self.partitions_ended.update(record.get("partitions_ended") or ())
        self.input_partitions = max(self.input_partitions, int(record.get("input_partitions") or 0))
        self.timing.add_progress(record)

    @property
    def complete(self) -> bool:
        """Every input partition's final transaction has been counted."""
        return len(self.partitions_ended) >= self.input_partitions

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "partitions_ended": sorted(self.partitions_ended),
            "input_partitions": self.input_partitions,
            "timing": self.timing.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepProgress:
        return cls(
            dict.fromkeys(_COUNTS, 0) | dict(data["counts"]),
            set(data["partitions_ended"]),
            data["input_partitions"],
            StepTiming.from_json(data["timing"]),
        )


@dataclass
class StageState:
    partitions: int
    markers: MarkerTracker = field(default_factory=MarkerTracker)
    manifest: ManifestAgg = field(default_factory=ManifestAgg)
    quality: QualityAgg = field(default_factory=QualityAgg)
    #: None for the seeds stage until a progress record names it (the seed producer writes none).
    progress: StepProgress | None = None


@dataclass
class RunState:
    run_id: str
    stages: dict[str, StageState]
    status: str = "running"
    finished_ms: int | None = None
    final_stage: str | None = None
    verdict: dict[str, Any] | None = None
    dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Early stop (`produce --limit`): the limit, when the coordinator stopped the run, and the
    #: lowest `limit` source indexes of the rows that passed the final stage (what is released).
    limit: int | None = None
    stopped_ms: int | None = None
    taken: list[int] = field(default_factory=list)

    #: A replay's origin (`replay_of`, `from_step`), from the headers of its input's records.
    replay: dict[str, str] | None = None
    #: Stages whose rows nobody computes in this run, so no progress record speaks for them: the
    #: seeds, or the stages a replay re-produced. None: the first stage.
    sources: list[str] | None = None
    #: Rows the run's producer wrote to the seeds stage (`rows_before` of its seed markers).
    seeds_expected: int | None = None
    #: Stages whose topic is not written (inner steps of operator chains).
    unwritten: list[str] = field(default_factory=list)
    #: The pipeline's leaves, as `finish` was told (the run's end-to-end latency is theirs).
    leaves: list[str] | None = None

    @classmethod
    def new(
        cls,
        run_id: str,
        stages: list[str],
        partitions_by_stage: dict[str, int],
        final_stage: str | None = None,
        unwritten: list[str] | None = None,
        layouts: dict[str, QualityLayout] | None = None,
    ) -> RunState:
        """`layouts`: what each stage's quality report computes (PipelinePlan.quality_layouts());
        a stage without one reports the generic numbers only."""
        layouts = layouts or {}
        state = cls(
            run_id,
            {
                stage: StageState(partitions_by_stage[stage], quality=QualityAgg(layouts.get(stage)))
                for stage in stages
            },
        )
        state.final_stage = final_stage
        state.unwritten = list(unwritten or [])
        return state

    # -- input ---------------------------------------------------------------------------------
    def _stage(self, stage: str) -> StageState:
        if stage not in self.stages:
            raise KeyError(f"run {self.run_id}: unknown stage {stage!r}; stages: {list(self.stages)}")
        return self.stages[stage]

    def add_rows(self, stage: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
        """`columns`: the stage's dataset columns; the manifest hashes the rows cut to them."""
        state = self._stage(stage)
        state.manifest.add_rows(rows, columns)
        state.quality.add_rows(rows)
        if self.limit is not None and stage == self._final:
            indexes = [*self.taken, *(int(r["source_index"]) for r in rows)]
            self.taken = heapq.nsmallest(self.limit, indexes)

    @property
    def _final(self) -> str:
        """The stage a limit counts and the headline quality is of (the primary leaf)."""
        return self.final_stage if self.final_stage in self.stages else list(self.stages)[-1]

    def _leaves(self) -> list[str]:
        return [s for s in self.leaves if s in self.stages] if self.leaves is not None else [self._final]

    @property
    def _sources(self) -> list[str]:
        return self.sources if self.sources is not None else [next(iter(self.stages))]

    def set_limit(self, limit: int) -> None:
        self.limit = limit

    def reached_limit(self) -> bool:
        """The run has a limit, enough rows passed the final stage, and it is not stopped yet."""
        return (
            self.limit is not None
            and self.stopped_ms is None
            and self.stages[self._final].manifest.count >= self.limit
        )

    def add_marker(self, stage: str, partition: int, marker: dict[str, Any]) -> None:
        self._stage(stage).markers.observe(
            self.run_id, partition, marker["source_partition"], marker["source_partitions"]
        )
        # 0 is the field's default: a marker that does not state the count (one of a step's).
        if stage == SEEDS_STAGE and marker.get("rows_before"):
            self.seeds_expected = max(self.seeds_expected or 0, int(marker["rows_before"]))

    def add_progress(self, record: dict[str, Any]) -> None:
        state = self.stages.get(record["stage"])
        if state is None:
            return  # a service outside the stage chain (e.g. the sink) has nothing to add here
        if state.progress is None:
            state.progress = StepProgress()
        state.progress.add(record)
        if record.get("stats"):
            # A stage whose topic is not written (inside an operator chain) reports its rows here.
            merge_stats(state.manifest, state.quality, record["stats"])

    def add_dead_letter(self, record: dict[str, Any]) -> None:
        by_type = self.dead_letters.setdefault(record["step"], {})
        by_type[record["error_type"]] = by_type.get(record["error_type"], 0) + 1

    def start_replay(self, sources: list[str], recomputed: list[str], replay_of: str, from_step: str) -> None:
        """The run replays `replay_of` from `from_step`: `sources` were re-produced from the
        original run, `recomputed` compute it again; no other stage sees the run."""
        if self.replay is None:
            keep = set(sources) | set(recomputed)
            for stage in keep:
                self._stage(stage)
            self.stages = {s: state for s, state in self.stages.items() if s in keep}
            self.sources = [s for s in self.stages if s in sources]
            self.replay = {"replay_of": replay_of, "from_step": from_step}

    # -- end of run ----------------------------------------------------------------------------
    def _drained(self, state: StageState) -> int:
        return len(state.markers.drained_partitions(self.run_id))

    def seeds_accounted(self) -> bool:
        """Every seed row the producer wrote has been counted on the seeds stage. (A replay's
        markers count per partition, so its input stage is not checked.)"""
        seeds = self.stages.get(SEEDS_STAGE)
        if seeds is None or self.replay is not None or self.seeds_expected is None:
            return True
        return seeds.manifest.count == self.seeds_expected

    def all_drained(self) -> bool:
        if not self.seeds_accounted():
            return False
        sources = self._sources
        for stage, state in self.stages.items():
            # A stage without a topic (inside an operator chain) has no markers: its progress
            # records, below, say when every input partition ended.
            if stage not in self.unwritten and self._drained(state) < state.partitions:
                return False
            # Steps must have reported; a source (seeds, or a replay's input: no progress
            # records) must not wait.
            if stage not in sources and (state.progress is None or not state.progress.complete):
                return False
        return True

    def finish(
        self, gates: dict[str, dict[str, float]], now_ms: int, leaves: list[str] | None = None
    ) -> None:
        """Evaluate the gates of every stage that has some (`gates`: stage -> thresholds); failures
        on a stage that is not a leaf name it."""
        self.finished_ms = now_ms
        self.leaves = leaves
        failures: list[str] = []
        for stage, thresholds in gates.items():
            if stage not in self.stages or not thresholds:
                continue
            layout = self.stages[stage].quality.layout
            try:
                parsed = parse_gates(thresholds, layout.metrics(), stage=stage, described=layout.describe())
                verdict = evaluate_gates(parsed, self.stage_metrics(stage))
            except GateConfigError as exc:
                # Raising would crash-loop the coordinator on the same input; a failed verdict
                # blocks the release and shows the configuration error where the verdict is read.
                verdict = {"passed": False, "failures": [f"gate configuration error: {exc}"]}
            named = leaves is not None and stage not in leaves
            failures += [f"{stage}: {f}" if named else f for f in verdict["failures"]]
        self.verdict = {"passed": not failures, "failures": failures}
        self.status = "done"

    # -- output --------------------------------------------------------------------------------
    def rows_out(self) -> dict[str, int]:
        """Rows each stage emitted: progress sums for steps, rows seen for the seeds stage."""
        return {
            stage: state.progress.counts["rows_out"] if state.progress else state.manifest.count
            for stage, state in self.stages.items()
        }

    def flow(self, stage: str) -> dict[str, MetricValue]:
        """Rows in, out, dropped, errored and dead-lettered at `stage` (None: nobody counted them,
        e.g. rows in of the seeds)."""
        state = self.stages[stage]
        counts = state.progress.counts if state.progress else None
        step = SEED_DEAD_LETTER_STEP if stage == SEEDS_STAGE else stage
        return {
            "rows_in": counts["rows_in"] if counts else None,
            "rows_out": counts["rows_out"] if counts else state.manifest.count,
            "rows_dropped": counts["rows_dropped"] if counts else None,
            "rows_errored": counts["rows_errored"] if counts else None,
            "dead_letters": sum(self.dead_letters.get(step, {}).values()),
        }

    def stage_metrics(self, stage: str) -> dict[str, MetricValue]:
        """Every metric gates may name on `stage`: its quality metrics and its flow."""
        return self.stages[stage].quality.metrics() | self.flow(stage)

    def quality_by_stage(self) -> dict[str, dict[str, float]]:
        """The numeric metrics of every stage once the run is done (exported as gauges)."""
        if self.verdict is None:
            return {}
        return {
            stage: {
                name: float(v) for name, v in self.stage_metrics(stage).items() if isinstance(v, int | float)
            }
            for stage in self.stages
        }

    def final_quality(self) -> dict[str, float]:
        return self.quality_by_stage().get(self._final, {})

    def started_ms(self) -> int | None:
        firsts = [
            s.progress.timing.first_ms
            for s in self.stages.values()
            if s.progress is not None and s.progress.timing.first_ms is not None
        ]
        return min(firsts) if firsts else None

    def early_stop(self) -> dict[str, Any] | None:
        """What a limited run consumed against what it needed (None for a run without limit).

        `seeds_needed` is 1 + the largest source index among the released rows: the input
        records the dataset came from. `seeds_consumed` counts the seeds the first step
        processed (not stopped); the difference is the over-fetch at the pipeline's entry, and
        `final_rows_over_limit` the rows that went through every step but are not released.
        """
        if self.limit is None:
            return None
        final = self.stages[self._final].manifest.count
        needed = self.taken[-1] + 1 if len(self.taken) >= self.limit else None
        steps = {stage: s.progress.counts for stage, s in self.stages.items() if s.progress is not None}
        first = next(stage for stage in self.stages if stage not in self._sources)
        consumed = steps[first]["rows_in"] - steps[first]["rows_stopped"] if first in steps else 0
        return {
            "limit": self.limit,
            "stopped_at": iso_ms(self.stopped_ms),
            "final_rows": final,
            "released_rows": min(final, self.limit),
            "final_rows_over_limit": max(final - self.limit, 0),
            "seeds_needed": needed,
            "seeds_consumed": consumed,
            "seeds_over_fetch": None if needed is None else consumed - needed,
            "rows_processed": {stage: c["rows_in"] - c["rows_stopped"] for stage, c in steps.items()},
            "rows_stopped": {stage: c["rows_stopped"] for stage, c in steps.items()},
        }

    def reports(self) -> dict[str, Any]:
        early_stop = self.early_stop()
        return {
            "manifest": [
                state.manifest.report(self.run_id, stage, self.finished_ms)
                for stage, state in self.stages.items()
            ],
            "quality": [
                state.quality.report(self.run_id, stage) | {"flow": self.flow(stage)}
                for stage, state in self.stages.items()
            ],
            "timing": timing_report(
                self.run_id,
                {stage: s.progress.timing for stage, s in self.stages.items() if s.progress is not None},
                self._leaves(),
            ),
            **({"replay": {"run_id": self.run_id, **self.replay}} if self.replay else {}),
            **({"early_stop": early_stop} if early_stop is not None else {}),
        }

    def public(self) -> RunView:
        stages: dict[str, StageView] = {}
        for stage, state in self.stages.items():
            info = StageView()
            if state.progress is not None:
                counts = state.progress.counts
                info = StageView(
                    rows_in=counts["rows_in"],
                    rows_dropped=counts["rows_dropped"],
                    rows_errored=counts["rows_errored"],
                    rows_stopped=counts["rows_stopped"],
                    batches=counts["batches"],
                )
            info["rows_out"] = self.rows_out()[stage]
            info["rows_seen"] = state.manifest.count
            info["drained_partitions"] = self._drained(state)
            info["partitions"] = state.partitions
            stages[stage] = info
        return {
            "run_id": self.run_id,
            "status": self.status,
            "started_ms": self.started_ms(),
            "finished_ms": self.finished_ms,
            "stages": stages,
            "dead_letters": self.dead_letters,
            "replay": self.replay,
            "verdict": self.verdict,
            "early_stop": self.early_stop(),
            "reports": self.reports() if self.status == "done" else None,
            "report_html": REPORT_HTML if self.status == "done" else None,
        }

    # -- snapshot ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "run_id": self.run_id,
            "status": self.status,
            "finished_ms": self.finished_ms,
            "final_stage": self.final_stage,
            "verdict": self.verdict,
            "dead_letters": self.dead_letters,
            "replay": self.replay,
            "sources": self.sources,
            "limit": self.limit,
            "stopped_ms": self.stopped_ms,
            "taken": self.taken,
            "seeds_expected": self.seeds_expected,
            "unwritten": self.unwritten,
            "leaves": self.leaves,
            "stages": [
                {
                    "stage": stage,
                    "partitions": state.partitions,
                    "markers": {
                        str(p): json.loads(state.markers.entry(run, p))
                        for run, p in sorted(state.markers.seen)
                    },
                    "manifest": state.manifest.to_json(),
                    "quality": state.quality.to_json(),
                    "progress": state.progress.to_json() if state.progress else None,
                }
                for stage, state in self.stages.items()
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], layouts: dict[str, QualityLayout] | None = None) -> RunState:
        """`layouts` (the pipeline's today) give a version 1 snapshot's quality its columns and sets."""
        if data.get("version") not in _RESTORABLE:
            raise ValueError(f"run snapshot version {data.get('version')!r}, expected one of {_RESTORABLE}")
        run_id = data["run_id"]
        stages: dict[str, StageState] = {}
        for entry in data["stages"]:
            markers = MarkerTracker()
            for partition, value in entry["markers"].items():
                markers.restore(run_id, int(partition), json.dumps(value).encode())
            stages[entry["stage"]] = StageState(
                entry["partitions"],
                markers,
                ManifestAgg.from_json(entry["manifest"]),
                QualityAgg.from_json(entry["quality"], (layouts or {}).get(entry["stage"])),
                StepProgress.from_json(entry["progress"]) if entry["progress"] else None,
            )
        return cls(
            run_id,
            stages,
            data["status"],
            data["finished_ms"],
            data["final_stage"],
            data["verdict"],
            {step: dict(counts) for step, counts in data["dead_letters"].items()},
            data.get("limit"),
            data.get("stopped_ms"),
            list(data.get("taken", [])),
            replay=data.get("replay"),
            sources=data.get("sources"),
            seeds_expected=data.get("seeds_expected"),
            unwritten=list(data.get("unwritten", [])),
            leaves=data.get("leaves"),
        )
