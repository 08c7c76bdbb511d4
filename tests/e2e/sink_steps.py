"""A step for the sink's end-to-end test (loaded by dotted path): candidates and their scores,
as a DAG with several generations and a judge hands them to the preference format."""

from __future__ import annotations

from typing import ClassVar

from shared.step import Row, Step, StepParams


class Candidates(Step[StepParams]):
    """Per row: one candidate (every 4th row), two tied ones (the next), else three with distinct
    scores; `keep` false for every 6th row."""

    name = "candidates"
    outputs: ClassVar[tuple[str, ...]] = ("generations", "scores", "keep")
    schema: ClassVar[dict[str, object]] = {
        "type": "record",
        "name": "CandidatesFields",
        "fields": [
            {"name": "generations", "type": {"type": "array", "items": "string"}},
            {"name": "scores", "type": {"type": "array", "items": "double"}},
            {"name": "keep", "type": "boolean"},
        ],
    }

    def process_row(self, row: Row) -> Row:
        i = row["source_index"]
        text = row["text"]
        if i % 4 == 0:
            generations, scores = [f"{text} /a"], [1.0]
        elif i % 4 == 1:
            generations, scores = [f"{text} /a", f"{text} /b"], [0.5, 0.5]
        else:
            generations = [f"{text} /a", f"{text} /b", f"{text} /c"]
            scores = [(i % 3) / 2, 1.0 - (i % 3) / 2, 0.25]
        return row | {"generations": generations, "scores": scores, "keep": i % 6 != 0}
