"""Batch records as the serde tests write them."""

from __future__ import annotations

from typing import Any


def batch(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of run `r1`, stage `seeds`, carrying `rows`."""
    return {
        "run_id": "r1",
        "stage": "seeds",
        "producer": "p",
        "batch_seq": 0,
        "lineage": [],
        "rows": rows,
        "end_of_run": None,
        "origin_ms": 0,
    }
