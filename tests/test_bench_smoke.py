"""The benchmark suite runs end to end at tiny sizes (``python -m bench --smoke``), so it cannot
rot: every registered module runs (or says which need is missing), none raises, and the JSON
for history holds a figure per benchmark."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from bench.__main__ import MODULES
from bench.core import with_db
from tests.conftest import ROOT

pytestmark = pytest.mark.celery


def test_the_benchmark_suite_runs_every_module_at_smoke_size(
    tmp_path: Path, transactional_db: None
) -> None:
    out = tmp_path / "bench.json"
    redis_url = os.environ.get("BENCH_REDIS_URL") or with_db(os.environ["REDIS_URL"], 14)
    env = {
        **os.environ,
        "BENCH_DATABASE_NAME": f"{connection.settings_dict['NAME']}_bench",
        "BENCH_REDIS_URL": redis_url,
    }
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert doc["smoke"] is True
    figures = doc["figures"]
    assert not [f for f in figures if f["skipped"] == "raised (see above)"], run.stdout[-4000:]
    measured = [f for f in figures if not f["skipped"]]
    assert measured, "no figure was measured"
    for fig in measured:
        assert fig["whim"]["n"] > 0, fig["name"]
    registered = {b.name for m in MODULES for b in importlib.import_module(m).BENCHMARKS}
    assert registered <= {f["bench"] for f in figures}, "a benchmark reported nothing"
