"""The translation between a tuning: block and Ax, and back to serving arms (no Ax calls here)."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.contracts import TuningError, parse_config
from closedloop.simulator import tuning_config
from closedloop.tuner import TuningSpace


def space_of(tuning: str) -> TuningSpace:
    config = parse_config(
        f"""
use_cases:
  feed:
    decision: choose
    candidate: {{quality: {{type: numeric}}}}
    outcomes:
      click: {{type: binary, window: 1h}}
      purchase: {{type: binary, window: 1h}}
    policy: {{value: click, exploration: {{strategy: epsilon_greedy, epsilon: 0.1}}}}
    tuning: {tuning}
""",
        environ={},
    )
    return TuningSpace.of("feed", config.use_cases["feed"], online=False)


def test_objectives_and_constraints_read_as_ax_expects() -> None:
    space = TuningSpace.of("offer", tuning_config().use_cases["offer"], online=True)
    assert space.ax_objective() == "purchase"
    assert space.ax_constraints() == ["click_vs_status_quo >= 0.9"]
    weighted = space_of(
        "{parameters: {exploration.epsilon: {low: 0.01, high: 0.2}}, "
        "objective: {weights: {click: 1, purchase: 3}, minimize: true}, constraints: ['purchase <= 0.5']}"
    )
    assert weighted.ax_objective() == "-1.0*click + -3.0*purchase"
    assert weighted.ax_constraints() == ["purchase <= 0.5"]
    pareto = space_of(
        "{parameters: {exploration.epsilon: {low: 0.01, high: 0.2}}, objective: {pareto: [click, purchase]}}"
    )
    assert pareto.ax_objective() == "click, purchase"
    assert pareto.pareto


def test_a_parameterization_becomes_the_arm_that_serves_it() -> None:
    space = TuningSpace.of("offer", tuning_config().use_cases["offer"], online=True)
    arm = space.arm({"value.purchase_weight": 2.5, "exploration.epsilon": 0.03}, share=0.25)
    assert arm.value == "click + 2.5 * purchase"
    assert arm.epsilon == 0.03
    assert arm.share == 0.25
    assert not arm.control
    assert arm.threshold is None
    assert arm.temperature is None


def test_model_parameters_are_refused_online_with_the_field_named() -> None:
    config = parse_config(
        """
use_cases:
  feed:
    decision: choose
    candidate: {quality: {type: numeric}}
    outcomes: {click: {type: binary, window: 1h}}
    policy: {value: click}
    tuning:
      parameters: {model.num_leaves: {type: int, low: 4, high: 64}}
      objective: {metric: click}
""",
        environ={},
    )
    with pytest.raises(TuningError) as raised:
        TuningSpace.of("feed", config.use_cases["feed"], online=True)
    assert raised.value.field == "use_cases.feed.tuning.parameters"
    assert "offline" in str(raised.value)
    assert TuningSpace.of("feed", config.use_cases["feed"], online=False).model_overrides(
        {"model.num_leaves": 8}
    ) == {"num_leaves": 8}


def test_the_ratio_to_the_status_quo_has_the_delta_method_standard_error() -> None:
    """Against simulation: the spread of a ratio of two independent noisy means."""
    space = TuningSpace.of("offer", tuning_config().use_cases["offer"], online=True)
    arm, baseline = {"click": (0.27, 0.006)}, {"click": (0.30, 0.005)}
    ratio, se = space.with_relative(arm, baseline)["click_vs_status_quo"]
    rng = np.random.default_rng(0)
    draws = rng.normal(0.27, 0.006, 200_000) / rng.normal(0.30, 0.005, 200_000)
    assert ratio == pytest.approx(0.9)
    assert se == pytest.approx(float(draws.std()), rel=0.03)


def test_violations_follow_the_constraint_direction() -> None:
    space = TuningSpace.of("offer", tuning_config().use_cases["offer"], online=True)
    assert space.violations({"click_vs_status_quo": (0.89, 0.01)}) == ["click >= 0.9 * baseline"]
    assert space.violations({"click_vs_status_quo": (0.91, 0.01)}) == []
    absolute = space_of(
        "{parameters: {exploration.epsilon: {low: 0.01, high: 0.2}}, objective: {metric: click}, "
        "constraints: ['purchase <= 0.1']}"
    )
    assert absolute.violations({"purchase": (0.2, 0.0)}) == ["purchase <= 0.1"]


def test_an_unknown_use_case_without_tuning_is_a_clear_error() -> None:
    config = tuning_config()
    plain = config.use_cases["offer"].model_copy(update={"tuning": None})
    with pytest.raises(TuningError, match="no tuning: block"):
        TuningSpace.of("offer", plain, online=True)
