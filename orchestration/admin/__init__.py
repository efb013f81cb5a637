"""Django admin: every model, fast at a million rows, with actions that call the services.

Django's autodiscover imports ``orchestration.admin`` only, so this package imports each of
its modules to run their ``@admin.register`` calls:

- ``base``: the shared machinery — the capped-count paginator, the fast list admin, the
  recent-values filter, and the audited-action helpers (ask why; record who, what and why);
- ``work_items``: work items, their inlines and actions (cancel, requeue, priority);
- ``workers``: workers (attempts), kill and show logs;
- ``ledger``: file locks, events, daily usage, dispatch state, worker metrics, API keys;
- ``learnings``: learnings, read-only (deletable: a model wrote them);
- ``nodes``: the nodes (Docker hosts), drain and resume;
- ``schedules``: the beat schedules (django-celery-beat's ``PeriodicTask``), audited.
"""

from orchestration.admin import base, learnings, ledger, nodes, schedules, work_items, workers

__all__ = ["base", "learnings", "ledger", "nodes", "schedules", "work_items", "workers"]
