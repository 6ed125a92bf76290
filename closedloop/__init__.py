"""closedloop: data-driven decisions in product code, improved from real outcomes.

The components, each importable on its own:

- `closedloop.sdk`: what product code imports: `Client`, `AsyncClient`, `EmbeddedClient`
- `closedloop.contracts`: configuration schema, wire formats, names and errors shared by all
- `closedloop.decision_service`: the low-latency decision engine and its HTTP service
- `closedloop.registry`: the model registry (Redis, or a local directory when embedded)
- `closedloop.eventlog`: the decision and feedback logs (Kafka with a durable disk outbox, or files)
- `closedloop.cli`: the `closedloop` command

The top-level folders of the repository (``sdk/``, ``decision_service/`` …) are these packages;
``closedloop/`` links them under one import name so nothing generic lands in site-packages.
"""

__version__ = "0.1.0"
