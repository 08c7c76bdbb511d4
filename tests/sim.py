"""The teacher simulator as a separate process, for tests that talk to it over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastdistill.dev.teacher_sim.server import SimConfig
from fastdistill.local_stack import free_port

REPO = Path(__file__).resolve().parents[1]


def get_json(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


class Sim:
    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.proc = proc
        self.root = f"http://127.0.0.1:{port}"
        #: the OpenAI-compatible base URL; the Anthropic client's is `root`
        self.base_url = f"{self.root}/v1"

    def stats(self) -> dict[str, Any]:
        return get_json(f"{self.root}/stats")


def start_sim(log_dir: Path, config: SimConfig, port: int | None = None) -> Sim:
    """A simulator process on `port` (a free one by default), answering once this returns."""
    port = port or free_port()
    code = (
        "import sys\n"
        "from fastdistill.dev.teacher_sim.server import SimConfig, run\n"
        "run('127.0.0.1', int(sys.argv[1]), SimConfig.model_validate_json(sys.argv[2]))\n"
    )
    log_path = log_dir / f"sim-{port}.log"
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(port), config.model_dump_json()],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    sim = Sim(port, proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{sim.root}/stats", timeout=1).close()
            return sim
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_sim(sim)
                raise RuntimeError(f"simulator did not start:\n{log_path.read_text()}") from None
            time.sleep(0.05)


def stop_sim(sim: Sim) -> None:
    sim.proc.terminate()
    try:
        sim.proc.wait(10)
    except subprocess.TimeoutExpired:
        sim.proc.kill()
        sim.proc.wait()


@contextmanager
def sim_process(log_dir: Path, config: SimConfig, port: int | None = None) -> Iterator[Sim]:
    sim = start_sim(log_dir, config, port)
    try:
        yield sim
    finally:
        stop_sim(sim)
