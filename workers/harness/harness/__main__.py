"""``python3 -m harness``: run one attempt and exit with its code (see ``harness.main``)."""

from .main import main

raise SystemExit(main())
