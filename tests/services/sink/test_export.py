"""`fastdistill export`: another format of a released run from its released files alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

from tests.services.sink.released_run import RUN_ID, cli, released_run, rows


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_writes_what_the_sink_would_have_written(tmp_path: Path) -> None:
    chat = {"chat": {"roles": {"user": "instruction", "assistant": "answer"}}}
    # The same run released twice: once with only jsonl, once with chat too.
    plain = released_run(tmp_path / "plain", ["jsonl"])
    released_run(tmp_path / "direct", ["jsonl", chat])
    done = cli("export", RUN_ID, "--format", "chat", "--options", json.dumps(chat["chat"]), "-p", str(plain))
    assert done.returncode == 0, done.stderr
    exported = tmp_path / "plain/out/sinktest" / RUN_ID / "exports" / "chat"
    released = tmp_path / "direct/out/sinktest" / RUN_ID
    for split in ("train", "test"):
        assert (exported / "answer" / split / "chat.jsonl").read_bytes() == (
            released / "answer" / split / "chat.jsonl"
        ).read_bytes()
        assert str(exported / "answer" / split / "chat.jsonl") in done.stdout
    record = json.loads((exported / "EXPORT.json").read_text())
    assert record["run_id"] == RUN_ID and record["format"] == "chat"
    assert set(record["files"]) == {"answer/train/chat.jsonl", "answer/test/chat.jsonl"}


def test_export_to_hf_from_parquet_alone_loads_with_load_from_disk(tmp_path: Path) -> None:
    pipeline = released_run(tmp_path, ["parquet"])
    done = cli("export", RUN_ID, "--format", "hf", "--to", str(tmp_path / "hf-export"), "-p", str(pipeline))
    assert done.returncode == 0, done.stderr
    loaded = datasets.load_from_disk(str(tmp_path / "hf-export" / "hf"))
    kept = [r for r in rows() if r["keep"]]
    assert sum(len(loaded[k]) for k in ("answer.train", "answer.test")) == len(kept)
    assert len(loaded["answer.rejected"]) == len(rows()) - len(kept)
    first = loaded["answer.rejected"][0]
    # Nested values come back from Parquet's JSON text exactly (as canonical JSON again).
    assert first["meta"] == '{"n":0,"tags":[]}' and first["rejected_because"] == "keep=false"


def test_preference_export_uses_the_pipelines_options(tmp_path: Path) -> None:
    pref = {"preference": {"prompt": "instruction"}}
    pipeline = released_run(tmp_path, ["jsonl", pref])
    done = cli("export", RUN_ID, "--format", "preference", "--to", str(tmp_path / "x"), "-p", str(pipeline))
    assert done.returncode == 0, done.stderr
    lines = _jsonl(tmp_path / "x/answer/train/preference.jsonl") + _jsonl(
        tmp_path / "x/answer/test/preference.jsonl"
    )
    assert lines and all(
        set(line) == {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"} for line in lines
    )
    assert all(line["score_chosen"] > line["score_rejected"] for line in lines)
    record = json.loads((tmp_path / "x/EXPORT.json").read_text())
    skipped = [n["skipped"] for n in record["notes"].values()]
    assert all(set(s) <= {"single", "tie"} for s in skipped) and any("single" in s for s in skipped)


def test_export_refuses_a_changed_file_an_unknown_format_and_an_unreleased_run(tmp_path: Path) -> None:
    pipeline = released_run(tmp_path, ["jsonl"])
    unknown = cli("export", RUN_ID, "--format", "csv", "-p", str(pipeline))
    assert unknown.returncode == 2 and "unknown sink format 'csv'" in unknown.stderr
    missing = cli("export", "no-such-run", "--format", "hf", "-p", str(pipeline))
    assert missing.returncode == 2 and "not a released run" in missing.stderr
    data = tmp_path / "out/sinktest" / RUN_ID / "answer/train/data.jsonl"
    data.write_text(data.read_text().replace("Question 1?", "Question one?"))
    changed = cli("export", RUN_ID, "--format", "hf", "-p", str(pipeline))
    assert changed.returncode == 2 and "changed since the release" in changed.stderr
