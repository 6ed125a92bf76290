"""The one-pass feature check and encoding (`FeatureEncoder.checked_rows`) against the value-by-value
path it short-cuts: the same checked features and rows on every input the fast path takes, and the
same error, naming the same field, on every input it refuses."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from conftest import make_config
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.contracts import ClosedLoopConfig, InvalidRequestError
from closedloop.policy import FeatureEncoder

numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**20), 10**20)
odd_values = st.sampled_from([math.nan, math.inf, True, None, "7", 10**400, [1]])
topics = st.sampled_from(["a", "b", "c", "brand-new"])


@st.composite
def candidates(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 6))
    rows: list[dict[str, Any]] = [{"price": draw(numbers), "topic": draw(topics)} for _ in range(count)]
    if draw(st.booleans()):  # spoil one: a bad value, a missing feature, an undeclared one
        row = rows[draw(st.integers(0, count - 1))]
        spoil = draw(st.sampled_from(["value", "topic-value", "missing", "extra"]))
        if spoil == "value":
            row["price"] = draw(odd_values)
        elif spoil == "topic-value":
            row["topic"] = draw(odd_values)
        elif spoil == "missing":
            del row["price"]
        else:
            row["colour"] = "red"
    return rows


def _slow(encoder: FeatureEncoder, context: dict[str, Any], rows: list[dict[str, Any]]) -> Any:
    checked_context = encoder.check_context(context)
    checked = [encoder.check_candidate(c, i) for i, c in enumerate(rows)]
    return checked_context, checked, encoder.encode(checked_context, checked)


def _outcome(call: Any) -> Any:
    try:
        return "ok", call()
    except InvalidRequestError as exc:
        return "error", (exc.field, exc.message)


@settings(max_examples=400, deadline=None)
@given(rows=candidates(), hour=numbers)
def test_one_pass_checks_equal_the_value_by_value_checks(
    tmp_path_factory: Any, rows: list[dict[str, Any]], hour: float
) -> None:
    config: ClosedLoopConfig = make_config(tmp_path_factory.mktemp("features"))
    fast, slow = FeatureEncoder(config.use_cases["feed"]), FeatureEncoder(config.use_cases["feed"])
    context = {"country": "de", "hour": hour}
    fast_kind, fast_result = _outcome(lambda: fast.checked_rows(context, rows))
    slow_kind, slow_result = _outcome(lambda: _slow(slow, context, rows))
    assert fast_kind == slow_kind
    if fast_kind == "error":
        assert fast_result == slow_result
        return
    assert fast_result[0] == slow_result[0]
    assert fast_result[1] == slow_result[1]
    np.testing.assert_array_equal(fast_result[2], slow_result[2])
    assert fast.unknown_by_feature == slow.unknown_by_feature
