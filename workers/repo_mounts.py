"""What of ``WHIM_LOCAL_REPOS_DIR`` a container sees: its own bare repository, and no part of
it that can make code run.

The agent is the adversary (DESIGN.md principle 9). Mounting the whole directory read-write
let an agent assigned ``acme/widgets`` push to, rewind or read any other repository, and plant
``hooks/post-receive`` in one: the hook then ran in the next agent's container when its harness
pushed, and on the host when a person pushed. So, for the item's ``<dir>/<owner>/<name>.git``
only (mounted at the same path, so the harness's ``file://<dir>/<owner>/<name>.git`` URL works
unchanged):

1. The repository itself is bound **read-only**: no file can be created, changed or renamed
   at its top level — ``config``, ``HEAD``, ``packed-refs``, ``info/``, ``commondir``,
   ``config.worktree``, ``worktrees/``, ``branches/``, ``remotes/``.
2. ``objects/``, ``refs/`` and ``logs/`` are bound **read-write** on top: all a push writes
   (the quarantine directory, packs and loose objects, ``refs/…/*.lock`` then the ref, and
   appends to existing reflogs). ``logs/`` is made (empty, owned like ``refs/``) when missing,
   so a repository with ``core.logAllRefUpdates`` still takes pushes.
3. ``hooks/`` is covered by an **empty read-only tmpfs**: the repository's own hooks never run
   in a container, whoever pushes from inside it, and nothing can be planted there.
4. The harness pushes with ``--receive-pack="git -c core.hooksPath=/dev/null -c
   receive.autogc=false receive-pack"`` (``harness/gitops.py``): git drops ``GIT_CONFIG_*``
   for the receive-pack of a local push, so the harness's own ``core.hooksPath`` never reached
   it; ``-c`` on that command does. ``receive.autogc`` is off because ``gc`` locks
   ``gc.pid`` at the (read-only) top level; the host's own gc packs what agents pushed.

Where a bare repository can make git run code, and what covers it:

- ``hooks/*`` (pre-receive, update, post-receive, post-update, reference-transaction,
  proc-receive, push-to-checkout): read-only and empty inside; not writable (3).
- ``config``: ``core.hooksPath``, ``core.fsmonitor``, ``core.sshCommand``, ``core.pager``,
  ``core.editor``, ``core.gitProxy``, ``credential.helper``, ``alias.*``, ``filter.*``,
  ``diff.*.textconv``, ``merge.*.driver``, ``gpg.program``, ``include.path`` / ``includeIf``
  (read another file as config): read-only (1).
- ``commondir`` (makes git take ``config`` and ``hooks/`` from another directory, one the
  agent could fill) and ``config.worktree``: cannot be created (1).
- ``info/attributes``: picks which configured filter, diff or merge driver runs on a path;
  read-only (1).
- ``objects/info/alternates``, refs and reflogs: data, never executed; they stay writable
  because the harness's push must write there. The agent runs as another user (uid 1001)
  and cannot write them unless the host made the repository writable by others; were it so,
  it could move its own refs and leave junk or symlinks there that git on the host follows
  when a person later writes to this repository (see README "Security model").
  A repository whose ``objects``, ``refs``, ``logs`` or ``hooks`` is itself a symlink or leaves
  the repository is refused. Serving repositories over git's protocol instead of a mount would
  close the rest.

The local runtime does not isolate anything (``local_runtime.py``): it mounts nothing, and only
point 4 applies to it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from docker.types import Mount

from orchestration.forms.repos import repo_error

WRITABLE = ("objects", "refs", "logs")


class RepositoryRefused(RuntimeError):
    """The repository's layout would let the container reach outside it."""


def bare_repository(repos_dir: str, repo: str) -> Path | None:
    """``<repos_dir>/<owner>/<name>.git`` when ``repo`` is a well-formed name, else None."""
    if not repos_dir or repo_error(repo) is not None:  # the API's own rule (forms/repos.py)
        return None
    owner, name = repo.split("/", 1)
    return Path(repos_dir) / owner / f"{name}.git"


def repository_mounts(repos_dir: str, repo: str) -> list[Mount]:
    """The mounts that give a container ``repo`` and nothing else (see the module docstring).

    None when there is no such bare repository: the harness's clone then fails as it would
    for any missing repository. Raises RepositoryRefused when one of its parts is a symlink or
    resolves outside it.
    """
    bare = bare_repository(repos_dir, repo)
    if bare is None or not (bare / "objects").is_dir() or not (bare / "refs").is_dir():
        return []
    real = bare.resolve()
    if not real.is_relative_to(Path(repos_dir).resolve()):
        raise RepositoryRefused(f"{repo}: its bare repository resolves outside the repos dir")
    _ensure_logs(real)
    mounts = [Mount(target=str(bare), source=str(real), type="bind", read_only=True)]
    for part in (*WRITABLE, "hooks"):
        path = real / part
        if not path.exists() and not path.is_symlink():
            continue
        if path.is_symlink() or not path.is_dir() or path.resolve().parent != real:
            raise RepositoryRefused(f"{repo}: {part}/ must be a directory inside the repository")
        if part == "hooks":
            hidden = Mount(str(bare / part), None, type="tmpfs", read_only=True, tmpfs_size=4096)
            mounts.append(hidden)
        else:
            mounts.append(Mount(target=str(bare / part), source=str(path), type="bind"))
    return mounts


def _ensure_logs(real: Path) -> None:
    """An empty ``logs/`` owned like ``refs/``, so reflogs can be written below the read-only
    top level; best effort (without it, only a repository that logs every ref update fails)."""
    logs = real / "logs"
    if logs.exists() or logs.is_symlink():
        return
    with contextlib.suppress(OSError):
        logs.mkdir(mode=0o775)
        owner = (real / "refs").stat()
        with contextlib.suppress(OSError):
            os.chown(logs, owner.st_uid, owner.st_gid)
