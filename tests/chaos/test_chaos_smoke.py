"""The chaos harness, small: 4 SIGKILLs of random service instances, one broker restart and 20%
teacher faults against a fault-free run of the same 478 seeds (the example's twice), on the
harness's own broker (the shared one is never restarted). `python -m bench.chaos` is the full
run (20 kills, ~2,900 seeds; docs/chaos.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import chaos

pytestmark = pytest.mark.kafka

#: Not the shared test broker (19092) nor the full harness's default (19392).
PORT = 19396


@pytest.mark.timeout(900)
def test_kills_and_a_broker_restart_lose_and_duplicate_no_row(tmp_path: Path) -> None:
    figures = chaos(tmp_path / "chaos", kills=4, broker_restarts=1, copies=2, port=PORT)
    assert figures.kills_survived == 4 and figures.broker_restarts == 1
    assert figures.rows_lost == 0
    assert figures.rows_duplicated == 0
    assert figures.rows_different == 0
    assert figures.dlq_unexplained == 0, figures.dlq_by_reason
    assert figures.rows_chaos == figures.rows_baseline - figures.dlq_explained
    assert figures.manifest_mismatches == []
    assert figures.faults_served > 0
