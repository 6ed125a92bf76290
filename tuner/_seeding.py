"""Seeding an online run with an offline run's results: its best configurations go first."""

from __future__ import annotations

from closedloop.contracts import TuningError

from ._space import Parameterization, TuningSpace
from ._store import TuningStore


def offline_seeds(
    store: TuningStore, use_case_name: str, space: TuningSpace, count: int
) -> list[Parameterization]:
    """The offline run's ``count`` best measured configurations that satisfy the constraints
    (by the scalar objective; for Pareto objectives, its recommended front first). Model
    parameters are dropped: online arms share the champion models."""
    run = f"{use_case_name}.offline"
    record = store.run(run)
    if record is None:
        raise TuningError(
            f"There is no offline tuning run of {use_case_name!r} to seed from.",
            hint=f"Run closedloop tune start {use_case_name} --offline first.",
        )
    measured = [t for t in store.trials(run) if t.measurement]
    feasible = [t for t in measured if not space.violations(t.measurement or {})] or measured
    if space.pareto and record.recommendation:
        chosen = [c["parameters"] for c in record.recommendation["configurations"]]
    else:
        sign = -1.0 if space.tuning.objective.minimize else 1.0
        ranked = sorted(feasible, key=lambda t: -sign * (space.scalar_objective(t.measurement or {}) or 0.0))
        chosen = [t.parameters for t in ranked]
    online = set(space.tuning.online_parameters)
    seeds: list[Parameterization] = []
    for parameters in chosen:
        seed = {path: value for path, value in parameters.items() if path in online}
        if seed and seed not in seeds:
            seeds.append(seed)
    return seeds[:count]
