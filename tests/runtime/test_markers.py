from shared.runtime.markers import MarkerTracker


def test_partition_drains_once_all_upstream_partitions_reported() -> None:
    tracker = MarkerTracker()
    assert not tracker.observe("r", 0, source_partition=0, source_partitions=3)
    assert not tracker.observe("r", 0, source_partition=2, source_partitions=3)
    assert not tracker.observe("r", 0, source_partition=2, source_partitions=3)  # a replayed marker
    assert tracker.observe("r", 0, source_partition=1, source_partitions=3)
    # Reported exactly once, even when markers are replayed after a restart.
    assert not tracker.observe("r", 0, source_partition=1, source_partitions=3)
    assert tracker.drained_partitions("r") == {0}
    assert tracker.drained_partitions("other") == set()


def test_runs_are_kept_apart_and_state_survives_a_restart() -> None:
    tracker = MarkerTracker()
    tracker.observe("a", 1, 0, 2)
    tracker.observe("b", 1, 0, 1)
    restored = MarkerTracker()
    for run, partition in [("a", 1), ("b", 1)]:
        restored.restore(run, partition, tracker.entry(run, partition))
    assert restored.is_drained("b", 1)
    assert not restored.is_drained("a", 1)
    assert restored.observe("a", 1, 1, 2)
    assert MarkerTracker.parse_key(MarkerTracker.key("run|x", 3)) == ("run|x", 3)


def test_a_partition_reading_two_stages_drains_when_both_have_reported() -> None:
    tracker = MarkerTracker(inputs=2)
    assert not tracker.observe("r", 0, 0, 2, source="a")
    assert not tracker.observe("r", 0, 1, 2, source="a")  # a is complete, b has said nothing
    assert tracker.observe("r", 0, 0, 1, source="b")
    assert tracker.is_drained("r", 0)
    restored = MarkerTracker(inputs=2)
    restored.restore("r", 0, tracker.entry("r", 0))
    assert restored.is_drained("r", 0)


def test_entries_written_before_joins_still_restore() -> None:
    old = b'{"seen": [0, 1], "expected": 2}'
    tracker = MarkerTracker()
    tracker.restore("r", 3, old)
    assert tracker.is_drained("r", 3)
    with_none = MarkerTracker()
    with_none.restore("r", 3, b'{"seen": [0], "expected": null}')
    assert not with_none.is_drained("r", 3)
