"""The console: what operators read and do, served apart from the decision service.

- `create_console(config)`: the FastAPI app ``closedloop console`` serves: pages (use cases with
  their champions, versions, lineage and importance; training runs and trainer lag; traffic;
  experiments and their reports; tuning runs), the same as JSON (``/v1/models``, ``/v1/training``,
  ``/v1/tuning``), admin actions under ``/v1/admin/`` (experiments, champions) and the audit trail
- `model_listing`, `version_summary`, `training_overview`, `tuning_runs`: what the pages, the JSON
  and ``closedloop models`` show
- `CONSOLE_ROUTES`: the API-key scope each route needs; `actor_of(request)`: who the audit
  trail records for a request
"""

from ._app import CONSOLE_ROUTES, actor_of, create_console
from ._data import model_listing, training_overview, tuning_runs, version_summary

__all__ = [
    "CONSOLE_ROUTES",
    "actor_of",
    "create_console",
    "model_listing",
    "training_overview",
    "tuning_runs",
    "version_summary",
]
