"""InputRecord.header: the text of a header, None when it is absent or has no value."""

from __future__ import annotations

from shared.runtime.transport import InputRecord


def test_a_header_reads_as_text_and_one_without_a_value_as_absent() -> None:
    record = InputRecord("t", 0, 7, b"v", (("empty", None), ("from", b"teacher"), ("bad", b"\xff")))
    assert record.header("from") == "teacher"
    assert record.header("bad") == "\ufffd"
    assert record.header("empty") is None  # Kafka allows a header with a null value
    assert record.header("missing") is None
    assert record.source == ("t", 0, 7)
