"""A simulated product with a hidden ground truth, and the demo that runs the loop on it.

- `World`: users, items and their true click/purchase probabilities (the oracle knows them)
- `Demo`: the product calling the SDK round after round while the trainer learns, in simulated time
- `demo_config()`: the demo's use case (``demo.yaml``)
- `write_report(result, directory)`: the demo's HTML report and JSON summary
- `TuningWorld`, `tuning_config()`, `drive_online_tuner`: a product whose best tuning is known
  (``tuning.yaml``), and the loop that serves an online tuner's rounds on it in simulated time
"""

from ._command import run_demo_command
from ._demo import Demo, DemoResult, RoundSummary, demo_config, fresh_demo_directory
from ._report import write_report
from ._tuning_world import (
    SimulatedClock,
    TuningWorld,
    drive_online_tuner,
    tuning_config,
)
from ._world import Request, Response, World

__all__ = [
    "Demo",
    "DemoResult",
    "Request",
    "Response",
    "RoundSummary",
    "SimulatedClock",
    "TuningWorld",
    "World",
    "demo_config",
    "drive_online_tuner",
    "fresh_demo_directory",
    "run_demo_command",
    "tuning_config",
    "write_report",
]
