"""Seeds are partitioned by content, so every copy of a seed travels one partition in file order."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from shared.kafka.run_producer import content_partition

rows = st.dictionaries(st.sampled_from(["task_id", "instruction", "gold_sql"]), st.text(max_size=20))


@given(row=rows, a=st.integers(0, 10**6), b=st.integers(0, 10**6), partitions=st.integers(1, 64))
def test_copies_share_a_partition_whatever_their_position(
    row: dict[str, str], a: int, b: int, partitions: int
) -> None:
    first = content_partition({"source_index": a, **row}, partitions)
    assert first == content_partition({**row, "source_index": b}, partitions)
    assert 0 <= first < partitions


def test_distinct_rows_spread_over_the_partitions() -> None:
    spread = Counter(content_partition({"source_index": 0, "text": f"row {i}"}, 4) for i in range(4000))
    assert set(spread) == {0, 1, 2, 3}
    assert min(spread.values()) > 800
