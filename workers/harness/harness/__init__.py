"""The Whim worker harness: the program that runs inside one attempt's container.

Standard library only (the image has python3 and git, nothing else), and nothing from the
Django project. ``python3 -m harness`` runs one attempt (see ``harness.main``);
``python3 -m harness.lockcli`` is what the ``whim-lock`` / ``whim-unlock`` commands call.
"""
