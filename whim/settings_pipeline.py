"""The agent pipeline's settings (issue 10): money limits, and the knobs every container's
harness gets (workers/runtime.py). Star-imported by ``whim.settings``, the one module Django
reads; each variable is in README.md's configuration table with its default, and validated by
``orchestration.checks``. ``*_FILE`` variants work for the secrets, as everywhere.
"""

from __future__ import annotations

import environ

env = environ.FileAwareEnv()

# --- Money (services/costs.py, README "Cost") ---------------------------------------------
# Price per million tokens: what an attempt that reports no cost of its own is estimated at.
TOKEN_PRICE_IN_PER_MILLION = env.float("TOKEN_PRICE_IN_PER_MILLION", default=3.0)
TOKEN_PRICE_OUT_PER_MILLION = env.float("TOKEN_PRICE_OUT_PER_MILLION", default=15.0)
# USD the ledger may charge per calendar day before dispatch holds new attempts (0: no limit).
DAILY_COST_BUDGET = env.float("DAILY_COST_BUDGET", default=0.0)
# USD one item may spend over all its attempts unless its metadata says maxCostUsd (0: none).
ITEM_COST_CAP = env.float("ITEM_COST_CAP", default=0.0)
# Most USD a worker may report for one attempt (like MAX_TOKENS_PER_ATTEMPT); more: 400.
MAX_COST_PER_ATTEMPT_USD = env.float("MAX_COST_PER_ATTEMPT_USD", default=1000.0)
# The harness's pipeline knobs, passed to every container (workers/runtime.py).
AGENT_IDLE_TIMEOUT = env.int("AGENT_IDLE_TIMEOUT", default=600)
TEST_TIMEOUT = env.int("TEST_TIMEOUT", default=900)
FIX_ITERATIONS = env.int("FIX_ITERATIONS", default=2)
WHIM_REVIEWER = env.str("WHIM_REVIEWER", default="agent").strip().lower()
AI_REVIEW_MODEL = env.str("AI_REVIEW_MODEL", default="claude-sonnet-4-5").strip()
ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="").strip()
# The agents' keys (ANTHROPIC_API_KEY_FILE / OPENAI_API_KEY_FILE work too): handed to each
# container, since the agent CLIs need them; never logged. Stripped like API_KEY.
ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="").strip()
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="").strip()
