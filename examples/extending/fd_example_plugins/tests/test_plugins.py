"""Unit tests of the example plug-ins, run where the package is installed beside FastDistill.

Each plug-in is reached the way FastDistill reaches it, by name through its registry: a test
that passes proves the entry point too, not only the class.
"""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest
from fd_example_plugins.echo import EchoClient
from fd_example_plugins.length_metrics import LengthMetrics
from fd_example_plugins.word_count import WordCountStep

from services.coordinator.metrics import metric_set
from services.sink.formats import build_format
from services.sink.staging import PartStager
from shared.llm import LLMEndpoint, LLMRequest, Rejected, build_client, cache_key
from shared.step import build_step, step_class


def test_word_count_counts_words_into_its_output_column() -> None:
    assert step_class("word_count") is WordCountStep
    step = build_step("word_count", {"field": "answer", "output": "words"})
    assert step.process_row({"answer": "two  words\n"}) == {"answer": "two  words\n", "words": 2}
    assert step.output_fields() == [
        {"name": "words", "type": "int", "doc": "whitespace-separated words of the counted field"}
    ]
    assert step.reads() == {"answer"}
    with pytest.raises(ValueError, match="answer is not text: NoneType"):
        step.process_row({"answer": None})
    # The output column's name changes what the step outputs: a signature of its own.
    assert step.signature() != build_step("word_count", {"field": "answer"}).signature()


def test_echo_answers_deterministically_and_honours_max_tokens() -> None:
    client = build_client(LLMEndpoint(provider="echo", model="echo-1"))
    assert isinstance(client, EchoClient) and client.endpoint == "echo://local"
    ask = LLMRequest([{"role": "system", "content": "be brief"}, {"role": "user", "content": "a b c d"}])
    answer = asyncio.run(client.complete(ask))
    assert (answer.text, answer.model, answer.finish_reason) == ("a b c d", "echo-1", "stop")
    assert (answer.prompt_tokens, answer.completion_tokens) == (6, 4)
    short = LLMRequest(ask.messages, {"max_tokens": 2})
    assert asyncio.run(client.complete(short)).text == "a b"
    # Decode settings are part of the wire body, so of the generation cache key.
    assert cache_key(client.endpoint, client.body(ask)) != cache_key(client.endpoint, client.body(short))
    with pytest.raises(Rejected):
        asyncio.run(client.complete(LLMRequest([{"role": "user", "content": " "}])))


def test_csv_writes_a_header_and_one_line_per_row(tmp_path: Path) -> None:
    fmt = build_format("csv", {"columns": ["source_index", "text", "tags", "score"]})
    assert fmt.reads() == {"source_index", "text", "tags", "score"}
    stager = PartStager(tmp_path / "staging", ["source_index", "text", "tags", "score", "extra"])
    stager.add({"source_index": 1, "text": "b, with a comma", "tags": ["x"], "score": None})
    stager.add({"source_index": 0, "text": "a", "tags": [], "score": 0.5})
    written = fmt.write_part(stager.merge(), tmp_path)
    assert written.files == ["data.csv"] and written.notes == {"data.csv": {"rows": 2}}
    with open(tmp_path / "data.csv", newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    # Release order (by source_index), nested values as JSON, null as an empty cell.
    assert lines == [
        ["source_index", "text", "tags", "score"],
        ["0", "a", "[]", "0.5"],
        ["1", "b, with a comma", '["x"]', ""],
    ]


def test_csv_options_are_checked() -> None:
    with pytest.raises(ValueError, match="delimiter"):
        build_format("csv", {"delimiter": ";;"})


def test_length_metrics_merge_in_any_order_and_survive_a_snapshot() -> None:
    assert metric_set("length") is LengthMetrics
    rows = [{"generation": t} for t in ("abc", "", "abcdef")] + [{"generation": None}, {}]
    whole = LengthMetrics()
    whole.add_rows(rows)
    assert whole.values() == {
        "length_texts": 3,
        "length_chars_min": 0,
        "length_chars_mean": 3.0,
        "length_chars_max": 6,
        "length_empty_rate": 1 / 3,
    }
    first, second = LengthMetrics(), LengthMetrics()
    first.add_rows(rows[:1])
    second.add_rows(rows[1:])
    second.merge(first)
    assert second.values() == whole.values()
    assert LengthMetrics.from_json(whole.to_json()) == whole
    assert LengthMetrics().values()["length_chars_mean"] is None
