"""The decision service: the engine that decides and logs, and its HTTP app.

- `DecisionEngine`: features -> champion LightGBM models -> value function -> exploration -> logged decision
- `open_engine(config)`: an engine on the stores the configuration names
- `create_app(config)`: the FastAPI service (``closedloop serve`` runs it under uvicorn)
- `FeatureEncoder`: the column order and encoding shared with the trainer
- `OfflinePolicy`: a policy's action probabilities on logged decisions (for off-policy evaluation)
"""

from closedloop.decision_service._app import create_app
from closedloop.decision_service._decision_index import (
    DecisionIndex,
    MemoryDecisionIndex,
    RedisDecisionIndex,
)
from closedloop.decision_service._engine import DecisionEngine
from closedloop.decision_service._features import ACTION_FEATURE, BINARY_CANDIDATES, FeatureEncoder
from closedloop.decision_service._offline import OfflinePolicy
from closedloop.decision_service._policy import action_probabilities
from closedloop.decision_service._wiring import open_decision_index, open_engine

__all__ = [
    "ACTION_FEATURE",
    "BINARY_CANDIDATES",
    "DecisionEngine",
    "DecisionIndex",
    "FeatureEncoder",
    "MemoryDecisionIndex",
    "OfflinePolicy",
    "RedisDecisionIndex",
    "action_probabilities",
    "create_app",
    "open_decision_index",
    "open_engine",
]
