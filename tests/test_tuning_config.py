"""The tuning block of closedloop.yaml: a good one loads; each mistake fails at load, naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CONFIG_YAML

from closedloop.contracts import ConfigError, Constraint, parse_config

GOOD = {
    "parameters": {
        "value.revenue_weight": {"low": 0.0, "high": 0.5},
        "exploration.epsilon": {"low": 0.01, "high": 0.3, "log_scale": True},
        "model.num_leaves": {"type": "int", "low": 8, "high": 64},
    },
    "value_template": "click + {revenue_weight} * revenue",
    "objective": {"weights": {"click": 1, "revenue": 0.1}},
    "constraints": ["click >= 0.98 * baseline", "revenue <= 100"],
    "arms_per_round": 2,
    "min_units_per_arm": 300,
}


def load(tmp_path: Path, tuning: dict[str, Any]) -> Any:
    raw = yaml.safe_load(CONFIG_YAML)
    raw["use_cases"]["feed"]["tuning"] = tuning
    return parse_config(yaml.safe_dump(raw), source="closedloop.yaml", environ={})


def test_a_good_tuning_block_loads_with_its_constraints_parsed(tmp_path: Path) -> None:
    tuning = load(tmp_path, GOOD).use_cases["feed"].tuning
    assert tuning.parsed_constraints == [
        Constraint(metric="click", op=">=", bound=None, factor=0.98),
        Constraint(metric="revenue", op="<=", bound=100.0),
    ]
    assert tuning.template_names == {"revenue_weight"}
    assert tuning.objective.metrics == ["click", "revenue"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"parameters": {"policy.epsilon": {"low": 0, "high": 1}}}, "'policy.epsilon': unknown path"),
        ({"parameters": {"exploration.epsilon": {"low": 0.3, "high": 0.1}}}, "bounds reversed or empty"),
        (
            {"parameters": {"exploration.temperature": {"low": 0.1, "high": 1}}},
            "does not apply to this use case",
        ),
        ({"parameters": {"model.depth": {"low": 1, "high": 9}}}, "'depth' is not a model parameter"),
        ({"parameters": {"value.other": {"low": 0, "high": 1}}}, "value_template has no {other} placeholder"),
        (
            {"value_template": "click + {revenue_weight} * revenue + {w} * click"},
            "placeholders ['w'] have no value.<name> parameter",
        ),
        ({"constraints": ["bounce >= 0.9 * baseline"]}, "tuning metric 'bounce' cannot be measured"),
        ({"constraints": ["click > baseline"]}, "cannot read constraint 'click > baseline'"),
        ({"objective": {"metric": "dwell"}}, "tuning metric 'dwell' cannot be measured"),
        (
            {"objective": {"metric": "click", "pareto": ["click", "revenue"]}},
            "exactly one of metric, weights or pareto",
        ),
    ],
)
def test_a_bad_tuning_block_fails_at_validate_naming_the_problem(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, {**GOOD, **change})
    assert message in str(error.value)
    assert "closedloop.yaml" in str(error.value)
    assert "use_cases.feed" in str(error.value)
