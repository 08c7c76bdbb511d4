"""Prometheus for the local stack (no Docker): a scrape config for the services' ports, and the
`prometheus` binary (Debian package `prometheus`) started on it.

In docker-compose every service listens on 9100 in its own container; locally each process has its
own FD_METRICS_PORT on 127.0.0.1, so the scrape config has to be written per stack.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

JOB = "fastdistill"


def scrape_config(
    targets: dict[str, int], scrape_interval: str = "1s", pipeline: str | None = None
) -> dict[str, object]:
    """One job, one static target per service; the `service` label carries the service name the
    way the compose config's DNS discovery does, so the same queries work on both. `pipeline`
    labels every series of the stack's services with the pipeline's name, which the dashboards'
    pipeline variable filters on; `honor_labels` keeps the coordinator's own `pipeline` label of
    its per-run series.

    A service answers /metrics inside its own event loop, which Kafka calls can hold for a second
    or two; the timeout is therefore the whole interval (the most Prometheus allows), and an
    interval of a few seconds loses no scrapes where 1 s loses some.
    """
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [
            {
                "job_name": JOB,
                "honor_labels": True,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{port}"],
                        "labels": {"service": name, **({"pipeline": pipeline} if pipeline else {})},
                    }
                    for name, port in sorted(targets.items())
                ],
            }
        ],
    }


def write_config(
    targets: dict[str, int], path: Path, scrape_interval: str = "1s", pipeline: str | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(scrape_config(targets, scrape_interval, pipeline), sort_keys=False))
    return path


def start_prometheus(
    config: Path, data_dir: Path, port: int, *, binary: str = "prometheus", ready_timeout_s: float = 60
) -> subprocess.Popen[bytes]:
    """Start Prometheus on 127.0.0.1:`port` and return once /-/ready answers (logs in data_dir)."""
    exe = shutil.which(binary)
    if exe is None:
        raise FileNotFoundError(f"{binary!r} not on PATH (Debian: apt-get install prometheus)")
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        exe,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        # The local stack is thrown away with its data; a short retention keeps the folder small.
        "--storage.tsdb.retention.time=1d",
        "--web.enable-lifecycle",
    ]
    log_path = data_dir / "prometheus.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/-/ready"
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}: {_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            pass  # not listening yet, or 503 while the TSDB is still opening
        time.sleep(0.1)
    proc.terminate()
    proc.wait(10)
    raise TimeoutError(f"prometheus not ready on {url} after {ready_timeout_s}s: {_tail(log_path)}")


def stop_prometheus(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
