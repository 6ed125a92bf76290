"""The tuner: Bayesian optimisation (Ax) of a use case's policy parameters for a product objective.

- `OnlineTuner`: rounds of candidate configurations served as arms of an experiment next to a
  status-quo arm, measured by the causal evaluator, completed in Ax; recommends (and optionally
  promotes) the best configuration that satisfies the constraints
- `OfflineTuner`: the same loop measured by doubly robust off-policy values of logged decisions
- `offline_seeds`: an offline run's best configurations, to start an online run with
- `step()` says what it did as a `StepResult`: `Deployed`, `Waiting`, `Measured`, `Finished`, `Inactive`
- `TuningStore`: runs, rounds, trials and the Ax state in the metadata database (resumable)
- `tuning_report` / `write_tuning_report`: every trial with intervals, plots, the recommendation

Ax and torch are imported only here (the ``tuner`` extra); nothing else in closedloop needs them.
"""

from ._ax import METHODS, AxSession, Candidate, Method
from ._loop import RoundMeasurements, TuningLoop
from ._offline import OfflineTuner
from ._online import OnlineTuner
from ._report import TuningReport, render_tuning_html, tuning_report, write_tuning_report
from ._seeding import offline_seeds
from ._space import Measurement, Parameterization, TuningSpace
from ._steps import Deployed, Finished, Inactive, Measured, StepResult, Waiting
from ._store import RoundRecord, RunRecord, TrialRecord, TuningStore

__all__ = [
    "AxSession",
    "Candidate",
    "Deployed",
    "Finished",
    "Inactive",
    "METHODS",
    "Measured",
    "Measurement",
    "Method",
    "OfflineTuner",
    "OnlineTuner",
    "Parameterization",
    "RoundMeasurements",
    "RoundRecord",
    "RunRecord",
    "StepResult",
    "TrialRecord",
    "TuningLoop",
    "TuningReport",
    "TuningSpace",
    "TuningStore",
    "Waiting",
    "offline_seeds",
    "render_tuning_html",
    "tuning_report",
    "write_tuning_report",
]
