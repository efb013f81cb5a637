"""Which part of WHIM_LOCAL_REPOS_DIR a container gets: its own bare repository, top level
read-only, hooks hidden (workers/repo_mounts.py). The containers themselves are in
test_docker_repo_containment.py."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import docker
import pytest

from tests.factories import WorkerFactory
from workers.docker_runtime import DockerRuntime
from workers.repo_mounts import RepositoryRefused, repository_mounts


def bare(root: Path, repo: str) -> Path:
    path = root / f"{repo}.git"
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


def by_target(mounts: list[Any]) -> dict[str, Any]:
    return {m["Target"]: m for m in mounts}


def test_only_the_items_repository_is_mounted_its_top_level_read_only(tmp_path: Path) -> None:
    own = bare(tmp_path, "acme/widgets")
    bare(tmp_path, "victim/other")

    mounts = by_target(repository_mounts(str(tmp_path), "acme/widgets"))

    assert set(mounts) == {
        str(own),
        str(own / "objects"),
        str(own / "refs"),
        str(own / "logs"),
        str(own / "hooks"),
    }
    assert mounts[str(own)]["Source"] == str(own) and mounts[str(own)]["ReadOnly"] is True
    for part in ("objects", "refs", "logs"):
        mount = mounts[str(own / part)]
        assert mount["Type"] == "bind" and mount["Source"] == str(own / part)
        assert mount["ReadOnly"] is False
    hooks = mounts[str(own / "hooks")]
    assert hooks["Type"] == "tmpfs" and hooks["ReadOnly"] is True and not hooks["Source"]


def test_a_missing_logs_directory_is_made_so_reflogs_can_be_written(tmp_path: Path) -> None:
    own = bare(tmp_path, "acme/widgets")
    assert not (own / "logs").exists()

    repository_mounts(str(tmp_path), "acme/widgets")

    assert (own / "logs").is_dir() and not any((own / "logs").iterdir())


@pytest.mark.parametrize("repo", ["acme/missing", "acme/..", "../acme/widgets", "-x/y", "a/b/c"])
def test_nothing_is_mounted_for_a_repository_that_is_not_there(tmp_path: Path, repo: str) -> None:
    bare(tmp_path, "acme/widgets")

    assert repository_mounts(str(tmp_path), repo) == []
    assert repository_mounts("", "acme/widgets") == []


def test_a_repository_whose_refs_lead_elsewhere_is_refused(tmp_path: Path) -> None:
    own = bare(tmp_path, "acme/widgets")
    victim = bare(tmp_path, "victim/other")
    subprocess.run(["rm", "-rf", str(own / "refs")], check=True)
    (own / "refs").symlink_to(victim / "refs")

    with pytest.raises(RepositoryRefused, match="refs/"):
        repository_mounts(str(tmp_path), "acme/widgets")


def test_a_repository_that_resolves_outside_the_repos_dir_is_refused(tmp_path: Path) -> None:
    outside = bare(tmp_path / "elsewhere", "acme/widgets")
    (tmp_path / "repos" / "acme").mkdir(parents=True)
    (tmp_path / "repos" / "acme" / "widgets.git").symlink_to(outside)

    with pytest.raises(RepositoryRefused, match="outside"):
        repository_mounts(str(tmp_path / "repos"), "acme/widgets")


@pytest.mark.django_db
def test_the_container_gets_the_repository_mounts_and_never_the_whole_dir(
    settings: Any, tmp_path: Path
) -> None:
    own = bare(tmp_path, "acme/widgets")
    settings.WHIM_LOCAL_REPOS_DIR = str(tmp_path)
    settings.WHIM_CALLBACK_URL = "http://10.9.8.7:8000"
    worker = WorkerFactory.create(work_item__repo="acme/widgets")
    client = mock.Mock()
    client.containers.get.side_effect = docker.errors.NotFound("no")
    client.containers.run.return_value.id = "abc"
    with (
        mock.patch("workers.docker_runtime.docker.from_env", return_value=client),
        mock.patch.object(DockerRuntime, "ensure_network", return_value="172.30.0.1"),
    ):
        DockerRuntime().start(worker=worker, work_item=worker.work_item, token="t0k")

    options = client.containers.run.call_args.kwargs
    sources = {m.get("Source") for m in options["mounts"]}
    assert str(tmp_path) not in sources and not options.get("volumes")
    assert str(own) in sources and str(own / "objects") in sources
    assert by_target(options["mounts"])[str(own)]["ReadOnly"] is True
