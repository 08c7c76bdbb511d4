"""word_count: the number of whitespace-separated words of a text field, as an int column."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from shared.step import Row, Step, StepParams


class WordCountParams(StepParams):
    field: str = Field("generation", description="the text field whose words are counted")
    output: str = Field("word_count", description="the column the count goes to")


class WordCountStep(Step[WordCountParams]):
    # The registry name (the entry point's): the signature and messages use it.
    name: ClassVar[str] = "word_count"
    # What the step adds, named as in the schema; `renamed` maps it to the `output` param.
    outputs: ClassVar[tuple[str, ...]] = ("word_count",)
    # Beside the code, found wherever the package is installed (an absolute path: a relative one
    # would be read from the working directory).
    schema: ClassVar[Path] = Path(__file__).with_name("word_count.avsc")

    def renamed(self) -> dict[str, str]:
        return {"word_count": self.params.output}

    def reads(self) -> set[str]:
        # Checked against the input stage's fields when the pipeline loads.
        return {self.params.field}

    def process_row(self, row: Row) -> Row:
        text = row.get(self.params.field)
        if not isinstance(text, str):
            # A row error: the step's error_policy decides (COLLECT dead-letters this row).
            raise ValueError(f"{self.params.field} is not text: {type(text).__name__}")
        return row | {self.params.output: len(text.split())}
