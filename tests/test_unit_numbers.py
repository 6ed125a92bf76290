"""The report numbers every decision's unit once (`UnitNumbers`) and takes every per-unit sample
from the numbers: what it computes equals the direct computation on the same decisions — the
units sorted anew (`np.unique`) for sums, counts, covariates and distinct units, and a sort by
unit and time for each unit's earliest decision."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.evaluation._metrics import UnitNumbers


def _logged(seed: int, decisions: int, units: int) -> Any:
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        unit=rng.integers(-(2**62), 2**62, size=units)[rng.integers(0, units, size=decisions)],
        arm=rng.integers(0, 3, size=decisions),
        time=rng.integers(0, 20, size=decisions).astype(float),  # ties: the first logged counts
        values=rng.poisson(0.3, size=decisions).astype(float),
    )


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    decisions=st.integers(0, 300),
    units=st.integers(1, 40),
    cutoff=st.floats(-1.0, 21.0),
    per=st.sampled_from(["decision", "unit"]),
)
def test_samples_equal_the_units_sorted_anew(
    seed: int, decisions: int, units: int, cutoff: float, per: str
) -> None:
    data = _logged(seed, decisions, units)
    numbers = UnitNumbers.of(data)
    covariates = {int(u): float(i) for i, u in enumerate(np.unique(data.unit)[::2])}
    for arm in range(3):
        mask = (data.arm == arm) & (data.time <= cutoff)
        unique, inverse = np.unique(data.unit[mask], return_inverse=True)
        got = numbers.sample(data.values, per, mask, covariates=covariates)
        assert (
            got.sums.tolist()
            == np.bincount(inverse, weights=data.values[mask], minlength=len(unique)).tolist()
        )
        expected_counts = np.bincount(inverse, minlength=len(unique)).astype(float).tolist()
        assert (got.counts.tolist() if got.counts is not None else None) == (
            expected_counts if per == "decision" else None
        )
        assert got.covariate is not None
        assert got.covariate.tolist() == [covariates.get(int(u), 0.0) for u in unique]
        assert numbers.count(mask) == len(unique) == got.units


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), decisions=st.integers(1, 300), units=st.integers(1, 40))
def test_each_unit_s_earliest_decision_is_the_first_of_a_sort_by_unit_and_time(
    seed: int, decisions: int, units: int
) -> None:
    data = _logged(seed, decisions, units)
    numbers = UnitNumbers.of(data)
    order = np.lexsort((data.time, data.unit))
    sorted_units = data.unit[order]
    expected = order[np.r_[True, sorted_units[1:] != sorted_units[:-1]]]
    assert numbers.earliest_decisions(data.time).tolist() == expected.tolist()


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    decisions=st.integers(0, 300),
    units=st.integers(1, 40),
    cutoffs=st.lists(st.integers(-1, 21), min_size=1, max_size=6, unique=True).map(sorted),
    per=st.sampled_from(["decision", "unit"]),
)
def test_samples_through_cutoffs_equal_a_sample_taken_anew_at_each(
    seed: int, decisions: int, units: int, cutoffs: list[int], per: str
) -> None:
    data = _logged(seed, decisions, units)  # times on whole numbers: cutoffs fall on ties
    numbers = UnitNumbers.of(data)
    for arm in range(3):
        grown = numbers.samples_through(
            data.values, per, data.arm == arm, data.time, np.array(cutoffs, dtype=float)
        )
        for cutoff, (count, got) in zip(cutoffs, grown, strict=True):
            mask = (data.arm == arm) & (data.time <= cutoff)
            anew = numbers.sample(data.values, per, mask)
            assert count == np.count_nonzero(mask)
            np.testing.assert_allclose(got.sums, anew.sums, rtol=1e-12)
            assert (got.counts.tolist() if got.counts is not None else None) == (
                anew.counts.tolist() if anew.counts is not None else None
            )
