"""Opening the registry the infrastructure settings name."""

from closedloop.contracts import InfrastructureConfig

from ._local import LocalModelRegistry
from ._protocol import ModelRegistry
from ._redis import RedisModelRegistry


def open_registry(infrastructure: InfrastructureConfig) -> ModelRegistry:
    """Redis when ``redis_url`` is set, otherwise a directory under ``data_dir``."""
    if infrastructure.redis_url:
        return RedisModelRegistry.from_url(infrastructure.redis_url, prefix=infrastructure.key_prefix)
    return LocalModelRegistry(infrastructure.data_path / "registry")
