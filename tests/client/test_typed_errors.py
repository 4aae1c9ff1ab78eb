"""Typed errors carry the server's detail and request id; keys, roles and size limits; unreachable
servers and databases."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import pytest
import yaml

from flrepo.client import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RepositoryError,
    Retry,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from flrepo.server.auth import hash_key
from flrepo.server.embedded import free_port
from flrepo.server.main import create_app
from tests.client.sdk import (
    FLAVOURS,
    Counting,
    Flaky,
    run,
)
from tests.helpers import LiveServer, drop, make_settings

# --- typed errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_not_found_conflict_invalid_carry_the_server_detail(live_server, connect, flavour):
    c = connect(flavour, live_server.url)
    with pytest.raises(NotFound) as missing:
        await run(c.get_model, "nope", "v1")
    assert missing.value.status == 404 and "not found" in missing.value.detail
    assert str(missing.value).startswith("GET /model/meta: 404 ")
    with pytest.raises(NotFound):
        await run(c.download_model, "nope", "v1", io.BytesIO())
    with pytest.raises(NotFound):
        await run(c.load_strategy, "nope")

    await run(c.create_strategy, "s")
    with pytest.raises(Conflict) as conflict:
        await run(c.create_strategy, "s")
    assert conflict.value.status == 409 and "s" in conflict.value.detail
    with pytest.raises(NotFound):
        await run(c.download_strategy, "s", io.BytesIO())  # no file yet

    with pytest.raises(Invalid) as invalid:
        await run(c.create_model, "$x", "v1", "numpy")
    assert invalid.value.status == 422 and isinstance(invalid.value.detail, list)
    assert "model_name" in str(invalid.value)  # FastAPI's list, read as "field: message"
    with pytest.raises(Invalid):
        await run(c.get_strategy, "$x")
    for cls in (NotFound, Conflict, Invalid):
        assert issubclass(cls, RepositoryError)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    entries = [
        {"id": "reader", "role": "reader", "sha256": hash_key("reader-secret")},
        {"id": "writer", "role": "writer", "sha256": hash_key("writer-secret")},
        {"id": "admin", "role": "admin", "sha256": hash_key("admin-secret")},
    ]
    path.write_text(yaml.safe_dump(entries))
    return path


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_keys_roles_and_size_limits(mongo_url, keys_file, connect, flavour):
    settings = make_settings(mongo_url, api_keys_file=keys_file, max_upload_bytes=1000, max_body_bytes=2048)
    try:
        with LiveServer(create_app(settings)) as server:
            anonymous = connect(flavour, server.url)
            wrong = connect(flavour, server.url, api_key="guess")
            reader = connect(flavour, server.url, api_key="reader-secret")
            writer = connect(flavour, server.url, api_key="writer-secret")
            admin = connect(flavour, server.url, api_key="admin-secret")

            assert (await run(anonymous.health))["status"] == "ok"  # liveness needs no key
            for client in (anonymous, wrong):
                with pytest.raises(Unauthorized) as unauthorized:
                    await run(client.list_models)
                assert unauthorized.value.status == 401 and "API key" in unauthorized.value.detail
            assert list(await run(reader.list_models)) == []
            with pytest.raises(Forbidden) as forbidden:
                await run(reader.create_model, "m", "v1", "numpy")
            assert forbidden.value.status == 403 and "writer" in forbidden.value.detail

            await run(writer.create_model, "m", "v1", "numpy")
            with pytest.raises(Forbidden, match="admin"):
                await run(writer.delete_model, "m", "v1")
            with pytest.raises(Forbidden):
                await run(writer.list_audit)
            # The server writes an audit line after sending the response: ask until it is there.
            for _ in range(200):
                entries = await run(admin.list_audit, key_id="writer")
                if entries:
                    break
                await asyncio.sleep(0.01)
            assert [(e["method"], e["path"], e["key_id"]) for e in entries] == [("POST", "/model", "writer")]
            assert await run(admin.list_audit, key_id="reader") == []

            # The file limit: 413, nothing stored; the JSON body limit too.
            with pytest.raises(TooLarge) as too_large:
                await run(writer.upload_model, "m", "v1", io.BytesIO(b"x" * 5000))
            assert too_large.value.status == 413 and "1000-byte limit" in too_large.value.detail
            await run(writer.upload_model, "m", "v1", io.BytesIO(b"x" * 1000))  # exactly at the limit
            assert (await run(reader.get_model, "m", "v1")).size == 1000
            with pytest.raises(TooLarge, match="2048"):
                await run(writer.create_model, "big", "v1", "numpy", notes="y" * 5000)
            with pytest.raises(NotFound):
                await run(reader.get_model, "big", "v1")
            await run(admin.delete_model, "m", "v1")
    finally:
        drop(settings)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_unavailable_when_nothing_listens_or_the_database_is_down(mongo_url, connect, flavour):
    closed = f"http://127.0.0.1:{free_port()}"
    transport = Counting()
    c = connect(flavour, closed, retry=Retry(attempts=2, base_s=0.01), transport=transport)
    with pytest.raises(Unavailable, match="cannot reach") as unreachable:
        await run(c.create_model, "m", "v1", "numpy")  # refused: safe to try again even for a POST
    assert unreachable.value.status is None and isinstance(unreachable.value.__cause__, httpx.ConnectError)
    assert transport.attempts == 2

    settings = make_settings(f"mongodb://127.0.0.1:{free_port()}/", db_timeout_ms=300)
    with LiveServer(create_app(settings)) as server:
        c = connect(flavour, server.url, retry=Retry(attempts=2, base_s=0.01))
        assert (await run(c.health))["status"] == "ok"
        with pytest.raises(Unavailable) as down:
            await run(c.ready)
        assert down.value.status == 503 and "unavailable" in str(down.value.detail)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_every_error_from_an_answer_carries_its_request_id(live_server, connect, flavour):
    transport = Flaky()
    c = connect(flavour, live_server.url, transport=transport)
    with pytest.raises(NotFound) as missing:
        await run(c.get_model, "nope", "v1")
    request_id = missing.value.request_id
    assert request_id and len(request_id) == 32 and str(missing.value).endswith(f"(request id {request_id})")
    with pytest.raises(NotFound) as no_file:
        await run(c.download_model, "nope", "v1", io.BytesIO())  # a streamed GET
    assert no_file.value.request_id and no_file.value.request_id != request_id
    with pytest.raises(Invalid) as invalid:
        await run(c.create_model, "$x", "v1", "numpy")
    assert invalid.value.request_id and invalid.value.request_id in str(invalid.value)
    c = connect(flavour, live_server.url, transport=Flaky([(503, {"X-Request-ID": "given-by-a-proxy"})] * 5))
    with pytest.raises(Unavailable) as down:
        await run(c.list_models)
    assert down.value.request_id == "given-by-a-proxy"
    # No answer, no id.
    c = connect(flavour, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable) as unreachable:
        await run(c.health)
    assert unreachable.value.request_id is None
