"""What the scenarios measure with: process sampling, Prometheus scraping, broker housekeeping."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka.admin import AdminClient

MB = 1024 * 1024


@dataclass
class ProcStats:
    rss_peak_mb: float = 0.0
    rss_hwm_mb: float = 0.0
    cpu_s: float = 0.0


@dataclass
class ProcessSampler:
    """Samples the RSS of named processes on a thread; CPU time is read as a difference.

    Sampling alone can miss a short spike (the sink sorts a whole run at once), so the kernel's
    own high-water mark (VmHWM) is read beside it where /proc has it.
    """

    pids: dict[str, int]
    interval_s: float = 0.1
    stats: dict[str, ProcStats] = field(default_factory=lambda: defaultdict(ProcStats))
    _cpu0: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in self.pids.items()}

    def start(self) -> ProcessSampler:
        for name, proc in self._procs.items():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                self._cpu0[name] = times.user + times.system
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def _sample(self) -> None:
        for name, proc in self._procs.items():
            with contextlib.suppress(psutil.Error):
                rss = proc.memory_info().rss / MB
                st = self.stats[name]
                st.rss_peak_mb = max(st.rss_peak_mb, rss)

    def stop(self) -> dict[str, ProcStats]:
        """Stop sampling and read CPU seconds and VmHWM; call while the processes still live."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        for name, proc in self._procs.items():
            st = self.stats[name]
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                st.cpu_s = times.user + times.system - self._cpu0.get(name, 0.0)
            st.rss_hwm_mb = max(st.rss_peak_mb, _vm_hwm_mb(proc.pid))
        return dict(self.stats)


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def broker_pid(bootstrap: str) -> int | None:
    """The process listening on the bootstrap port, if the broker runs on this machine.

    Its CPU is part of what a pipeline costs; found by port, since other brokers may run here.
    """
    host, _, port_text = bootstrap.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost", "0.0.0.0", "::1", "[::1]"):
        return None
    with contextlib.suppress(psutil.Error, ValueError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == int(port_text):
                return conn.pid
    return None


# -- Prometheus ------------------------------------------------------------------------------------
def scrape(port: int, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as resp:
        return str(resp.read().decode())


def _labels(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


def histogram(text: str, name: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) buckets of histogram `name`, summed over its label sets."""
    buckets: dict[float, float] = defaultdict(float)
    prefix = f"{name}_bucket{{"
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels_text, _, value = line[len(prefix) :].rpartition("} ")
        le = _labels(labels_text)["le"]
        buckets[math.inf if le == "+Inf" else float(le)] += float(value)
    return sorted(buckets.items())


def counter(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[-1])
    return total


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket the rank falls in."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return None


def merge_buckets(parts: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    merged: dict[float, float] = defaultdict(float)
    for part in parts:
        for bound, count in part:
            merged[bound] += count
    return sorted(merged.items())


# -- the broker --------------------------------------------------------------------------------------
def delete_topics(admin: AdminClient, prefix: str, timeout_s: float = 30.0) -> int:
    """Delete every topic named `prefix*`: a bench run must not leave gigabytes on the broker."""
    names = [t for t in admin.list_topics(timeout=timeout_s).topics if t.startswith(prefix)]
    if not names:
        return 0
    for fut in admin.delete_topics(names, operation_timeout=timeout_s).values():
        with contextlib.suppress(Exception):  # already gone is as good as deleted
            fut.result()
    return len(names)


def wait_for_groups(admin: AdminClient, members: dict[str, int], timeout_s: float = 60.0) -> None:
    """Until each consumer group is stable with its expected number of members holding partitions.

    A healthy service has only started its HTTP server; a measurement must not include its
    group join, nor be cut by a late member's rebalance.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        pending = []
        futures = admin.describe_consumer_groups(list(members))
        for group, fut in futures.items():
            try:
                desc = fut.result()
            except Exception as exc:  # not coordinated yet: ask again
                pending.append(f"{group}: {exc}")
                continue
            holding = [m for m in desc.members if m.assignment and m.assignment.topic_partitions]
            if str(desc.state).endswith("STABLE") and len(holding) >= members[group]:
                continue
            pending.append(f"{group}: {desc.state}, {len(holding)}/{members[group]} members with partitions")
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"consumer groups not ready after {timeout_s}s: {pending}")
        time.sleep(0.2)


def http_json(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def wait_for_file(path: Path, timeout_s: float, alive: Any = None, poll_s: float = 0.01) -> float:
    """The file's mtime (wall clock) once it exists; the mtime, not the poll, is the finish time."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written after {timeout_s}s")
        if alive is not None:
            alive()
        time.sleep(poll_s)
    return path.stat().st_mtime
