"""A task's `compression`: checked at creation (422 naming the field), stored with its defaults,
taken by the SDK's create_task, and each round's traffic kept in the task's history."""

from __future__ import annotations

import pytest

from flrepo.client import Invalid, calls
from tests.helpers import PLAN, make_task_references


@pytest.mark.parametrize(
    ("compression", "named"),
    [
        ({"uplink": "gzip"}, "uplink"),
        ({"uplink": "topk", "ratio": 0}, "ratio"),
        ({"uplink": "topk", "ratio": 1.5}, "ratio"),
        ({"downlink": "int8"}, "downlink"),
        ({"uplink": "stc", "sparsity": 0.1}, "sparsity"),
        ({"error_feedback": "sometimes"}, "error_feedback"),
    ],
)
async def test_an_invalid_compression_is_refused_at_creation_naming_the_field(client, compression, named):
    await make_task_references(client)
    r = await client.post("/tasks", json={**PLAN, "compression": compression})
    assert r.status_code == 422, r.text
    locations = [e["loc"] for e in r.json()["detail"]]
    assert ["body", "compression", named] in locations, locations
    with pytest.raises(Invalid, match=named):  # the SDK refuses it before sending
        calls.create_task(PLAN, compression=compression)
    assert (await client.get("/tasks/t1")).status_code == 404


async def test_a_compression_is_stored_with_its_defaults_and_absent_means_none(client):
    await make_task_references(client)
    body = calls.create_task(PLAN, compression={"uplink": "topk", "ratio": 0.03}).json
    r = await client.post("/tasks", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["compression"] == {"uplink": "topk", "ratio": 0.03, "error_feedback": True, "downlink": "none"}
    plain = await client.post("/tasks", json={**PLAN, "task_id": "t2"})
    assert plain.json()["compression"] is None


async def test_each_round_record_keeps_its_traffic(client):
    await make_task_references(client)
    assert (await client.post("/tasks", json=PLAN)).status_code == 201
    assert (await client.put("/tasks/t1/status", json={"phase": "Running"})).status_code == 200
    traffic = {"bytes_up": 300, "bytes_up_raw": 9600, "bytes_down": 4800, "bytes_down_raw": 9600}
    record = {"round": 1, "loss": 0.5, **traffic, "encode_ms": 1.5, "decode_ms": 0.25}
    r = await client.put("/tasks/t1/status", json={"round": record})
    assert r.status_code == 200, r.text
    (shown,) = (await client.get("/tasks/t1")).json()["history"]
    assert {k: shown[k] for k in record} == record
    (paged,) = (await client.get("/tasks/t1/history")).json()
    assert paged["bytes_up"] == 300 and paged["decode_ms"] == 0.25
    bad = await client.put("/tasks/t1/status", json={"round": {"round": 2, "bytes_up": -1}})
    assert bad.status_code == 422 and "bytes_up" in bad.text


async def test_tasks_show_sums_the_traffic_of_the_rounds_and_the_sdk_reads_each_round(live_server, capsys):
    import json

    import httpx

    from flrepo.cli.main import main
    from flrepo.client import RepositoryClient

    async with httpx.AsyncClient(base_url=live_server.url) as client:
        await make_task_references(client)
        created = await client.post("/tasks", json={**PLAN, "compression": {"uplink": "int8", "downlink": "fp16"}})
        assert created.status_code == 201, created.text
        await client.put("/tasks/t1/status", json={"phase": "Running"})
        for n in (1, 2):
            record = {"round": n, "bytes_up": 250, "bytes_up_raw": 1000, "bytes_down": 500, "bytes_down_raw": 1000}
            r = await client.put("/tasks/t1/status", json={"round": {**record, "encode_ms": 1.25, "decode_ms": 0.5}})
            assert r.status_code == 200, r.text
    assert main(["tasks", "show", "t1", "--url", live_server.url, "--output", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["traffic"] == {
        "rounds": 2,
        "bytes_up": 500,
        "bytes_up_raw": 2000,
        "bytes_down": 1000,
        "bytes_down_raw": 2000,
        "encode_ms": 2.5,
        "decode_ms": 1.0,
        "uplink_ratio": 4.0,
        "downlink_ratio": 2.0,
    }
    assert main(["tasks", "show", "t1", "--url", live_server.url, "--output", "table"]) == 0
    assert '"uplink_ratio": 4.0' in capsys.readouterr().out
    with RepositoryClient(live_server.url) as repo:
        history = list(repo.get_task_history("t1"))
        assert [(h.bytes_up, h.bytes_down_raw, h.encode_ms) for h in history] == [(250, 1000, 1.25)] * 2
        assert repo.get_task("t1").compression.downlink == "fp16"
