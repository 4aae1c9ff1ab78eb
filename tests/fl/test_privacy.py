"""A task's `privacy`: refused at creation when it cannot run, and differential privacy on the
Message-API runtime end to end (Flower's DP wrappers and clipping mods, ε from Flower's RDP
accountant in every round record, the status, the training result and the published model)."""

from __future__ import annotations

import httpx
import pytest
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from flrepo.client import Invalid
from flrepo.fl.demo import digits_task, register_model, start_training
from flrepo.server.embedded import reap
from tests.helpers import logs_of, run_training, wait_for

DP = {"mode": "server-fixed", "noise_multiplier": 0.3, "clipping_norm": 10.0, "target_delta": 1e-5}
SECAGG = {"num_shares": 3, "reconstruction_threshold": 2}


def flower_epsilons(noise: float, delta: float, sites: int, rounds: int) -> list[float]:
    """ε after each round, from Flower's own accountant, for the same settings."""
    config = PrivacyConfig(delta, sites, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION)
    accountant, spent = RdpAccountant(config), []
    for _ in range(rounds):
        accountant.compose(GaussianPrivacyEvent(noise, sites, sites))
        spent.append(accountant.get_epsilon(delta))
    return spent


def train(fl, task_id, data, timeout=300.0, site_options=None, env=None):
    """The task's collector (Message API, plaintext on loopback) and its sites, to the end."""
    collector, sites = start_training(
        fl.url, task_id, data, env or fl.env, fl.logs, collector_options=["--insecure"], site_options=site_options
    )
    try:
        wait_for(lambda: collector.poll() is not None, timeout, "the collector's end\n" + logs_of(fl.logs))
    finally:
        reap([collector, *sites], timeout=30)
    return fl.repo.get_task(task_id).model_dump(mode="json"), collector.returncode


def _refused(fl, plan, *expected):
    response = httpx.post(f"{fl.url}/tasks", json=plan, timeout=30)
    assert response.status_code == 422, response.text
    detail = str(response.json()["detail"])
    assert all(text in detail for text in expected), detail


def test_invalid_privacy_settings_are_refused_at_creation_naming_the_field(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    plan = digits_task("p", "message-fedavg", rounds=1, clients=3)
    _refused(fl, {**plan, "privacy": {"dp": {**DP, "mode": "central"}}}, "privacy", "dp", "mode")
    _refused(fl, {**plan, "privacy": {"dp": {**DP, "noise_multiplier": -1}}}, "noise_multiplier")
    _refused(fl, {**plan, "privacy": {"dp": {**DP, "target_delta": 1.5}}}, "target_delta")
    _refused(fl, {**plan, "privacy": {"dp": {**DP, "noise": 1}}}, "unknown field 'noise'")
    no_norm = {k: v for k, v in DP.items() if k != "clipping_norm"}
    _refused(fl, {**plan, "privacy": {"dp": no_norm}}, "needs clipping_norm")
    _refused(fl, {**plan, "privacy": {"dp": {**DP, "clip_norm_lr": 0.1}}}, "only for the adaptive modes")
    _refused(fl, {**plan, "privacy": {}}, "give dp, secure_aggregation or both")
    # Server-side clipping reads each site's update, which SecAgg+ hides; client-side clipping does not.
    server_side = "cannot be combined with secure_aggregation"
    _refused(fl, {**plan, "privacy": {"dp": DP, "secure_aggregation": SECAGG}},
             f"'server-fixed' {server_side}", "each site's update in the clear")  # fmt: skip
    adaptive_secure = {"dp": {"mode": "server-adaptive", "noise_multiplier": 0.3}, "secure_aggregation": SECAGG}
    _refused(fl, {**plan, "privacy": adaptive_secure}, f"'server-adaptive' {server_side}")
    both = {"dp": {**DP, "mode": "client-fixed"}, "secure_aggregation": SECAGG}
    assert httpx.post(f"{fl.url}/tasks", json={**plan, "task_id": "p-both", "privacy": both},
                      timeout=30).status_code == 201  # fmt: skip
    _refused(fl, {**plan, "privacy": {"secure_aggregation": {**SECAGG, "reconstruction_threshold": 3}}},
             "reconstruction_threshold must be less than num_shares")  # fmt: skip
    _refused(fl, {**plan, "privacy": {"secure_aggregation": {**SECAGG, "num_shares": 2}}}, "greater than 2")
    # Those that need the rest of the plan: the service's own checks.
    _refused(fl, {**digits_task("p", "fedavg", rounds=1, clients=3), "privacy": {"secure_aggregation": SECAGG}},
             "privacy.secure_aggregation", "legacy gRPC", "Message API")  # fmt: skip
    _refused(fl, {**plan, "min_participants": 2, "privacy": {"secure_aggregation": SECAGG}}, "at least 3")
    _refused(fl, {**plan, "min_participants": None, "privacy": {"dp": DP}}, "privacy.dp needs min_participants")
    adaptive = {"mode": "server-adaptive", "noise_multiplier": 0.3}  # Flower's default count noise: 3 / 20
    _refused(fl, {**plan, "privacy": {"dp": adaptive}}, "privacy.dp.clipped_count_stddev", "noise_multiplier / 2")
    # A compressed uplink is not the plain update that client-side clipping and SecAgg+ work on.
    topk = {"uplink": "topk", "ratio": 0.03}
    client_dp = {**DP, "mode": "client-fixed"}
    _refused(fl, {**plan, "compression": topk, "privacy": {"dp": client_dp}}, "compression.uplink", "client-fixed")
    secure = {"secure_aggregation": SECAGG}
    _refused(fl, {**plan, "compression": topk, "privacy": secure}, "compression.uplink", "SecAgg+")
    server_dp = {**DP, "mode": "server-fixed"}
    assert httpx.post(f"{fl.url}/tasks", json={**plan, "task_id": "p-srv", "compression": topk,
                      "privacy": {"dp": server_dp}}, timeout=30).status_code == 201  # fmt: skip
    # The SDK checks the same before sending, and takes the field as a keyword.
    with pytest.raises(Invalid, match="noise_multiplier"):
        fl.repo.create_task(plan, privacy={"dp": {**DP, "noise_multiplier": 0}})
    created = fl.repo.create_task(plan, privacy={"dp": DP})
    assert created.privacy is not None and created.privacy.dp.noise_multiplier == 0.3


@pytest.mark.parametrize("mode", ["server-fixed", "client-adaptive"])
def test_a_dp_task_reports_epsilon_per_round_as_flowers_accountant_does(fl, tmp_path, mode):
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    adaptive = {"mode": mode, "noise_multiplier": 0.3, "clipped_count_stddev": 1.0}
    dp = {**DP, "mode": mode} if mode.endswith("fixed") else adaptive
    fl.repo.create_task(digits_task("dp", "message-fedavg", rounds=3, clients=2, privacy={"dp": dp}))
    task, code = train(fl, "dp", ["digits:1/2", "digits:2/2"])
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)

    expected = flower_epsilons(0.3, 1e-5, 2, 3)
    spent = [record["epsilon"] for record in task["history"]]
    assert spent == pytest.approx(expected, rel=1e-5) and spent[0] < spent[1] < spent[2], spent
    shown = task["strategy_settings"]["privacy"]
    assert shown["mechanism"] == f"dp-{mode}" and shown["num_sampled_clients"] == 2
    flower_class = {"server-fixed": "ServerSideFixed", "client-adaptive": "ClientSideAdaptive"}[mode]
    assert shown["flower"] == f"DifferentialPrivacy{flower_class}Clipping"

    published = dict(fl.repo.get_model("digits", "v1-dp").meta)
    assert published["privacy"]["mechanism"] == f"dp-{mode}"
    assert published["privacy"]["epsilon"] == pytest.approx(expected[-1], rel=1e-5)
    assert (published["privacy"]["delta"], published["privacy"]["rounds"]) == (1e-5, 3)
    result = fl.repo.get_training_result("digits", "v1", "dp").results
    assert result["privacy_mechanism"] == f"dp-{mode}" and result["privacy_rounds"] == 3
    assert result["privacy_epsilon"] == pytest.approx(expected[-1], rel=1e-5)
    # Flower's wrapper added its noise to every round's aggregate (the ServerApp's log reaches the
    # collector's); with client-side clipping, Flower's wrapper fails a round whose replies lack the
    # norm bit that adaptiveclipping_mod adds, so the sites ran it.
    assert (fl.logs / "collector.log").read_text().count("central DP noise with") == 3


def test_dp_on_the_legacy_runtime_clips_at_the_sites_and_is_accounted(fl, tmp_path):
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    dp = {**DP, "mode": "client-fixed", "clipping_norm": 1.0}
    fl.repo.create_task(digits_task("legacy-dp", "fedavg", rounds=2, clients=2, privacy={"dp": dp}))
    task, code = run_training(fl, "legacy-dp", ["digits:1/2", "digits:2/2"], timeout=300)
    assert code == 0 and task["phase"] == "Succeeded", logs_of(fl.logs)
    assert task["runtime"] == "legacy"
    expected = flower_epsilons(0.3, 1e-5, 2, 2)
    assert [r["epsilon"] for r in task["history"]] == pytest.approx(expected, rel=1e-5)
    assert task["strategy_settings"]["privacy"]["flower"] == "DifferentialPrivacyClientSideFixedClipping"
    published = dict(fl.repo.get_model("digits", "v1-legacy-dp").meta)["privacy"]
    assert (published["mechanism"], published["rounds"]) == ("dp-client-fixed", 2)
    assert published["epsilon"] == pytest.approx(expected[-1], rel=1e-5)
    # Flower's legacy wrapper added its noise to both rounds' aggregates.
    assert (fl.logs / "collector.log").read_text().count("central DP noise with") == 2
