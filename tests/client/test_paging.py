"""The iter_* methods walk every page."""

from __future__ import annotations

import io
import os

import pytest

from flrepo.server.main import create_app
from tests.client.sdk import (
    FLAVOURS,
    Flaky,
    collect,
    run,
)
from tests.helpers import LiveServer, make_settings


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_iterators_walk_every_page(mongo_url, connect, flavour):
    # A server whose pages hold at most 3 items: a page_size above that still yields everything.
    with LiveServer(create_app(make_settings(mongo_url, list_cap=3))) as server:
        c = connect(flavour, server.url)
        for i in range(7):
            await run(c.create_model, f"m{i}", "v1", "numpy")
        transport = Flaky()
        paged = connect(flavour, server.url, transport=transport)
        everything = [(m.model_name, m.model_version) for m in await collect(paged.iter_models(page_size=2))]
        assert sorted(everything) == [(f"m{i}", "v1") for i in range(7)] and len(set(everything)) == 7
        assert [q.url.params.get("offset") for q in transport.requests] == [None, "2", "4", "6"]  # no empty page asked
        transport.requests.clear()
        assert len(await collect(paged.iter_models())) == 7  # the server's page size, 3: 3 + 3 + 1
        assert [q.url.params.get("offset") for q in transport.requests] == [None, "3", "6"]
        assert all("limit" not in q.url.params for q in transport.requests)
        assert await collect(paged.iter_models(trained=True)) == []

        data = os.urandom(100)
        for i in (1, 4):
            await run(c.upload_model, f"m{i}", "v1", io.BytesIO(data))
        assert {m.model_name for m in await collect(c.iter_available_models(page_size=1))} == {"m1", "m4"}
        for i in range(4):
            await run(c.create_training_result, "m1", "v1", f"r{i}", {"loss": i})
        await run(c.create_training_result, "m2", "v1", "other", {"loss": 9})
        assert len(await collect(c.iter_training_results(page_size=2))) == 5
        mine = await collect(c.iter_model_training_results("m1", "v1", page_size=3))
        assert sorted(r.training_id for r in mine) == ["r0", "r1", "r2", "r3"]
        for i in range(4):
            await run(c.create_strategy, f"s{i}")
            await run(c.create_transformation, f"t{i}")
        assert {s.strategy_name for s in await collect(c.iter_strategies(page_size=3))} == {f"s{i}" for i in range(4)}
        assert {t.id for t in await collect(c.iter_transformations(page_size=3))} == {f"t{i}" for i in range(4)}

        await run(c.upload_strategy, "s0", io.BytesIO(b"pickled"), sign=False)
        spec = {"model": {"model_name": "m1", "model_version": "v1"}, "strategy": {"strategy_name": "s0"}}
        for i in range(4):
            await run(c.create_task, {**spec, "task_id": f"job{i}"})
        assert {t.task_id for t in await collect(c.iter_tasks(phase="Pending", page_size=3))} == {
            f"job{i}" for i in range(4)
        }
        for round in range(1, 6):
            await run(c.update_task_status, "job0", phase="Running", current_round=round, round={"round": round})
            await run(c.create_checkpoint, "job0", round, loss=1 / round)
        history = await collect(c.iter_task_history("job0", page_size=2))
        assert [r.round for r in history] == [1, 2, 3, 4, 5]
        assert [cp.round for cp in await collect(c.iter_checkpoints("job0", page_size=2))] == [1, 2, 3, 4, 5]
        audit = await collect(c.iter_audit(page_size=3))  # a plain list without a total: until an empty page
        assert len(audit) > 20 and len({(e["time"], e["path"], e["method"]) for e in audit}) == len(audit)
