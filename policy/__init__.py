"""The decision core: pure numpy and LightGBM code that every component decides or re-decides with.

The service serves with it, the trainer encodes its examples with it, the evaluator and the tuner
replay logged decisions through it; none of them needs HTTP, Redis or Kafka for that.

- `FeatureEncoder`: checks a request's features (defaults filled) and encodes rows, in the column
  order the models are trained on (`ACTION_FEATURE` for binary decisions, `SLOT_FEATURE` last for rankings)
- `ServingPolicy`: what one decision applies (models or the default, value function, exploration);
  `ActiveExperiment` assigns a unit to an arm (`Assignment`) by salted hash (`unit_hash`)
- `model_values`: per-outcome predictions combined by the value function (`Predictor` scores rows);
  `default_policy_values`: the values of the default policy
- `pick_action`: a choice, ranking or yes/no from values, with its exact propensity (`Pick`);
  `policy_probabilities`: the probability of each action; `exploration_record`: what is logged
- `Experience`: what exploration scales with (the models' examples, the value function's unit)
- `OfflinePolicy`: a policy's action probabilities on logged decisions (off-policy evaluation)
"""

from ._arms import ActiveExperiment, Assignment, ServingPolicy
from ._default import default_policy_values
from ._experience import Experience
from ._exploration import Pick, exploration_record, pick_action, policy_probabilities
from ._features import ACTION_FEATURE, BINARY_CANDIDATES, SLOT_FEATURE, FeatureEncoder
from ._offline import OfflinePolicy
from ._scoring import Predictor, model_values

__all__ = [
    "ACTION_FEATURE",
    "ActiveExperiment",
    "Assignment",
    "BINARY_CANDIDATES",
    "Experience",
    "FeatureEncoder",
    "OfflinePolicy",
    "Pick",
    "Predictor",
    "SLOT_FEATURE",
    "ServingPolicy",
    "default_policy_values",
    "exploration_record",
    "model_values",
    "pick_action",
    "policy_probabilities",
]
