"""Every user error of the CLI is at most three lines on stderr naming the thing that is wrong
(the file, the step id, the param, the port, the broker) and what to do, from the real
`fastdistill` console script; --debug and FD_DEBUG=1 show the traceback instead."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples/answers/pipeline.yaml"
#: the console script pip installed beside this interpreter, as a user runs it
FASTDISTILL = str(Path(sys.executable).parent / "fastdistill")


def _fastdistill(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [FASTDISTILL, *args],
        env=os.environ | (env or {}),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(f"$ fastdistill {' '.join(args)} -> exit {done.returncode}\n{done.stderr}")
    return done


def _short(done: subprocess.CompletedProcess[str], *named: str) -> list[str]:
    """The error's lines, checked: a failure, at most three lines, no traceback, naming all of `named`."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0
    assert 1 <= len(lines) <= 3, lines
    assert "Traceback" not in done.stderr and "╭" not in done.stderr
    for name in named:
        assert name in done.stderr, (name, lines)
    return lines


def _pipeline(tmp_path: Path, edit: str = "", name: str = "pipeline.yaml") -> Path:
    """The answers example under a fresh name; `edit` = old>new replaces text of its YAML."""
    text = EXAMPLE.read_text().replace("name: answers", f"name: ux{os.getpid()}{tmp_path.name[-6:]}")
    if edit:
        old, new = edit.split(">")
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_missing_seeds_file(tmp_path: Path) -> None:
    lines = _short(_fastdistill("produce", str(tmp_path / "seeds.jsonl"), "-p", str(EXAMPLE)), "seeds.jsonl")
    assert lines == [
        f"{tmp_path / 'seeds.jsonl'}: no such seed file",
        "give the path of a JSONL file of seeds",
    ]


def test_wrong_fd_pipeline(tmp_path: Path) -> None:
    missing = tmp_path / "pipelin.yaml"
    lines = _short(_fastdistill("status", env={"FD_PIPELINE": str(missing)}), str(missing), "FD_PIPELINE")
    assert lines[0] == f"{missing}: no such pipeline file (FD_PIPELINE)"


def test_misspelled_step(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, "step: llm_judge>step: llm_jugde")
    lines = _short(_fastdistill("serve", "judge", "-p", str(path)), str(path), "'judge'", "llm_jugde")
    assert lines == [f"{path}: step 'judge' (llm_jugde): unknown step 'llm_jugde'; did you mean 'llm_judge'?"]


def test_misspelled_param_names_the_step_id_and_the_file(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, "candidates_field:>candidate_field:")
    lines = _short(_fastdistill("serve", "hash", "-p", str(path)), str(path), "'judge'", "candidate_field")
    assert lines == [
        f"{path}: step 'judge' (llm_judge): unknown param 'candidate_field'; did you mean 'candidates_field'?"
    ]


def test_misspelled_nested_param(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, "model: judge,>modl: judge,")
    lines = _short(_fastdistill("validate", str(path)), str(path), "'judge'")
    assert "unknown param 'llm.modl'; did you mean 'model'?" in lines[0]


def test_many_problems_are_counted_not_all_shown(tmp_path: Path) -> None:
    raw = yaml.safe_load(_pipeline(tmp_path).read_text())
    for step in raw["steps"]:
        step["step"] += "x"  # six unknown steps
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(raw))
    lines = _short(_fastdistill("serve", "hash", "-p", str(path)), str(path))
    assert lines[2] == f"... and 4 more problems: `fastdistill validate {path}` lists them all"
    # validate is the command that lists them all
    assert len(_fastdistill("validate", str(path)).stderr.strip().splitlines()) == 6


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, "steps:>steps: [")
    lines = _short(_fastdistill("status", "-p", str(path)), str(path), "line 12")
    assert lines[0].startswith(f"{path}: not valid YAML at line 12, column 3: ")


def test_unknown_service_lists_the_ones_there_are() -> None:
    lines = _short(_fastdistill("serve", "teacher", "-p", str(EXAMPLE)), "'teacher'")
    assert (
        lines[1] == "serve one of: canonicalize, hash, teacher_a, teacher_b, both, judge, sink, coordinator"
    )


def test_broker_unreachable() -> None:
    bootstrap = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    done = _fastdistill("dlq", "-p", str(EXAMPLE), env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    assert time.monotonic() - started < 10
    lines = _short(done, bootstrap, "fastdistill dev broker up")
    assert done.returncode == 1 and len(lines) == 2


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    for args, env in (
        (["--debug", "status", "-p", missing], {}),
        (["status", "-p", missing], {"FD_DEBUG": "1"}),
    ):
        done = _fastdistill(*args, env=env)
        assert done.returncode == 1 and ("Traceback" in done.stderr or "╭" in done.stderr)
        assert len(done.stderr.splitlines()) > 10
        assert "UserError" in done.stderr and "no such pipeline file" in done.stderr


@pytest.mark.kafka
def test_second_serve_on_a_busy_port(tmp_path: Path, kafka_bootstrap: str) -> None:
    path = _pipeline(tmp_path)
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    assert _fastdistill("topics", "create", "-p", str(path), env=env).returncode == 0
    port = _closed_port()
    env |= {"FD_METRICS_PORT": str(port)}
    first = subprocess.Popen(
        [FASTDISTILL, "serve", "hash", "-p", str(path)],
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # the first one answers on the port
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # 503 while it starts: it listens
            except OSError:
                assert first.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        done = _fastdistill("serve", "hash", "-p", str(path), env=env)
        lines = _short(done, f"port {port}", "address already in use", "FD_METRICS_PORT")
        assert done.returncode == 1 and len(lines) == 2
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)
