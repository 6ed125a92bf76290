"""The schema of ``closedloop.yaml``: use cases, their features, outcomes, policy and training.

Every model forbids unknown keys, so a typo fails at load time with its field path instead of
being silently ignored.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ._access import AccessConfig
from ._durations import Duration
from ._experiments import ArmPolicy, ExperimentConfig
from ._settings import InfrastructureConfig
from ._training_engine import TrainerConfig
from ._tuning import TUNABLE_ROOTS, TuningConfig
from ._value_expression import ValueExpression

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class NumericFeature(StrictModel):
    type: Literal["numeric"] = "numeric"
    default: float | None = None
    """Used when product code leaves the feature out; without a default it is required."""


class CategoricalFeature(StrictModel):
    type: Literal["categorical"]
    values: list[str] = Field(min_length=1)
    """The known categories; their order fixes the codes the model sees, so only append to it."""
    default: str | None = None
    """Used when product code leaves the feature out; without a default it is required."""

    @model_validator(mode="after")
    def _default_is_known(self) -> CategoricalFeature:
        if len(set(self.values)) != len(self.values):
            raise ValueError("categorical values must be unique")
        if self.default is not None and self.default not in self.values:
            raise ValueError(f"default {self.default!r} is not one of the values {self.values}")
        return self


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="type")]


class OutcomeConfig(StrictModel):
    type: Literal["binary", "continuous"]
    """binary: 0/1 (a click, a purchase); continuous: any finite number (revenue, watch time)."""
    window: Duration
    """How long after the decision feedback for this outcome still counts (e.g. 30m, 24h)."""
    default: float = 0.0
    """The value recorded when the window closes without feedback."""
    min: float | None = None
    """Continuous outcomes: the smallest value a report may have (e.g. 0 for revenue); reports
    below it are refused with a 422."""
    max: float | None = None
    """Continuous outcomes: the largest value a report may have."""

    @model_validator(mode="after")
    def _binary_default(self) -> OutcomeConfig:
        if self.type == "binary" and self.default not in (0.0, 1.0):
            raise ValueError(f"a binary outcome's default must be 0 or 1, got {self.default}")
        if self.type == "binary" and (self.min is not None or self.max is not None):
            raise ValueError("a binary outcome is 0 or 1: it takes no min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        low = self.min if self.min is not None else self.default
        high = self.max if self.max is not None else self.default
        if not low <= self.default <= high:
            raise ValueError(f"the default {self.default} is outside [min, max]")
        return self


class EpsilonGreedy(StrictModel):
    strategy: Literal["epsilon_greedy"]
    epsilon: float = Field(0.1, ge=0.0, le=1.0)
    """Share of decisions that pick uniformly at random instead of the best candidate."""


class Softmax(StrictModel):
    strategy: Literal["softmax"]
    temperature: float = Field(0.1, gt=0.0)
    """Lower is greedier: candidates are drawn with probability proportional to exp(value / (T * s)),
    s the value function's spread over its outcomes' ranges (1 for a value of binary outcomes), so
    that T does not depend on the value's unit."""


class Greedy(StrictModel):
    strategy: Literal["greedy"]


class SquareCB(StrictModel):
    """Inverse gap weighting (SquareCB, Foster & Rakhlin 2020; VW's ``--squarecb``): each other
    candidate gets probability 1 / (K + gamma * gap), its value gap to the best in units of the
    value function's spread, and the best the rest. ``gamma = gamma_scale * n ** gamma_exponent``
    grows with the n labelled examples the serving models learned from: exploration fades as the
    models earn trust, and stays where candidates are close."""

    strategy: Literal["squarecb"]
    gamma_scale: float = Field(10.0, gt=0.0)
    gamma_exponent: float = Field(0.5, ge=0.0, le=1.0)


Exploration = Annotated[EpsilonGreedy | Softmax | Greedy | SquareCB, Field(discriminator="strategy")]


class DefaultPolicy(StrictModel):
    """What to do before any model exists, or when the service cannot be reached."""

    order: Literal["as_given", "feature"] = "as_given"
    """as_given: product code's own order is best first; feature: sort by a candidate feature."""
    feature: str | None = None
    """The numeric candidate feature to sort by when ``order: feature``."""
    descending: bool = True
    action: Literal["yes", "no"] = "no"
    """For binary decisions: the answer when no model exists."""

    @field_validator("action", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        # YAML 1.1 reads a bare yes/no as a boolean.
        return ("yes" if value else "no") if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _feature_needed(self) -> DefaultPolicy:
        if self.order == "feature" and not self.feature:
            raise ValueError("order 'feature' needs 'feature: <candidate feature name>'")
        return self


class PolicyConfig(StrictModel):
    value: str
    """How per-outcome predictions combine into one value, e.g. 'click + 0.3 * purchase'."""
    exploration: Exploration = Field(default_factory=lambda: SquareCB(strategy="squarecb"))
    """SquareCB unless set: it won bench/vs_vw.py against epsilon-greedy and softmax (BENCHMARKS.md)."""
    default: DefaultPolicy = Field(default_factory=DefaultPolicy)
    threshold: float = 0.0
    """For binary decisions: say yes when value(yes) - value(no) exceeds this."""

    @field_validator("value")
    @classmethod
    def _parse_value(cls, source: str) -> str:
        ValueExpression(source)
        return source

    @property
    def value_expression(self) -> ValueExpression:
        return ValueExpression(self.value)


class ModelConfig(StrictModel):
    """LightGBM parameters for each outcome's model (see LightGBM's parameter docs)."""

    num_trees: int | None = Field(None, ge=1, le=10_000)
    """None (the default): as many as early stopping finds on the latest 15% of the training rows,
    up to ``max_trees``; a number fixes it."""
    max_trees: int = Field(1000, ge=1, le=10_000)
    learning_rate: float = Field(0.05, gt=0.0, le=1.0)
    num_leaves: int = Field(31, ge=2, le=131_072)
    min_data_in_leaf: int = Field(20, ge=1)
    feature_fraction: float = Field(1.0, gt=0.0, le=1.0)
    lambda_l2: float = Field(0.0, ge=0.0)
    num_threads: int = Field(0, ge=0)
    """LightGBM's threads for training; 0: one per core."""
    interactions: Literal["auto", "none"] = "auto"
    """auto: the models also see the product of every numeric context feature with every numeric
    candidate feature (or with the yes/no action), up to 64 such columns; none: only the features."""


class RetrainTrigger(StrictModel):
    every: Duration | None = None
    """Retrain at this interval (if there are new examples)."""
    min_new_examples: int = Field(1000, ge=1)
    """Retrain once this many new examples are final: labelled, with their outcome window closed
    (early feedback inside an open window is not counted yet)."""


class PromotionGate(StrictModel):
    min_examples: int = Field(200, ge=1)
    """Held-out examples needed before a new model may be promoted."""
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """The latest share of examples (by decision time) kept aside for evaluation."""
    max_auc_drop: float | None = Field(None, ge=0.0)
    """Binary outcomes: if set, the challenger's AUC may be at most this much below the champion's."""
    max_logloss_increase: float = Field(0.0, ge=0.0)
    """How much worse than the champion's the challenger's held-out log-loss may credibly be (the
    gate compares per-row losses with a 95% interval, so noise alone does not refuse a model)."""
    max_rmse_increase: float = Field(0.0, ge=0.0)
    """Continuous outcomes: the same for RMSE."""
    off_policy_check: bool = False
    """Also require the doubly robust value of the policy with the new model, estimated on the
    held-out period's logged decisions, to be no lower than with the champions (needs the
    evaluation extra; reads the decision log)."""
    max_drift: float | None = Field(None, gt=0.0)
    """If set: refuse a model when a feature's population stability index (the newest rows against
    the champion's training rows) exceeds it; 0.25 is the usual mark of a shift. Drift is measured
    and kept in the lineage either way."""
    max_value_drop: float = Field(0.0, ge=0.0)
    """How far the new policy's doubly robust value may fall below the champions' and still pass."""


DecisionType = Literal["choose", "rank", "binary"]


class UseCaseConfig(StrictModel):
    decision: DecisionType
    """choose: pick one candidate; rank: order candidates; binary: answer yes or no."""
    description: str = ""
    context: dict[Name, Feature] = Field(default_factory=dict)
    """Features of the unit and the moment (user, device, time), sent once per decision."""
    candidate: dict[Name, Feature] = Field(default_factory=dict)
    """Features of each candidate (item, price, position); not used by binary decisions."""
    outcomes: dict[Name, OutcomeConfig] = Field(min_length=1)
    policy: PolicyConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    retrain: RetrainTrigger = Field(default_factory=RetrainTrigger)
    promotion: PromotionGate = Field(default_factory=PromotionGate)
    max_candidates: int = Field(100, ge=1, le=10_000)
    experiments: dict[Name, ExperimentConfig] = Field(default_factory=dict)
    """A/B experiments whose arms are variants of this use case's policy."""
    tuning: TuningConfig | None = None
    """What the tuner may change in this use case's policy, and the objective it optimises."""

    @model_validator(mode="after")
    def _consistent(self) -> UseCaseConfig:
        unknown = self.policy.value_expression.names - set(self.outcomes)
        if unknown:
            raise ValueError(
                f"policy.value uses {sorted(unknown)}, which are not declared outcomes "
                f"(declared: {sorted(self.outcomes)})"
            )
        overlap = set(self.context) & set(self.candidate)
        if overlap:
            raise ValueError(f"features {sorted(overlap)} are declared as both context and candidate")
        reserved = {"rank": "slot", "binary": "action"}.get(self.decision)
        if reserved is not None and reserved in {*self.context, *self.candidate}:
            raise ValueError(
                f"a feature of a {self.decision} decision cannot be named {reserved!r}: closedloop "
                f"adds that column itself (the {'slot shown in' if reserved == 'slot' else 'answer'}); "
                "rename the feature"
            )
        if self.decision == "binary":
            if self.candidate:
                raise ValueError(
                    "binary decisions have no candidates; move 'candidate' features to 'context'"
                )
        elif self.policy.default.order == "feature":
            name = self.policy.default.feature
            if not isinstance(self.candidate.get(name or ""), NumericFeature):
                raise ValueError(
                    f"policy.default.feature {name!r} must be a numeric candidate feature "
                    f"(candidate features: {sorted(self.candidate)})"
                )
        for name, experiment in self.experiments.items():
            self._check_experiment(name, experiment)
        if self.tuning is not None:
            self._check_tuning(self.tuning)
        return self

    def _check_tuning(self, tuning: TuningConfig) -> None:
        strategy = self.policy.exploration.strategy
        valid = {
            "exploration.epsilon": strategy == "epsilon_greedy",
            "exploration.temperature": strategy == "softmax",
            "exploration.gamma_scale": strategy == "squarecb",
            "threshold": self.decision == "binary",
        }
        placeholders = tuning.template_names
        for path in tuning.parameters:
            root, _, leaf = path.partition(".")
            if root not in TUNABLE_ROOTS:
                raise ValueError(
                    f"tuning parameter {path!r}: unknown path; expected value.<placeholder>, "
                    "exploration.epsilon, exploration.temperature, exploration.gamma_scale, threshold "
                    "or model.<LightGBM parameter>"
                )
            if path in valid and not valid[path]:
                raise ValueError(
                    f"tuning parameter {path!r} does not apply to this use case ({self.decision}, {strategy})"
                )
            if root == "model" and leaf not in ModelConfig.model_fields:
                raise ValueError(
                    f"tuning parameter {path!r}: {leaf!r} is not a model parameter "
                    f"(model parameters: {sorted(ModelConfig.model_fields)})"
                )
            if root == "value" and leaf not in placeholders:
                raise ValueError(
                    f"tuning parameter {path!r}: value_template has no {{{leaf}}} placeholder "
                    f"(placeholders: {sorted(placeholders)})"
                )
            if root == "exploration" and path not in valid:
                raise ValueError(
                    f"tuning parameter {path!r}: unknown path; "
                    "expected exploration.epsilon, exploration.temperature or exploration.gamma_scale"
                )
        missing = placeholders - {p.partition(".")[2] for p in tuning.parameters if p.startswith("value.")}
        if missing:
            raise ValueError(
                f"tuning.value_template placeholders {sorted(missing)} have no value.<name> parameter"
            )
        if tuning.value_template is not None:
            probe = tuning.value_template.format(**{name: 1.0 for name in placeholders})
            unknown = ValueExpression(probe).names - set(self.outcomes)
            if unknown:
                raise ValueError(
                    f"tuning.value_template uses {sorted(unknown)}, which are not declared outcomes"
                )
        measurable = set(self.outcomes) | {"value"}
        for metric in tuning.objective.metrics + [c.metric for c in tuning.parsed_constraints]:
            if metric not in measurable:
                raise ValueError(
                    f"tuning metric {metric!r} cannot be measured: it is not an outcome or 'value' "
                    f"(measurable: {sorted(measurable)})"
                )

    def _check_experiment(self, name: str, experiment: ExperimentConfig) -> None:
        where = f"experiment {name!r}"
        for arm_name, arm in experiment.arms.items():
            self.check_arm_policy(arm, f"{where} arm {arm_name!r}")
        outcomes = set(self.outcomes)
        for metric in experiment.metrics:
            unknown = ValueExpression(metric.value).names - outcomes
            if unknown:
                raise ValueError(
                    f"{where} metric {metric.name!r} uses {sorted(unknown)}, which are not "
                    f"declared outcomes (declared: {sorted(outcomes)})"
                )
            if metric.name in outcomes or metric.name == "value":
                raise ValueError(
                    f"{where} metric {metric.name!r} has the name of a built-in metric "
                    "(every outcome and 'value' are read anyway); choose another name"
                )
        metrics = outcomes | {"value"} | {m.name for m in experiment.metrics}
        for guardrail in experiment.guardrails:
            if guardrail.metric not in metrics:
                raise ValueError(
                    f"{where} guardrail on {guardrail.metric!r}, which is not a metric of it "
                    f"(metrics: {sorted(metrics)})"
                )
        for feature in experiment.breakdowns or []:
            if feature not in self.context:
                raise ValueError(
                    f"{where} breaks down by {feature!r}, which is not a context feature "
                    f"(context features: {sorted(self.context)})"
                )

    def check_arm_policy(self, arm: ArmPolicy, where: str) -> None:
        """Refuse a policy variant that this use case cannot apply (raises ValueError)."""
        if arm.value is not None:
            unknown = ValueExpression(arm.value).names - set(self.outcomes)
            if unknown:
                raise ValueError(f"{where} value uses {sorted(unknown)}, which are not declared outcomes")
        strategy = self.policy.exploration.strategy
        if arm.epsilon is not None and strategy != "epsilon_greedy":
            raise ValueError(f"{where} sets epsilon, but the use case explores by {strategy}")
        if arm.temperature is not None and strategy != "softmax":
            raise ValueError(f"{where} sets temperature, but the use case explores by {strategy}")
        if arm.gamma_scale is not None and strategy != "squarecb":
            raise ValueError(f"{where} sets gamma_scale, but the use case explores by {strategy}")
        if arm.threshold is not None and self.decision != "binary":
            raise ValueError(f"{where} sets threshold, which only binary decisions have")

    def arm_policy(self, arm: ArmPolicy) -> PolicyConfig:
        """This use case's policy with an arm's overrides applied."""
        exploration = self.policy.exploration
        if isinstance(exploration, EpsilonGreedy) and arm.epsilon is not None:
            exploration = exploration.model_copy(update={"epsilon": arm.epsilon})
        if isinstance(exploration, Softmax) and arm.temperature is not None:
            exploration = exploration.model_copy(update={"temperature": arm.temperature})
        if isinstance(exploration, SquareCB) and arm.gamma_scale is not None:
            exploration = exploration.model_copy(update={"gamma_scale": arm.gamma_scale})
        return self.policy.model_copy(
            update={
                "value": arm.value if arm.value is not None else self.policy.value,
                "exploration": exploration,
                "threshold": arm.threshold if arm.threshold is not None else self.policy.threshold,
            }
        )

    @property
    def max_window(self) -> timedelta:
        return max(outcome.window for outcome in self.outcomes.values())


class ClosedLoopConfig(StrictModel):
    """The whole ``closedloop.yaml``."""

    version: Literal[1] = 1
    use_cases: dict[Name, UseCaseConfig] = Field(min_length=1)
    infrastructure: InfrastructureConfig = Field(default_factory=InfrastructureConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    """Rate limits of API keys and how soon a revoked key stops working (``closedloop keys``)."""
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    """Where models are fitted: in the trainer's process, or on a Dask cluster."""
    _from_environment: frozenset[tuple[str, ...]] = PrivateAttr(default=frozenset())
    """Paths of the values a ``${VAR}`` gave (see `parse_config`): never served."""

    @model_validator(mode="after")
    def _experiment_names_unique(self) -> ClosedLoopConfig:
        seen: dict[str, str] = {}
        for use_case_name, use_case in self.use_cases.items():
            for name in use_case.experiments:
                if name in seen:
                    raise ValueError(
                        f"experiment {name!r} is declared in both {seen[name]} and {use_case_name}; "
                        "experiment names must be unique"
                    )
                seen[name] = use_case_name
        return self

    def find_experiment(self, name: str) -> tuple[str, ExperimentConfig] | None:
        """The use case that declares an experiment, and the experiment."""
        for use_case_name, use_case in self.use_cases.items():
            if name in use_case.experiments:
                return use_case_name, use_case.experiments[name]
        return None
