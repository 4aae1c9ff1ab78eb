"""Every JSON call of both clients against a live server, one behaviour per test."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import cloudpickle
import pytest

from flrepo.client import (
    Conflict,
    Invalid,
    NotFound,
    Page,
    calls,
)
from flrepo.schemas import ModelOut, StrategyOut, TrainingResultOut, TransformationOut
from flrepo.schemas.tasks import CheckpointOut, TaskIn, TaskOut
from tests.client.sdk import (
    FLAVOURS,
    run,
    sha,
    wait_for_async,
)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_health_and_ready(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    assert await run(c.health) == {"status": "ok"}
    assert (await run(c.ready))["status"] == "ready"
    assert await run(c.send, calls.health()) == {"status": "ok"}


# --- models


async def _three_models(c: Any) -> None:
    await run(c.create_model, "m", "v1", "numpy", features=64, tags=["a"])
    await run(c.create_model, "m", "v2", "keras")
    await run(c.create_model, "n", "v1", "sklearn")


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_create_model_returns_the_stored_document_and_a_repeat_is_a_conflict(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    created = await run(c.create_model, "m", "v1", "numpy", features=64, tags=["a"])
    assert isinstance(created, ModelOut)
    assert (created.model_name, created.model_version) == ("m", "v1")
    assert created.meta["library"] == "numpy" and created.meta["features"] == 64 and created.meta["tags"] == ["a"]
    assert created.size is None and created.sha256 is None
    with pytest.raises(Conflict) as dup:
        await run(c.create_model, "m", "v1", "numpy")
    assert dup.value.status == 409 and "already exists" in dup.value.detail and "already exists" in str(dup.value)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_update_model_meta_replaces_it_and_refuses_one_without_a_library(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await run(c.create_model, "m", "v2", "keras", features=64)
    await run(c.update_model_meta, "m", "v2", {"library": "torch", "layers": 3})
    got = await run(c.get_model, "m", "v2")
    assert isinstance(got, ModelOut) and got.meta["library"] == "torch" and got.meta["layers"] == 3
    assert "features" not in got.meta
    with pytest.raises(Invalid) as no_library:
        await run(c.update_model_meta, "m", "v2", {"layers": 4})
    assert no_library.value.status == 422 and "library" in str(no_library.value.detail)
    assert (await run(c.get_model, "m", "v2")).meta["layers"] == 3  # unchanged


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_list_models_pages_with_the_total(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await _three_models(c)
    everything = await run(c.list_models)
    assert isinstance(everything, Page) and everything.total == 3
    assert all(isinstance(m, ModelOut) for m in everything)
    assert {(m.model_name, m.model_version) for m in everything} == {("m", "v1"), ("m", "v2"), ("n", "v1")}
    first = await run(c.list_models, limit=2)
    rest = await run(c.list_models, limit=2, offset=2)
    assert (len(first), first.total, len(rest), rest.total) == (2, 3, 1, 3)
    assert [m.model_dump() for m in [*first, *rest]] == [m.model_dump() for m in everything]
    assert list(await run(c.list_models, offset=3)) == []


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_available_models_are_those_with_a_file(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await _three_models(c)
    await run(c.upload_model, "n", "v1", io.BytesIO(b"n weights"), filename="n.bin")
    available = await run(c.available_models)
    assert [(m.model_name, m.model_version) for m in available] == [("n", "v1")] and available.total == 1
    assert available[0].size == 9 and available[0].sha256 == sha(b"n weights") and available[0].filename == "n.bin"
    assert list(await run(c.available_models, limit=5, offset=1)) == []


# --- training results


async def _results(c: Any) -> dict[str, Any]:
    await _three_models(c)
    results = {"accuracy": 0.91, "converged": True, "optimizer": "sgd", "epochs": 3}
    await run(c.create_training_result, "m", "v1", "r1", results, configuration_id="c1")
    await run(c.create_training_result, "n", "v1", "r2", {"loss": 0.2})
    return results


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_create_training_result_keeps_value_types_and_a_repeat_is_a_conflict(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await run(c.create_model, "m", "v1", "numpy")
    results = {"accuracy": 0.91, "converged": True, "optimizer": "sgd", "epochs": 3}
    result = await run(c.create_training_result, "m", "v1", "r1", results, configuration_id="c1")
    assert isinstance(result, TrainingResultOut) and result.results == results and result.configuration_id == "c1"
    assert isinstance(result.results["converged"], bool) and isinstance(result.results["epochs"], int)
    with pytest.raises(Conflict):
        await run(c.create_training_result, "m", "v1", "r1", {"accuracy": 0.5})


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_weights_upload_under_the_results_configuration_and_download(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await _results(c)
    with pytest.raises(Conflict, match="configuration_id"):
        await run(c.upload_weights, "m", "v1", "r1", "1", io.BytesIO(b"w"))
    await run(c.upload_weights, "m", "v1", "r1", "c1", io.BytesIO(b"final weights"))
    one = await run(c.get_training_result, "m", "v1", "r1")
    assert isinstance(one, TrainingResultOut) and one.size == 13 and one.sha256 == sha(b"final weights")
    sink = io.BytesIO()
    fetched = await run(c.download_weights, "m", "v1", "r1", sink)
    assert sink.getvalue() == b"final weights" and fetched.sha256 == one.sha256


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_training_results_list_all_and_by_model(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await _results(c)
    all_results = await run(c.list_training_results)
    assert all_results.total == 2 and {r.training_id for r in all_results} == {"r1", "r2"}
    assert all(isinstance(r, TrainingResultOut) for r in all_results)
    assert len(await run(c.list_training_results, limit=1)) == 1
    mine = await run(c.list_model_training_results, "m", "v1")
    assert [r.training_id for r in mine] == ["r1"] and mine.total == 1
    assert list(await run(c.list_model_training_results, "m", "v2")) == []


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_list_models_by_whether_they_were_trained(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await _results(c)
    trained = await run(c.list_models, trained=True)
    assert {(m.model_name, m.model_version) for m in trained} == {("m", "v1"), ("n", "v1")} and trained.total == 2
    untrained = await run(c.list_models, trained=False)
    assert [(m.model_name, m.model_version) for m in untrained] == [("m", "v2")] and untrained.total == 1


# --- strategies


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_create_strategy_with_or_without_metadata(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    strategy = await run(c.create_strategy, "fedavg", "averages weights", {"class": "FedAvg"})
    assert isinstance(strategy, StrategyOut) and strategy.strategy_description == "averages weights"
    assert strategy.meta == {"class": "FedAvg"} and strategy.size is None
    await run(c.create_strategy, "bare")
    assert (await run(c.get_strategy, "bare")).meta == {}
    with pytest.raises(Conflict):
        await run(c.create_strategy, "fedavg")
    strategies = await run(c.list_strategies)
    assert {s.strategy_name for s in strategies} == {"fedavg", "bare"} and strategies.total == 2
    assert (await run(c.list_strategies, limit=1, offset=1)).total == 2


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_update_strategy_meta_keeps_or_replaces_the_description(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await run(c.create_strategy, "fedavg", "averages weights", {"class": "FedAvg"})
    await run(c.update_strategy_meta, "fedavg", {"class": "FedAvg", "fraction_fit": 0.5})
    kept = await run(c.get_strategy, "fedavg")
    assert kept.meta["fraction_fit"] == 0.5 and kept.strategy_description == "averages weights"
    await run(c.update_strategy_meta, "fedavg", {"class": "FedAvg"}, description="renamed")
    renamed = await run(c.get_strategy, "fedavg")
    assert isinstance(renamed, StrategyOut) and renamed.strategy_description == "renamed"
    assert renamed.meta == {"class": "FedAvg"}


# --- transformations


async def _scale(c: Any) -> TransformationOut:
    created: TransformationOut = await run(
        c.create_transformation,
        "t.scale",
        parameter_types={"factor": "float"},
        default_values={"factor": 1.0},
        outputs=["np.ndarray"],
        needs={"RAM": 2},
        description="scales",
    )
    return created


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_create_and_list_transformations(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    transformation = await _scale(c)
    assert isinstance(transformation, TransformationOut) and transformation.id == "t.scale"
    assert transformation.parameter_types == {"factor": "float"} and transformation.needs["RAM"] == 2
    await run(c.create_transformation, "t.other")
    with pytest.raises(Conflict):
        await run(c.create_transformation, "t.scale")
    transformations = await run(c.list_transformations)
    assert {t.id for t in transformations} == {"t.scale", "t.other"} and transformations.total == 2
    assert len(await run(c.list_transformations, limit=1)) == 1


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_update_transformation_meta_replaces_it(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await _scale(c)
    await run(
        c.update_transformation_meta,
        "t.scale",
        parameter_types={"factor": "float", "shift": "int"},
        default_values={"factor": 2.0, "shift": 0},
        outputs=["np.ndarray"],
        description="scales and shifts",
    )
    updated = await run(c.get_transformation, "t.scale")
    assert isinstance(updated, TransformationOut)
    assert updated.default_values == {"factor": 2.0, "shift": 0} and updated.description == "scales and shifts"


# --- tasks

SPEC = {
    "task_id": "job",
    "model": {"model_name": "m", "model_version": "v1"},
    "strategy": {"strategy_name": "fedavg"},
    "transformations": [{"id": "t.scale", "parameters": {"factor": 3.0}}],
    "rounds": 2,
}


async def _references(c: Any, files: bool = True) -> None:
    await _three_models(c)
    await run(c.create_strategy, "fedavg", "averages weights", {"class": "FedAvg"})
    await _scale(c)
    if files:
        await run(c.upload_strategy, "fedavg", io.BytesIO(cloudpickle.dumps({"strategy": "FedAvg"})))
        await run(c.upload_transformation, "t.scale", io.BytesIO(cloudpickle.dumps({"transformation": "scale"})))


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_task_needs_its_references_with_their_files(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await _references(c, files=False)
    spec = TaskIn.model_validate(SPEC)
    with pytest.raises(Invalid, match="unknown references") as missing_files:
        await run(c.create_task, spec)
    assert "the file of" in missing_files.value.detail


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_create_task_from_a_plan_or_a_dict_and_list_them(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await _references(c)
    task = await run(c.create_task, TaskIn.model_validate(SPEC))
    assert isinstance(task, TaskOut) and task.task_id == "job" and task.phase == "Pending" and task.rounds == 2
    assert task.transformations[0].parameters == {"factor": 3.0}
    other = await run(
        c.create_task, {"model": {"model_name": "n", "model_version": "v1"}, "strategy": {"strategy_name": "fedavg"}}
    )
    assert isinstance(other, TaskOut) and len(other.task_id) == 32  # generated
    with pytest.raises(Conflict):
        await run(c.create_task, SPEC)
    tasks = await run(c.list_tasks)
    assert tasks.total == 2 and {t.task_id for t in tasks} == {"job", other.task_id}
    assert all(isinstance(t, TaskOut) for t in tasks)
    assert len(await run(c.list_tasks, limit=1)) == 1


async def _running(c: Any) -> TaskOut:
    await _references(c)
    await run(c.create_task, SPEC)
    running: TaskOut = await run(
        c.update_task_status,
        "job",
        phase="Running",
        current_round=1,
        participants=[{"node_id": "edge-1", "samples": 100}],
        round={"round": 1, "loss": 0.5, "participants": 1},
    )
    return running


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_status_report_moves_the_task_on(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    running = await _running(c)
    assert isinstance(running, TaskOut) and running.phase == "Running" and running.current_round == 1
    assert running.start_time is not None and [p.node_id for p in running.participants] == ["edge-1"]
    assert [(r.round, r.loss) for r in running.history] == [(1, 0.5)]
    assert [t.task_id for t in await run(c.list_tasks, phase="Running")] == ["job"]
    assert list(await run(c.list_tasks, phase="Pending")) == []
    with pytest.raises(Conflict):
        await run(c.delete_task, "job")  # running
    with pytest.raises(Invalid):
        await run(c.update_task_status, "job", phase="Paused")


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_checkpoints_register_upload_download_and_set_the_best(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await _running(c)
    checkpoint = await run(c.create_checkpoint, "job", 1, loss=0.5, metrics={"accuracy": 0.8})
    assert isinstance(checkpoint, CheckpointOut) and checkpoint.round == 1 and checkpoint.size is None
    weights = os.urandom(3000)
    await run(c.upload_checkpoint, "job", 1, io.BytesIO(weights), filename="round-1.npz")
    copy = io.BytesIO()
    assert (await run(c.download_checkpoint, "job", 1, copy)).size == 3000 and copy.getvalue() == weights
    listed = await run(c.list_checkpoints, "job")
    assert [cp.round for cp in listed] == [1] and listed[0].sha256 == hashlib.sha256(weights).hexdigest()
    assert (await run(c.get_task, "job")).best.round == 1
    # Registered by its upload: one request.
    await run(c.upload_checkpoint, "job", 2, io.BytesIO(weights), register=True, loss=0.25, metrics={"accuracy": 0.9})
    second = [cp for cp in await run(c.list_checkpoints, "job") if cp.round == 2]
    assert [(cp.loss, cp.metrics, cp.size) for cp in second] == [(0.25, {"accuracy": 0.9}, 3000)]
    assert (await run(c.get_task, "job")).best.round == 2


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_finished_task_keeps_its_result_and_history(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await _running(c)
    await run(c.create_training_result, "m", "v1", "r1", {"loss": 0.25})
    done = await run(
        c.update_task_status,
        "job",
        phase="Succeeded",
        round={"round": 2, "loss": 0.25},
        result={"model_name": "m", "model_version": "v1", "training_id": "r1"},
    )
    assert done.phase == "Succeeded" and done.completion_time is not None and len(done.history) == 2
    assert done.result is not None and done.result.training_id == "r1"
    history = await run(c.get_task_history, "job", limit=1, offset=1)
    assert history.total == 2 and [(r.round, r.loss) for r in history] == [(2, 0.25)]
    assert [r.round for r in (await run(c.get_task, "job", history=1)).history] == [2]
    assert all(t.history == [] for t in await run(c.list_tasks, history=0))
    with pytest.raises(Conflict):
        await run(c.update_task_status, "job", phase="Running")  # a finished task stays finished
    fetched_task = await run(c.get_task, "job")
    assert isinstance(fetched_task, TaskOut) and fetched_task.phase == "Succeeded"
    assert [t.task_id for t in await run(c.list_tasks, phase="Succeeded")] == ["job"]
    assert list(await run(c.list_tasks, phase="Running")) == []


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_cancel_ends_a_pending_task_once(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await _references(c)
    await run(c.create_task, SPEC)
    cancelled = await run(c.cancel_task, "job", "wrong data")
    assert isinstance(cancelled, TaskOut) and cancelled.phase == "Failed"
    last = cancelled.conditions[-1]
    assert (last.reason, last.message) == ("Cancelled", "cancelled by anonymous: wrong data")
    with pytest.raises(Conflict, match="nothing to cancel"):
        await run(c.cancel_task, "job")


# --- audit and deletes


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_the_audit_lists_changes_newest_first(live_server, connect, flavour):
    """No keys configured: anonymous requests are admin."""
    c = connect(flavour, live_server.url)
    await _references(c)
    await run(c.get_model, "m", "v1")
    audit = await wait_for_async(lambda: run(c.list_audit), lambda found: len(found) >= 7)
    assert isinstance(audit, list) and len(audit) >= 7
    oldest = audit[-1]
    assert (oldest["method"], oldest["path"], oldest["status"]) == ("POST", "/model", 201)
    assert all(entry["method"] != "GET" for entry in audit)
    assert len(await run(c.list_audit, limit=3)) == 3
    assert await run(c.list_audit, since="2999-01-01T00:00:00Z") == []


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_deletes_remove_items_and_a_second_delete_is_not_found(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    await _results(c)
    await run(c.create_strategy, "fedavg")
    await _scale(c)
    await run(c.upload_strategy, "fedavg", io.BytesIO(cloudpickle.dumps({"strategy": "FedAvg"})))
    await run(c.upload_transformation, "t.scale", io.BytesIO(cloudpickle.dumps({"transformation": "scale"})))
    await run(c.create_task, SPEC)
    await run(c.delete_task, "job")
    await run(c.delete_training_result, "m", "v1", "r1")
    await run(c.delete_strategy, "fedavg")
    await run(c.delete_transformation, "t.scale")
    await run(c.delete_model, "m", "v1")
    for fn, args in [
        (c.get_task, ("job",)),
        (c.get_training_result, ("m", "v1", "r1")),
        (c.get_strategy, ("fedavg",)),
        (c.get_transformation, ("t.scale",)),
        (c.get_model, ("m", "v1")),
        (c.delete_model, ("m", "v1")),
    ]:
        with pytest.raises(NotFound):
            await run(fn, *args)
    assert (await run(c.list_models)).total == 2
    assert [r.training_id for r in await run(c.list_training_results)] == ["r2"]
