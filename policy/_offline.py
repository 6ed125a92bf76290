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
from ._exploration import policy_probabilities
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
        scored = model_values(self._policy.value, self._models, rows) if self._policy.use_model else None
        result = []
        for i, features in enumerate(candidates):
            if scored is not None:
                values = scored[1][offsets[i] : offsets[i + 1]]
            else:
                values = default_policy_values(self.use_case, [dict(c) for c in features])
            result.append(
                policy_probabilities(
                    self.use_case,
                    self._policy,
                    values,
                    from_model=scored is not None,
                    experience=self._experience,
                )
            )
        return result

    def encode(
        self, context: Mapping[str, FeatureValue], candidates: Sequence[Mapping[str, FeatureValue]]
    ) -> np.ndarray:
        return self._encoder.encode(context, [dict(c) for c in candidates])
