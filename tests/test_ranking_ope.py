"""The rankings' off-policy estimator against a simulator with a known position-biased truth: a
click in slot k happens with probability examination(k) * relevance(candidate), and the value of
a ranking policy is its expected clicks over the shown slots. The cascade IPS must be unbiased,
its 95% interval must cover the truth about 95% of the time, and it must equal obp's
``SlateRewardInteractionIPS`` on the same data."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.evaluation import cascade_weights, ranking_estimates

CANDIDATES, SLOTS = 6, 3
EXAMINATION = np.array([1.0, 0.55, 0.3])


def _relevance(rng: np.random.Generator, n: int) -> np.ndarray:
    return 1 / (1 + np.exp(-rng.normal(-0.5, 1.2, size=(n, CANDIDATES))))


def _sample_slots(
    scores: np.ndarray, temperature: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rankings drawn slot by slot from a softmax over the candidates not placed yet: the shown
    candidates (n x SLOTS) and each one's probability given the slots above."""
    n = len(scores)
    placed = np.zeros((n, CANDIDATES), dtype=bool)
    shown = np.zeros((n, SLOTS), dtype=int)
    propensity = np.zeros((n, SLOTS))
    for k in range(SLOTS):
        p = _next_slot(scores, placed, temperature)
        pick = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
        shown[:, k] = pick
        propensity[:, k] = p[np.arange(n), pick]
        placed[np.arange(n), pick] = True
    return shown, propensity


def _next_slot(scores: np.ndarray, placed: np.ndarray, temperature: float) -> np.ndarray:
    weights = np.where(placed, 0.0, np.exp((scores - scores.max(axis=1, keepdims=True)) / temperature))
    return weights / weights.sum(axis=1, keepdims=True)


def _target_probabilities(scores: np.ndarray, shown: np.ndarray, temperature: float) -> np.ndarray:
    """The target's probability of each logged slot's candidate, given the logged slots above."""
    n = len(scores)
    placed = np.zeros((n, CANDIDATES), dtype=bool)
    result = np.zeros((n, SLOTS))
    for k in range(SLOTS):
        result[:, k] = _next_slot(scores, placed, temperature)[np.arange(n), shown[:, k]]
        placed[np.arange(n), shown[:, k]] = True
    return result


def _logged_sample(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    relevance = _relevance(rng, n)
    logging_scores = relevance + rng.normal(0, 0.3, size=relevance.shape)  # a noisy model of it
    shown, propensity = _sample_slots(logging_scores, 0.25, rng)
    clicked_probability = EXAMINATION * np.take_along_axis(relevance, shown, axis=1)
    clicks = (rng.random((n, SLOTS)) < clicked_probability).astype(float)
    target = _target_probabilities(relevance, shown, 0.1)  # the target knows the relevance
    return {
        "relevance": relevance,
        "shown": shown,
        "propensity": propensity,
        "clicks": clicks,
        "target": target,
    }


def _true_value(rng: np.random.Generator, n: int = 400_000) -> float:
    relevance = _relevance(rng, n)
    shown, _ = _sample_slots(relevance, 0.1, rng)
    return float((EXAMINATION * np.take_along_axis(relevance, shown, axis=1)).sum(axis=1).mean())


def test_the_cascade_estimate_is_unbiased_and_its_interval_covers_a_position_biased_truth() -> None:
    truth = _true_value(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    estimates, covered, covered_sn = [], 0, 0
    replicates = 300
    for _ in range(replicates):  # products of three ratios are heavy-tailed: the normal interval
        data = _logged_sample(rng, 5000)  # needs a few hundred effective rankings to cover well
        shown = np.ones((5000, SLOTS), dtype=bool)
        result = ranking_estimates(data["clicks"], data["propensity"], data["target"], shown)
        estimates.append(result.ips.estimate)
        covered += result.ips.low <= truth <= result.ips.high
        covered_sn += result.snips.low <= truth <= result.snips.high
    estimates_array = np.array(estimates)
    standard_error = estimates_array.std(ddof=1) / np.sqrt(replicates)
    assert abs(estimates_array.mean() - truth) < 3 * standard_error
    assert 0.92 <= covered / replicates <= 0.98
    assert 0.92 <= covered_sn / replicates <= 0.98
    # and the logging policy's own value is clearly lower: the estimate is not just the logged mean
    logged_mean = data["clicks"].sum(axis=1).mean()
    assert truth - logged_mean > 4 * standard_error


def test_the_estimate_is_obps_reward_interaction_ips_on_the_same_data() -> None:
    from obp.ope import SlateRewardInteractionIPS

    data = _logged_sample(np.random.default_rng(5), 2000)
    n = len(data["clicks"])
    shown = np.ones((n, SLOTS), dtype=bool)
    ours = ranking_estimates(data["clicks"], data["propensity"], data["target"], shown)
    estimator = SlateRewardInteractionIPS(len_list=SLOTS)
    theirs = estimator.estimate_policy_value(
        slate_id=np.repeat(np.arange(n), SLOTS),
        reward=data["clicks"].ravel(),
        position=np.tile(np.arange(SLOTS), n),
        pscore_cascade=np.cumprod(data["propensity"], axis=1).ravel(),
        evaluation_policy_pscore_cascade=np.cumprod(data["target"], axis=1).ravel(),
    )
    assert ours.ips.estimate == pytest.approx(theirs, rel=1e-9)
    weights = cascade_weights(data["propensity"], data["target"], shown)
    assert weights[:, -1] == pytest.approx(np.prod(data["target"] / data["propensity"], axis=1))


def test_slots_not_shown_carry_no_weight() -> None:
    logged = np.array([[0.5, 0.5, 0.5], [0.5, 0.25, 0.5]])
    target = np.array([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5]])
    shown = np.array([[True, True, False], [True, True, True]])
    weights = cascade_weights(logged, target, shown)
    assert weights.tolist() == [[2.0, 4.0, 0.0], [1.0, 2.0, 2.0]]
    reward = np.array([[1.0, 1.0, 9.0], [0.0, 1.0, 1.0]])
    assert ranking_estimates(reward, logged, target, shown).ips.estimate == pytest.approx((6.0 + 4.0) / 2)
