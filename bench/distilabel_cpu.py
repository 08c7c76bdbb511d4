"""The CPU chain as a distilabel 1.5.3 local pipeline (run with the bench's distilabel venv).

    python bench/distilabel_cpu.py SEEDS.jsonl --batch-size 50 --marks DIR --cache DIR [--rows-out F]

Same logic as the FastDistill steps: canonical JSON of the seed fields (sorted keys, ASCII,
compact), SHA-256 of `task_id|canonical_input` (each part canonical JSON), first sample_id
wins, and a length rule on gold_sql that never drops. Prints one JSON line with the timing.

Timing is generous to distilabel: from the moment its generator hands out the first batch to
the moment its last step finishes the last batch, so its process start-up and the final
dataset assembly are left out (FastDistill's own figure includes producing and the sink).
Beside it: the whole `pipeline.run()`, and each batch's finish time at the last step (the
bench's steady-state rate). `--rows-out` writes the rows it produced, for the bench to check
they are FastDistill's.
"""

# No `from __future__ import annotations`: distilabel reads `process` annotations at runtime.
import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from distilabel.pipeline import Pipeline
from distilabel.steps import Step, StepInput
from distilabel_seeds import JsonlSeeds, mark
from pydantic import PrivateAttr

FIELDS = ["task_id", "schema", "instruction", "gold_sql", "system_prompt", "decode_profile"]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


class Canonicalize(Step):  # type: ignore[misc]
    @property
    def inputs(self) -> list[str]:
        return ["task_id"]

    @property
    def outputs(self) -> list[str]:
        return ["canonical_input"]

    def process(self, inputs: StepInput) -> Any:
        for row in inputs:
            row["canonical_input"] = canonical_json({f: row[f] for f in FIELDS if row.get(f) is not None})
        yield inputs


class Hash(Step):  # type: ignore[misc]
    @property
    def inputs(self) -> list[str]:
        return ["task_id", "canonical_input"]

    @property
    def outputs(self) -> list[str]:
        return ["sample_id"]

    def process(self, inputs: StepInput) -> Any:
        for row in inputs:
            blob = "|".join(canonical_json(row[f]) for f in ("task_id", "canonical_input"))
            row["sample_id"] = hashlib.sha256(blob.encode("utf-8")).hexdigest()
        yield inputs


class Dedup(Step):  # type: ignore[misc]
    _seen: set[str] = PrivateAttr(default_factory=set)

    @property
    def inputs(self) -> list[str]:
        return ["sample_id"]

    def process(self, inputs: StepInput) -> Any:
        kept = []
        for row in inputs:
            if row["sample_id"] not in self._seen:
                self._seen.add(row["sample_id"])
                kept.append(row)
        yield kept


class RuleFilter(Step):  # type: ignore[misc]
    marks: str
    min_chars: int = 8
    max_chars: int = 4000

    @property
    def inputs(self) -> list[str]:
        return ["gold_sql"]

    @property
    def outputs(self) -> list[str]:
        return ["keep", "reject_reason"]

    def process(self, inputs: StepInput) -> Any:
        for row in inputs:
            text = (row.get("gold_sql") or "").strip()
            if not text:
                reason = "empty_output"
            elif len(text) < self.min_chars:
                reason = "too_short"
            elif len(text) > self.max_chars:
                reason = "too_long"
            else:
                reason = "ok"
            row["keep"] = reason == "ok"
            row["reject_reason"] = reason
        # distilabel takes one `next()` of this generator: nothing after the yield would run.
        mark(self.marks, "last")
        with open(Path(self.marks, "progress"), "a") as fh:
            fh.write(f"{time.time()!r} {len(inputs)}\n")
        yield inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("seeds")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--marks", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--rows-out")
    args = parser.parse_args()
    os.makedirs(args.marks, exist_ok=True)
    bs = args.batch_size
    with Pipeline(name=f"bench-cpu-{bs}", cache_dir=args.cache) as pipeline:
        seeds = JsonlSeeds(path=args.seeds, marks=args.marks, fields=FIELDS, batch_size=bs)
        canon = Canonicalize(input_batch_size=bs)
        hashed = Hash(input_batch_size=bs)
        dedup = Dedup(input_batch_size=bs)
        rules = RuleFilter(marks=args.marks, input_batch_size=bs)
        seeds >> canon >> hashed >> dedup >> rules
    started = time.time()
    distiset = pipeline.run(use_cache=False)
    returned = time.time()
    first = float(Path(args.marks, "first").read_text())
    last = float(Path(args.marks, "last").read_text())
    rows = sum(len(split) for config in distiset.values() for split in config.values())
    progress = [line.split() for line in Path(args.marks, "progress").read_text().splitlines()]
    if args.rows_out:
        with open(args.rows_out, "w", encoding="utf-8") as fh:
            for config in distiset.values():
                for split in config.values():
                    for row in split:
                        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(
        json.dumps(
            {
                "rows_out": rows,
                "seconds": last - first,
                "run_seconds": returned - started,
                "startup_seconds": first - started,
                "progress": [[float(t), int(n)] for t, n in progress],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
