"""Causal evaluation: experiment analysis, heterogeneous effects, off-policy evaluation, reports.

- statistics: `welch`, `cuped`, `sample_ratio_check`, `adjust_p_values`, `sequential_half_width`
  on `UnitSample`s (one linearized value per unit, so ratio metrics get delta-method intervals)
"""

from closedloop.evaluation._stats import (
    Comparison,
    CupedResult,
    Estimate,
    SampleRatioCheck,
    UnitSample,
    adjust_p_values,
    cuped,
    non_inferior,
    sample_ratio_check,
    sequential_half_width,
    welch,
)

__all__ = [
    "Comparison",
    "CupedResult",
    "Estimate",
    "SampleRatioCheck",
    "UnitSample",
    "adjust_p_values",
    "cuped",
    "non_inferior",
    "sample_ratio_check",
    "sequential_half_width",
    "welch",
]
