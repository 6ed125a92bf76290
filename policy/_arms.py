"""Experiment arms at serving time: which arm a unit is in, and the policy that arm applies.

Assignment hashes the experiment's salt with the unit id, so a unit keeps its arm across requests,
replicas and restarts, and a new salt reshuffles everyone. The holdout takes the lowest slice of
the hash range, the arms share the rest in declaration order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from closedloop.contracts import (
    HOLDOUT_ARM,
    ArmPolicy,
    ExperimentPhase,
    Exploration,
    PolicyConfig,
    UseCaseConfig,
    ValueExpression,
)

_HASH_SPACE = float(2**64)


@dataclass(frozen=True)
class ServingPolicy:
    """What one decision applies: models or the default, a value function, exploration."""

    use_model: bool
    value: ValueExpression
    exploration: Exploration
    threshold: float
    exploration_log: dict[str, Any]

    @classmethod
    def of(cls, policy: PolicyConfig, *, use_model: bool = True) -> ServingPolicy:
        return cls(
            use_model=use_model,
            value=policy.value_expression,
            exploration=policy.exploration,
            threshold=policy.threshold,
            exploration_log=policy.exploration.model_dump(),
        )


@dataclass(frozen=True)
class Assignment:
    experiment: str
    phase: int
    arm: str
    policy: ServingPolicy


def unit_hash(salt: str, unit_id: str) -> float:
    """A unit's position in [0, 1) for this salt: uniform, stable, independent across salts."""
    digest = hashlib.blake2b(f"{salt}\x00{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


class ActiveExperiment:
    """The running phase of one use case's experiment, ready to assign units."""

    def __init__(self, phase: ExperimentPhase, use_case: UseCaseConfig) -> None:
        self.phase = phase
        self._salt = phase.salt
        holdout_policy = ServingPolicy.of(use_case.arm_policy(ArmPolicy(policy="default")), use_model=False)
        self._holdout = (
            phase.holdout,
            Assignment(phase.experiment, phase.phase, HOLDOUT_ARM, holdout_policy),
        )
        bounds: list[tuple[float, Assignment]] = []
        upper = phase.holdout
        for name, arm in phase.arms.items():
            use_case.check_arm_policy(arm, f"arm {name!r}")
            upper += (1.0 - phase.holdout) * arm.share
            policy = ServingPolicy.of(use_case.arm_policy(arm), use_model=arm.policy == "model")
            bounds.append((upper, Assignment(phase.experiment, phase.phase, name, policy)))
        self._bounds = bounds

    def assign(self, unit_id: str) -> Assignment:
        position = unit_hash(self._salt, unit_id)
        if position < self._holdout[0]:
            return self._holdout[1]
        for upper, assignment in self._bounds:
            if position < upper:
                return assignment
        return self._bounds[-1][1]  # rounding of the shares' sum: the last arm takes the edge
