"""`GET /model` serialises the stored documents straight (no validation pass): it must answer exactly
what validating each one as ModelOut would, for flrepo's documents and aerOS's, and its
`X-Total-Count` must be exact whether or not it needed a count."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

from bson import Binary, Int64, ObjectId
from pydantic import TypeAdapter
from pydantic_core import to_json

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


def _as_pydantic_wrote_it(stored: list[dict]) -> bytes:
    """The list's body as the route wrote it before it read datetimes naive and wrote with orjson: each
    document tz-aware (as the service reads documents elsewhere), its ModelOut fields picked, pydantic's
    `to_json`."""
    return to_json([{name: doc.get(name) for name in ModelOut.model_fields} for doc in stored], fallback=str)


# Datetimes as a store holds them: milliseconds, so microseconds are cut (999 µs -> no fraction at all).
MOMENTS = [
    datetime(2026, 12, 6, 2, 12, 48, 123456),
    datetime(2026, 1, 1),
    datetime(2020, 1, 1, 0, 0, 0, 999),
    datetime(2020, 1, 1, 0, 0, 0, 1000),
    datetime(2020, 1, 1, 0, 0, 0, 100000),
    datetime(1969, 12, 31, 23, 59, 59, 1500),
    datetime(1900, 2, 28, 12),
    datetime(1, 1, 1),
    datetime(999, 12, 31, 23, 59, 59, 999999),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime(2020, 6, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=30))),  # stored as 06:30 UTC
    datetime(2020, 6, 1, 12, tzinfo=timezone(-timedelta(hours=11))),
]


def _floats() -> list[float]:
    rng = random.Random(21)
    edges = [0.1, 1e-7, 1.5e-7, 1e16, 123456789.123456789, 2.0**53 + 2, 5e-324, 1.7976931348623157e308, -2.5, 3.0]
    return edges + [rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30) for _ in range(200)]


async def test_the_list_writes_every_stored_value_as_pydantic_did(client, app, raw_db):
    """Byte for byte: datetimes (top level, nested, in fields that are not dates), numbers, text, ids, binary."""
    await make_model(client, "new")
    assert (await client.put("/model/new/v1", content=b"weights")).status_code == 204
    odd = [
        # Fields in another order than ModelOut's, one the service does not list, some missing.
        {"updated_at": MOMENTS[0], "meta": {"library": "keras"}, "created_at": MOMENTS[1], "model_name": "a", "x": 1},
        *(
            {
                "model_name": f"t{i}",
                "model_version": "v",
                **dict.fromkeys(("created_at", "updated_at", "uploaded_at"), moment),
            }
            for i, moment in enumerate(MOMENTS)
        ),
        {
            "model_name": "nested",
            "meta": {
                "library": "keras",
                "trained_at": MOMENTS[5],
                "history": [MOMENTS[0], {"at": MOMENTS[7], "n": [MOMENTS[9], None]}],
                "floats": _floats(),
                "ints": [0, -1, 2**31, Int64(2**62), 2**63 - 1, -(2**63)],
                "text": 'é\u2028\x00\x1f"\\/<>&\U0001f600',
                "flags": [True, False, None],
                "empty": {"object": {}, "array": []},
                "blob": b"abc",
                "binary": Binary(b"xy", 5),
                "id": ObjectId(),
            },
            "model_id": ObjectId(),
            "size": Int64(5),
            "sha256": None,
        },
        {"model_name": MOMENTS[2], "model_version": 3, "meta": [MOMENTS[3]], "filename": 1.5, "content_type": False},
    ]
    raw_db[0]["models"].insert_many(odd)
    r = await client.get("/model")
    assert r.status_code == 200
    stored = await app.state.db.collection("models").find({}, {"_id": 0}).sort("_id", 1).to_list()
    assert len(stored) == len(odd) + 1 and stored[0]["uploaded_at"].tzinfo is not None
    assert r.content == _as_pydantic_wrote_it(stored)
    assert r.json()[-2]["meta"]["trained_at"] == "1969-12-31T23:59:59.001000Z"
    assert [item["created_at"] for item in r.json()[3:6]] == [
        "2026-01-01T00:00:00Z",
        "2020-01-01T00:00:00Z",
        "2020-01-01T00:00:00.001000Z",
    ]
