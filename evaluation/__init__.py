"""Causal evaluation: experiment analysis, heterogeneous effects, off-policy evaluation, reports.

- `analyze_experiment(config, name)`: one phase of an experiment, read from the event logs, as an
  `ExperimentReport` (the numbers of ``report.json``); `write_report_files` / `render_html` for the page,
  `report_csv` for its metrics table, `with_power` for the MDE and the time to a decision;
  `ExperimentWatch`: the same report again and again as the logs grow, reading only the new events
- `html_page`, `inline_png`, `write_page_files`: the report pages' shell, plots and files, shared
  with the tuner's report
- statistics: `welch`, `cuped`, `sample_ratio_check`, `adjust_p_values`, `sequential_half_width`
  on `UnitSample`s (one linearized value per unit, so ratio metrics get delta-method intervals)
- `report_router(config, registry)`: ``GET /v1/experiments`` and ``/v1/experiments/{name}/report``,
  mounted on the decision service by ``closedloop serve``
- `compare_policies_offline`: doubly robust values of the policy with two sets of models (the
  trainer's off-policy promotion check)
- `OfflineEvaluator`: doubly robust values of policy variants, per metric, on one sample of the
  logs (the tuner's offline measurements)
- off-policy estimators: `off_policy_estimates` (IPS, SNIPS, direct method, doubly robust);
  for rankings decided with slots, `ranking_estimates` (the cascade IPS, with `cascade_weights`)
"""

from ._analysis import (
    ExperimentWatch,
    analyze_experiment,
    experiment_listing,
    find_experiment,
)
from ._html import (
    html_page,
    inline_png,
    render_html,
    report_csv,
    write_page_files,
    write_report_files,
)
from ._offpolicy import OffPolicyEstimates, PolicyValue, off_policy_estimates
from ._policy_values import OfflineEvaluator, TrainingRows, compare_policies_offline
from ._power import with_power
from ._ranking_ope import RankingEstimates, cascade_weights, ranking_estimates
from ._report_model import ExperimentReport, Interval, MetricComparison
from ._routes import report_router
from ._stats import (
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
    "ExperimentReport",
    "ExperimentWatch",
    "Interval",
    "MetricComparison",
    "OffPolicyEstimates",
    "OfflineEvaluator",
    "PolicyValue",
    "RankingEstimates",
    "SampleRatioCheck",
    "TrainingRows",
    "UnitSample",
    "adjust_p_values",
    "analyze_experiment",
    "cascade_weights",
    "compare_policies_offline",
    "cuped",
    "experiment_listing",
    "find_experiment",
    "html_page",
    "inline_png",
    "non_inferior",
    "off_policy_estimates",
    "ranking_estimates",
    "render_html",
    "report_csv",
    "report_router",
    "sample_ratio_check",
    "sequential_half_width",
    "welch",
    "with_power",
    "write_page_files",
    "write_report_files",
]
