"""A local execution on Flower's Message API runtime: Flower's SuperNode for this site.

The site's prepared model and data go to a site directory (flrepo.fl.message.client) named in the
SuperNode's node config; the SuperNode connects to the address the collector published, over TLS
trusting the published CA (or --root-certificates), authenticated with this site's key
(--participant-key) when the task lists participant keys. It runs until the task ends, and is
started again if it stops while the task still runs (a restarted collector); a SuperNode the
collector refuses (its key is not in the task's participant_keys) ends the local execution.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from flrepo.client import RepositoryClient
from flrepo.fl.core.discovery import Connection, Site
from flrepo.fl.core.lifecycle import exit_code
from flrepo.fl.core.reconnect import RECONNECT_SECONDS, stay
from flrepo.fl.core.trainer import SiteTrainer
from flrepo.fl.core.watch import TaskWatch
from flrepo.fl.message import programs, site_superexec
from flrepo.fl.message.client import SITE_KEY, save_site

log = logging.getLogger(__name__)
# The task is read at most this often (a service that does not hold reads: flrepo.fl.core.watch).
POLL_SECONDS = 2.0
SUPERNODE_CHECK_SECONDS = 0.5


def supernode_args(found: Connection, site: Site, workdir: Path, site_dir: Path, port: int) -> list[str]:
    """flower-supernode's options for this site."""
    argv = ["--superlink", found.address]
    if found.ca is None or site.insecure:
        argv += ["--insecure"]
    else:
        ca = workdir / "ca.pem"
        ca.write_bytes(found.ca)
        argv += ["--root-certificates", str(ca)]
    if site.key is not None:
        argv += ["--auth-supernode-private-key", str(site.key)]
    # Its Runtime API (for the ClientApp processes) stays on loopback.
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    argv += ["--node-config", f"{SITE_KEY}={json.dumps(str(site_dir))}"]
    argv += ["--max-wait-time", str(int(RECONNECT_SECONDS))]
    return argv


def run(
    repo: RepositoryClient,
    task: dict[str, Any],
    found: Connection,
    site: Site,
    client: SiteTrainer,
    workdir: Path,
    prefork: site_superexec.PreFork | None = None,
) -> int:
    """Run the SuperNode until the task ends; the exit code as for the legacy runtime. `prefork`: the
    child the local execution forked before its framework ran, to become the first SuperNode's
    SuperExec (flrepo.fl.message.site_superexec)."""
    task_id = task["task_id"]
    problem = _key_problem(task, site)
    if problem:
        log.error("task %s: %s", task_id, problem)
        return 1
    meta = repo.get_model(task["model"]["model_name"], task["model"]["model_version"]).meta or {}
    site_dir = save_site(client, workdir / "site", dict(meta))
    env = programs.flower_env(workdir / "flower")

    attempts = 0

    def attempt() -> int | None:
        nonlocal attempts
        attempts += 1
        port = programs.free_port()
        superexec = None
        supernode: programs.Program | None = None
        args = supernode_args(found, site, workdir, site_dir, port)
        node_env = env
        if not programs.stock():
            superexec_dir = workdir / f"superexec-{attempts}"
            if prefork is not None:  # once: a restarted SuperNode gets a fork of now, or starts its own
                superexec = prefork.go(site_dir, superexec_dir, port)
            superexec = superexec or site_superexec.start(site_dir, superexec_dir, port)
            if superexec is not None:
                node_env = {**env, **superexec.env()}
            if prefork is not None and prefork.node is not None:  # once, as the SuperExec
                supernode = prefork.node.start(args, node_env)
        if supernode is None:
            supernode = programs.start([*programs.command("flrepo-supernode"), *args], node_env)
        try:
            code = _watch(repo, task_id, supernode)
        finally:
            if superexec is not None:
                superexec.terminate()  # both wind down at once
            programs.stop(supernode)
            if superexec is not None:
                superexec.stop()
        if code is None:  # the SuperNode stopped while the task still runs (its collector gone or restarted)
            log.warning("task %s: the SuperNode stopped (code %s)", task_id, supernode.returncode)
        return code

    return stay(repo, task_id, attempt)


def public_key(private_key: Path) -> str:
    """The OpenSSH public key line ("ecdsa-sha2-nistp256 AAAA...") of a SuperNode's private key."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(private_key.read_bytes(), None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _key_problem(task: dict[str, Any], site: Site) -> str | None:
    """Why the collector would refuse this site, told before trying (None when it would not)."""
    allowed = {" ".join(k.split()[:2]) for k in task.get("participant_keys") or []}
    if not allowed:
        return None
    if site.key is None:
        return "the task admits only the SuperNodes in its participant_keys: give this site's key (--participant-key)"
    try:
        mine = public_key(site.key)
    except (ValueError, TypeError) as exc:
        return f"{site.key}: not an OpenSSH private key ({exc})"
    if mine not in allowed:
        return f"this site's public key is not in the task's participant_keys: {mine}"
    return None


def _watch(repo: RepositoryClient, task_id: str, supernode: programs.Program) -> int | None:
    """Wait for the task's end (its exit code) or the SuperNode's (None). The task is read with
    held requests (flrepo.fl.core.watch.TaskWatch) that answer the moment it ends; the SuperNode,
    a child process, is looked at every SUPERNODE_CHECK_SECONDS."""
    done = threading.Event()
    watch = TaskWatch(repo, task_id, interval=POLL_SECONDS, on_end=lambda end: done.set())
    watch.start()
    try:
        while not done.wait(SUPERNODE_CHECK_SECONDS):
            if supernode.poll() is not None:
                return None
    finally:
        watch.stop()
    end = watch.ended  # set before on_end was called
    if end is None:
        return None
    if end.phase != "Succeeded":
        log.warning("task %s ended: %s; local execution stopped", task_id, end)
    return exit_code(end)
