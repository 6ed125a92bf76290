"""A decision policy applied to logged decisions instead of live requests: for off-policy evaluation.

It answers "with what probability would this policy have taken each action of a logged decision",
using the same encoder, value function, default policy and exploration as the engine, so the
evaluation scores exactly the policy that would serve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from closedloop.contracts import ArmPolicy, FeatureValue, UseCaseConfig

from ._arms import ServingPolicy
from ._default import default_policy_values
from ._experience import Experience
from ._exploration import policy_probabilities, slot_probabilities
from ._features import FeatureEncoder
from ._scoring import Predictor, model_values


class OfflinePolicy:
    def __init__(
        self,
        use_case: UseCaseConfig,
        arm: ArmPolicy | None = None,
        *,
        models: Mapping[str, Predictor] | None = None,
        experience: Experience | None = None,
    ) -> None:
        """``models``: outcome -> booster (the champions); the policy needs every outcome its
        value function names, or it acts as the default policy, as the engine would.
        ``experience``: what the models learned from (`Experience.of` their registry metadata), which
        exploration scales with, as it does when serving."""
        self.use_case = use_case
        wanted = arm is None or arm.policy == "model"
        self._policy = ServingPolicy.of(use_case.arm_policy(arm or ArmPolicy()), use_model=wanted)
        self._encoder = FeatureEncoder(use_case)
        self._models = dict(models) if wanted and models else {}
        self._experience = experience or Experience()

    def probabilities(
        self,
        context: Mapping[str, FeatureValue],
        candidates: Sequence[Mapping[str, FeatureValue]],
    ) -> np.ndarray:
        """Probability of each action (each candidate, or no/yes) being chosen (placed first)."""
        rows = self.encode(context, candidates)
        return self.batch_probabilities(rows, np.array([0, len(rows)]), [candidates])[0]

    def batch_probabilities(
        self,
        rows: np.ndarray,
        offsets: np.ndarray,
        candidates: Sequence[Sequence[Mapping[str, FeatureValue]]],
    ) -> list[np.ndarray]:
        """`probabilities` of many decisions at once: ``rows`` stacks every decision's encoded rows,
        decision i owning ``rows[offsets[i]:offsets[i + 1]]``; the models score them in one call."""
        values, from_model = self._values(rows, offsets, candidates)
        return [
            policy_probabilities(
                self.use_case, self._policy, v, from_model=from_model, experience=self._experience
            )
            for v in values
        ]

    def batch_slot_probabilities(
        self,
        rows: np.ndarray,
        offsets: np.ndarray,
        candidates: Sequence[Sequence[Mapping[str, FeatureValue]]],
        shown: Sequence[Sequence[int]],
    ) -> list[np.ndarray]:
        """Rankings decided with slots: for each decision, the probability of placing each of its
        ``shown`` candidates (indices, top first) in its slot, given the ones above."""
        values, from_model = self._values(rows, offsets, candidates)
        return [
            slot_probabilities(self._policy, v, placed, from_model=from_model, experience=self._experience)
            for v, placed in zip(values, shown, strict=True)
        ]

    def _values(
        self,
        rows: np.ndarray,
        offsets: np.ndarray,
        candidates: Sequence[Sequence[Mapping[str, FeatureValue]]],
    ) -> tuple[list[np.ndarray], bool]:
        """The policy's value of every candidate of each decision, and whether models gave them."""
        scored = model_values(self._policy.value, self._models, rows) if self._policy.use_model else None
        if scored is not None:
            return [scored[1][offsets[i] : offsets[i + 1]] for i in range(len(candidates))], True
        return [
            default_policy_values(self.use_case, [dict(c) for c in features]) for features in candidates
        ], False

    def encode(
        self, context: Mapping[str, FeatureValue], candidates: Sequence[Mapping[str, FeatureValue]]
    ) -> np.ndarray:
        return self._encoder.encode(context, [dict(c) for c in candidates])
