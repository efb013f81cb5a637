"""The attempt's checkout: clone, branch, the branch policy and the files only the harness
and the agent share.

The clone keeps its git directory apart (``$WORKSPACE/.whim-git``, the harness's alone:
``gitops.Git``). The branch is checked out tracking the remote branch when it exists — a
retried attempt resumes from what an earlier one pushed — else started from the default
branch. A protected branch or the repository's default branch is refused (``PolicyError``)
before anything is pushed. The shared files (``prompts.PRIVATE_FILES``: the spec, the
learnings, the agent's progress notes and new learnings, all under ``.whim/``) are listed in
the git directory's ``info/exclude``, and left out of every commit even where the repository
tracks them: nothing of a later attempt depends on them.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .config import Config, WorkItem
from .errors import Category, ConfigError, PolicyError
from .gitops import Git, GitError, git_env
from .logs import Logger
from .prompts import PRIVATE_FILES
from .refs import protected_rule

# Files the agent CLIs read as instructions or settings (hooks!) from the working directory.
AGENT_INSTRUCTIONS = re.compile(
    r"(^|/)(CLAUDE\.md|CLAUDE\.local\.md|AGENTS\.md|AGENTS\.override\.md)$|(^|/)\.(claude|codex)/"
)


@dataclass
class Checkout:
    git: Git
    default: str  # the remote's default branch (read before the agent runs)
    existed: bool  # the branch was on the remote already
    start: str  # HEAD right after the checkout

    def ahead_of_default(self) -> int:
        """How many commits the branch has that the default branch has not."""
        try:
            out = self.git.run("rev-list", "--count", f"refs/remotes/origin/{self.default}..HEAD")
        except GitError:
            return 0
        return int(out.strip() or 0)

    def instructions_restore(self) -> list[str]:
        """Put the agent-instruction files (CLAUDE.md, AGENTS.md, .claude/, .codex/) back as the
        default branch has them, before an invocation that judges the work (review, verify):
        the agent that did the work must not steer its judge through them. Returns the paths
        put back; the caller resets the checkout afterwards when it must."""
        base = f"refs/remotes/origin/{self.default}"
        changed = self.git.run("diff", "--name-only", "--no-renames", "-z", base, "HEAD")
        paths = [p for p in changed.split("\0") if p and AGENT_INSTRUCTIONS.search(p)]
        for path in paths:
            if self.git.ok("cat-file", "-e", f"{base}:{path}"):
                self.git.run("checkout", base, "--", path, category=Category.COMMIT_ERROR)
            else:
                self.git.run("rm", "-q", "--cached", "--", path, category=Category.COMMIT_ERROR)
                target = self.git.workdir / path
                if os.path.lexists(target):
                    target.unlink()
        return paths

    def default_file(self, path: str, *, limit: int) -> bytes | None:
        """``path`` as the default branch holds it — what a person merged, not what an earlier
        attempt's agent pushed to the work branch. None when it is not there; a symlink or a
        directory there is a ``ConfigError``; more than ``limit`` bytes are cut (the caller
        refuses them)."""
        listing = self.git.run("ls-tree", "-z", f"refs/remotes/origin/{self.default}", "--", path)
        if not listing:
            return None
        mode, kind, rest = listing.rstrip("\0").split(" ", 2)
        if kind != "blob" or mode not in ("100644", "100755"):
            raise ConfigError(f"{path} on {self.default} is not a regular file")
        sha = rest.split("\t", 1)[0]
        return self.git.run_bytes("cat-file", "blob", sha)[: limit + 1]


def policy_check(branch: str, *, protected: tuple[str, ...], default: str | None) -> None:
    """Refuse (POLICY_ERROR, permanent) a protected branch or the repository's default
    branch (compared regardless of case, like the globs): Whim's work reaches those only
    through a pull request that a person merges."""
    rule = protected_rule(branch, protected)
    if rule is not None:
        raise PolicyError(
            f"branch {branch!r} is protected (WHIM_PROTECTED_BRANCHES rule {rule!r}); "
            "refusing to push to it"
        )
    if default is not None and branch.casefold() == default.casefold():
        raise PolicyError(
            f"branch {branch!r} is the repository's default branch; "
            "refusing to push to it (Whim's work reaches it only through a pull request)"
        )


def checkout_prepare(
    config: Config,
    item: WorkItem,
    *,
    log: Logger,
    pushes: bool = True,
    must_exist: bool = False,
    default_only: bool = False,
) -> Checkout:
    """Clone and check out ``item.branch``. ``pushes``: apply the branch policy (a
    verification attempt pushes nothing). ``must_exist``: the branch must be on the remote.
    ``default_only`` (a spec attempt, which pushes nothing): stay on the default branch."""
    git, default = checkout_clone(config, item, log=log)
    if default_only:
        start = git.head()
        log(f"on the default branch {default} at {start[:12]} (read only: nothing is pushed)")
        exclude_private(git)
        return Checkout(git=git, default=default, existed=False, start=start)
    if pushes:
        policy_check(item.branch, protected=config.protected_branches, default=default)
    if must_exist and not git.ok(
        "rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{item.branch}"
    ):
        raise GitError(
            f"branch {item.branch!r} is not on the remote: there is nothing to verify",
            category=Category.CLONE_ERROR,
        )
    existed = git.check_out(item.branch, default=default)
    start = git.head()
    log(
        f"on branch {item.branch} ("
        + ("tracking the remote branch" if existed else f"new, from {default}")
        + f") at {start[:12]}"
    )
    exclude_private(git)
    return Checkout(git=git, default=default, existed=existed, start=start)


def checkout_clone(config: Config, item: WorkItem, *, log: Logger) -> tuple[Git, str]:
    """A fresh clone of ``item.repo`` (its git directory apart), and the remote's default
    branch, read before any agent runs."""
    git = Git(
        workdir=config.checkout,
        env=git_env(
            base_url=config.git_base_url,
            token=config.github_token,
            author_name=config.author_name,
            author_email=config.author_email,
        ),
        local_remote=config.git_is_local,
        git_dir=config.workspace / ".whim-git",
    )
    if config.checkout.exists():
        shutil.rmtree(config.checkout)
    log(f"cloning {item.repo} from {_host(config.git_base_url)}")
    git.clone(config.clone_url(item.repo))
    return git, git.default_branch()  # read before the agent runs: it cannot forge it


def exclude_private(git: Git) -> None:
    if git.git_dir is None:
        return
    exclude = git.git_dir / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a", encoding="utf-8") as out:
        out.write("\n# Whim: shared with the agent, never committed\n")
        out.writelines(f"/{path}\n" for path in PRIVATE_FILES)


def _inside(checkout: Path, relative: str) -> Path | None:
    """``checkout/relative`` when every directory on the way is a real one inside the
    checkout (a branch may hold a ``.whim`` symlink that leads anywhere), else None."""
    path = checkout / relative
    parent = path.parent
    while parent != checkout:
        if parent.is_symlink():
            return None
        parent = parent.parent
    return path


def private_file_write(checkout: Path, relative: str, text: str) -> None:
    """Write one of the shared ``.whim/`` files (replacing a symlink the branch may hold;
    a symlinked ``.whim`` directory is replaced by a real one)."""
    path = _inside(checkout, relative)
    if path is None:
        (checkout / relative).parent.unlink()
        path = checkout / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_text(text, encoding="utf-8")


def private_file_read(checkout: Path, relative: str, *, limit: int = 200_000) -> str:
    """One of the shared files, as the agent left it ("" when absent, a symlink or odd)."""
    path = _inside(checkout, relative)
    if path is None or path.is_symlink() or not path.is_file():
        return ""
    try:
        with path.open("rb") as handle:
            return handle.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _host(url: str) -> str:
    """A URL fit for a log line: scheme and host, no credentials, no path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path if parts.scheme == 'file' else ''}"
