"""What the services said about the faults: the notable lines of their logs (a producer rebuilt,
a consumer rejoining its group, a transaction aborted, a watchdog exit, a fenced instance),
grouped by the fault they followed."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

#: (kind, pattern); the first group, when there is one, is the reason given.
PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("producer rebuilt", re.compile(r"rebuilding the transactional producer: (.*)")),
    ("producer init failed", re.compile(r"producer init attempt \d+ failed: (.*)")),
    ("consumer rejoined", re.compile(r"rebuilding the consumer: (.*)")),
    ("transaction aborted", re.compile(r"transaction(?: of \S+)? aborted, re-reading from [^:]*: (.*)")),
    ("abort", re.compile(r"aborting transaction of \S+: (.*)")),
    ("watchdog exit", re.compile(r"CRITICAL \S+: (?:\S+: )?(.*): exiting")),
    ("cannot go on", re.compile(r"ERROR \S+: \S+ cannot go on: (.*)")),
    ("partitions lost", re.compile(r"WARNING \S+: \S+ lost (\[.*\])")),
    ("state re-read retried", re.compile(r"cannot re-read its state yet \(attempt \d+\): (.*)")),
    ("sink commit failed", re.compile(r"sink commit: (.*)")),
]
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_NUMBERS = re.compile(r"\d+(\.\d+)?")


def _normalise(reason: str) -> str:
    """A reason without its numbers (offsets, ids, attempts), so like reasons count together."""
    return _NUMBERS.sub("N", reason.strip())[:160]


def events(log_dir: Path) -> list[tuple[float, str, str, str]]:
    """(epoch seconds, service, kind, reason) of every notable line in the stack's logs."""
    found = []
    for path in sorted(log_dir.glob("*.log")):
        service = path.stem
        for line in path.read_text(errors="replace").splitlines():
            stamp = _STAMP.match(line)
            if stamp is None:
                continue
            for kind, pattern in PATTERNS:
                match = pattern.search(line)
                if match is not None:
                    at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    reason = _normalise(match.group(1)) if match.groups() else ""
                    found.append((at, service, kind, reason))
                    break
    return sorted(found)


def by_fault(log_dir: Path, windows: list[tuple[str, float]], run_started: float) -> list[dict[str, Any]]:
    """The notable log lines grouped by the fault they followed: `windows` are (label, epoch
    start) in order; lines before the first fault go to "before any fault"."""
    bounds = [("before any fault", run_started), *windows]
    groups: list[Counter[tuple[str, str, str]]] = [Counter() for _ in bounds]
    for at, service, kind, reason in events(log_dir):
        index = max((i for i, (_, start) in enumerate(bounds) if start <= at), default=0)
        groups[index][(service, kind, reason)] += 1
    return [
        {
            "after": label,
            "events": [
                {"service": s, "what": k, "reason": r, "count": n} for (s, k, r), n in sorted(counts.items())
            ],
        }
        for (label, _), counts in zip(bounds, groups, strict=True)
        if counts
    ]
