"""Issue 28 end to end, with API keys: an unrelated writer cannot steer a task (status, heartbeat,
discovery record, checkpoints, the output) and the collector resumes from and publishes only what it
wrote; a local execution refuses a discovery record not signed as the task requires, and `--server` by
hand still works (tests/fl/test_discovery_and_claims.py)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import yaml

from flrepo.client import Conflict, Forbidden, RepositoryClient
from flrepo.fl.catalogue import seed
from flrepo.fl.core.claim import claim
from flrepo.fl.core.lifecycle import started
from flrepo.fl.core.link import TaskLink
from flrepo.fl.core.reporting import RoundReporter
from flrepo.fl.core.resume import resume_point
from flrepo.fl.demo import digits_task, fl_env, publisher, register_model, write_partitions
from flrepo.server.auth import hash_key
from flrepo.server.main import create_app
from flrepo.signing import Keyring, encode_key, new_key_pair
from tests.helpers import FlSite, LiveServer, logs_of, make_settings, run_training

KEYS = {"admin": "admin-key", "collector": "collector-key", "site": "site-key", "intruder": "intruder-key"}
ROLES = {"admin": "admin", "collector": "writer", "site": "writer", "intruder": "writer"}
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def keyed(settings, tmp_path) -> Iterator[tuple[FlSite, RepositoryClient]]:
    """An API server with API keys (in a thread of this process, as the fl fixture's); the FL processes run
    with the collector's key (writer); the second value is a client holding the intruder's writer key."""
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump([{"id": n, "role": ROLES[n], "sha256": hash_key(k)} for n, k in KEYS.items()]))
    names = {"db_name": settings.db_name, "gridfs_db_name": settings.gridfs_db_name}
    with LiveServer(create_app(make_settings(settings.mongodb_url, **names, api_keys_file=keys))) as server:
        url = server.url
        keyring, trusted = publisher("test")
        with (
            RepositoryClient(url, api_key=KEYS["admin"], keyring=keyring) as admin,
            RepositoryClient(url, api_key=KEYS["intruder"], keyring=Keyring()) as intruder,
        ):
            seed(admin)
            processes = {**fl_env(url, trusted), "FLREPO_API_KEY": KEYS["collector"]}
            yield FlSite(admin, url, processes, tmp_path), intruder


def _tries(intruder: RepositoryClient, task_id: str) -> dict[str, int]:
    """What an unrelated writer tries on a task; the status of each answer."""
    attempts = {
        "status": lambda: intruder.update_task_status(task_id, phase="Running"),
        "heartbeat": lambda: intruder.update_task_status(task_id, collector="evil:1", current_round=1),
        "discovery": lambda: intruder.update_task_status(task_id, server_address="evil:8080", server_ca=PEM),
        "checkpoint": lambda: intruder.create_checkpoint(task_id, 1, loss=-1e308),
        "checkpoint file": lambda: intruder.upload_checkpoint(task_id, 1, io.BytesIO(b"not yours")),
        "registering checkpoint file": lambda: intruder.upload_checkpoint(
            task_id, 1, io.BytesIO(b"not yours"), register=True, loss=-1e308
        ),
        "output": lambda: intruder.create_model("digits", f"v1-{task_id}", "numpy", task_id=task_id),
    }
    answers = {}
    for what, attempt in attempts.items():
        try:
            attempt()
            answers[what] = 200
        except Forbidden:
            answers[what] = 403
    return answers


def test_an_unrelated_writer_cannot_steer_a_task_and_the_collector_publishes_its_own(keyed, tmp_path):
    fl, intruder = keyed
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    fl.repo.create_task(digits_task("t", rounds=2, clients=2, publish="best"))
    assert _tries(intruder, "t") == dict.fromkeys(
        ("status", "heartbeat", "discovery", "checkpoint", "checkpoint file", "registering checkpoint file", "output"),
        403,
    )

    attempts: list[dict[str, int]] = []

    def meanwhile(task, processes):  # while the collector runs, the intruder tries again
        if task["phase"] == "Running" and not attempts:
            attempts.append(_tries(intruder, "t"))

    task, code = run_training(fl, "t", write_partitions(tmp_path, 2), during=meanwhile)
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    assert attempts and set(attempts[0].values()) == {403}, attempts
    assert [h["round"] for h in task["history"]] == [1, 2] and task["resumed_from_round"] is None
    assert task["claimed_by"]["key_id"] == "collector" and task["discovery_signature"]["key_id"]
    assert task["best"]["loss"] > 0  # the collector's own checkpoints, not -1e308
    published = fl.repo.get_model("digits", "v1-t")
    assert published.meta["task_id"] == "t" and published.size


def _local_exec(fl: FlSite, task_id: str, *options: str, key: str = "site") -> subprocess.CompletedProcess[str]:
    env = {**fl.env, "FLREPO_API_KEY": KEYS[key]}
    command = [sys.executable, "-m", "flrepo.cli", "local-exec", "--task", task_id, "--repo", fl.url]
    command += ["--data", "digits:1/2", "--wait", "30", *options]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_a_local_execution_refuses_a_discovery_record_not_signed_as_the_task_requires(keyed, tmp_path):
    fl, _ = keyed
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    _, pinned_public = new_key_pair()
    pinned = f"pinned:{encode_key(pinned_public)}"
    for task_id, plan in (("unsigned", {}), ("pinned", {"discovery_key": pinned})):
        fl.repo.create_task(digits_task(task_id, rounds=1, clients=1, **plan))
        # An admin may write a status without a claim: here it stands for a forged record.
        fl.repo.update_task_status(task_id, phase="Running", runtime="legacy", server_address="127.0.0.1:9")
    unsigned = _local_exec(fl, "unsigned")
    assert unsigned.returncode != 0 and "not signed" in unsigned.stderr, unsigned.stderr

    # Signed by a key the sites trust, but not the one the task pins.
    from flrepo.fl.core.discovery import signed_fields

    private, public = new_key_pair()
    trusted_signer = Keyring.signer("other", private)
    fields = signed_fields(trusted_signer, "pinned", "legacy", "127.0.0.1:9", None)
    fl.repo.update_task_status("pinned", **fields)
    fl.env["FLREPO_TRUSTED_KEYS"] += f",other:{encode_key(public)}"
    wrong = _local_exec(fl, "pinned")
    assert wrong.returncode != 0 and "discovery_key" in wrong.stderr, wrong.stderr
    assert fl.repo.get_task("pinned").phase == "Running"  # a refused record fails nothing


@contextmanager
def _holding_collector(fl, tmp_path, task_id: str, rounds: int) -> Iterator[tuple[TaskLink, RoundReporter]]:
    """A collector with a writer key that claimed and started the task; its reporter's writes each wait
    their (capped) pause, so the rounds that end after the first are held and written together."""
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    fl.repo.create_task(digits_task(task_id, rounds=rounds, clients=1))
    with RepositoryClient(fl.url, api_key=KEYS["collector"]) as collector:
        claim(collector, task_id, "test:1")
        link = TaskLink(collector, task_id)
        started(link, fl.repo.get_task(task_id).model_dump(), None, None, "legacy", "127.0.0.1:9", None)
        reporter = RoundReporter(link)
        reporter.writes.share = 0.0001
        yield link, reporter


def test_a_collector_ends_its_task_with_the_last_round_in_the_end_report(keyed, tmp_path, caplog):
    """The final flush keeps the newest round's report for the task's end (one report fewer per task):
    its checkpoint goes first, which the service takes from a collector (no admin) one round past the
    reported progress, then one report carries the round and Succeeded."""
    fl, _ = keyed
    with _holding_collector(fl, tmp_path, "ending", 5) as (link, reporter):  # rounds 2 and 3 are held
        with caplog.at_level(logging.WARNING, logger="flrepo.fl.core.reporting"):
            for n in (1, 2, 3):
                reporter.trained(n, [("site-a", 10, {})], [])
                reporter.round_done(n, 1.0 / n, {"accuracy": 0.3 * n}, [np.full(2, float(n))], active=1)
            assert reporter.flush(60, final=True)
        assert "could not" not in caplog.text, caplog.text
        held = reporter.held()
        assert held["current_round"] == 3 and held["round"]["round"] == 3
        with pytest.raises(Conflict, match="not done yet"):  # registering by upload: the same progress rule
            link.repo.upload_checkpoint("ending", 4, io.BytesIO(b"ahead"), register=True, loss=0.1)
        before = fl.repo.get_task("ending")
        assert before.current_round == 2 and [h.round for h in before.history] == [1, 2]
        assert 3 in [c.round for c in fl.repo.list_checkpoints("ending") if c.size is not None]
        link.report(**{**held, "phase": "Succeeded", "reason": "TrainingComplete", "active": 0})
    task = fl.repo.get_task("ending")
    assert task.phase == "Succeeded" and task.current_round == 3 and task.active == 0
    assert [h.round for h in task.history] == [1, 2, 3] and task.participants[0].last_round == 3


def test_rounds_written_together_reach_the_task_with_their_checkpoints(keyed, tmp_path, caplog):
    """A collector (no admin) writing held rounds together: the service takes a checkpoint at most one
    round past the task's reported progress, so the earlier rounds are reported before the newest's
    checkpoint, and every round and both checkpoints (the newest, the best held) are taken."""
    fl, _ = keyed
    with _holding_collector(fl, tmp_path, "merged", 5) as (_, reporter):  # the rounds below are held
        losses = [0.9, 0.3, 0.5, 0.6, 0.4]  # round 2 is the best, held with later rounds
        with caplog.at_level(logging.WARNING, logger="flrepo.fl.core.reporting"):
            for n, loss in enumerate(losses, 1):
                reporter.round_done(n, loss, {}, [np.full(2, float(n))])
            assert reporter.flush(60)
    assert "could not" not in caplog.text, caplog.text
    task = fl.repo.get_task("merged")
    assert [h.round for h in task.history] == [1, 2, 3, 4, 5] and task.current_round == 5
    filed = [c.round for c in fl.repo.list_checkpoints("merged") if c.size is not None]
    assert 5 in filed and 2 in filed and task.best is not None and task.best.round == 2
    resume = resume_point(fl.repo, task.model_dump())
    assert resume is not None and resume.round == 5 and resume.weights[0].tolist() == [5.0, 5.0]
