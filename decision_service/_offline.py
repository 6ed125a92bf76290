"""A decision policy applied to logged decisions instead of live requests: for off-policy evaluation.

It answers "with what probability would this policy have taken each action of a logged decision",
using the same encoder, value function, default policy and exploration as the engine, so the
evaluation scores exactly the policy that would serve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightgbm as lgb
import numpy as np

from closedloop.contracts import ArmPolicy, FeatureValue, UseCaseConfig
from closedloop.decision_service._features import BINARY_CANDIDATES, FeatureEncoder
from closedloop.decision_service._policy import (
    action_probabilities,
    default_policy_values,
    exploration_inputs,
)


class OfflinePolicy:
    def __init__(
        self,
        use_case: UseCaseConfig,
        arm: ArmPolicy | None = None,
        *,
        models: Mapping[str, lgb.Booster] | None = None,
    ) -> None:
        """``models``: outcome -> booster (the champions); the policy needs every outcome its
        value function names, or it acts as the default policy, as the engine would."""
        self.use_case = use_case
        self._policy = use_case.arm_policy(arm or ArmPolicy())
        self._encoder = FeatureEncoder(use_case)
        expression = self._policy.value_expression
        wanted = arm is None or arm.policy == "model"
        self._models = dict(models) if wanted and models and expression.names <= set(models) else None

    @property
    def uses_models(self) -> bool:
        return self._models is not None

    def action_ids(self, candidates: Sequence[str]) -> list[str]:
        return list(BINARY_CANDIDATES) if self.use_case.decision == "binary" else list(candidates)

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
        values_all: np.ndarray | None = None
        if self._models is not None:
            predictions = {o: np.asarray(m.predict(rows)) for o, m in self._models.items()}
            values_all = np.broadcast_to(
                np.asarray(self._policy.value_expression.evaluate(predictions), dtype=float), len(rows)
            )
        result = []
        for i, features in enumerate(candidates):
            if values_all is not None:
                values = values_all[offsets[i] : offsets[i + 1]]
            else:
                values = default_policy_values(self.use_case, [dict(c) for c in features])
            scores, greedy = exploration_inputs(
                self.use_case, values, from_model=values_all is not None, threshold=self._policy.threshold
            )
            result.append(action_probabilities(scores, greedy, self._policy.exploration))
        return result

    def encode(
        self, context: Mapping[str, FeatureValue], candidates: Sequence[Mapping[str, FeatureValue]]
    ) -> np.ndarray:
        return self._encoder.encode(context, [dict(c) for c in candidates])
