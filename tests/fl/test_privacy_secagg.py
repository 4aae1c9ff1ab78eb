"""SecAgg+ on the Message-API runtime, end to end: the strategy receives only the securely
aggregated sum (every reply carries the same arrays), which equals plain FedAvg's aggregate of the
same sites' updates within the quantization error; a site without Flower's secaggplus_mod is
refused with its reason and, within the reconstruction threshold, the round goes on without it;
below the threshold the round fails and the task says why."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import cloudpickle
import numpy as np
from flwr.serverapp.strategy import FedAvg

from flrepo.fl.demo import digits_task, register_model
from tests.fl.test_privacy import train
from tests.helpers import logs_of

SECAGG = {"num_shares": 3, "reconstruction_threshold": 2, "clipping_range": 8.0, "quantization_range": 2**22}
SITES = ["digits:1/3", "digits:2/3", "digits:3/3"]


class Recording(FedAvg):
    """FedAvg that keeps what its aggregation receives: each reply's arrays, flattened."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        flat = [np.concatenate([a.ravel() for a in m.content["arrays"].to_numpy_ndarrays()]) for m in ok]
        weights = [int(m.content["metrics"]["num-examples"]) for m in ok]
        np.savez(Path(self.directory) / f"round-{server_round}.npz", replies=np.stack(flat), weights=weights)
        return super().aggregate_train(server_round, replies)


def _recording_strategy(fl, name: str, directory: Path) -> None:
    directory.mkdir()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the ServerApp cannot import tests/
    try:
        data = cloudpickle.dumps(Recording(str(directory)))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    fl.repo.create_strategy(name, "FedAvg that records what it receives", {"runtime": "message"})
    fl.repo.upload_strategy(name, io.BytesIO(data), filename=f"{name}.pkl", sign=True)


def _received(directory: Path):
    with np.load(directory / "round-1.npz") as data:
        return data["replies"], data["weights"]


def test_the_strategy_receives_only_the_secure_sum_which_equals_plain_fedavg(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    _recording_strategy(fl, "recording-secure", tmp_path / "secure")
    _recording_strategy(fl, "recording-plain", tmp_path / "plain")
    secure = digits_task("sec", "recording-secure", rounds=1, clients=3, privacy={"secure_aggregation": SECAGG})
    fl.repo.create_task(secure)
    task, code = train(fl, "sec", SITES)
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    # The same sites (same data, same seeds) without SecAgg+: what the strategy would otherwise see.
    fl.repo.create_task(digits_task("plain", "recording-plain", rounds=1, clients=3))
    plain_task, code = train(fl, "plain", SITES)
    assert code == 0 and plain_task["phase"] == "Succeeded", logs_of(fl.logs)

    secure_replies, _ = _received(tmp_path / "secure")
    plain_replies, weights = _received(tmp_path / "plain")
    assert len(secure_replies) == len(plain_replies) == 3
    # Plainly, each site's own update reaches the strategy; under SecAgg+ none does: every reply
    # carries the one unmasked aggregate.
    assert not np.allclose(plain_replies[0], plain_replies[1])
    assert all(np.array_equal(reply, secure_replies[0]) for reply in secure_replies)
    assert not any(np.allclose(secure_replies[0], own, atol=1e-6) for own in plain_replies)
    fedavg = np.average(plain_replies, axis=0, weights=weights)
    # Quantization: each parameter to 2**22 levels over ±8, summed over 3 sites, plus the weights'.
    error = np.abs(secure_replies[0] - fedavg).max()
    assert error < 3 * 16 / 2**22 * 10, error
    assert task["history"][0]["participants"] == 3 and task["history"][0]["failures"] == 0
    published = dict(fl.repo.get_model("digits", "v1-sec").meta)["privacy"]
    assert published["mechanism"] == "secagg+" and published["rounds"] == 1 and published["epsilon"] is None
    assert task["strategy_settings"]["privacy"]["mechanism"] == "secagg+"


def test_a_site_without_the_mod_is_refused_and_the_round_survives_within_the_threshold(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    plan = digits_task("drop", "message-fedavg", rounds=2, clients=3, privacy={"secure_aggregation": SECAGG})
    fl.repo.create_task(plan)
    site_env = {**fl.env, "FLREPO_PRIVACY_MODS": "clipping"}  # not secaggplus
    task, code = _train_with_site_env(fl, "drop", {3: site_env})
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    # Three shares, two needed: the third site's refusal leaves each round with two of three.
    assert [(r["participants"], r["failures"]) for r in task["history"]] == [(2, 1), (2, 1)]
    assert "does not run Flower's secaggplus_mod" in (fl.logs / "collector.log").read_text()


def test_below_the_threshold_the_round_fails_and_the_task_says_so(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    plan = digits_task("few", "message-fedavg", rounds=1, clients=3, privacy={"secure_aggregation": SECAGG})
    fl.repo.create_task(plan)
    site_env = {**fl.env, "FLREPO_PRIVACY_MODS": ""}
    task, code = _train_with_site_env(fl, "few", {2: site_env, 3: site_env})
    assert code != 0 and task["phase"] == "Failed", logs_of(fl.logs)
    message = task["conditions"][-1]["message"]
    assert "SecAgg+ stopped" in message and "reconstruction threshold" in message, message


def _train_with_site_env(fl, task_id, envs):
    """The collector and three sites, site k with envs[k] (its SuperNode's ClientApps inherit it)."""
    from flrepo.fl.demo import start_collector, start_local_exec
    from flrepo.server.embedded import free_port, reap
    from tests.helpers import wait_for

    collector = start_collector(fl.url, task_id, fl.env, fl.logs, f"127.0.0.1:{free_port()}", ["--insecure"])
    sites = [start_local_exec(fl.url, task_id, spec, envs.get(k, fl.env), fl.logs, k) for k, spec in
             enumerate(SITES, start=1)]  # fmt: skip
    try:
        wait_for(lambda: collector.poll() is not None, 300, "the collector's end\n" + logs_of(fl.logs))
    finally:
        reap([collector, *sites], timeout=30)
    return fl.repo.get_task(task_id).model_dump(mode="json"), collector.returncode
