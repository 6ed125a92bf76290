"""The translation between a use case's ``tuning:`` block and Ax: parameters, objective, constraints,
and back from a parameterization to the arm that serves it.

Ax sees every metric as measured (mean, standard error). Constraints relative to the status quo
are given to Ax as the ratio of an arm's mean to the status-quo arm's mean *of the same round*
(``<metric>_vs_status_quo``), so a drift in traffic between rounds cannot move the bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from closedloop.contracts import ArmConfig, ArmPolicy, TuningConfig, TuningError, UseCaseConfig

Parameterization = dict[str, float | int]
Measurement = dict[str, tuple[float, float]]
"""metric -> (mean, standard error)"""


def relative_metric(metric: str) -> str:
    return f"{metric}_vs_status_quo"  # no "baseline": Ax reads that word as a relative bound


def ax_name(path: str) -> str:
    """Ax parameter names stay plain identifiers (its constraint parser reads dots as operators)."""
    return path.replace(".", "__")


def path_of(name: str) -> str:
    return name.replace("__", ".")


@dataclass(frozen=True)
class TuningSpace:
    use_case: UseCaseConfig
    tuning: TuningConfig

    @classmethod
    def of(cls, use_case_name: str, use_case: UseCaseConfig, *, online: bool) -> TuningSpace:
        if use_case.tuning is None:
            raise TuningError(
                f"Use case {use_case_name!r} has no tuning: block to tune.",
                hint="Declare its parameters and objective; see docs/tuning.md.",
            )
        model_paths = [p for p in use_case.tuning.parameters if p.startswith("model.")]
        if online and model_paths:
            raise TuningError(
                f"Use case {use_case_name!r} tunes {model_paths}, which only the offline tuner can: "
                "the arms of a live experiment share the champion models.",
                field=f"use_cases.{use_case_name}.tuning.parameters",
                value=model_paths,
                expected="value.*, exploration.* or threshold parameters for online tuning",
                hint="Run closedloop tune start --offline, or drop the model.* parameters.",
            )
        return cls(use_case, use_case.tuning)

    # -- to Ax ------------------------------------------------------------------------------------

    def ax_parameters(self) -> list[Any]:
        from ax import RangeParameterConfig  # imported first (and quietly) by AxSession

        return [
            RangeParameterConfig(
                name=ax_name(path),
                parameter_type=parameter.type,
                bounds=(parameter.low, parameter.high),
                scaling="log" if parameter.log_scale else "linear",
            )
            for path, parameter in self.tuning.parameters.items()
        ]

    def ax_objective(self) -> str:
        objective = self.tuning.objective
        sign = "-" if objective.minimize else ""
        if objective.metric:
            return f"{sign}{objective.metric}"
        if objective.weights:
            flip = -1.0 if objective.minimize else 1.0
            return " + ".join(f"{flip * w!r}*{metric}" for metric, w in objective.weights.items())
        return ", ".join(f"{sign}{metric}" for metric in objective.pareto or [])

    def ax_constraints(self) -> list[str]:
        constraints = []
        for c in self.tuning.parsed_constraints:
            if c.relative:
                constraints.append(f"{relative_metric(c.metric)} {c.op} {c.factor!r}")
            else:
                constraints.append(f"{c.metric} {c.op} {c.bound!r}")
        return constraints

    @property
    def measured_metrics(self) -> list[str]:
        """What every arm is measured on: the objective's and the constraints' metrics."""
        names = list(self.tuning.objective.metrics)
        for c in self.tuning.parsed_constraints:
            if c.metric not in names:
                names.append(c.metric)
        return names

    @property
    def pareto(self) -> bool:
        return self.tuning.objective.pareto is not None

    # -- from Ax ----------------------------------------------------------------------------------

    def paths(self, parameters: Mapping[str, Any]) -> Parameterization:
        return {path_of(name): value for name, value in parameters.items()}

    def arm_policy(self, parameters: Parameterization) -> ArmPolicy:
        """The policy variant a parameterization (keyed by path) describes; model.* are not policy."""
        fields: dict[str, Any] = {}
        weights = {p.removeprefix("value."): v for p, v in parameters.items() if p.startswith("value.")}
        if self.tuning.value_template is not None and weights:
            fields["value"] = self.tuning.value_template.format(**{k: f"{v!r}" for k, v in weights.items()})
        for path, field in (
            ("exploration.epsilon", "epsilon"),
            ("exploration.temperature", "temperature"),
            ("exploration.gamma_scale", "gamma_scale"),
            ("threshold", "threshold"),
        ):
            if path in parameters:
                fields[field] = float(parameters[path])
        return ArmPolicy(**fields)

    def arm(self, parameters: Parameterization, share: float) -> ArmConfig:
        return ArmConfig(**self.arm_policy(parameters).model_dump(exclude_unset=True), share=share)

    def model_overrides(self, parameters: Parameterization) -> dict[str, Any]:
        return {p.removeprefix("model."): v for p, v in parameters.items() if p.startswith("model.")}

    # -- measurements -----------------------------------------------------------------------------

    def scalar_objective(self, measurement: Mapping[str, tuple[float, float]]) -> float | None:
        """The single- or weighted objective's value (None for Pareto or a missing metric)."""
        weights = self._measured_weights(measurement)
        return None if weights is None else sum(w * measurement[m][0] for m, w in weights.items())

    def scalar_objective_se(self, measurement: Mapping[str, tuple[float, float]]) -> float | None:
        """Its standard error, treating the metrics' errors as independent (a rough bar for plots:
        an arm's metrics come from the same units)."""
        weights = self._measured_weights(measurement)
        if weights is None:
            return None
        return math.sqrt(sum((w * measurement[m][1]) ** 2 for m, w in weights.items()))

    def _measured_weights(self, measurement: Mapping[str, tuple[float, float]]) -> dict[str, float] | None:
        """The scalar objective's weight per metric; None for Pareto or when a metric is missing."""
        objective = self.tuning.objective
        if objective.pareto is not None:
            return None
        weights = objective.weights or {objective.metric or "": 1.0}
        return None if any(metric not in measurement for metric in weights) else dict(weights)

    def with_relative(self, arm: Measurement, baseline: Measurement) -> Measurement:
        """An arm's measurement plus its ratios to the status quo for relative constraints; the
        ratio's standard error by the delta method (arms are disjoint units, so independent)."""
        result = dict(arm)
        for c in self.tuning.parsed_constraints:
            if not c.relative or c.metric not in arm or c.metric not in baseline:
                continue
            (a, sa), (b, sb) = arm[c.metric], baseline[c.metric]
            if b == 0 or not math.isfinite(b):
                continue
            ratio = a / b
            se = abs(ratio) * math.sqrt((sa / a) ** 2 + (sb / b) ** 2) if a != 0 else abs(sb / b)
            result[relative_metric(c.metric)] = (ratio, se)
        return result

    def violations(self, measurement: Mapping[str, tuple[float, float]]) -> list[str]:
        """The constraints a measurement's means break (relative ones need the ratios present)."""
        broken = []
        for c, text in zip(self.tuning.parsed_constraints, self.tuning.constraints, strict=True):
            metric = relative_metric(c.metric) if c.relative else c.metric
            bound = c.factor if c.relative else c.bound
            if metric not in measurement or bound is None:
                continue
            value = measurement[metric][0]
            if (c.op == ">=" and value < bound) or (c.op == "<=" and value > bound):
                broken.append(text)
        return broken
