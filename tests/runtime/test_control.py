"""Run-control records: what the producer and the coordinator write reads back; anything else on
the topic is skipped, never a crash (every service re-reads the topic whole at every start)."""

from __future__ import annotations

import pytest

from shared.kafka import control


def test_limit_and_stop_records_read_back() -> None:
    assert control.parse(control.limit_record("r", 5)) == {"run_id": "r", "limit": 5, "stop": False}
    assert control.parse(control.stop_record("r", 5)) == {"run_id": "r", "limit": 5, "stop": True}


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"\xff\xfe not json",
        b"[1, 2]",
        b'{"limit": 3}',
        b'{"run_id": 7, "limit": 3}',
        b'{"run_id": "r", "limit": -1}',
        b'{"run_id": "r", "limit": "3"}',
        b'{"run_id": "r", "limit": true}',
        b'{"run_id": "r", "limit": 2.5}',
        b"[" * 100_000,
    ],
)
def test_anything_else_is_skipped(value: bytes | None) -> None:
    assert control.parse(value) is None


def test_a_stop_without_a_limit_still_stops() -> None:
    assert control.parse(b'{"run_id": "r", "stop": true}') == {"run_id": "r", "limit": None, "stop": True}
