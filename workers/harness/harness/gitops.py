"""Git, driven through the ``git`` binary with a controlled environment.

Credentials for https never appear on a command line, in a URL, in ``.git/config`` or in a log
line: the GitHub token travels as an ``http.<base>.extraHeader`` set through git's
``GIT_CONFIG_COUNT`` environment variables, scoped to the clone's host, and every error text is
masked before it leaves this module.

A push into a local bare repository (``file://`` or a path) runs ``git receive-pack`` in that
repository, and git drops every ``GIT_CONFIG_*`` variable for it: the ``core.hooksPath`` set
here never reaches it, so the repository's hooks and its config would decide what runs. The
harness names the receive-pack itself (``LOCAL_RECEIVE_PACK``), with hooks off and no
auto-gc; see ``workers/repo_mounts.py`` for what else keeps a bare repository inert.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from .errors import Category, HarnessError
from .logs import add_secret, mask

# `-c` on the command itself reaches receive-pack where GIT_CONFIG_* does not. Auto-gc would
# lock gc.pid at the repository's top level, read-only in a container (repo_mounts.py).
LOCAL_RECEIVE_PACK = "git -c core.hooksPath=/dev/null -c receive.autogc=false receive-pack"


class GitError(HarnessError):
    """A git command failed; the message is the command and its (masked) stderr."""


def git_env(
    *,
    base_url: str,
    token: str | None,
    author_name: str,
    author_email: str,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment every git command (the agent's too) runs with."""
    env = dict(os.environ if environ is None else environ)
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME=author_name,
        GIT_AUTHOR_EMAIL=author_email,
        GIT_COMMITTER_NAME=author_name,
        GIT_COMMITTER_EMAIL=author_email,
    )
    config: list[tuple[str, str]] = [("commit.gpgsign", "false"), ("core.hooksPath", "/dev/null")]
    if base_url.startswith("file://"):
        # Bare repositories mounted from the host belong to another uid; without this, git
        # refuses them as "dubious ownership".
        config.append(("safe.directory", "*"))
    if token and base_url.startswith(("https://", "http://")):
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        add_secret(basic)
        config.append((f"http.{base_url}.extraHeader", f"Authorization: Basic {basic}"))
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for index, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


class Git:
    """One checkout and the commands the harness runs in it.

    With ``git_dir``, the repository's git directory lives apart from the checkout (``clone
    --separate-git-dir``), private to the harness (mode 0700), and every command names it
    (``GIT_DIR``/``GIT_WORK_TREE``): the agent, who writes the checkout, can neither plant a
    hook or a config (``core.fsmonitor``, a filter driver …) that the harness's own git
    commands would run, nor point the checkout's ``.git`` elsewhere.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        env: dict[str, str],
        local_remote: bool = False,
        git_dir: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.env = env
        # Decided by the harness's own WHIM_GIT_BASE_URL, never by the checkout's config.
        self.local_remote = local_remote
        self.git_dir = git_dir

    def run(
        self,
        *args: str,
        category: str = Category.INTERNAL_ERROR,
        cwd: Path | None = None,
        timeout: float = 600.0,
    ) -> str:
        """Run ``git <args>`` and return its stdout; raise ``GitError(category)`` on failure."""
        out = self.run_bytes(*args, category=category, cwd=cwd, timeout=timeout)
        return out.decode("utf-8", errors="replace")

    def run_bytes(
        self,
        *args: str,
        category: str = Category.INTERNAL_ERROR,
        cwd: Path | None = None,
        timeout: float = 600.0,
    ) -> bytes:
        """``run``, its stdout left as bytes (a blob's content)."""
        try:
            proc = subprocess.run(
                ["git", *args],
                cwd=cwd or self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise GitError("git is not installed", category=Category.CONFIG_ERROR) from None
        except subprocess.TimeoutExpired:
            raise GitError(
                f"git {args[0]} timed out after {timeout:.0f}s", category=category
            ) from None
        if proc.returncode != 0:
            stderr = proc.stderr.decode("utf-8", errors="replace").strip()
            raise GitError(
                mask(f"git {args[0]} failed ({proc.returncode}): {stderr[-2000:]}"),
                category=category,
            )
        return proc.stdout

    def ok(self, *args: str) -> bool:
        """Whether ``git <args>`` succeeds (for questions such as "does this ref exist")."""
        try:
            self.run(*args)
        except GitError:
            return False
        return True

    # 2. Clone and branch ------------------------------------------------------------------

    def clone(self, url: str) -> None:
        self.workdir.parent.mkdir(parents=True, exist_ok=True)
        separate: list[str] = []
        if self.git_dir is not None:
            shutil.rmtree(self.git_dir, ignore_errors=True)
            separate = [f"--separate-git-dir={self.git_dir}"]
        self.run(
            "clone",
            "--no-tags",
            *separate,
            "--",
            url,
            str(self.workdir),
            category=Category.CLONE_ERROR,
            cwd=self.workdir.parent,
        )
        if self.git_dir is not None:
            os.chmod(self.git_dir, 0o700)
            self.env = {
                **self.env,
                "GIT_DIR": str(self.git_dir),
                "GIT_WORK_TREE": str(self.workdir),
            }

    def default_branch(self) -> str:
        """The remote's default branch: ``origin/HEAD`` as the clone set it, else the remote's
        own answer (``ls-remote --symref origin HEAD``), else — a bare repository whose HEAD
        names a branch it lacks, as git's ``master`` default while only ``main`` was pushed —
        its only branch, or ``main``. The harness never pushes to it."""
        prefix = "refs/remotes/origin/"
        try:
            ref = self.run("symbolic-ref", f"{prefix}HEAD").strip()
            if ref.startswith(prefix):
                return ref.removeprefix(prefix)
        except GitError:
            pass
        try:
            answer = self.run("ls-remote", "--symref", "origin", "HEAD", timeout=120.0)
        except GitError:
            answer = ""
        for line in answer.splitlines():
            # "ref: refs/heads/main<TAB>HEAD"
            target, _, name = line.removeprefix("ref: ").partition("\t")
            if line.startswith("ref: ") and name == "HEAD" and target.startswith("refs/heads/"):
                return target.removeprefix("refs/heads/")
        return self._branch_for_a_dangling_head()

    def _branch_for_a_dangling_head(self) -> str:
        prefix = "refs/remotes/origin/"
        listed = self.run("for-each-ref", "--format=%(refname)", prefix).splitlines()
        branches = sorted(r.removeprefix(prefix) for r in listed if r != f"{prefix}HEAD")
        if len(branches) == 1:
            return branches[0]
        if "main" in branches:
            return "main"
        if branches:
            raise GitError(
                f"the repository's HEAD names no branch it has, and of its {len(branches)} "
                "branches none is main: set its HEAD (git symbolic-ref HEAD refs/heads/<name>)",
                category=Category.CONFIG_ERROR,  # a retry would not help
            )
        raise GitError(
            "the repository has no default branch (is it empty?)",
            category=Category.CLONE_ERROR,
        )

    def check_out(self, branch: str, *, default: str) -> bool:
        """Check out ``branch``: track the remote one if it exists, else start it from
        ``default``. Returns whether the branch already existed on the remote."""
        exists = self.ok("rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}")
        if exists:
            self.run(
                "checkout",
                "-B",
                branch,
                "--track",
                f"origin/{branch}",
                category=Category.CLONE_ERROR,
            )
        else:
            self.run(
                "checkout",
                "-B",
                branch,
                "--no-track",
                f"origin/{default}",
                category=Category.CLONE_ERROR,
            )
        return exists

    # 5. What changed ----------------------------------------------------------------------

    def head(self) -> str:
        return self.run("rev-parse", "HEAD").strip()

    def changed_files(self, since: str) -> list[str]:
        """Repo-relative paths changed since ``since``: committed by the agent, staged,
        modified, deleted or untracked (ignored files excluded), sorted and unique."""
        files: set[str] = set()
        status = self.run("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
        for entry in status.split("\0"):
            if len(entry) > 3:
                files.add(entry[3:])
        if self.head() != since:
            committed = self.run("diff", "--name-only", "-z", "--no-renames", since, "HEAD")
            files.update(path for path in committed.split("\0") if path)
        return sorted(files)

    # 6. Commit and push -------------------------------------------------------------------

    def commit_all(self, message: str, *, leave_out: tuple[str, ...] = ()) -> bool:
        """Stage everything but ``leave_out`` (paths, even tracked ones) and commit it; False
        when there was nothing left to commit."""
        self.run("add", "--all", category=Category.COMMIT_ERROR)
        if leave_out:
            self.run("reset", "--quiet", "HEAD", "--", *leave_out, category=Category.COMMIT_ERROR)
        if self.ok("diff", "--cached", "--quiet"):
            return False
        self.run("commit", "--no-verify", "--quiet", "-m", message, category=Category.COMMIT_ERROR)
        return True

    def push(self, branch: str) -> None:
        receive_pack = [f"--receive-pack={LOCAL_RECEIVE_PACK}"] if self.local_remote else []
        self.run(
            "push",
            "--no-verify",
            "--porcelain",
            *receive_pack,
            "origin",
            f"HEAD:refs/heads/{branch}",
            category=Category.PUSH_ERROR,
        )
