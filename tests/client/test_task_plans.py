"""`create_task`: the plan's fields as typed arguments, checked before anything is sent."""

from __future__ import annotations

import inspect
import io

import pytest

from flrepo.client import AsyncRepositoryClient, Invalid, RepositoryClient, calls
from flrepo.schemas.tasks import TaskIn
from flrepo.server.embedded import free_port

MODEL = {"model_name": "m", "model_version": "v1"}
STRATEGY = {"strategy_name": "fedavg"}


def _references(repo: RepositoryClient) -> None:
    repo.create_model("m", "v1", "numpy")
    repo.create_strategy("fedavg")
    repo.upload_strategy("fedavg", io.BytesIO(b"pickled strategy"), sign=False)


def test_create_task_takes_every_field_of_a_plan_as_a_keyword_argument():
    params = inspect.signature(calls.create_task).parameters
    keywords = {name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert keywords == set(TaskIn.model_fields)


def test_typed_arguments_create_the_task_and_override_a_given_plan(live_server):
    with RepositoryClient(live_server.url) as repo:
        _references(repo)
        task = repo.create_task(task_id="t1", model=MODEL, strategy=STRATEGY, rounds=2, round_timeout=30)
        assert (task.rounds, task.round_timeout, task.training.epochs) == (2, 30, 1)
        plan = {"task_id": "t2", "model": MODEL, "strategy": STRATEGY, "rounds": 5}
        task = repo.create_task(plan, rounds=4, training={"epochs": 3})
        assert (task.task_id, task.rounds, task.training.epochs) == ("t2", 4, 3)
        assert repo.get_task("t2").rounds == 4


def test_unknown_fields_are_refused_before_sending():
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: anything sent would be Unavailable
    plan = {"model": MODEL, "strategy": STRATEGY, "round_timout": 5, "quantization": {"bits": 8}}
    with RepositoryClient(closed) as repo, pytest.raises(Invalid) as refused:
        repo.create_task(plan)
    assert refused.value.status is None
    assert [e["loc"] for e in refused.value.detail] == [["body", "round_timout"], ["body", "quantization"]]
    assert "did you mean 'round_timeout'?" in str(refused.value)
    with RepositoryClient(closed) as repo, pytest.raises(TypeError, match="round_timout"):
        repo.create_task(model=MODEL, strategy=STRATEGY, round_timout=5)  # type: ignore[call-arg]


async def test_the_async_client_refuses_them_too():
    closed = f"http://127.0.0.1:{free_port()}"
    async with AsyncRepositoryClient(closed) as repo:
        with pytest.raises(Invalid, match=r"epocs.*did you mean 'epochs'"):
            await repo.create_task(model=MODEL, strategy=STRATEGY, training={"epocs": 2})
