"""The SDK's side of a task's claim (issue 28): a collector claims its task, steers it with its task
token, and lists its open uploads; another holder of the same API key cannot."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import cloudpickle
import httpx
import pytest
import yaml

from flrepo.client import Conflict, Forbidden
from flrepo.server.auth import hash_key
from flrepo.server.main import create_app
from tests.client.sdk import FLAVOURS, collect, run
from tests.helpers import LiveServer, drop, make_settings


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    entries = [
        {"id": "writer", "role": "writer", "sha256": hash_key("writer-secret")},
        {"id": "admin", "role": "admin", "sha256": hash_key("admin-secret")},
    ]
    path.write_text(yaml.safe_dump(entries))
    return path


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_collector_claims_and_steers_its_task_with_its_token(mongo_url, keys_file, connect, flavour):
    settings = make_settings(mongo_url, api_keys_file=keys_file)
    try:
        with LiveServer(create_app(settings)) as server:
            admin = connect(flavour, server.url, api_key="admin-secret")
            collector = connect(flavour, server.url, api_key="writer-secret", tus_threshold=1)  # checkpoints by tus
            other = connect(flavour, server.url, api_key="writer-secret")  # same key, no token
            await run(admin.create_model, "m", "v1", "numpy")
            await run(admin.create_strategy, "s")
            await run(admin.upload_strategy, "s", io.BytesIO(cloudpickle.dumps({"strategy": "FedAvg"})))
            spec = {"task_id": "job", "model": {"model_name": "m", "model_version": "v1"}, "rounds": 2}
            await run(admin.create_task, {**spec, "strategy": {"strategy_name": "s"}})

            claim = await run(collector.claim_task, "job", collector="host:1")
            assert claim.claimed_by.key_id == "writer" and len(claim.token) > 30
            with pytest.raises(Conflict, match="claimed by host:1"):
                await run(other.claim_task, "job")
            again = await run(other.claim_task, "job", collector="host:2", token=claim.token)  # a restart
            assert again.token == claim.token
            with pytest.raises(Forbidden, match="X-Task-Token"):
                await run(other.update_task_status, "job", phase="Running")
            collector.client.task_token = claim.token
            assert (await run(collector.update_task_status, "job", phase="Running")).phase == "Running"
            await run(collector.create_checkpoint, "job", 1, loss=0.5)
            stored = await run(collector.upload_checkpoint, "job", 1, io.BytesIO(b"weights"))
            assert stored.size == 7
            with pytest.raises(Conflict, match="immutable"):
                await run(collector.upload_checkpoint, "job", 1, io.BytesIO(b"replaced"))
            # Registered by the upload: above the tus threshold it is registered first, then sent by tus.
            await run(collector.update_task_status, "job", current_round=1)
            second = io.BytesIO(b"second")
            registered = await run(collector.upload_checkpoint, "job", 2, second, register=True, loss=0.4)
            assert registered.size == 6
            assert [(c.round, c.loss) for c in await run(admin.list_checkpoints, "job")] == [(1, 0.5), (2, 0.4)]
            collector.client.task_token = None
            with pytest.raises(Forbidden):
                await run(collector.create_checkpoint, "job", 2)

            site = await run(other.report_site, "job", "site-a", "failed", reason="DataError", message="no labels")
            assert [(r.site, r.state, r.key_id) for r in site.site_reports] == [("site-a", "failed", "writer")]

            headers = {"Tus-Resumable": "1.0.0", "Upload-Length": "10", "X-API-Key": "writer-secret"}
            headers["Upload-Metadata"] = "target " + base64.b64encode(b"/model/m/v1").decode()
            async with httpx.AsyncClient() as raw:
                assert (await raw.post(f"{server.url}/uploads", headers=headers)).status_code == 201
            open_uploads = await run(collector.list_uploads)
            assert [(u.target, u.length, u.offset) for u in open_uploads] == [("/model/m/v1", 10, 0)]
            assert open_uploads.total == 1 and open_uploads[0].expires_at is not None
            assert [u.key_id for u in await collect(admin.iter_uploads())] == ["writer"]
    finally:
        drop(settings)
