"""distilabel 1.5.3's TextGeneration (OpenAILLM) against the teacher simulator.

    python bench/distilabel_teacher.py SEEDS.jsonl --base-url URL --batch-size 32 --marks DIR --cache DIR

The prompt is the FastDistill teacher's (`Schema: …\\nQuestion: …\\nSQL:`) with the row's
system prompt, so the simulator draws the same latency for the same row. Timed like
distilabel_cpu.py: first batch handed out → last batch generated.
"""

# No `from __future__ import annotations`: distilabel reads `process` annotations at runtime.
import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from distilabel.models.llms import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import StepInput
from distilabel.steps.tasks import TextGeneration
from distilabel_seeds import JsonlSeeds, mark

TEMPLATE = "Schema: {{ schema }}\nQuestion: {{ instruction }}\nSQL:"
FIELDS = ["task_id", "schema", "instruction", "gold_sql", "system_prompt"]


class TimedTextGeneration(TextGeneration):  # type: ignore[misc]
    marks: str

    def process(self, inputs: StepInput) -> Any:
        # distilabel takes one `next()` of this generator: mark before handing the batch on.
        out = next(super().process(inputs))
        mark(self.marks, "last")
        yield out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("seeds")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--limit", type=int, required=True)
    parser.add_argument("--marks", required=True)
    parser.add_argument("--cache", required=True)
    args = parser.parse_args()
    os.makedirs(args.marks, exist_ok=True)
    bs = args.batch_size
    with Pipeline(name=f"bench-teacher-{bs}", cache_dir=args.cache) as pipeline:
        seeds = JsonlSeeds(path=args.seeds, marks=args.marks, fields=FIELDS, limit=args.limit, batch_size=bs)
        llm = OpenAILLM(
            model="teacher-sim",
            base_url=args.base_url,
            api_key="sk-local",  # type: ignore[arg-type]
            generation_kwargs={"max_new_tokens": 128, "temperature": 0.2},
        )
        task = TimedTextGeneration(
            llm=llm,
            template=TEMPLATE,
            columns=["schema", "instruction"],
            marks=args.marks,
            input_batch_size=bs,
        )
        seeds >> task
    started = time.time()
    distiset = pipeline.run(use_cache=False)
    returned = time.time()
    first = float(Path(args.marks, "first").read_text())
    last = float(Path(args.marks, "last").read_text())
    rows = [row for config in distiset.values() for split in config.values() for row in split]
    answered = sum(1 for r in rows if r.get("generation"))
    print(
        json.dumps(
            {
                "rows_out": len(rows),
                "answered": answered,
                "seconds": last - first,
                "run_seconds": returned - started,
                "startup_seconds": first - started,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
