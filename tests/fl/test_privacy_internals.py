"""What flrepo's privacy wiring relies on inside the pinned flwr (1.42), in the manner of
tests/fl/test_flower_internals.py: each test names one internal that flrepo.fl.message.secure,
flrepo.fl.message.site_privacy, flrepo.fl.legacy.privacy or flrepo.fl.privacy_accounting reaches
into, and fails when a flwr upgrade changes it. Fix the module named, then this test."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re

import pytest

pytest.importorskip("flwr")


def test_the_secaggplus_stages_take_grid_context_state_and_read_only_what_the_round_context_gives():
    """flrepo.fl.message.secure calls the four stages itself with a stand-in for LegacyContext."""
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

    stages = ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage", "unmask_stage")
    for name in stages:
        assert list(inspect.signature(getattr(SecAggPlusWorkflow, name)).parameters) == [
            "self", "grid", "context", "state"
        ], name  # fmt: skip
    source = "".join(inspect.getsource(getattr(SecAggPlusWorkflow, name)) for name in stages)
    reads = {"context.state.config_records", "context.state.array_records", "context.strategy.configure_fit",
             "context.client_manager.num_available", "context.strategy.aggregate_fit",
             "context.history.add_metrics_distributed_fit"}  # fmt: skip
    assert all(read in source for read in reads), reads - {r for r in reads if r in source}
    used = {chain.rstrip(".") for chain in re.findall(r"context\.[A-Za-z_.]+", source)}
    unknown = {chain for chain in used if not any(read.startswith(chain) for read in reads)}
    assert not unknown, f"the stages now read {unknown} of their context"
    fields = {f.name for f in dataclasses.fields(WorkflowState)}
    assert {"nid_to_fitins", "active_node_ids", "sampled_node_ids", "threshold"} <= fields
    # secure.py narrows sampled_node_ids to the sites that set the protocol up: the later stages read it.
    assert "state.sampled_node_ids" in inspect.getsource(SecAggPlusWorkflow.unmask_stage)
    # secure.py replaces nid_to_fitins after the setup stage: the collect stage must send it.
    assert "state.nid_to_fitins[nid]" in inspect.getsource(SecAggPlusWorkflow.collect_masked_vectors_stage)


def test_the_workflow_constants_secure_uses():
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

    assert (MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key.CURRENT_ROUND) == ("config", "parameters", "current_round")


def test_the_site_mod_constants_match_flowers():
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

    from flrepo.fl.message import site_privacy

    assert site_privacy.SECAGG_CONFIGS == RECORD_KEY_CONFIGS
    # The test-only hold names a stage as Flower's configs carry it (tests/fl/test_privacy_secagg.py).
    assert site_privacy.SECAGG_STAGE == Key.STAGE
    assert Stage.COLLECT_MASKED_VECTORS == "collect_masked_vectors"
    # secaggplus_mod reads the inner app's reply as a legacy FitRes (what _as_fitres writes).
    module = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    assert "recorddict_to_fitres(out_content" in inspect.getsource(module.secaggplus_mod)


def test_the_dp_functions_and_keys_the_legacy_site_clips_with():
    from flwr.supercore import differential_privacy as dp

    from flrepo.fl.legacy import privacy

    assert (dp.KEY_CLIPPING_NORM, dp.KEY_NORM_BIT) == ("clipping_norm", "norm_bit")
    assert list(inspect.signature(dp.compute_clip_model_update).parameters) == ["param1", "param2", "clipping_norm"]
    assert len(inspect.signature(dp.compute_adaptive_clip_model_update).parameters) == 3
    assert privacy.CLIPPING_KEY not in (dp.KEY_CLIPPING_NORM, dp.KEY_NORM_BIT)


def test_the_rdp_accountant_and_the_adaptive_noise_split():
    """flrepo.fl.privacy_accounting composes Flower's events; the adaptive modes split the one
    noise_multiplier (what the ledger accounts) between the count and the update."""
    from flwr.supercore import differential_privacy as dp
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    assert {"compose", "get_epsilon", "num_releases"} <= set(dir(RdpAccountant))
    count_stddev, update_noise = dp.compute_adaptive_noise_params(0.3, 2, 1.0)
    assert count_stddev == 1.0 and update_noise > 0.3


def test_the_clipping_mods_take_one_config_record_and_secaggplus_passes_its_message_on():
    """With DP and SecAgg+ both, site_privacy shows the clipping mod the round's message without
    SecAgg+'s ConfigRecord (a shallow copy with its content replaced): Flower 1.42's Message-API
    clipping mods refuse a message with two, and secaggplus_mod hands its own message to the app."""
    from flwr.app import Message
    from flwr.clientapp.mod import centraldp_mods

    for mod in (centraldp_mods.fixedclipping_mod, centraldp_mods.adaptiveclipping_mod):
        assert "len(msg.content.config_records) != 1" in inspect.getsource(mod)
    module = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    assert "out_msg = call_next(msg, ctxt)" in inspect.getsource(module.secaggplus_mod)
    assert isinstance(inspect.getattr_static(Message, "content"), property)
    assert inspect.getattr_static(Message, "content").fset is not None
