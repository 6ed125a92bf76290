"""From candidate values to a choice or ranking, with the probability of what was logged.

Every strategy states its action probabilities exactly, so the logged propensity is the true
probability of the logged action: that is what makes off-policy evaluation and unbiased learning
from the logs possible. For rankings, the propensity is that of the candidate placed first.

Gaps between values are measured in units of the value function's spread (`Experience`), so that
a softmax temperature or SquareCB's gamma means the same for ``click`` and for revenue in cents.
The default policy's values are ranks in [0, 1] already.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from closedloop.contracts import EpsilonGreedy, Exploration, Softmax, SquareCB, UseCaseConfig

from ._arms import ServingPolicy
from ._experience import Experience

NO_EXPERIENCE = Experience()


@dataclass(frozen=True)
class Pick:
    """What the policy did: the chosen (or top-ranked) index, its propensity, the full order, and
    the probability every candidate had of being chosen (placed first)."""

    index: int
    propensity: float
    order: list[int]
    probabilities: np.ndarray
    slot_propensities: list[float] | None = None
    """Rankings with ``slots``: each shown slot's probability of its candidate, given the slots
    above it (their product is the probability of the shown prefix)."""
    unit: float = 1.0
    """The unit value gaps were measured in (softmax, SquareCB)."""
    gamma: float = 0.0
    """SquareCB's gamma."""


def squarecb_gamma(exploration: SquareCB, experience: Experience) -> float:
    """VW's schedule: ``gamma_scale * n ** gamma_exponent``, n counted from 1 before any model."""
    return float(exploration.gamma_scale * max(1, experience.examples) ** exploration.gamma_exponent)


def action_probabilities(
    values: np.ndarray, greedy: int, exploration: Exploration, *, unit: float = 1.0, gamma: float = 0.0
) -> np.ndarray:
    """Probability of choosing each candidate; ``unit``: what a value gap is measured in."""
    count = len(values)
    if isinstance(exploration, Softmax):
        scaled = (values - values.max()) / (exploration.temperature * unit)
        weights = np.exp(scaled)
        return np.asarray(weights / weights.sum())
    if isinstance(exploration, SquareCB):
        gaps = np.maximum(values[greedy] - values, 0.0) / unit
        probabilities = 1.0 / (count + gamma * gaps)
        probabilities[greedy] = 0.0
        probabilities[greedy] = 1.0 - probabilities.sum()
        return np.asarray(probabilities)
    if isinstance(exploration, EpsilonGreedy):
        share = exploration.epsilon / count
        probabilities = np.full(count, share)
        probabilities[greedy] = (1.0 - exploration.epsilon) + share
        return probabilities
    probabilities = np.zeros(count)
    probabilities[greedy] = 1.0
    return probabilities


def choose(values: np.ndarray, greedy: int, probabilities: np.ndarray, rng: np.random.Generator) -> Pick:
    if probabilities[greedy] >= 1.0 or len(values) == 1:
        index = greedy
    else:
        index = int(rng.choice(len(values), p=probabilities))
    return Pick(index, float(probabilities[index]), [index], probabilities)


def rank(
    values: np.ndarray,
    exploration: Exploration,
    probabilities: np.ndarray,
    rng: np.random.Generator,
    unit: float,
    greedy_order: np.ndarray,
) -> Pick:
    """An order of all candidates; the top slot is distributed as ``choose`` would pick.
    ``greedy_order``: the candidates by value, best first, ties in their order."""
    if isinstance(exploration, Softmax):
        # Gumbel-max sampling of a Plackett-Luce ranking: its first item is softmax-distributed.
        keys = values / (exploration.temperature * unit) + rng.gumbel(size=len(values))
        order = np.argsort(-keys, kind="stable")
    elif isinstance(exploration, EpsilonGreedy) and rng.random() < exploration.epsilon:
        order = rng.permutation(len(values))
    elif isinstance(exploration, SquareCB) and len(values) > 1:
        top = int(rng.choice(len(values), p=probabilities))  # the rest keep the greedy order
        order = np.concatenate([[top], greedy_order[greedy_order != top]])
    else:
        order = greedy_order
    top = int(order[0])
    return Pick(top, float(probabilities[top]), order.tolist(), probabilities)


def rank_slots(
    values: np.ndarray,
    exploration: Exploration,
    slots: int,
    rng: np.random.Generator,
    *,
    unit: float,
    gamma: float,
) -> Pick:
    """A ranking whose first ``slots`` are drawn in turn, each from the strategy's distribution
    over the candidates not placed yet (VW's CCB does the same): every shown slot's propensity is
    exact and costs one distribution. The unshown rest follows in the greedy order."""
    remaining = list(np.argsort(-values, kind="stable"))
    order: list[int] = []
    propensities: list[float] = []
    first: np.ndarray | None = None
    for _ in range(min(slots, len(values))):
        sub = values[remaining]
        greedy = int(np.argmax(sub))
        p = action_probabilities(sub, greedy, exploration, unit=unit, gamma=gamma)  # as `_next_slot`
        if first is None:
            first = np.zeros(len(values))
            first[remaining] = p
        if p[greedy] >= 1.0 or len(sub) == 1:
            pick = greedy
        else:  # one uniform draw: cheaper than rng.choice for a few candidates
            pick = min(int(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right")), len(p) - 1)
        propensities.append(float(p[pick]))
        order.append(int(remaining.pop(pick)))
    order.extend(int(i) for i in remaining)
    assert first is not None
    return Pick(order[0], propensities[0], order, first, propensities)


def _next_slot(
    values: np.ndarray, remaining: list[int], exploration: Exploration, *, unit: float, gamma: float
) -> np.ndarray:
    """The distribution of the next slot over the candidates not placed yet (``remaining``, in
    the greedy order)."""
    sub = values[remaining]
    return action_probabilities(sub, int(np.argmax(sub)), exploration, unit=unit, gamma=gamma)


def slot_probabilities(
    policy: ServingPolicy,
    values: np.ndarray,
    shown: Sequence[int],
    *,
    from_model: bool,
    experience: Experience = NO_EXPERIENCE,
) -> np.ndarray:
    """The probability a ranking decided with slots (`rank_slots`) has of placing each of the
    candidates ``shown`` in its slot, given the ones above it: what a ranking's off-policy
    estimate reweights each logged slot by."""
    unit, gamma = _scales(policy, experience, from_model=from_model)
    remaining = list(np.argsort(-values, kind="stable"))
    result = np.empty(len(shown))
    for slot, candidate in enumerate(shown):
        position = remaining.index(candidate)
        result[slot] = _next_slot(values, remaining, policy.exploration, unit=unit, gamma=gamma)[position]
        remaining.pop(position)
    return result


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


def _scales(policy: ServingPolicy, experience: Experience, *, from_model: bool) -> tuple[float, float]:
    """The unit of a value gap and SquareCB's gamma for this decision (neither matters to
    epsilon-greedy or greedy, which skip computing them). The default policy's values are ranks
    in [0, 1], and it has learned nothing."""
    exploration = policy.exploration
    if not isinstance(exploration, (Softmax, SquareCB)):
        return 1.0, 0.0
    if not from_model:
        experience = NO_EXPERIENCE
    unit = experience.value_scale(policy.value) if from_model else 1.0
    gamma = squarecb_gamma(exploration, experience) if isinstance(exploration, SquareCB) else 0.0
    return unit, gamma


def pick_action(
    use_case: UseCaseConfig,
    policy: ServingPolicy,
    values: np.ndarray,
    *,
    from_model: bool,
    rng: np.random.Generator,
    experience: Experience = NO_EXPERIENCE,
    slots: int | None = None,
) -> Pick:
    """What ``policy`` does with the candidates' ``values``: a choice, a ranking or a yes/no.
    ``slots``: for rankings, how many are shown (each is explored and its propensity logged)."""
    unit, gamma = _scales(policy, experience, from_model=from_model)
    if use_case.decision == "rank" and slots is not None:
        pick = rank_slots(values, policy.exploration, slots, rng, unit=unit, gamma=gamma)
    elif use_case.decision == "rank":
        greedy_order = np.argsort(-values, kind="stable")
        greedy = int(greedy_order[0])  # the first of equal best values, as np.argmax
        probabilities = action_probabilities(values, greedy, policy.exploration, unit=unit, gamma=gamma)
        pick = rank(values, policy.exploration, probabilities, rng, unit, greedy_order)
    else:
        scores, greedy = exploration_inputs(
            use_case, values, from_model=from_model, threshold=policy.threshold
        )
        probabilities = action_probabilities(scores, greedy, policy.exploration, unit=unit, gamma=gamma)
        pick = choose(scores, greedy, probabilities, rng)
    if unit == 1.0 and gamma == 0.0:  # the defaults: no copy (greedy and epsilon-greedy)
        return pick
    return replace(pick, unit=unit, gamma=gamma)


def policy_probabilities(
    use_case: UseCaseConfig,
    policy: ServingPolicy,
    values: np.ndarray,
    *,
    from_model: bool,
    experience: Experience = NO_EXPERIENCE,
) -> np.ndarray:
    """The probability `pick_action` has of choosing (placing first) each candidate."""
    unit, gamma = _scales(policy, experience, from_model=from_model)
    scores, greedy = exploration_inputs(use_case, values, from_model=from_model, threshold=policy.threshold)
    if use_case.decision == "rank":
        scores, greedy = values, int(np.argmax(values))
    return action_probabilities(scores, greedy, policy.exploration, unit=unit, gamma=gamma)


def exploration_record(policy: ServingPolicy, pick: Pick) -> dict[str, Any]:
    """What a decision logs of its exploration: the strategy, and what ``pick`` was scaled by."""
    if not isinstance(policy.exploration, (Softmax, SquareCB)):
        return policy.exploration_log
    record = {**policy.exploration_log, "value_unit": pick.unit}
    if isinstance(policy.exploration, SquareCB):
        record["gamma"] = pick.gamma
    return record
