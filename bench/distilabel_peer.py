"""distilabel 1.5.3, the peer, in a virtual environment of its own under `.cache/`.

The environment comes from a committed lock file (`bench/peer/requirements.lock`): distilabel
and its whole dependency tree pinned to the versions current when 1.5.3 was released, installed
with `--no-deps` so pip resolves nothing. Left to pip, `distilabel==1.5.3` alone gets today's
datasets, pandas, pyarrow and pydantic, under which it runs ~1.2x slower than it did when it
shipped: an unfair peer. The venv's folder carries the lock's hash, so a changed lock installs
afresh and an unchanged one is reused. The scripts beside this file run with that python.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
LOCK = HERE / "peer" / "requirements.lock"
VERSION = "1.5.3"
#: the pins a reader of the results wants to see beside distilabel's own
SHOWN = ("datasets", "pandas", "pyarrow", "pydantic", "numpy", "openai")


def lock_hash() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]


def venv() -> Path:
    return REPO / ".cache" / f"bench-distilabel-{lock_hash()}"


def python() -> Path:
    return venv() / "bin" / "python"


def pins() -> dict[str, str]:
    """name -> version, as the lock file pins them."""
    out = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[name.split("[", 1)[0].lower()] = version
    return out


def environment() -> dict[str, Any]:
    """What the results say about the peer's environment."""
    p = pins()
    return {"distilabel": p["distilabel"], "lock_sha256_12": lock_hash(), "pins": {n: p[n] for n in SHOWN}}


def _installed() -> bool:
    """The venv holds exactly the lock's versions (checked against `pip freeze`)."""
    if not python().exists():
        return False
    proc = subprocess.run(
        [str(python()), "-m", "pip", "freeze", "--all", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    )
    frozen = {}
    for line in proc.stdout.splitlines():
        name, sep, version = line.partition("==")
        if sep:
            frozen[name.lower().replace("_", "-")] = version
    return proc.returncode == 0 and all(frozen.get(n) == v for n, v in pins().items())


def ensure_venv() -> Path:
    """Create the environment from the lock once; later runs reuse it."""
    if _installed():
        return python()
    log.info("installing the distilabel %s peer from %s into %s", VERSION, LOCK.name, venv())
    shutil.rmtree(venv(), ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv())], check=True)
    pip = [str(python()), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "--no-deps", "-r", str(LOCK)], check=True)
    # --no-deps installs what the lock says and nothing else: a missing pin shows here.
    subprocess.run([*pip, "check"], check=True)
    if not _installed():
        raise RuntimeError(f"the distilabel peer's venv {venv()} does not match {LOCK}")
    return python()


def steady_rate(progress: list[tuple[float, int]], low: float = 0.1, high: float = 0.9) -> float | None:
    """rows/s between the batches that finished the first `low` and the first `high` share of
    the rows, from (wall time, rows) per batch the last step finished: the pipeline's rate with
    its start-up and drain left out."""
    total = sum(n for _, n in progress)
    done, start, end = 0, None, None
    for at, n in sorted(progress):
        done += n
        if start is None and done >= low * total:
            start = (at, done)
        if end is None and done >= high * total:
            end = (at, done)
    if start is None or end is None or end[0] <= start[0]:
        return None
    return (end[1] - start[1]) / (end[0] - start[0])


def canonical_rows(path: Path, columns: list[str]) -> list[str]:
    """Each row of a JSONL file projected on `columns`, as canonical JSON, in file order."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            out.append(json.dumps({c: row.get(c) for c in columns}, sort_keys=True, separators=(",", ":")))
    return out


def compare_rows(peer: Path, ours: list[Path], columns: list[str]) -> dict[str, Any]:
    """Whether the peer's rows are FastDistill's (on the peer's columns), in order and as a set."""
    theirs = canonical_rows(peer, columns)
    mine = [r for p in ours for r in canonical_rows(p, columns)]
    same_set = sorted(theirs) == sorted(mine)
    return {
        "columns": columns,
        "peer_rows": len(theirs),
        "fastdistill_rows": len(mine),
        "identical": same_set,
        "same_order": theirs == mine,
        "differing_rows": len(set(theirs).symmetric_difference(mine)),
    }


def _run(script: str, args: list[str], log_path: Path, timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-distilabel-") as tmp:
        cmd = [str(python()), str(HERE / script), *args, "--marks", f"{tmp}/marks", "--cache", f"{tmp}/cache"]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log_file:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}); see {log_path}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{script} printed no result; see {log_path}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def cpu_chain(seeds: Path, rows: int, batch_size: int, workdir: Path) -> dict[str, Any]:
    """The CPU chain in distilabel; its rows are left in `workdir/distilabel-cpu-<batch>.jsonl`."""
    rows_out = workdir / f"distilabel-cpu-{batch_size}.jsonl"
    out = _run(
        "distilabel_cpu.py",
        [str(seeds), "--batch-size", str(batch_size), "--rows-out", str(rows_out)],
        workdir / f"distilabel-cpu-{batch_size}.log",
        timeout_s=1800,
    )
    result = {
        "peer": "distilabel",
        "version": VERSION,
        "lock_sha256_12": lock_hash(),
        "batch_size": batch_size,
        "rows": rows,
        "rows_out": out["rows_out"],
        "seconds": round(out["seconds"], 3),
        "rows_per_s": round(rows / out["seconds"], 1),
        # the whole `pipeline.run()`: start-up, every batch, the distiset built
        "run_seconds": round(out["run_seconds"], 3),
        "run_rows_per_s": round(rows / out["run_seconds"], 1),
        "startup_seconds": round(out["startup_seconds"], 3),
        "steady_rows_per_s": _round(steady_rate([(t, n) for t, n in out["progress"]])),
        "rows_path": str(rows_out),
    }
    log.info(
        "distilabel cpu batch %d: %.0f rows/s first to last batch, %s steady, %.0f whole run()",
        batch_size,
        result["rows_per_s"],
        result["steady_rows_per_s"],
        result["run_rows_per_s"],
    )
    return result


def teacher(
    seeds: Path, rows: int, base_url: str, batch_size: int, workdir: Path, tag: str
) -> dict[str, Any]:
    out = _run(
        "distilabel_teacher.py",
        [str(seeds), "--base-url", base_url, "--batch-size", str(batch_size), "--limit", str(rows)],
        workdir / f"distilabel-teacher-{tag}-{batch_size}.log",
        timeout_s=1800,
    )
    return {
        "peer": "distilabel",
        "version": VERSION,
        "lock_sha256_12": lock_hash(),
        "batch_size": batch_size,
        "rows": rows,
        "answered": out["answered"],
        "seconds": round(out["seconds"], 3),
        "rows_per_s": round(rows / out["seconds"], 2),
        "run_seconds": round(out["run_seconds"], 3),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)
