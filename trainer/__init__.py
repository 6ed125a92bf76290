"""The trainer: logged outcomes in, gated LightGBM champions out.

- `Trainer`: consume decision and feedback events, join them by decision id within each outcome's
  window, store examples through SQLAlchemy, retrain on the trigger, gate on held-out later data,
  publish to the registry with lineage
- `open_trainer(config)`: a trainer on the stores the configuration names (Kafka consumer group or
  the embedded event files; SQLite or PostgreSQL; Redis or local registry)
- `TrainerMetrics`: its Prometheus metrics (``closedloop train --metrics-port``): runs, run
  durations, join counts, lag behind the log
- `training_status` / `Trainer.status`: why a use case did or did not train (`TrainingStatus`)
- `ExampleStore`, `TrainingRun`: the examples, labels, offsets and runs in the metadata database
"""

from ._gate import GateDecision, gate
from ._metrics import TrainerMetrics
from ._open import open_trainer
from ._sources import EventBatch, EventSource, FileEventSource, KafkaEventSource
from ._status import OutcomeStatus, TrainingStatus, training_status
from ._store import ExampleStore, LabelledRows, TrainingRun
from ._trainer import CycleReport, Trainer
from ._training import Dataset, evaluate, fit, lightgbm_params

__all__ = [
    "CycleReport",
    "Dataset",
    "EventBatch",
    "EventSource",
    "ExampleStore",
    "FileEventSource",
    "GateDecision",
    "KafkaEventSource",
    "LabelledRows",
    "OutcomeStatus",
    "Trainer",
    "TrainerMetrics",
    "TrainingRun",
    "TrainingStatus",
    "evaluate",
    "fit",
    "gate",
    "lightgbm_params",
    "open_trainer",
    "training_status",
]
