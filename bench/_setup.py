"""A benchmark use case: 20 candidates, 30 features (10 context + 20 candidate), 100-tree models."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from closedloop.contracts import ClosedLoopConfig, parse_config
from closedloop.registry import ModelRegistry

CONTEXT = [f"u{i}" for i in range(10)]
CANDIDATE = [f"i{i}" for i in range(20)]
FEATURES = CONTEXT + CANDIDATE


def use_case_lines(
    name: str,
    *,
    decision: str = "rank",
    context: list[str] = CONTEXT,
    candidate: list[str] = CANDIDATE,
    epsilon: float = 0.1,
    model: str | None = None,
) -> list[str]:
    """The YAML of one benchmark use case: numeric features, a click outcome, epsilon-greedy."""
    lines = [f"  {name}:", f"    decision: {decision}"] + ([f"    model: {model}"] if model else [])
    lines += ["    context:"] + [f"      {n}: {{type: numeric}}" for n in context]
    lines += ["    candidate:"] + [f"      {n}: {{type: numeric}}" for n in candidate]
    lines += [
        "    outcomes:",
        "      click: {type: binary, window: 30m}",
        "    policy:",
        "      value: click",
        f"      exploration: {{strategy: epsilon_greedy, epsilon: {epsilon}}}",
    ]
    return lines


def bench_config(**infrastructure: str) -> ClosedLoopConfig:
    lines = ["use_cases:", *use_case_lines("bench")]
    config = parse_config("\n".join(lines), environ={})
    infra = config.infrastructure.model_copy(update=infrastructure)
    return config.model_copy(update={"infrastructure": infra})


def train_click_model(trees: int = 100, seed: int = 0) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20_000, len(FEATURES)))
    y = (rng.random(20_000) < 1 / (1 + np.exp(-(x[:, 0] + x[:, 12] - x[:, 25])))).astype(float)
    params = {"objective": "binary", "num_leaves": 31, "verbose": -1, "seed": seed}
    return lgb.train(params, lgb.Dataset(x, y, feature_name=FEATURES), num_boost_round=trees)


def publish(registry: ModelRegistry, booster: lgb.Booster) -> str:
    return registry.publish("bench", "click", booster.model_to_string(), {}, champion=True).version


def request_body(rng: np.random.Generator, candidates: int = 20) -> dict[str, object]:
    return {
        "use_case": "bench",
        "unit_id": f"user-{int(rng.integers(1_000_000))}",
        "context": {name: float(v) for name, v in zip(CONTEXT, rng.normal(size=len(CONTEXT)), strict=True)},
        "candidates": [
            {
                "id": f"item-{j}",
                "features": {n: float(v) for n, v in zip(CANDIDATE, rng.normal(size=20), strict=True)},
            }
            for j in range(candidates)
        ],
    }


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, q))
