"""The schema of experiments: arms that are policy variants, their traffic shares, the metrics read.

An experiment is declared in YAML under its use case; ``closedloop experiments start`` records
its allocation (a *phase*) in the registry, and the decision service assigns units by a salted hash
of their id. Changing the allocation starts a new phase, and analysis reads one phase at a time.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._durations import Duration
from ._value_expression import ValueExpression

_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
ArmName = Annotated[str, Field(pattern=_NAME)]
SHARE_TOLERANCE = 1e-6
HOLDOUT_ARM = "holdout"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ArmPolicy(_Strict):
    """How an arm decides; anything left out is the use case's own ``policy``."""

    policy: Literal["model", "default"] = "model"
    """model: the champion models and the value function; default: the default policy."""
    value: str | None = None
    """Another value function, e.g. 'click + 3 * purchase'."""
    epsilon: float | None = Field(None, ge=0.0, le=1.0)
    """Another exploration rate (epsilon-greedy use cases)."""
    temperature: float | None = Field(None, gt=0.0)
    """Another softmax temperature (softmax use cases)."""
    gamma_scale: float | None = Field(None, gt=0.0)
    """Another SquareCB gamma scale (squarecb use cases)."""
    threshold: float | None = None
    """Another yes-threshold (binary use cases)."""

    @field_validator("value")
    @classmethod
    def _parse_value(cls, source: str | None) -> str | None:
        if source is not None:
            ValueExpression(source)
        return source


class ArmConfig(ArmPolicy):
    share: float = Field(ge=0.0, le=1.0)
    """Share of the experiment's traffic (after the holdout); shares add up to 1."""
    control: bool = False
    """The status-quo arm every other arm is compared with; exactly one arm is control."""


class MetricConfig(_Strict):
    name: ArmName
    value: str
    """An expression over outcomes, e.g. 'purchase' or 'click + 2 * purchase'."""
    per: Literal["decision", "unit"] = "decision"
    """decision: mean per decision (a ratio over units, by the delta method); unit: sum per unit."""
    higher_is_better: bool = True

    @field_validator("value")
    @classmethod
    def _parse_value(cls, source: str) -> str:
        ValueExpression(source)
        return source


class GuardrailConfig(_Strict):
    metric: str
    """A metric name (an outcome name reads that outcome per decision)."""
    margin: float = Field(0.01, ge=0.0, lt=1.0)
    """Non-inferiority margin, relative: 0.02 means 'no more than 2% worse than control'."""


class CupedConfig(_Strict):
    pre_period: Duration
    """How far before the phase started the covariate (each unit's own metric) is read."""


class ExperimentConfig(_Strict):
    description: str = ""
    arms: dict[ArmName, ArmConfig] = Field(min_length=2)
    holdout: float = Field(0.0, ge=0.0, lt=1.0)
    """Share of units kept out of the experiment on the default policy (logged as arm 'holdout')."""
    salt: str | None = None
    """Hashed with the unit id to assign arms; defaults to the experiment's name. A new salt
    reshuffles every unit."""
    metrics: list[MetricConfig] = Field(default_factory=list)
    """Metrics to read; every outcome (per decision) and the policy value are always read."""
    guardrails: list[GuardrailConfig] = Field(default_factory=list)
    correction: Literal["holm", "benjamini-hochberg"] = "holm"
    """Multiple-testing correction across metrics and arms."""
    sequential: bool = False
    """Also show anytime-valid intervals, which stay valid when the report is read every day."""
    cuped: CupedConfig | None = None
    breakdowns: list[str] | None = None
    """Context features to break effects down by; defaults to every categorical context feature."""
    srm_alpha: float = Field(0.001, gt=0.0, lt=1.0)
    """A sample-ratio-mismatch p-value below this flags the report."""

    @model_validator(mode="after")
    def _allocation(self) -> ExperimentConfig:
        controls = [name for name, arm in self.arms.items() if arm.control]
        if len(controls) != 1:
            raise ValueError(
                f"exactly one arm must have 'control: true' (the status quo); found {len(controls)}"
                + (f": {controls}" if controls else "")
            )
        total = sum(arm.share for arm in self.arms.values())
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"arm shares must add up to 1, they add up to {total:g}")
        if HOLDOUT_ARM in self.arms:
            raise ValueError(f"'{HOLDOUT_ARM}' is reserved for the holdout; rename that arm")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique: {names}")
        return self

    @property
    def control(self) -> str:
        return next(name for name, arm in self.arms.items() if arm.control)


class ExperimentPhase(_Strict):
    """One allocation of a running experiment, as recorded in the registry when it starts or
    changes. Decisions carry the phase number, and an analysis reads a single phase."""

    experiment: str
    use_case: str
    phase: int = Field(ge=1)
    started_at: float
    """Unix time the phase began."""
    stopped_at: float | None = None
    """Unix time it ended (stopped, or replaced by a new phase); None while it runs."""
    reason: str = "start"
    """start, change (a new allocation) or stop."""
    arms: dict[ArmName, ArmConfig]
    holdout: float = 0.0
    salt: str

    @property
    def control(self) -> str:
        return next(name for name, arm in self.arms.items() if arm.control)

    @property
    def running(self) -> bool:
        return self.stopped_at is None
