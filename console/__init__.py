"""The console: experiment reports and admin actions, served apart from the decision service.

- `create_console(config)`: the FastAPI app ``closedloop console`` serves: ``/v1/experiments``
  and their reports (``read``), admin actions under ``/v1/admin/`` and the audit trail (``admin``)
- `CONSOLE_ROUTES`: the API-key scope each route needs; `actor_of(request)`: who the audit
  trail records for a request
"""

from ._app import CONSOLE_ROUTES, actor_of, create_console

__all__ = ["CONSOLE_ROUTES", "actor_of", "create_console"]
