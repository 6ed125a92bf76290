"""The model the gate judges (`trainer._training.fit_to_judge`): with the trees left to early
stopping, it is the model the search stopped — the same trees as a model fitted on the rows the
search learned with the number it found — and it says how many rows it learned; with the trees
fixed, a model of every row."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
from conftest import make_config

from closedloop.contracts import UseCaseConfig
from closedloop.policy import FeatureEncoder
from closedloop.trainer import Dataset, lightgbm_params
from closedloop.trainer._training import VALIDATION_FRACTION, fit_to_judge, trees_by_early_stopping

ROWS = 4000


def _data(encoder: FeatureEncoder, rng: np.random.Generator) -> Dataset:
    price = rng.normal(size=ROWS)
    clicked = rng.random(ROWS) < 1 / (1 + np.exp(-2 * price))
    features = encoder.encode_logged_columns({"price": price}, ROWS)
    return Dataset(features, clicked.astype(float), np.arange(ROWS, dtype=float))


def _pick(tmp_path: Path) -> UseCaseConfig:
    return make_config(tmp_path).use_cases["pick"]


def test_the_judged_model_is_the_one_early_stopping_kept(tmp_path: Path) -> None:
    use_case = _pick(tmp_path)
    encoder = FeatureEncoder(use_case)
    data = _data(encoder, np.random.default_rng(0))
    params = lightgbm_params(use_case, use_case.outcomes["click"], seed=1)

    judged, learned = fit_to_judge(data, encoder, params, None, max_trees=400)

    earlier, _ = data.split_by_time(VALIDATION_FRACTION)
    assert learned == len(earlier) == ROWS - round(ROWS * VALIDATION_FRACTION)
    trees = trees_by_early_stopping(data, encoder, params, 400)
    assert judged.num_trees() == trees < 400  # cut to the best number, not the 30 after it
    direct = lgb.train(
        params,
        lgb.Dataset(earlier.features, earlier.labels, feature_name=list(encoder.feature_names)),
        num_boost_round=trees,
    )
    np.testing.assert_allclose(judged.predict(data.features), direct.predict(data.features), rtol=1e-9)


def test_fixed_trees_judge_a_model_of_every_row(tmp_path: Path) -> None:
    use_case = _pick(tmp_path)
    encoder = FeatureEncoder(use_case)
    data = _data(encoder, np.random.default_rng(2))
    params = lightgbm_params(use_case, use_case.outcomes["click"], seed=1)

    judged, learned = fit_to_judge(data, encoder, params, 25)

    assert (judged.num_trees(), learned) == (25, ROWS)
