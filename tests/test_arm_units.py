"""The report's timeline and exposure count an arm's units by numbers given once (`ArmUnits`):
the samples they take up to any time equal `unit_sample`'s of the same decisions, which sorts the
units anew each time — the same sums, counts and units, in the same order."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.evaluation._metrics import ArmUnits, unit_sample


def _logged(seed: int, decisions: int, units: int) -> Any:
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        unit=rng.integers(-(2**62), 2**62, size=units)[rng.integers(0, units, size=decisions)],
        arm=rng.integers(0, 3, size=decisions),
        time=rng.random(decisions) * 100.0,
        values=rng.poisson(0.3, size=decisions).astype(float),
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    decisions=st.integers(0, 400),
    units=st.integers(1, 50),
    cutoff=st.floats(-1.0, 101.0),
    per=st.sampled_from(["decision", "unit"]),
)
def test_samples_up_to_a_time_equal_unit_sample_of_the_same_decisions(
    seed: int, decisions: int, units: int, cutoff: float, per: str
) -> None:
    data = _logged(seed, decisions, units)
    for arm in range(3):
        numbered = ArmUnits.of(data, arm)
        upto = numbered.decisions_until(cutoff)
        mask = (data.arm == arm) & (data.time <= cutoff)
        expected, unique = unit_sample(data.unit[mask], data.values[mask], per)
        got = numbered.sample(data.values, per, upto)
        assert got.sums.tolist() == expected.sums.tolist()
        assert (got.counts is None) == (expected.counts is None)
        if expected.counts is not None and got.counts is not None:
            assert got.counts.tolist() == expected.counts.tolist()
        assert numbered.units_among(upto) == len(unique) == got.units
        assert int(np.count_nonzero(upto)) == int(mask.sum())
