"""The model registry: LightGBM models as text, numbered versions, a champion per use case and outcome.

Version names are ``v<number>-<content id>``, unique for ever; the generation counter that
services poll never goes back to a value they saw, even when Redis lost its data.

`RedisModelRegistry` is what deployments use; `LocalModelRegistry` keeps the same things in a
directory for embedded runs. Both also hold the phase history of experiments, which
`start_experiment` and `stop_experiment` write and every decision service follows.
`open_registry` picks one from the infrastructure settings. Operators pin a champion, roll it
back to its predecessor or unpin it with `pin_champion`, `roll_back_champion`, `unpin_champion`.
"""

from ._champions import ChampionChange, pin_champion, roll_back_champion, unpin_champion
from ._experiments import running_phases, start_experiment, stop_experiment
from ._local import LocalModelRegistry
from ._open import open_registry
from ._protocol import ModelRegistry, ModelVersion, champion_metadata, version_metadata
from ._redis import RedisModelRegistry

__all__ = [
    "ChampionChange",
    "LocalModelRegistry",
    "ModelRegistry",
    "ModelVersion",
    "RedisModelRegistry",
    "champion_metadata",
    "open_registry",
    "pin_champion",
    "roll_back_champion",
    "running_phases",
    "start_experiment",
    "stop_experiment",
    "unpin_champion",
    "version_metadata",
]
