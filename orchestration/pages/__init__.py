"""The operator console's read side: what the pages show, computed from the rows.

Everything here reads; nothing changes a row. Three modules, one concern each:

- ``charts``: the dashboard's inline SVG bar charts (throughput, queue depth over 24 hours);
- ``explain``: the "why is this not running?" explainer on a work item's page, and the dispatch
  gate's state in plain language;
- ``console``: the pages' selectors (dashboard summary, live workers, locks, an item's attempts),
  which return typed rows (``WorkerRow``, ``LockRow``) rather than attributes added to model
  instances.

``web.py`` calls ``console`` and ``explain``; ``console`` builds on the other two.
"""
