"""The OpenAPI document: response headers, an example per error status, names described in words
(the pattern kept in one named schema for validators)."""

from __future__ import annotations

import re

import pytest

from flrepo.schemas.identifiers import IDENTIFIER_PATTERN, KEY_PATTERN

DOWNLOADS = [
    "/model/{model_name}/{model_version}",
    "/training-results/weights/{model_name}/{model_version}/{training_id}",
    "/strategy/{strategy_name}",
    "/transformation/{transformation_id}",
    "/tasks/{task_id}/checkpoints/{round}",
]
UPLOADS = [
    "/model/{model_name}/{model_version}",
    "/training-results/{model_name}/{model_version}/{training_id}/{configuration_id}",
    "/strategy/{strategy_name}",
    "/transformation/{transformation_id}",
    "/tasks/{task_id}/checkpoints/{round}",
]


@pytest.fixture
async def spec(client):
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def _operations(spec):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield path, method, op


async def test_every_response_documents_x_request_id(spec, client):
    count = 0
    for path, method, op in _operations(spec):
        for status, response in op["responses"].items():
            assert "X-Request-ID" in response.get("headers", {}), (method, path, status)
            count += 1
    assert count > 100
    assert (await client.get("/model/none/v")).headers["x-request-id"]


async def test_lists_document_x_total_count(spec, client):
    lists = [
        path
        for path, method, op in _operations(spec)
        if op["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("type")
        == "array"
    ]
    assert {"/model", "/strategy", "/transformation", "/training-results", "/tasks"} <= set(lists)
    for path in lists:
        assert "X-Total-Count" in spec["paths"][path]["get"]["responses"]["200"]["headers"], path
    assert (await client.get("/model")).headers["x-total-count"] == "0"


async def test_downloads_document_their_headers_and_conditions(spec):
    for path in DOWNLOADS:
        op = spec["paths"][path]["get"]
        responses = op["responses"]
        assert {"ETag", "Accept-Ranges", "Content-Length"} <= set(responses["200"]["headers"]), path
        assert "Content-Range" in responses["206"]["headers"], path
        assert "ETag" in responses["304"]["headers"] and "416" in responses, path
        headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
        assert {"Range", "If-Range", "If-None-Match"} <= headers, path


async def test_uploads_document_the_etag_and_preconditions(spec):
    for path in UPLOADS:
        op = spec["paths"][path]["put"]
        assert "ETag" in op["responses"]["204"]["headers"], path
        assert "412" in op["responses"] and "413" in op["responses"], path
        headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
        assert {"If-Match", "If-None-Match"} <= headers, path


async def test_every_error_status_has_an_example_problem(spec):
    statuses = set()
    for path, method, op in _operations(spec):
        for status, response in op["responses"].items():
            if int(status) < 400:
                continue
            body = response["content"]["application/json"]
            assert body["schema"] == {"$ref": "#/components/schemas/Problem"}, (method, path, status)
            assert body["example"]["detail"], (method, path, status)
            statuses.add(int(status))
    assert {401, 403, 404, 409, 412, 413, 416, 422, 503} <= statuses


async def test_unsatisfiable_range_is_a_json_problem_like_its_documentation(client):
    assert (await client.post("/strategy", json={"strategy_name": "s", "meta": {}})).status_code == 201
    assert (await client.put("/strategy/s", content=b"0123456789")).status_code == 204
    r = await client.get("/strategy/s", headers={"Range": "bytes=50-"})
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */10"
    assert "10 bytes" in r.json()["detail"]


async def test_names_are_described_in_words_and_keep_their_pattern(spec):
    schemas = spec["components"]["schemas"]
    identifier, key = schemas["Identifier"], schemas["Key"]
    # Validators and fuzzers still get the rule, once.
    assert identifier["pattern"] == IDENTIFIER_PATTERN and identifier["maxLength"] == 128
    assert key["pattern"] == KEY_PATTERN
    for named in (identifier, key):
        # A sentence a person reads: printable ASCII prose, not a character class.
        assert named["description"].isascii() and named["description"].isprintable()
        assert "[^" not in named["description"] and len(named["description"].split()) > 10
    # No name field shows the regex inline: each refers to the named schema.
    text = str({k: v for k, v in spec.items() if k != "components"}) + str(
        {k: v for k, v in schemas.items() if k not in ("Identifier", "Key")}
    )
    assert IDENTIFIER_PATTERN not in text and KEY_PATTERN not in text
    assert schemas["ModelIn"]["properties"]["model_name"] == {"$ref": "#/components/schemas/Identifier"}
    params = spec["paths"]["/model/{model_name}/{model_version}"]["get"]["parameters"]
    assert params[0]["schema"] == {"$ref": "#/components/schemas/Identifier"} and params[0]["description"]
    assert "'propertyNames': {'$ref': '#/components/schemas/Key'}" in str(schemas["Needs"])
    # The pattern does what the service does.
    pattern = re.compile(identifier["pattern"])
    for good in ("cnn", "v1.0", "модель", ".hidden", "..x"):
        assert pattern.match(good), good
    for bad in ("a/b", "$set", ".", "..", "a\u202eb", "a\x00b"):
        assert not pattern.match(bad), bad
