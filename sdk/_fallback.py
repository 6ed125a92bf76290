"""The default policy, applied by the SDK itself when the decision service cannot be reached.

Pure Python on purpose: the SDK must not need numpy or LightGBM. A fallback decision is greedy
(nothing is logged, so exploring would teach nothing), flagged ``fallback=True``, and its id starts
with ``fallback-`` so that feedback for it is dropped in the SDK instead of becoming an orphan.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from closedloop.contracts import Decision, UseCaseConfig

from ._requests import FALLBACK_PREFIX


def fallback_decision(
    use_case_name: str, use_case: UseCaseConfig | None, candidates: Sequence[Mapping[str, Any]]
) -> Decision:
    decision_type = use_case.decision if use_case else ("binary" if not candidates else "choose")
    if decision_type == "binary":
        action = use_case.policy.default.action if use_case else "no"
        ids, order = ["no", "yes"], ([1, 0] if action == "yes" else [0, 1])
    else:
        ids = [str(c["id"]) for c in candidates]
        order = _default_order(use_case, candidates)
    scores = {ids[index]: 1.0 - rank / max(1, len(ids) - 1) for rank, index in enumerate(order)}
    # Without the use case (never learned: the service was down from the start) the type is a
    # guess, so the answer carries a ranking too: product code that renders one gets one.
    ranked = decision_type == "rank" or (use_case is None and bool(ids))
    return Decision(
        decision_id=f"{FALLBACK_PREFIX}{uuid.uuid4().hex}",
        use_case=use_case_name,
        decision_type=decision_type,
        choice=ids[order[0]] if ids else None,
        ranking=[ids[i] for i in order] if ranked else None,
        scores=scores,
        propensity=1.0,
        model_versions={},
        policy="default",
        fallback=True,
    )


def _default_order(use_case: UseCaseConfig | None, candidates: Sequence[Mapping[str, Any]]) -> list[int]:
    indices = list(range(len(candidates)))
    default = use_case.policy.default if use_case else None
    if default is None or default.order != "feature" or not default.feature:
        return indices
    feature = default.feature

    def key(index: int) -> float:
        value = candidates[index]["features"].get(feature)
        return float(value) if isinstance(value, (int, float)) else float("-inf")

    return sorted(indices, key=key, reverse=default.descending)
