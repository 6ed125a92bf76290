"""The evaluator's id hashes: a batch hashed at once (`id_hashes`) gives each id the hash it gets
alone (`id_hash`), whatever the batch holds — random hex ids, other ids, ids of 32 characters
that are not hex, spaces included — since the two are joined against each other."""

from __future__ import annotations

import string

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.evaluation._hashing import id_hash, id_hashes

hex_ids = st.text(alphabet="0123456789abcdefABCDEF", min_size=32, max_size=32)
near_hex = st.text(alphabet="0123456789abcdef g-", min_size=32, max_size=32)
other = st.text(alphabet=string.printable, max_size=40)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(hex_ids | near_hex | other, max_size=30))
def test_a_batch_hashes_each_id_as_it_is_hashed_alone(ids: list[str]) -> None:
    batch = id_hashes(ids).tolist()
    assert batch == [id_hash(text) for text in ids]
    assert all(0 <= value < 2**63 for value in batch)


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(other, max_size=30))
def test_other_ids_get_pandas_siphash_halved(ids: list[str]) -> None:
    reference = pd.util.hash_array(np.array(ids, dtype=object)) >> np.uint64(1)
    assert id_hashes(ids).tolist() == reference.astype(np.int64).tolist()
