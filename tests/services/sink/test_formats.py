"""Dataset formats: the registry, load-time checks, and what each format writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import datasets
import pytest

from fastdistill.plan import PipelinePlan, PlanError
from services.sink.formats import SINK_FORMATS, Part, ReleasedPart, build_format
from services.sink.formats.preference import best_and_worst
from services.sink.staging import MergedPart, PartStager
from shared.pipeline import PipelineSpec

EXAMPLE = Path(__file__).resolve().parents[3] / "examples/text2sql/pipeline.yaml"


def _merged(folder: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> MergedPart:
    stager = PartStager(folder, columns or list(dict.fromkeys(k for r in rows for k in r)))
    for row in rows:
        stager.add(row)
    return stager.merge()


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_built_in_formats_come_from_entry_points() -> None:
    assert {"jsonl", "parquet", "hf", "chat", "preference"} <= set(SINK_FORMATS.names())
    assert build_format("jsonl").name == "jsonl"


def _plan_problems(sink: dict[str, Any]) -> list[str]:
    raw = PipelineSpec.load(EXAMPLE).model_dump(mode="json", by_alias=True, exclude_unset=True)
    raw["sink"] = sink
    with pytest.raises(PlanError) as caught:
        PipelinePlan.build(PipelineSpec.model_validate(raw))
    return caught.value.problems


def test_unknown_formats_bad_options_and_missing_fields_fail_when_the_pipeline_loads() -> None:
    problems = _plan_problems(
        {
            "formats": [
                "jsonl",
                "csv",
                {"chat": {"roles": {"user": "instruction", "assistant": "no_such_field"}}},
                {"preference": {"candidates": "generations"}},
                {"parquet": {"compression": "zstd"}},
                {"hf": {"subsets": ["teacher"]}},
            ],
            "select": {"field": "missing", "equals": True},
            "split": {"train": 0.5, "test": 0.5},
            "split_by": "nope",
        }
    )
    assert problems == [
        "sink: select reads 'missing', which released stage 'keep_by_score' does not carry",
        "sink: split_by reads 'nope', which released stage 'keep_by_score' does not carry",
        "sink format 'csv': unknown sink format 'csv'; known: chat, hf, jsonl, parquet, preference",
        "sink format 'chat' reads 'no_such_field', which released stage 'keep_by_score' does not carry",
        "sink format 'preference': prompt: Field required",
        "sink format 'parquet': compression: Extra inputs are not permitted",
        "sink format 'hf': subset 'teacher' is no released stage; released: ['keep_by_score']",
    ]


def test_the_released_stages_must_be_stages() -> None:
    assert _plan_problems({"stages": ["keep_by_score", "nowhere"]}) == [
        "sink: stage 'nowhere' is no stage; stages: seeds, canonicalize, hash, dedup, teacher, clean_sql, "
        "rule_filter, sql_eval, score, keep_by_score"
    ]


ROWS: list[dict[str, Any]] = [
    {
        "source_index": 0,
        "system_prompt": "Be brief.",
        "schema": "t(a)",
        "instruction": "Count rows.",
        "sql": "SELECT 1",
    },
    {
        "source_index": 1,
        "system_prompt": None,
        "schema": "t(a)",
        "instruction": "List a.",
        "sql": "SELECT a FROM t",
    },
    {"source_index": 2, "system_prompt": "", "schema": "t(a)", "instruction": "Sum a.", "sql": ""},
    {
        "source_index": 3,
        "system_prompt": "x",
        "schema": None,
        "instruction": "Max a.",
        "sql": "SELECT max(a)",
    },
]


def test_chat_maps_fields_and_templates_to_roles_and_skips_rows_lacking_one(tmp_path: Path) -> None:
    fmt = build_format(
        "chat",
        {
            "roles": {
                "system": "system_prompt",
                "user": "Schema: {schema}\nQ: {instruction}",
                "assistant": "sql",
            }
        },
    )
    written = fmt.write_part(_merged(tmp_path / "s", ROWS), tmp_path)
    lines = _jsonl(tmp_path / "chat.jsonl")
    assert lines == [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Schema: t(a)\nQ: Count rows."},
                {"role": "assistant", "content": "SELECT 1"},
            ]
        },
        {
            "messages": [  # a null system prompt leaves the system message out
                {"role": "user", "content": "Schema: t(a)\nQ: List a."},
                {"role": "assistant", "content": "SELECT a FROM t"},
            ]
        },
    ]
    # Every line is the chat schema SFT trainers read.
    for line in lines:
        assert set(line) == {"messages"}
        assert [m["role"] for m in line["messages"]][-2:] == ["user", "assistant"]
        assert all(
            set(m) == {"role", "content"} and isinstance(m["content"], str) and m["content"]
            for m in line["messages"]
        )
    assert written.notes == {"chat.jsonl": {"rows": 2, "skipped": {"no assistant": 1, "no user": 1}}}
    assert written.sha256["chat.jsonl"] == hashlib.sha256((tmp_path / "chat.jsonl").read_bytes()).hexdigest()
    assert fmt.reads() == {"system_prompt", "schema", "instruction", "sql"}


def test_chat_needs_a_user_and_an_assistant_and_orders_them_itself(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a user and an assistant; no assistant given"):
        build_format("chat", {"roles": {"system": "system_prompt", "user": "instruction"}})
    with pytest.raises(ValueError, match=r"roles\.tool"):
        build_format("chat", {"roles": {"tool": "x", "user": "instruction", "assistant": "sql"}})
    fmt = build_format("chat", {"roles": {"assistant": "sql", "user": "instruction"}})
    fmt.write_part(_merged(tmp_path / "s", ROWS[:1]), tmp_path)
    assert [m["role"] for m in _jsonl(tmp_path / "chat.jsonl")[0]["messages"]] == ["user", "assistant"]


def test_preference_pairs_best_and_worst_and_says_why_a_row_gives_none(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"source_index": 0, "q": "a?", "generations": ["x", "y", "z"], "scores": [0.5, 1.0, 0.0]},
        {"source_index": 1, "q": "b?", "generations": ["x", "y", "z"], "scores": [1.0, 1.0, 0.0]},  # best tie
        {"source_index": 2, "q": "c?", "generations": ["x", "y"], "scores": [0.5, 0.5]},  # all tie
        {"source_index": 3, "q": "d?", "generations": ["only"], "scores": [1.0]},  # single
        {"source_index": 4, "q": "e?", "generations": ["x", "y"], "scores": [1.0]},  # a score lost
        {
            "source_index": 5,
            "q": "f?",
            "generations": ["x", "", "y"],
            "scores": [None, 1.0, 0.2],
        },  # one scored
        {"source_index": 6, "q": "g?", "generations": ["same", "same"], "scores": [1, 0]},
        {"source_index": 7, "q": None, "generations": ["x", "y"], "scores": [1, 0]},
    ]
    fmt = build_format("preference", {"prompt": "q", "system": "sys"})
    written = fmt.write_part(
        _merged(tmp_path / "s", rows, ["source_index", "q", "generations", "scores", "sys"]), tmp_path
    )
    assert _jsonl(tmp_path / "preference.jsonl") == [
        {"prompt": "a?", "chosen": "y", "rejected": "z", "score_chosen": 1.0, "score_rejected": 0.0},
        # among equal best scores the earlier candidate is chosen
        {"prompt": "b?", "chosen": "x", "rejected": "z", "score_chosen": 1.0, "score_rejected": 0.0},
    ]
    assert written.notes["preference.jsonl"] == {
        "rows": 2,
        "skipped": {"mismatched": 1, "no prompt": 1, "same_text": 1, "single": 2, "tie": 1},
    }


def test_preference_in_chat_style(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"source_index": 0, "q": "a?", "s": "Be kind.", "generations": ["x", "y"], "scores": [0, 1]}
    ]
    fmt = build_format("preference", {"prompt": "Q: {q}", "system": "s", "style": "chat"})
    fmt.write_part(_merged(tmp_path / "s", rows), tmp_path)
    assert _jsonl(tmp_path / "preference.jsonl") == [
        {
            "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Q: a?"}],
            "chosen": [{"role": "assistant", "content": "y"}],
            "rejected": [{"role": "assistant", "content": "x"}],
            "score_chosen": 1.0,
            "score_rejected": 0.0,
        }
    ]


def test_preference_pairs_from_a_pairwise_judges_ranking(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"source_index": 0, "q": "a?", "generations": ["x", "y", "z"], "ranking": [2, 0, 1]},
        {"source_index": 1, "q": "b?", "generations": ["x", "y"], "ranking": [1, 0]},
        {"source_index": 2, "q": "c?", "generations": ["x", "y"], "ranking": []},  # unreadable verdict
        {"source_index": 3, "q": "d?", "generations": ["x", "y"], "ranking": [0, 0]},  # not a ranking
        {"source_index": 4, "q": "e?", "generations": ["x", "y"], "ranking": [0, 5]},  # out of range
    ]
    fmt = build_format("preference", {"prompt": "q", "ranking": "ranking"})
    assert fmt.reads() == {"generations", "ranking", "q"}
    written = fmt.write_part(_merged(tmp_path / "s", rows), tmp_path)
    assert _jsonl(tmp_path / "preference.jsonl") == [
        {"prompt": "a?", "chosen": "z", "rejected": "y", "score_chosen": 3.0, "score_rejected": 1.0},
        {"prompt": "b?", "chosen": "y", "rejected": "x", "score_chosen": 2.0, "score_rejected": 1.0},
    ]
    assert written.notes["preference.jsonl"] == {"rows": 2, "skipped": {"mismatched": 2, "single": 1}}


def test_best_and_worst_ignore_unscored_and_non_numeric_candidates() -> None:
    assert best_and_worst(["a", "b", "c"], [True, 0.3, float("nan")]) == "single"
    assert best_and_worst(["a", "b", "c"], [2, "9", 1]) == (("a", 2.0), ("c", 1.0))
    assert best_and_worst("ab", [1, 2]) == "mismatched"


def _hf_parts(tmp_path: Path) -> list[ReleasedPart]:
    kept: list[dict[str, Any]] = [
        {"source_index": i, "sample_id": f"s{i}", "score": i / 2, "meta": {"i": i}} for i in range(30)
    ]
    return [
        ReleasedPart(Part("final", "train"), _merged(tmp_path / "train", kept[:20])),
        ReleasedPart(Part("final", "test"), _merged(tmp_path / "test", kept[20:])),
        ReleasedPart(Part("final", rejected=True), _merged(tmp_path / "rej", [], ["source_index", "why"])),
    ]


def test_hf_writes_one_dataset_dict_that_load_from_disk_reads(tmp_path: Path) -> None:
    written = build_format("hf").write(_hf_parts(tmp_path), tmp_path / "run")
    loaded = datasets.load_from_disk(str(tmp_path / "run" / "hf"))
    assert isinstance(loaded, datasets.DatasetDict)
    assert {k: len(v) for k, v in loaded.items()} == {
        "final.train": 20,
        "final.test": 10,
        "final.rejected": 0,
    }
    assert loaded["final.test"][0] == {
        "source_index": 20,
        "sample_id": "s20",
        "score": 10.0,
        "meta": '{"i":20}',
    }
    assert loaded["final.train"].features["score"].dtype == "float64"
    assert loaded["final.rejected"].column_names == ["source_index", "why"]  # empty, still loadable
    assert "hf/dataset_dict.json" in written.files and all(f.startswith("hf/") for f in written.files)


def test_hf_files_are_the_same_bytes_for_the_same_rows(tmp_path: Path) -> None:
    def digests(folder: Path) -> dict[str, str]:
        written = build_format("hf").write(_hf_parts(folder), folder / "run")
        return {f: hashlib.sha256((folder / "run" / f).read_bytes()).hexdigest() for f in written.files}

    assert digests(tmp_path / "one") == digests(tmp_path / "two")


def test_a_format_writes_only_the_subsets_it_names(tmp_path: Path) -> None:
    parts = [
        ReleasedPart(Part("a"), _merged(tmp_path / "a", [{"source_index": 0, "q": "x", "r": "y"}])),
        ReleasedPart(Part("b"), _merged(tmp_path / "b", [{"source_index": 0, "q": "x", "r": "y"}])),
        ReleasedPart(
            Part("a", rejected=True), _merged(tmp_path / "ar", [{"source_index": 1, "q": "x", "r": "y"}])
        ),
    ]
    chat = build_format("chat", {"roles": {"user": "q", "assistant": "r"}, "subsets": ["a"]})
    assert chat.write(parts, tmp_path / "out").files == ["a/chat.jsonl"]  # no rejected rows either
    assert build_format("jsonl", {"subsets": ["a"]}).write(parts, tmp_path / "out").files == [
        "a/data.jsonl",
        "a.rejected/data.jsonl",
    ]
