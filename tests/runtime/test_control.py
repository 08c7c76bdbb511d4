"""Run-control records: what the producer and the coordinator write reads back; anything else on
the topic is skipped, never a crash (every service re-reads the topic whole at every start)."""

from __future__ import annotations

import pytest

from shared.kafka import control


def test_limit_and_stop_records_read_back() -> None:
    on = {"cache": True}
    assert control.parse(control.limit_record("r", 5)) == {"run_id": "r", "limit": 5, "stop": False} | on
    assert control.parse(control.stop_record("r", 5)) == {"run_id": "r", "limit": 5, "stop": True} | on


def test_no_cache_reads_back_and_is_never_turned_on_again() -> None:
    record = control.parse(control.register_record("r", None, cache=False))
    assert record == {"run_id": "r", "limit": None, "stop": False, "cache": False}
    assert control.parse(control.register_record("r", 3)) == {
        "run_id": "r",
        "limit": 3,
        "stop": False,
        "cache": True,
    }
    assert control.parse(b'{"run_id": "r", "cache": "no"}') == {
        "run_id": "r",
        "limit": None,
        "stop": False,
        "cache": True,  # only an explicit false turns it off
    }
    fold = control.ControlFold()
    assert fold.cache_enabled("r")
    fold.apply(record)
    fold.apply(control.parse(control.stop_record("r", 0)) or {})  # a later stop has no cache field
    assert not fold.cache_enabled("r") and fold.cache_enabled("other")


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
    assert control.parse(b'{"run_id": "r", "stop": true}') == {
        "run_id": "r",
        "limit": None,
        "stop": True,
        "cache": True,
    }
