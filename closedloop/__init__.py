"""closedloop: data-driven decisions in product code, improved from real outcomes.

The components, each importable on its own, from the bottom layer up:

- `closedloop.contracts`: configuration schema, HTTP wire formats, the event codec (the one place
  that writes or reads a logged decision or outcome), the attribution rule, names and errors
- `closedloop.policy`: the decision core (features, value function, exploration, experiment arms),
  pure numpy and LightGBM, shared by serving, training, evaluation and tuning
- `closedloop.registry`: the model registry (Redis, or a local directory when embedded)
- `closedloop.eventlog`: the decision and feedback logs (Kafka with a durable disk outbox, or files)
- `closedloop.decision_service`: the decision engine and its HTTP service
- `closedloop.evaluation`: experiment analysis, heterogeneous effects, off-policy evaluation, reports
- `closedloop.trainer`: joins outcomes to decisions, retrains, gates and publishes champions
- `closedloop.sdk`: what product code imports: `Client`, `AsyncClient`, `EmbeddedClient`
- `closedloop.tuner`: Bayesian tuning (Ax) of policy parameters for a product objective
- `closedloop.simulator`: simulated products with a hidden truth (the demo, the tuning benchmark)
- `closedloop.cli`: the `closedloop` command

The top-level folders of the repository (``sdk/``, ``decision_service/`` …) are these packages;
``closedloop/`` links them under one import name so nothing generic lands in site-packages. The
layering is written as import-linter contracts in ``pyproject.toml``.
"""

__version__ = "0.1.0"
