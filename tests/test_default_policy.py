"""The default policy's values: 1 for its favourite down to 0 by rank, in the product's order or by a
candidate feature; each call's values its own (they are made from one shared row per count)."""

from __future__ import annotations

import numpy as np

from closedloop.contracts import UseCaseConfig, parse_config
from closedloop.policy import default_policy_values

CONFIG = """
use_cases:
  shop:
    decision: choose
    candidate:
      price: {type: numeric}
    outcomes:
      buy: {type: binary, window: 1h}
    policy:
      value: buy
      default: {order: %s}
"""


def _use_case(order: str) -> UseCaseConfig:
    return parse_config(CONFIG % order, environ={}).use_cases["shop"]


def test_values_go_from_one_to_zero_by_rank() -> None:
    as_given = _use_case("as_given")
    assert default_policy_values(as_given, [{"price": 3.0}] * 5).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert default_policy_values(as_given, [{"price": 3.0}]).tolist() == [1.0]
    by_price = _use_case("feature, feature: price, descending: false")
    prices = [{"price": p} for p in (3.0, 1.0, 2.0, 5.0, 1.0)]  # cheapest first, ties in given order
    assert default_policy_values(by_price, prices).tolist() == [0.25, 1.0, 0.5, 0.0, 0.75]


def test_each_call_gets_values_of_its_own() -> None:
    as_given = _use_case("as_given")
    first = default_policy_values(as_given, [{"price": 1.0}] * 4)
    first[:] = -1.0  # a caller scaling its values in place
    assert np.array_equal(default_policy_values(as_given, [{"price": 1.0}] * 4), np.linspace(1.0, 0.0, 4))
