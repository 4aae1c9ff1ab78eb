"""A task is steered only by the collector that claimed it (issue 28), on the real store with API keys:
an unrelated writer's status reports, heartbeats, discovery records, checkpoints (created, filed, through
tus) and publications are refused (403); the claim lapses with the heartbeat and a restarted collector
re-claims with its token; checkpoints are immutable and bounded by the task's rounds and progress;
local executions write only their own record; cancel stays a writer's act."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml
from pymongo import MongoClient

from flrepo.server.auth import hash_key
from flrepo.server.main import create_app
from flrepo.server.repository.claims import token_hash
from tests.helpers import PLAN, drop, make_settings, make_task, upload

KEYS = {"collector": "key-of-the-collector", "intruder": "key-of-an-intruder", "admin": "key-of-the-admin"}
ROLES = {"collector": "writer", "intruder": "writer", "admin": "admin"}
TUS = {"Tus-Resumable": "1.0.0"}


class Callers:
    """One client per API key, sharing an app."""

    def __init__(self, transport: httpx.ASGITransport) -> None:
        self.by_name = {
            name: httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-API-Key": key})
            for name, key in KEYS.items()
        }
        self.collector, self.intruder, self.admin = (self.by_name[n] for n in ("collector", "intruder", "admin"))

    async def close(self) -> None:
        for client in self.by_name.values():
            await client.aclose()


@pytest.fixture
def keyed_settings(mongo_url, tmp_path):
    path = tmp_path / "keys.yaml"
    entries = [{"id": name, "role": ROLES[name], "sha256": hash_key(key)} for name, key in KEYS.items()]
    path.write_text(yaml.safe_dump(entries))
    settings = make_settings(mongo_url, api_keys_file=path, task_history_rounds=50, task_check_interval_s=0)
    yield settings
    drop(settings)


@pytest.fixture
async def callers(keyed_settings) -> AsyncIterator[Callers]:
    app = create_app(keyed_settings)
    async with app.router.lifespan_context(app):
        found = Callers(httpx.ASGITransport(app=app))
        yield found
        await found.close()


def _raw(settings) -> Any:
    return MongoClient(settings.mongodb_url, serverSelectionTimeoutMS=5000)[settings.db_name]


async def _claimed(callers: Callers, **plan: Any) -> str:
    """Task t1 (3 rounds), claimed by the collector, Running; its task token."""
    await make_task(callers.admin, "t1", rounds=3, **plan)
    r = await callers.collector.post("/tasks/t1/claim", json={"collector": "host:1"})
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    running = await callers.collector.put("/tasks/t1/status", json={"phase": "Running"}, headers=_t(token))
    assert running.status_code == 200, running.text
    return str(token)


def _t(token: str) -> dict[str, str]:
    return {"X-Task-Token": token}


def _tus_create(target: str, length: int) -> dict[str, str]:
    meta = f"target {base64.b64encode(target.encode()).decode()}"
    return {**TUS, "Upload-Length": str(length), "Upload-Metadata": meta}


async def test_an_unrelated_writer_cannot_steer_a_claimed_task(callers, keyed_settings):
    token = await _claimed(callers)
    intruder = callers.intruder
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    refused = {
        "status": await intruder.put("/tasks/t1/status", json={"phase": "Succeeded"}),
        "heartbeat": await intruder.put("/tasks/t1/status", json={"collector": "evil:1", "current_round": 2}),
        "discovery": await intruder.put(
            "/tasks/t1/status", json={"server_address": "evil.example:8080", "server_ca": pem}
        ),
        "wrong token": await intruder.put("/tasks/t1/status", json={"current_round": 1}, headers=_t("guess")),
        "checkpoint": await intruder.post("/tasks/t1/checkpoints", json={"round": 1, "loss": -1e308}),
        "claim": await intruder.post("/tasks/t1/claim", json={}),
        "output model": await intruder.post(
            "/model", json={"model_name": "digits", "model_version": "v1-t1", "meta": {"library": "numpy"}}
        ),
        "output result": await intruder.post(
            "/training-results",
            json={
                "model_name": "digits",
                "model_version": "v1",
                "training_id": "t1",
                "configuration_id": "1",
                "results": {},
            },
        ),
    }
    assert {what: r.status_code for what, r in refused.items()} == {
        **dict.fromkeys(refused, 403),
        "claim": 409,  # another live claim holds it
    }, {what: r.text for what, r in refused.items()}
    assert "X-Task-Token" in refused["status"].json()["detail"]
    # The collector's own checkpoint: registered with its token; its file refused to the intruder,
    # directly and through tus (the creation's dry run is the PUT's own check).
    assert (await callers.collector.post("/tasks/t1/checkpoints", json={"round": 1}, headers=_t(token))).is_success
    assert (await upload(intruder, "/tasks/t1/checkpoints/1", b"attacker's arrays")).status_code == 403
    tus = await intruder.post("/uploads", headers=_tus_create("/tasks/t1/checkpoints/1", 5))
    assert tus.status_code == 403, tus.text
    task = (await callers.admin.get("/tasks/t1")).json()
    assert task["phase"] == "Running" and task["server_address"] is None and task["heartbeat"]["collector"] is None
    assert task["best"] is None and task["claimed_by"]["key_id"] == "collector"
    # Cancel stays a writer's act.
    cancelled = await intruder.post("/tasks/t1/cancel", json={"message": "stop"})
    assert cancelled.status_code == 200 and cancelled.json()["phase"] == "Failed"


async def test_the_collector_reports_checkpoints_and_publishes_with_its_token(callers):
    token = await _claimed(callers)
    c = callers.collector
    assert (await c.post("/tasks/t1/checkpoints", json={"round": 1, "loss": 0.4}, headers=_t(token))).is_success
    meta = _tus_create("/tasks/t1/checkpoints/1", 3)
    created = await c.post("/uploads", headers={**meta, **_t(token)})
    assert created.status_code == 201, created.text
    part = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream", **_t(token)}
    assert (await c.patch(created.headers["location"], content=b"npz", headers=part)).status_code == 204
    listed = (await c.get("/tasks/t1/checkpoints")).json()
    assert listed[0]["size"] == 3 and len(listed[0]["sha256"]) == 64
    assert (await c.get("/tasks/t1")).json()["best"]["round"] == 1  # best follows a checkpoint with its file
    body = {"model_name": "digits", "model_version": "v1-t1", "meta": {"library": "numpy"}}
    assert (await c.post("/model", json=body, headers=_t(token))).status_code == 201
    done = await c.put("/tasks/t1/status", json={"phase": "Succeeded"}, headers=_t(token))
    assert done.status_code == 200, done.text


async def test_checkpoints_are_immutable_and_within_the_run(callers):
    token = await _claimed(callers)
    c, h = callers.collector, _t(token)
    assert (await c.post("/tasks/t1/checkpoints", json={"round": 2}, headers=h)).status_code == 409  # not reached
    assert (await c.post("/tasks/t1/checkpoints", json={"round": 4}, headers=h)).status_code == 409  # 3 rounds
    nan = await c.post("/tasks/t1/checkpoints", content=b'{"round": 1, "loss": NaN}', headers=h)
    assert nan.status_code == 422
    assert (await c.post("/tasks/t1/checkpoints", json={"round": 1, "loss": 0.5}, headers=h)).status_code == 201
    first = await c.put("/tasks/t1/checkpoints/1", content=b"one", headers=h)
    assert first.status_code == 204, first.text
    again = await c.put("/tasks/t1/checkpoints/1", content=b"other", headers=h)
    assert again.status_code == 409 and "immutable" in again.json()["detail"]
    assert (await c.post("/tasks/t1/checkpoints", json={"round": 1}, headers=h)).status_code == 409
    assert (await c.get("/tasks/t1/checkpoints/1")).content == b"one"
    report = {"current_round": 1, "round": {"round": 1}}
    assert (await c.put("/tasks/t1/status", json=report, headers=h)).status_code == 200
    assert (await c.post("/tasks/t1/checkpoints", json={"round": 2}, headers=h)).status_code == 201  # reached now
    assert (await c.put("/tasks/t1/status", json={"phase": "Failed", "reason": "Test"}, headers=h)).is_success
    assert (await c.put("/tasks/t1/checkpoints/2", content=b"late", headers=h)).status_code == 409
    assert (await callers.admin.put("/tasks/t1/checkpoints/2", content=b"late")).status_code == 409
    assert (await callers.admin.post("/tasks/t1/checkpoints", json={"round": 3})).status_code == 409


async def test_a_claim_lapses_with_the_heartbeat_and_a_restarted_collector_reclaims(callers, keyed_settings):
    token = await _claimed(callers, heartbeat_timeout=30)
    again = await callers.collector.post("/tasks/t1/claim", json={"collector": "host:2", "token": token})
    assert again.status_code == 200 and again.json()["token"] == token  # at once, same token
    assert (await callers.intruder.post("/tasks/t1/claim", json={"token": "guessed"})).status_code == 403
    assert (await callers.collector.post("/tasks/t1/claim", json={})).status_code == 409  # even the same key
    # The collector goes silent past the timeout (its heartbeat and claim moved back in time).
    past = datetime.now(UTC) - timedelta(seconds=60)
    _raw(keyed_settings)["tasks"].update_one(
        {"task_id": "t1"}, {"$set": {"heartbeat.time": past, "claimed_by.time": past}}
    )
    other = await callers.intruder.post("/tasks/t1/claim", json={"collector": "elsewhere:1"})
    assert other.status_code == 200 and other.json()["token"] != token
    stale = await callers.collector.put("/tasks/t1/status", json={"current_round": 1}, headers=_t(token))
    assert stale.status_code == 403  # the old token no longer steers the task
    unclaimed_plan = {**PLAN, "task_id": "t2", "output_model_version": "t2-out"}
    assert (await callers.admin.post("/tasks", json=unclaimed_plan)).status_code == 201
    detail = (await callers.collector.put("/tasks/t2/status", json={"phase": "Running"})).json()["detail"]
    assert "not claimed" in detail


def _claimed_elsewhere(settings, token: str) -> None:
    """Another replica's claim of t1: a new token (its hash) and a new updated_at, as claims.claim writes them."""
    change = {"claim_sha256": token_hash(token), "updated_at": datetime.now(UTC)}
    _raw(settings)["tasks"].update_one({"task_id": "t1"}, {"$set": change})


async def test_a_claim_made_by_another_replica_decides_who_reports(callers, keyed_settings):
    """A report starts from the task as this process last wrote it (flrepo.server.repository.task_copies);
    a claim made since elsewhere still decides: the token it replaced is refused, its own is taken."""
    first = await _claimed(callers)
    _claimed_elsewhere(keyed_settings, "second")
    stale = await callers.collector.put("/tasks/t1/status", json={"current_round": 1}, headers=_t(first))
    assert stale.status_code == 403, stale.text
    r = await callers.collector.put("/tasks/t1/status", json={"current_round": 1}, headers=_t("second"))
    assert r.status_code == 200, r.text
    _claimed_elsewhere(keyed_settings, "third")
    r = await callers.intruder.put("/tasks/t1/status", json={"current_round": 2}, headers=_t("third"))
    assert r.status_code == 200 and r.json()["current_round"] == 2, r.text
    stale = await callers.collector.put("/tasks/t1/status", json={"current_round": 3}, headers=_t("second"))
    assert stale.status_code == 403, stale.text


async def test_local_executions_write_only_their_own_record(callers):
    token = await _claimed(callers)
    site = {"site": "hospital-a", "state": "failed", "reason": "DataError", "message": "no labels"}
    mine = await callers.intruder.put("/tasks/t1/sites", json=site)
    assert mine.status_code == 200, mine.text
    theirs = await callers.collector.put("/tasks/t1/sites", json={**site, "state": "joining", "reason": None})
    assert theirs.status_code == 200
    records = {(r["key_id"], r["site"]): r["state"] for r in theirs.json()["site_reports"]}
    assert records == {("intruder", "hospital-a"): "failed", ("collector", "hospital-a"): "joining"}
    assert (await callers.intruder.put("/tasks/t1/sites", json={**site, "extra": 1})).status_code == 422
    assert (await callers.collector.put("/tasks/t1/status", json={"phase": "Failed"}, headers=_t(token))).is_success
    assert (await callers.intruder.put("/tasks/t1/sites", json=site)).status_code == 409  # ended


async def test_the_output_version_is_reserved_for_the_task(callers):
    await make_task(callers.admin, "t1")
    second = await callers.admin.post("/tasks", json={**PLAN, "task_id": "t9", "output_model_version": "v1-t1"})
    assert second.status_code == 409 and "t1" in second.json()["detail"]
    # Once the task failed, the version is free again.
    assert (await callers.admin.post("/tasks/t1/cancel")).status_code == 200
    body = {"model_name": "digits", "model_version": "v1-t1", "meta": {"library": "numpy"}}
    assert (await callers.intruder.post("/model", json=body)).status_code == 201


async def test_a_task_can_name_the_keys_that_may_claim_it(callers):
    await make_task(callers.admin, "t1", collector_keys=["collector"])
    refused = await callers.intruder.post("/tasks/t1/claim", json={})
    assert refused.status_code == 403 and "collector_keys" in refused.json()["detail"]
    assert (await callers.collector.post("/tasks/t1/claim", json={})).status_code == 200
