"""Forms: the one definition of valid input (API.md "Validation").

The API, the web form and the management commands all validate through these forms, so every
edge gives the same messages for the same mistake. Field names are API.md's camelCase.

A package of small modules, one per kind of caller:

- ``fields``: the strict fields, their shared wording, ``ErrorFirstForm`` and the small value
  checks (``contains_nul``, ``contains_surrogate``, ``bounded_seconds``) that the fields and
  other edges share;
- ``branches``: the branch-name rules (``validate_branch``, ``derive_branch``);
- ``clients``: what people and programs send (submit, requeue, kill, the queue query, the
  ids a bulk action selects);
- ``callbacks``: what a worker's harness reports (register, heartbeat, lock, complete, fail,
  stuck) and the normalisation of the paths it locks.

The GitHub webhook's forms live with the webhook, in ``reviews.forms``.
"""
