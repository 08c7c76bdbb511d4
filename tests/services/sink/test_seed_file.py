"""The seed file a run was produced from travels in its registration on the control topic, for
the dataset card; a malformed one is ignored like any malformed control field."""

from __future__ import annotations

from shared.kafka import control

SEED_FILE = {"name": "seeds.jsonl", "sha256": "ab" * 32}


def test_the_registration_carries_the_seed_file() -> None:
    record = control.parse(control.register_record("r", None, seed_file=SEED_FILE))
    assert record == {"run_id": "r", "limit": None, "stop": False, "cache": True, "seed_file": SEED_FILE}
    # without one (a replay, the bench's producer), the record is as before
    plain = {"run_id": "r", "limit": 3, "stop": False, "cache": True}
    assert control.parse(control.register_record("r", 3)) == plain


def test_a_malformed_seed_file_is_left_out() -> None:
    for bad in (b'"x"', b'{"name": "a"}', b'{"name": 1, "sha256": "x"}'):
        value = b'{"run_id": "r", "limit": null, "seed_file": ' + bad + b"}"
        assert control.parse(value) == {"run_id": "r", "limit": None, "stop": False, "cache": True}


def test_the_view_keeps_the_seed_file_past_a_later_stop() -> None:
    view = control.ControlFold()
    for value in (control.register_record("r", 5, seed_file=SEED_FILE), control.stop_record("r", 5)):
        record = control.parse(value)
        assert record is not None
        view.apply(record)
    assert view.seed_files == {"r": SEED_FILE} and view.stopped == {"r"} and view.limits == {"r": 5}
