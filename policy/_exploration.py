"""From candidate values to a choice or ranking, with the probability of what was logged.

Every strategy states its action probabilities exactly, so the logged propensity is the true
probability of the logged action: that is what makes off-policy evaluation and unbiased learning
from the logs possible. For rankings, the propensity is that of the candidate placed first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from closedloop.contracts import EpsilonGreedy, Exploration, Greedy, Softmax, UseCaseConfig

from ._arms import ServingPolicy


@dataclass(frozen=True)
class Pick:
    """What the policy did: the chosen (or top-ranked) index, its propensity, the full order."""

    index: int
    propensity: float
    order: list[int]


def action_probabilities(values: np.ndarray, greedy: int, exploration: Exploration) -> np.ndarray:
    """Probability of choosing each candidate under the exploration strategy."""
    count = len(values)
    if isinstance(exploration, Softmax):
        scaled = (values - values.max()) / exploration.temperature
        weights = np.exp(scaled)
        return np.asarray(weights / weights.sum())
    probabilities = np.zeros(count)
    probabilities[greedy] = 1.0
    if isinstance(exploration, EpsilonGreedy):
        probabilities = probabilities * (1.0 - exploration.epsilon) + exploration.epsilon / count
    return probabilities


def choose(values: np.ndarray, greedy: int, exploration: Exploration, rng: np.random.Generator) -> Pick:
    probabilities = action_probabilities(values, greedy, exploration)
    if isinstance(exploration, Greedy) or len(values) == 1:
        index = greedy
    else:
        index = int(rng.choice(len(values), p=probabilities))
    return Pick(index, float(probabilities[index]), [index])


def rank(values: np.ndarray, exploration: Exploration, rng: np.random.Generator) -> Pick:
    """An order of all candidates; the top slot is distributed as ``choose`` would pick."""
    greedy_order = np.argsort(-values, kind="stable")
    greedy = int(greedy_order[0])
    probabilities = action_probabilities(values, greedy, exploration)
    if isinstance(exploration, Softmax):
        # Gumbel-max sampling of a Plackett-Luce ranking: its first item is softmax-distributed.
        keys = values / exploration.temperature + rng.gumbel(size=len(values))
        order = np.argsort(-keys, kind="stable")
    elif isinstance(exploration, EpsilonGreedy) and rng.random() < exploration.epsilon:
        order = rng.permutation(len(values))
    else:
        order = greedy_order
    top = int(order[0])
    return Pick(top, float(probabilities[top]), [int(i) for i in order])


def exploration_inputs(
    use_case: UseCaseConfig, values: np.ndarray, *, from_model: bool, threshold: float
) -> tuple[np.ndarray, int]:
    """The scores exploration works on and the greedy action's index.

    A binary decision by model explores on the margin of yes over no beyond the threshold; every
    other decision explores on the candidates' values and is greedy on the best of them.
    """
    if use_case.decision == "binary":
        if from_model:
            margin = float(values[1] - values[0]) - threshold
            return np.array([0.0, margin]), 1 if margin > 0 else 0
        return values, 1 if use_case.policy.default.action == "yes" else 0
    return values, int(np.argmax(values))


def pick_action(
    use_case: UseCaseConfig,
    policy: ServingPolicy,
    values: np.ndarray,
    *,
    from_model: bool,
    rng: np.random.Generator,
) -> Pick:
    """What ``policy`` does with the candidates' ``values``: a choice, a ranking or a yes/no."""
    if use_case.decision == "rank":
        return rank(values, policy.exploration, rng)
    scores, greedy = exploration_inputs(use_case, values, from_model=from_model, threshold=policy.threshold)
    return choose(scores, greedy, policy.exploration, rng)


def policy_probabilities(
    use_case: UseCaseConfig, policy: ServingPolicy, values: np.ndarray, *, from_model: bool
) -> np.ndarray:
    """The probability `pick_action` has of choosing (placing first) each candidate."""
    scores, greedy = exploration_inputs(use_case, values, from_model=from_model, threshold=policy.threshold)
    return action_probabilities(scores, greedy, policy.exploration)
