"""Schemathesis hooks for the live fuzz run (tests/test_openapi_fuzz.py), loaded by its CLI
through ``SCHEMATHESIS_HOOKS``: the worker callbacks' ``{id}`` and ``{token}`` are set to a
real running attempt's (``WHIM_FUZZ_WORKER_ID``, ``WHIM_FUZZ_WORKER_TOKEN``), so the forms
behind them are reached instead of every call stopping at 401 or 403."""

from __future__ import annotations

import os
from typing import Any

import schemathesis


@schemathesis.hook
def map_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    if not path_parameters:
        return path_parameters
    path = context.operation.path
    if "token" in path_parameters:
        path_parameters["token"] = os.environ["WHIM_FUZZ_WORKER_TOKEN"]
    if path.startswith(("/api/worker/", "/w/")) and "id" in path_parameters:
        path_parameters["id"] = os.environ["WHIM_FUZZ_WORKER_ID"]
    return path_parameters
