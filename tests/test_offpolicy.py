"""Off-policy estimators against the truth of a simulated bandit, and against an independent,
row-by-row implementation of the textbook formulas on the same data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.evaluation import off_policy_estimates

ACTIONS = 4


def mean_reward(x: np.ndarray, action: np.ndarray) -> np.ndarray:
    return 0.1 + 0.6 * x * action / (ACTIONS - 1)


def logging_policy(x: np.ndarray) -> np.ndarray:
    """Epsilon-greedy (0.3) on action 0."""
    p = np.full((len(x), ACTIONS), 0.3 / ACTIONS)
    p[:, 0] += 0.7
    return p


def target_policy(x: np.ndarray) -> np.ndarray:
    """Softmax that prefers high actions more strongly as x grows."""
    logits = 3 * x[:, None] * np.arange(ACTIONS)[None, :]
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(weights / weights.sum(axis=1, keepdims=True))


def true_value() -> float:
    x = (np.arange(200_000) + 0.5) / 200_000
    target = target_policy(x)
    rewards = np.stack([mean_reward(x, np.full(len(x), a)) for a in range(ACTIONS)], axis=1)
    return float((target * rewards).sum(axis=1).mean())


def simulate(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    x = rng.random(n)
    logging = logging_policy(x)
    action = (rng.random(n)[:, None] > logging.cumsum(axis=1)).sum(axis=1)
    reward = (rng.random(n) < mean_reward(x, action)).astype(float)
    target = target_policy(x)
    # A deliberately wrong reward model (ignores x): the direct method is biased, DR is not.
    model = np.tile(0.1 + 0.3 * np.arange(ACTIONS) / (ACTIONS - 1), (n, 1))
    rows = np.arange(n)
    return {
        "reward": reward,
        "propensity": logging[rows, action],
        "target_probability": target[rows, action],
        "model_of_logged": model[rows, action],
        "model_under_target": (target * model).sum(axis=1),
    }


@pytest.mark.slow
def test_doubly_robust_is_unbiased_and_covers_the_truth() -> None:
    truth = true_value()
    rng = np.random.default_rng(0)
    runs = 400
    dr, covered, ips_covered, direct = [], 0, 0, []
    for _ in range(runs):
        result = off_policy_estimates(**simulate(rng, 3000))
        dr.append(result.doubly_robust.estimate)
        direct.append(result.direct.estimate)
        covered += result.doubly_robust.low <= truth <= result.doubly_robust.high
        ips_covered += result.ips.low <= truth <= result.ips.high
    monte_carlo_error = float(np.std(dr)) / math.sqrt(runs)
    assert abs(np.mean(dr) - truth) < 4 * monte_carlo_error
    assert abs(np.mean(dr) - truth) < 0.02 * truth
    assert 0.92 <= covered / runs <= 0.98
    assert 0.92 <= ips_covered / runs <= 0.98
    assert abs(np.mean(direct) - truth) > 0.02  # the wrong model really is wrong


def reference_estimates(data: dict[str, np.ndarray]) -> dict[str, float]:
    """IPS, SNIPS, DM, DR and ESS written row by row from Dudik et al. (2011), no numpy algebra."""
    n = len(data["reward"])
    ips_sum = weight_sum = weight_square_sum = dm_sum = dr_sum = 0.0
    for i in range(n):
        w = float(data["target_probability"][i]) / float(data["propensity"][i])
        r = float(data["reward"][i])
        ips_sum += w * r
        weight_sum += w
        weight_square_sum += w * w
        dm_sum += float(data["model_under_target"][i])
        dr_sum += float(data["model_under_target"][i]) + w * (r - float(data["model_of_logged"][i]))
    return {
        "ips": ips_sum / n,
        "snips": ips_sum / weight_sum,
        "direct": dm_sum / n,
        "doubly_robust": dr_sum / n,
        "ess": weight_sum**2 / weight_square_sum,
    }


def test_estimates_equal_an_independent_implementation() -> None:
    data = simulate(np.random.default_rng(1), 5000)
    ours = off_policy_estimates(**data)
    reference = reference_estimates(data)
    for name in ("ips", "snips", "direct", "doubly_robust"):
        assert getattr(ours, name).estimate == pytest.approx(reference[name], rel=1e-12, abs=1e-15)
    assert ours.effective_sample_size == pytest.approx(reference["ess"], rel=1e-12)
    assert ours.decisions == 5000


def test_on_policy_the_weights_are_one_and_ips_is_the_logged_mean() -> None:
    data = simulate(np.random.default_rng(2), 1000)
    data["target_probability"] = data["propensity"]
    result = off_policy_estimates(**data)
    assert result.ips.estimate == pytest.approx(float(np.mean(data["reward"])))
    assert result.effective_sample_size == pytest.approx(1000)
    assert not math.isnan(result.snips.low)
