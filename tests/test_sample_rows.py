"""The off-policy sample: kept in one pass as the first copies of the smallest hashes (`HashSample`);
estimators find each sampled decision's row by one pass over the decision column
(`rows_of`): the row is the first with that hash, -1 where there is none, whatever repeats
in either, over any chunking of the column."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.evaluation._hash_sample import HashSample
from closedloop.evaluation._logged import _SortedIds, rows_of

hashes = st.lists(st.integers(-5, 5) | st.integers(-(2**63), 2**63 - 1), max_size=30)


@settings(max_examples=400, deadline=None)
@given(wanted=hashes, column=hashes, chunk=st.integers(1, 8))
def test_each_hash_gets_its_first_row_or_minus_one(wanted: list[int], column: list[int], chunk: int) -> None:
    expected = [column.index(h) if h in column else -1 for h in wanted]
    got = rows_of(np.array(wanted, dtype=np.int64), np.array(column, dtype=np.int64), chunk=chunk)
    assert got.tolist() == expected


@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(0, 40), max_size=12), max_size=8),
    size=st.integers(0, 10),
)
def test_the_sample_is_the_first_copies_of_the_smallest_hashes(batches: list[list[int]], size: int) -> None:
    sample = HashSample(size)
    seen: dict[int, bytes] = {}
    for number, batch in enumerate(batches):
        records = [f"{number}.{i}".encode() for i in range(len(batch) * 2)]
        which = np.arange(len(batch)) * 2 + 1  # every other record is a decision of the batch
        sample.offer(np.array(batch, dtype=np.int64), records, which)
        for i, value in enumerate(batch):
            seen.setdefault(value, records[which[i]])
    smallest = sorted(seen)[:size]
    assert sorted(zip(sample.hashes().tolist(), sample.records(), strict=True)) == [
        (value, seen[value]) for value in smallest
    ]


@settings(max_examples=300, deadline=None)
@given(column=hashes, wanted=hashes, chunk=st.integers(1, 8))
def test_the_join_s_lookups_equal_a_scan(column: list[int], wanted: list[int], chunk: int) -> None:
    ids = _SortedIds(np.array(column, dtype=np.int64))
    looked_up = np.array(wanted, dtype=np.int64)
    assert ids.first_row(looked_up).tolist() == [column.index(h) if h in column else -1 for h in wanted]
    assert ids.among(looked_up, chunk=chunk).tolist() == [h in wanted for h in column]
