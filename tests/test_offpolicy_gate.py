"""The trainer's off-policy promotion check on logged decisions of a world with a known best policy."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
from test_evaluation_experiment import T0, offer_config, quality_model, run_experiment

from closedloop.registry import LocalModelRegistry
from closedloop.trainer._offpolicy_gate import off_policy_check


def anti_quality_model() -> lgb.Booster:
    """A model that prefers low quality: worse in segment a, where 70% of units are."""
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.integers(0, 2, 4000), rng.random(4000)])
    y = (rng.random(4000) < 0.4 - 0.3 * x[:, 1]).astype(float)
    data = lgb.Dataset(x, y, feature_name=["segment", "quality"])
    return lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 7}, data, num_boost_round=30)


def test_a_model_whose_policy_is_worth_less_is_refused_and_an_equal_one_passes(tmp_path: Path) -> None:
    config = offer_config(tmp_path)
    run_experiment(config, units=3000, decisions_per_unit=2)  # publishes the quality model as champion
    registry = LocalModelRegistry(config.infrastructure.data_path / "registry")
    as_of = (T0 + timedelta(days=2)).timestamp()

    refused, measured = off_policy_check(
        config, registry, "offer", "buy", anti_quality_model(), since=T0.timestamp(), as_of=as_of
    )
    assert refused is not None
    assert not refused.passed
    assert "doubly robust policy value" in refused.summary
    # Truth: the champion's policy buys 0.7 * 0.24 + 0.3 * 0.16 = 21.6%, the anti-quality one
    # (choosing expected quality 0.3) 0.7 * 0.16 + 0.3 * 0.24 = 18.4%.
    assert measured["champion_dr"] > measured["challenger_dr"] + 0.01
    assert abs(measured["champion_dr"] - 0.216) < 0.02
    assert abs(measured["challenger_dr"] - 0.184) < 0.02

    same = lgb.Booster(model_str=quality_model())
    passed, measured = off_policy_check(
        config, registry, "offer", "buy", same, since=T0.timestamp(), as_of=as_of
    )
    assert passed is None
    assert measured["challenger_dr"] == measured["champion_dr"]


def test_too_few_logged_decisions_leave_the_check_unjudged(tmp_path: Path) -> None:
    config = offer_config(tmp_path)
    registry = LocalModelRegistry(config.infrastructure.data_path / "registry")
    decision, measured = off_policy_check(
        config, registry, "offer", "buy", anti_quality_model(), since=0.0, as_of=T0.timestamp()
    )
    assert decision is None
    assert measured["judged"] is False
