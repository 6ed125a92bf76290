"""The tuner: Bayesian optimisation (Ax) of a use case's policy parameters for a product objective.

- `OnlineTuner`: rounds of candidate configurations served as arms of an experiment next to a
  status-quo arm, measured by the causal evaluator, completed in Ax; recommends (and optionally
  promotes) the best configuration that satisfies the constraints
- `OfflineTuner`: the same loop measured by doubly robust off-policy values of logged decisions
- `offline_seeds`: an offline run's best configurations, to start an online run with
- `TuningStore`: runs, rounds, trials and the Ax state in the metadata database (resumable)
- `tuning_report` / `write_tuning_report`: every trial with intervals, plots, the recommendation

Ax and torch are imported only here (the ``tuner`` extra); nothing else in closedloop needs them.
"""

from closedloop.tuner._ax import METHODS, AxSession, Candidate, Method
from closedloop.tuner._loop import RoundMeasurements, TuningLoop
from closedloop.tuner._offline import OfflineTuner
from closedloop.tuner._online import OnlineTuner
from closedloop.tuner._report import TuningReport, render_tuning_html, tuning_report, write_tuning_report
from closedloop.tuner._seeding import offline_seeds
from closedloop.tuner._space import Measurement, Parameterization, TuningSpace
from closedloop.tuner._store import RoundRecord, RunRecord, TrialRecord, TuningStore

__all__ = [
    "AxSession",
    "Candidate",
    "METHODS",
    "Measurement",
    "Method",
    "OfflineTuner",
    "OnlineTuner",
    "Parameterization",
    "RoundMeasurements",
    "RoundRecord",
    "RunRecord",
    "TrialRecord",
    "TuningLoop",
    "TuningReport",
    "TuningSpace",
    "TuningStore",
    "offline_seeds",
    "render_tuning_html",
    "tuning_report",
    "write_tuning_report",
]
