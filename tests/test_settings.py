"""Settings: reading them writes nothing; the beat schedule comes from one table of sweeps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import run_checks

from orchestration.registry import sweeps
from tests.conftest import ROOT


def embedded_env(run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("SECRET_KEY", None)
    env.update(WHIM_RUN_DIR=str(run_dir), DJANGO_SETTINGS_MODULE="whim.settings")
    return env


def run_python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_settings_writes_nothing_to_disk(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_python("import whim.settings", embedded_env(run_dir))
    assert not run_dir.exists()


def test_the_single_machine_secret_key_is_made_on_first_use_and_then_kept(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    show = "from django.conf import settings; print(settings.SECRET_KEY)"
    first = run_python(show, embedded_env(run_dir)).strip()
    second = run_python(show, embedded_env(run_dir)).strip()
    key = run_dir / "secret_key"
    assert len(first) >= 50 and first == second == key.read_text().strip()
    assert key.stat().st_mode & 0o777 == 0o600


def test_the_app_makes_the_embedded_folders_when_it_starts(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_python("import django; django.setup()", embedded_env(run_dir))
    assert (run_dir / "broker").is_dir()
    assert not (run_dir / "secret_key").exists()  # not used yet


def test_every_registered_sweep_has_a_beat_entry_with_its_period() -> None:
    assert set(sweeps()) == set(settings.SWEEP_PERIODS)
    for name, period in settings.SWEEP_PERIODS.items():
        entry = settings.CELERY_BEAT_SCHEDULE[f"whim-sweep-{name}"]
        assert entry["task"] == "orchestration.sweep" and entry["args"] == [name]
        assert entry["schedule"] == period
        assert 30 <= entry["options"]["expire_seconds"] <= 3600


def test_a_sweep_without_a_period_or_a_period_without_a_sweep_is_a_warning(
    settings: Any,
) -> None:
    def w004() -> list[str]:
        return [m.msg for m in run_checks() if m.id == "orchestration.W004"]

    assert w004() == []
    periods = dict(settings.SWEEP_PERIODS)
    del periods["locks"]
    settings.SWEEP_PERIODS = {**periods, "reindex": 60.0}
    messages = w004()
    assert len(messages) == 2
    assert "locks" in messages[0] and "reindex" in messages[1]


def test_no_two_system_checks_share_an_id() -> None:
    """An id names one problem: an operator silencing one (SILENCED_SYSTEM_CHECKS) must not
    silence another. Every ``id="<app>.<code>"`` in the code is found, with the function that
    raises it; one function may raise its id for several facets of its problem."""
    import ast

    owners: dict[str, set[str]] = {}
    for path in ROOT.glob("*/**/*.py"):
        if ".venv" in path.parts or "tests" in path.parts or ".run" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef):
                continue
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.keyword)
                    and node.arg == "id"
                    and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)
                    and node.value.value.split(".")[0] in ("orchestration", "intake", "workers")
                ):
                    owners.setdefault(node.value.value, set()).add(f"{path.name}:{func.name}")
    assert "orchestration.E080" in owners  # the scan sees the checks
    shared = {check_id: where for check_id, where in owners.items() if len(where) > 1}
    assert not shared, shared
