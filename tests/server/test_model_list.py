"""`GET /model` serialises the stored documents straight (no validation pass): it must answer exactly
what validating each one as ModelOut would, for flrepo's documents and aerOS's, and its
`X-Total-Count` must be exact whether or not it needed a count."""

from __future__ import annotations

import json

from bson import ObjectId
from pydantic import TypeAdapter

from flrepo.schemas import ModelOut
from tests.helpers import make_model


async def test_the_list_is_what_modelout_makes_of_every_stored_document(client, app, raw_db):
    await make_model(client, "new")
    assert (await client.put("/model/new/v1", content=b"weights")).status_code == 204
    legacy = [
        # As aerOS 1.1.0 wrote them: no file fields, an ObjectId as file id (hand-edited), meta null,
        # fields the service does not list, a missing version.
        {"model_name": "old", "model_version": "1", "meta": {"library": "keras"}, "model_id": ObjectId()},
        {"model_name": "bare", "meta": None, "trained": True, "crc32": 5},
    ]
    raw_db[0]["models"].insert_many(legacy)
    r = await client.get("/model")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    stored = await app.state.db.collection("models").find({}, {"_id": 0}).to_list()  # as the service reads
    wanted = TypeAdapter(list[ModelOut]).dump_json(TypeAdapter(list[ModelOut]).validate_python(stored))
    assert r.json() == json.loads(wanted)
    assert r.json()[1]["model_id"] == str(legacy[0]["model_id"])
    assert "crc32" not in r.json()[2] and r.json()[2]["model_version"] is None


async def test_the_total_is_exact_with_and_without_a_count(client, app):
    for i in range(4):
        await make_model(client, f"m{i}")

    async def page(**params: int) -> tuple[list[str], str]:
        r = await client.get("/model", params=params)
        assert r.status_code == 200, r.text
        return [d["model_name"] for d in r.json()], r.headers["x-total-count"]

    assert await page() == (["m0", "m1", "m2", "m3"], "4")
    assert await page(limit=4) == (["m0", "m1", "m2", "m3"], "4")  # exactly a page: no item beyond it
    assert await page(limit=3) == (["m0", "m1", "m2"], "4")  # more than a page: counted
    assert await page(limit=3, offset=3) == (["m3"], "4")
    assert await page(limit=2, offset=4) == ([], "4")  # past the end: counted
    assert await page(limit=2, offset=9) == ([], "4")
