"""The report reads a feature's logged values as numbers a column at a time (`_coded`): the same
numbers, NaN for NaN, as the one-value rule (`_code`) gives each value — categories by their code
(-1 unknown), numbers as floats, number strings parsed, anything else NaN."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.evaluation._log_batches import DecisionReader

reader = DecisionReader(
    use_case="shop",
    experiment=None,
    phase=None,
    since=None,
    pre_from=None,
    phase_start=0.0,
    arm_codes={},
    breakdowns=[],
    context_names=[],
    categories={"country": {"us": 0, "de": 1, "1.0": 2, "None": 3, "True": 4}},
)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["us", "de", "1.5", " 2 ", "nan", "-inf", "1e400", "1_000", "0x10", "", "abc"]),
    st.text(max_size=6),
)


def _same(got: list[float], expected: list[float]) -> bool:
    return all((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got, expected, strict=True))


@settings(max_examples=400, deadline=None)
@given(column=st.lists(values, max_size=12), name=st.sampled_from(["country", "tenure"]))
def test_a_column_is_coded_as_each_value_is(column: list[object], name: str) -> None:
    expected = [reader._code(name, value) for value in column]
    got = reader._coded(name, column).tolist()
    assert len(got) == len(column)
    assert _same(got, expected), (column, got, expected)
