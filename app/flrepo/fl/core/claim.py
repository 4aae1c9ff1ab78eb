"""A collector's claim on its task (flrepo.server.repository.claims): claimed before anything is reported,
its task token then sent with every request of the collector's client, and kept in the collector's state
directory so that a collector restarted after a crash (even SIGKILL) re-claims at once and resumes.

The state directory: FLREPO_STATE_DIR, else $XDG_STATE_HOME/flrepo, else ~/.local/state/flrepo. A token
file is named by the repository's URL and the task, readable by its owner only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from flrepo.client import Forbidden, RepositoryClient, RepositoryError
from flrepo.schemas.tasks import TERMINAL, ClaimOut

log = logging.getLogger(__name__)
# The task token of the claim a process acts under (flrepo.client reads it: the ServerApp's process).
TOKEN_ENV = "FLREPO_TASK_TOKEN"


def state_dir(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ if env is None else env)
    if env.get("FLREPO_STATE_DIR"):
        return Path(env["FLREPO_STATE_DIR"])
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else Path.home() / ".local" / "state"
    return base / "flrepo"


def token_file(repo: RepositoryClient, task_id: str, directory: Path | None = None) -> Path:
    name = hashlib.sha256(f"{repo.base_url}\n{task_id}".encode()).hexdigest()[:32]
    return (directory or state_dir()) / "task-tokens" / f"{name}.token"


def _saved(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _save(path: Path, token: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_suffix(".part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token)
        partial.replace(path)
    except OSError as exc:  # the claim holds anyway; only a restart would have to wait for it to lapse
        log.warning("could not keep the task token in %s: %s", path, exc)


def claim(repo: RepositoryClient, task_id: str, collector: str, directory: Path | None = None) -> ClaimOut:
    """Claim the task (re-claim with a kept token), and send its token with every later request of
    `repo`. Conflict (409) while another collector's claim is live."""
    path = token_file(repo, task_id, directory)
    kept = _saved(path)
    try:
        claimed = repo.claim_task(task_id, collector=collector, token=kept)
    except Forbidden:
        if kept is None:
            raise
        log.info("task %s: the kept task token is no longer the task's; claiming anew", task_id)
        claimed = repo.claim_task(task_id, collector=collector)
    if claimed.token != kept:
        _save(path, claimed.token)
    repo.task_token = claimed.token
    return claimed


def release(repo: RepositoryClient, task_id: str, directory: Path | None = None) -> None:
    """Forget the kept token once the task has ended (nothing can resume it)."""
    token_file(repo, task_id, directory).unlink(missing_ok=True)


def release_if_ended(repo: RepositoryClient, task_id: str, directory: Path | None = None) -> None:
    """`release` once the task has ended; kept while it runs (a restart resumes with it)."""
    try:
        if repo.get_task(task_id).phase in TERMINAL:
            release(repo, task_id, directory)
    except RepositoryError as exc:
        log.warning("task %s: could not read its phase to forget its token: %s", task_id, exc)
