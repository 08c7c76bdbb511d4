"""The teacher simulator reads its answer book from any seed file `produce` accepts: a BOM, CRLF,
invalid UTF-8 or broken records skip those records (named in one warning), never a crash."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fastdistill.dev.teacher_sim.answers import AnswerBook
from fastdistill.ingest import BOM
from fastdistill.local_stack import free_port

TEMPLATE = "Schema: s\nQuestion: {q}\nSQL:"
GOOD = [
    {"task_id": f"t{i}", "instruction": f"Question {i}?", "gold_sql": f"SELECT name FROM t{i};"}
    for i in range(3)
]


def _hostile_jsonl(path: Path) -> Path:
    lines = [json.dumps(GOOD[0]).encode(), b'{"instruction": "bad \xff byte", "gold_sql": "SELECT 9;"}']
    lines += [json.dumps(GOOD[1]).encode(), b"[1, 2]", b'{"cut": ', json.dumps(GOOD[2]).encode()]
    path.write_bytes(BOM + b"\r\n".join(lines) + b"\r\n")
    return path


def test_a_bom_and_bad_records_are_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        book = AnswerBook.load(_hostile_jsonl(tmp_path / "seeds.jsonl"))
    assert len(book) == 3
    assert all(book.gold_for(TEMPLATE.format(q=g["instruction"])) == g["gold_sql"] for g in GOOD)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped 3 unreadable record(s)" in warning
    for where in ("seeds.jsonl:2: not UTF-8", "seeds.jsonl:4: not an object", "seeds.jsonl:5: not JSON"):
        assert where in warning


def test_a_csv_seed_file_and_a_json_map_with_a_bom_load(tmp_path: Path) -> None:
    csv = tmp_path / "seeds.csv"
    csv.write_bytes(
        BOM + b"task_id,instruction,gold_sql\r\nt0,Question 0?,SELECT 0;\r\nt1,\xff,SELECT 1;\r\n"
    )
    assert len(AnswerBook.load(csv)) == 2  # the invalid byte is an unknown question, not a crash
    mapping = tmp_path / "book.json"
    mapping.write_bytes(BOM + json.dumps({"Q one": "SELECT 1 + 1;"}).encode())
    assert AnswerBook.load(mapping).gold_for("Question: Q one\nSQL:") == "SELECT 1 + 1;"


def test_the_simulator_process_serves_from_a_hostile_seed_file(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "sim.log"
    argv = [sys.executable, "-m", "fastdistill.cli", "teacher-sim", "--port", str(port)]
    argv += ["--seeds", str(_hostile_jsonl(tmp_path / "seeds.jsonl"))]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        stats = None
        while stats is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as resp:
                    stats = json.loads(resp.read())
            except OSError:
                time.sleep(0.2)
        assert stats["answers"] == 3
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": TEMPLATE.format(q="Question 1?")}]}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.loads(resp.read())["choices"][0]["message"]["content"]
        assert answer != "SELECT 1;"  # a known question (the unknown-prompt answer is SELECT 1;)
    finally:
        proc.terminate()
        proc.wait(10)
    assert log.read_text().count("skipped 3 unreadable record(s)") == 1
