"""The model registry: LightGBM models as text, numbered versions, a champion per use case and outcome.

`RedisModelRegistry` is what deployments use; `LocalModelRegistry` keeps the same things in a
directory for embedded runs. Both also hold the phase history of experiments, which
`start_experiment` and `stop_experiment` write and every decision service follows.
`open_registry` picks one from the infrastructure settings.
"""

from closedloop.contracts import InfrastructureConfig
from closedloop.registry._experiments import running_phases, start_experiment, stop_experiment
from closedloop.registry._local import LocalModelRegistry
from closedloop.registry._protocol import ModelRegistry, ModelVersion
from closedloop.registry._redis import RedisModelRegistry


def open_registry(infrastructure: InfrastructureConfig) -> ModelRegistry:
    """Redis when ``redis_url`` is set, otherwise a directory under ``data_dir``."""
    if infrastructure.redis_url:
        return RedisModelRegistry.from_url(infrastructure.redis_url, prefix=infrastructure.key_prefix)
    return LocalModelRegistry(infrastructure.data_path / "registry")


__all__ = [
    "LocalModelRegistry",
    "ModelRegistry",
    "ModelVersion",
    "RedisModelRegistry",
    "open_registry",
    "running_phases",
    "start_experiment",
    "stop_experiment",
]
