"""The schema of a use case's ``tuning:`` block: what the tuner may change, and what it optimises.

Parameters are addressed by path:

- ``value.<name>``: a ``{name}`` placeholder in ``value_template`` (a value-function weight)
- ``exploration.epsilon`` / ``exploration.temperature`` / ``exploration.gamma_scale``: the use
  case's exploration (epsilon-greedy, softmax, SquareCB), retuned
- ``threshold``: the yes-threshold of a binary decision
- ``model.<field>``: a LightGBM parameter of `ModelConfig` (offline tuning only: arms share models)

Constraints read like ``click >= 0.98 * baseline`` (relative to the status-quo arm) or
``unsubscribe <= 0.01`` (absolute). Everything is checked against the use case when the file
loads, so a typo fails at ``closedloop validate`` rather than hours into a tuning run.
"""

from __future__ import annotations

import re
import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TUNABLE_ROOTS = ("value", "exploration", "threshold", "model")
STATUS_QUO_ARM = "status_quo"
"""The arm of every tuning round that runs the use case's own policy: the baseline."""


def tuning_experiment_name(use_case: str) -> str:
    """The experiment the online tuner deploys its rounds as (in the registry, like any other)."""
    return f"tune_{use_case}"


_CONSTRAINT = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>>=|<=)\s*"
    r"(?:(?P<factor>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?(?P<bound>baseline|-?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class TunedParameter(_Strict):
    type: Literal["float", "int"] = "float"
    low: float
    high: float
    log_scale: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> TunedParameter:
        if not self.low < self.high:
            raise ValueError(f"bounds reversed or empty: low {self.low:g} must be below high {self.high:g}")
        if self.log_scale and self.low <= 0:
            raise ValueError(f"log_scale needs a positive low bound, got {self.low:g}")
        return self


class Constraint(_Strict):
    """A parsed outcome constraint."""

    metric: str
    op: Literal[">=", "<="]
    bound: float | None
    """The absolute bound, or None for a bound relative to the status-quo arm."""
    factor: float = 1.0
    """For relative bounds: metric op factor * baseline."""

    @property
    def relative(self) -> bool:
        return self.bound is None

    @classmethod
    def parse(cls, text: str) -> Constraint:
        match = _CONSTRAINT.match(text)
        if match is None:
            raise ValueError(
                f"cannot read constraint {text!r}; "
                "expected e.g. 'click >= 0.98 * baseline' or 'unsubscribe <= 0.01'"
            )
        bound = match["bound"]
        if bound != "baseline" and match["factor"]:
            raise ValueError(f"constraint {text!r}: a factor needs 'baseline' (e.g. 0.98 * baseline)")
        return cls(
            metric=match["metric"],
            op=match["op"],
            bound=None if bound == "baseline" else float(bound),
            factor=float(match["factor"]) if match["factor"] else 1.0,
        )


class Objective(_Strict):
    metric: str | None = None
    """One metric to maximise (or minimise)."""
    weights: dict[str, float] | None = None
    """A weighted sum of metrics, e.g. {click: 1, purchase: 3}."""
    pareto: list[str] | None = None
    """Several metrics: the tuner reports the Pareto front."""
    minimize: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> Objective:
        given = [k for k in ("metric", "weights", "pareto") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of metric, weights or pareto; got {given or 'none'}")
        if self.pareto is not None and len(self.pareto) < 2:
            raise ValueError("pareto needs at least two metrics")
        return self

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if self.metric else list(self.weights or {}) or list(self.pareto or [])


class TuningConfig(_Strict):
    parameters: dict[str, TunedParameter] = Field(min_length=1)
    """Parameter path -> bounds (see the module's docstring for the paths)."""
    value_template: str | None = None
    """The value function with placeholders, e.g. 'click + {purchase_weight} * purchase'."""
    objective: Objective
    constraints: list[str] = Field(default_factory=list)
    arms_per_round: int = Field(3, ge=1, le=20)
    min_units_per_arm: int = Field(500, ge=2)
    rounds: int = Field(10, ge=1, le=1000)
    seed: int = 0
    promote: bool = False
    """At the end of an online run, serve the recommended configuration to all of the use case's
    traffic (a last phase of the tuning experiment) until the YAML is updated."""

    @property
    def online_parameters(self) -> list[str]:
        return [path for path in self.parameters if not path.startswith("model.")]

    @field_validator("constraints")
    @classmethod
    def _parse_constraints(cls, constraints: list[str]) -> list[str]:
        for text in constraints:
            Constraint.parse(text)
        return constraints

    @property
    def parsed_constraints(self) -> list[Constraint]:
        return [Constraint.parse(text) for text in self.constraints]

    @property
    def template_names(self) -> set[str]:
        if self.value_template is None:
            return set()
        return {name for _, name, _, _ in string.Formatter().parse(self.value_template) if name}
