"""The promotion gate's off-policy check: would the policy with the new model serve better?

Held-out metrics judge a model's predictions; this judges the decisions they lead to. The use
case's policy with the challenger in place of its outcome's champion, and with the champions as
they are, are both valued by the doubly robust estimator on the logged decisions of the held-out
period (their propensities make that possible), and the challenger must not lose value.
"""

from __future__ import annotations

import logging
from typing import Any

import lightgbm as lgb

from closedloop.contracts import ClosedLoopConfig
from closedloop.policy import Experience
from closedloop.registry import ModelRegistry, champion_metadata

from ._gate import GateDecision

logger = logging.getLogger(__name__)


def off_policy_check(
    config: ClosedLoopConfig,
    registry: ModelRegistry,
    use_case: str,
    outcome: str,
    challenger: lgb.Booster,
    *,
    since: float,
    as_of: float,
    challenger_metadata: dict[str, Any] | None = None,
) -> tuple[GateDecision | None, dict[str, Any]]:
    """A failing decision when the challenger's policy is worth less, None when it passes or
    cannot be judged; plus what was measured, for the model's metadata. ``challenger_metadata``:
    what its registry metadata will say (lineage, label range), which exploration scales with."""
    from closedloop.evaluation import compare_policies_offline

    rules = config.use_cases[use_case].promotion
    champions: dict[str, lgb.Booster] = {}
    for name, version in registry.champions(use_case, list(config.use_cases[use_case].outcomes)).items():
        if version is not None:
            champions[name] = lgb.Booster(model_str=registry.model_text(use_case, name, version))
    with_challenger = {**champions, outcome: challenger}
    known = champion_metadata(registry, use_case, list(config.use_cases[use_case].outcomes))
    experience = (
        Experience.of(config.use_cases[use_case], {**known, outcome: challenger_metadata or {}}),
        Experience.of(config.use_cases[use_case], known),
    )
    try:
        new, old, decisions = compare_policies_offline(
            config, use_case, with_challenger, champions, since=since, as_of=as_of, experience=experience
        )
    except ValueError as exc:
        logger.warning("off-policy check of %s/%s not judged: %s", use_case, outcome, exc)
        return None, {"judged": False, "reason": str(exc)}
    measured = {
        "judged": True,
        "decisions": decisions,
        "challenger_dr": new.doubly_robust.estimate,
        "challenger_dr_interval": [new.doubly_robust.low, new.doubly_robust.high],
        "champion_dr": old.doubly_robust.estimate,
        "champion_dr_interval": [old.doubly_robust.low, old.doubly_robust.high],
        "effective_sample_size": new.effective_sample_size,
    }
    floor = old.doubly_robust.estimate - rules.max_value_drop
    if new.doubly_robust.estimate < floor:
        return (
            GateDecision(
                False,
                [
                    f"doubly robust policy value {new.doubly_robust.estimate:.4f} < champions' "
                    f"{old.doubly_robust.estimate:.4f} - max_value_drop {rules.max_value_drop} "
                    f"({decisions} logged decisions)"
                ],
            ),
            measured,
        )
    return None, measured
