"""SecAgg+ on the Message-API runtime, end to end: the strategy receives only the securely
aggregated sum (every reply carries the same arrays), which equals plain FedAvg's aggregate of the
same sites' updates within the quantization error; a site that drops out after sharing its keys,
within the reconstruction threshold, leaves the round intact (its masks are removed with the
others' shares of its key); a site without Flower's secaggplus_mod is refused with its reason and,
within the threshold, the round goes on without it; below the threshold the round fails and the
task says why. Client-side DP with SecAgg+: each site clips before masking, the DP wrapper adds its
noise to the secure sum, and ε is accounted as without SecAgg+."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from flwr.serverapp.strategy import FedAvg

from flrepo.fl.demo import digits_task, register_model, start_collector, start_local_exec
from flrepo.fl.message.site_privacy import HOLD_ENV
from flrepo.server.embedded import free_port, reap
from tests.fl.test_privacy import flower_epsilons, train
from tests.helpers import logs_of, wait_for

SECAGG = {"num_shares": 3, "reconstruction_threshold": 2, "clipping_range": 8.0, "quantization_range": 2**22}
SITES = ["digits:1/3", "digits:2/3", "digits:3/3"]


def _flat(arrays) -> np.ndarray:
    return np.concatenate([a.ravel() for a in arrays.to_numpy_ndarrays()])


class Recording(FedAvg):
    """FedAvg that keeps what it sends and what its aggregation receives (arrays, flattened)."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    def configure_train(self, server_round, arrays, config, grid):
        np.save(Path(self.directory) / f"sent-{server_round}.npy", _flat(arrays))
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        flat = [_flat(m.content["arrays"]) for m in ok]
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


def _start(fl, task_id, envs):
    """The collector and three sites, site k with envs[k] (its SuperNode's ClientApps inherit it)."""
    collector = start_collector(fl.url, task_id, fl.env, fl.logs, f"127.0.0.1:{free_port()}", ["--insecure"])
    sites = [start_local_exec(fl.url, task_id, spec, envs.get(k, fl.env), fl.logs, k) for k, spec in
             enumerate(SITES, start=1)]  # fmt: skip
    return collector, sites


def _train_with_site_env(fl, task_id, envs):
    collector, sites = _start(fl, task_id, envs)
    try:
        wait_for(lambda: collector.poll() is not None, 300, "the collector's end\n" + logs_of(fl.logs))
    finally:
        reap([collector, *sites], timeout=30)
    return fl.repo.get_task(task_id).model_dump(mode="json"), collector.returncode


# One round and no federated evaluation: once a site has dropped out, fewer sites are left than the
# three a round samples; what is tested is the round it dropped out of.
ONE_ROUND = {"rounds": 1, "strategy_conf": {"fraction_evaluate": 0.0}}


def test_a_site_dropping_out_after_sharing_its_keys_leaves_the_round_intact(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    _recording_strategy(fl, "recording-drop", tmp_path / "drop")
    _recording_strategy(fl, "recording-survivors", tmp_path / "survivors")
    plan = digits_task("drop", "recording-drop", clients=3, privacy={"secure_aggregation": SECAGG}, **ONE_ROUND)
    fl.repo.create_task(plan)
    # Site 3 takes part in the setup and the key sharing, then holds on receiving the stage that
    # collects the masked inputs, before it trains or masks anything: the test stops it there.
    marker = tmp_path / "site-3-held"
    collector, sites = _start(fl, "drop", {3: {**fl.env, HOLD_ENV: f"collect_masked_vectors:{marker}"}})
    try:
        wait_for(marker.exists, 300, "site 3 at the collect stage\n" + logs_of(fl.logs))
        assert marker.read_text().split() == ["collect_masked_vectors", "1"]
        sites[2].kill()  # the site's SuperNode and its ClientApp go with its local execution
        wait_for(lambda: collector.poll() is not None, 300, "the collector's end\n" + logs_of(fl.logs))
    finally:
        reap([collector, *sites], timeout=30)
    task = fl.repo.get_task("drop").model_dump(mode="json")
    assert collector.returncode == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    assert [(r["participants"], r["failures"]) for r in task["history"]] == [(2, 1)]
    # Its SuperNode, stopped, left the federation: the SuperLink answered for it.
    assert "dropped out of the SecAgg+ round: Error: Node Unavailable" in (fl.logs / "collector.log").read_text()
    assert dict(fl.repo.get_model("digits", "v1-drop").meta)["privacy"]["mechanism"] == "secagg+"

    # The two sites that stayed, alone and in the clear, on the same data with the same seeds.
    plain = digits_task("survivors", "recording-survivors", clients=2, **ONE_ROUND)
    fl.repo.create_task(plain)
    survivors, code = train(fl, "survivors", SITES[:2])
    assert code == 0 and survivors["phase"] == "Succeeded", logs_of(fl.logs)

    secure_replies, _ = _received(tmp_path / "drop")
    plain_replies, weights = _received(tmp_path / "survivors")
    assert len(secure_replies) == len(plain_replies) == 2
    assert np.array_equal(secure_replies[0], secure_replies[1])
    fedavg = np.average(plain_replies, axis=0, weights=weights)
    # Had the dropped site's pairwise masks not been reconstructed and removed, the sum would be
    # noise over the whole ±clipping_range; it is the survivors' FedAvg up to quantization.
    error = np.abs(secure_replies[0] - fedavg).max()
    assert error < 2 * 16 / 2**22 * 10, error
    assert not np.allclose(secure_replies[0], plain_replies[0], atol=1e-4)  # a mean, not one site's update


# Far below a digits site's update in round 1 (norm 4.2-5.2 in the plain run of the first test), so
# every site's update is clipped: unclipped, their mean would be hundreds of times CLIP.
CLIP = 0.01


@pytest.mark.parametrize("mode", ["client-fixed", "client-adaptive"])
def test_client_side_dp_with_secagg_clips_at_each_site_masks_and_accounts(fl, tmp_path, mode):
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    _recording_strategy(fl, "recording-dp", tmp_path / "dp")
    dp = {"mode": mode, "noise_multiplier": 0.3, "clipping_norm": CLIP, "target_delta": 1e-5}
    if mode == "client-adaptive":
        dp["clipped_count_stddev"] = 1.0  # Flower's default (3 / 20) leaves no noise for the update
    privacy = {"dp": dp, "secure_aggregation": SECAGG}
    fl.repo.create_task(digits_task("dpsec", "recording-dp", rounds=2, clients=3, privacy=privacy))
    task, code = train(fl, "dpsec", SITES)
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)

    expected = flower_epsilons(0.3, 1e-5, 3, 2)
    spent = [record["epsilon"] for record in task["history"]]
    assert spent == pytest.approx(expected, rel=1e-5) and spent[0] < spent[1], spent
    assert [r["participants"] for r in task["history"]] == [3, 3]
    named = f"dp-{mode}+secagg+"
    shown = task["strategy_settings"]["privacy"]
    assert shown["mechanism"] == named and shown["secure_aggregation"]["num_shares"] == 3
    assert shown["secure_aggregation"]["max_weight"] == 1.0  # every site's weight is 1 under DP
    assert shown["flower"] == f"DifferentialPrivacyClientSide{mode.split('-')[1].title()}Clipping"
    published = dict(fl.repo.get_model("digits", "v1-dpsec").meta)["privacy"]
    assert (published["mechanism"], published["mechanisms"]) == (named, [f"dp-{mode}", "secagg+"])
    assert published["epsilon"] == pytest.approx(expected[-1], rel=1e-5) and published["rounds"] == 2
    assert (
        published["secure_aggregation"]["reconstruction_threshold"],
        published["secure_aggregation"]["max_weight"],
    ) == (2, 1.0)
    result = fl.repo.get_training_result("digits", "v1", "dpsec").results
    assert result["privacy_mechanism"] == named
    assert result["privacy_epsilon"] == pytest.approx(expected[-1], rel=1e-5)
    # Flower's wrapper added its noise to both rounds' aggregates.
    assert (fl.logs / "collector.log").read_text().count("central DP noise with") == 2

    # What the strategy received in round 1 (before the wrapper's noise): the one secure sum, the
    # plain mean of the sites' updates each clipped to CLIP at its site before masking.
    replies, _ = _received(tmp_path / "dp")
    assert len(replies) == 3 and all(np.array_equal(reply, replies[0]) for reply in replies)
    update = np.linalg.norm(replies[0] - np.load(tmp_path / "dp" / "sent-1.npy"))
    quantization = np.sqrt(replies[0].size) * 3 * 16 / 2**22
    assert CLIP / 2 < update <= CLIP + quantization, update
