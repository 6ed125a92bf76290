"""Off-policy estimators find each sampled decision's row by one pass over the decision column
(`rows_of`): the row is the first with that hash, -1 where there is none, whatever repeats
in either, over any chunking of the column."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.evaluation._logged import rows_of

hashes = st.lists(st.integers(-5, 5) | st.integers(-(2**63), 2**63 - 1), max_size=30)


@settings(max_examples=400, deadline=None)
@given(wanted=hashes, column=hashes, chunk=st.integers(1, 8))
def test_each_hash_gets_its_first_row_or_minus_one(wanted: list[int], column: list[int], chunk: int) -> None:
    expected = [column.index(h) if h in column else -1 for h in wanted]
    got = rows_of(np.array(wanted, dtype=np.int64), np.array(column, dtype=np.int64), chunk=chunk)
    assert got.tolist() == expected
