"""distilabel 1.5.3, the peer, in a virtual environment of its own under `.cache/`.

It has its own dependency tree (datasets, multiprocess, an older pydantic range), so it never
shares one with FastDistill; the scripts beside this file run with that environment's python.
"""

from __future__ import annotations

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
VENV = REPO / ".cache" / "bench-distilabel-venv"
VERSION = "1.5.3"
# distilabel imports `requests` without declaring it (its hub dependencies used to bring it).
REQUIREMENTS = [f"distilabel[openai]=={VERSION}", "requests"]
HERE = Path(__file__).resolve().parent


def python() -> Path:
    return VENV / "bin" / "python"


def _installed() -> bool:
    if not python().exists():
        return False
    probe = subprocess.run(
        [str(python()), "-c", "import distilabel, openai, requests; print(distilabel.__version__)"],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0 and probe.stdout.strip() == VERSION


def ensure_venv() -> Path:
    """Create the environment and install distilabel once; later runs reuse it."""
    if _installed():
        return python()
    log.info("installing distilabel %s into %s", VERSION, VENV)
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python()), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *REQUIREMENTS], check=True)
    if not _installed():
        raise RuntimeError(f"distilabel {VERSION} did not install into {VENV}")
    return python()


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
    out = _run(
        "distilabel_cpu.py",
        [str(seeds), "--batch-size", str(batch_size)],
        workdir / f"distilabel-cpu-{batch_size}.log",
        timeout_s=1800,
    )
    result = {
        "peer": "distilabel",
        "version": VERSION,
        "batch_size": batch_size,
        "rows": rows,
        "rows_out": out["rows_out"],
        "seconds": round(out["seconds"], 3),
        "rows_per_s": round(rows / out["seconds"], 1),
        "run_seconds": round(out["run_seconds"], 3),
        "startup_seconds": round(out["startup_seconds"], 3),
    }
    log.info("distilabel cpu batch %d: %.0f rows/s", batch_size, result["rows_per_s"])
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
        "batch_size": batch_size,
        "rows": rows,
        "answered": out["answered"],
        "seconds": round(out["seconds"], 3),
        "rows_per_s": round(rows / out["seconds"], 2),
        "run_seconds": round(out["run_seconds"], 3),
    }
