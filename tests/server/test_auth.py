"""API keys and roles: every protected route by {no key, wrong key, reader, writer, admin}."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import yaml

from flrepo.server.auth import Role, hash_key, load_keys, new_key
from flrepo.server.main import create_app
from tests.helpers import drop, make_settings

KEYS = {role: f"key-of-{role}" for role in ("reader", "writer", "admin")}
NEEDED = {"GET": "reader", "HEAD": "reader", "POST": "writer", "PUT": "writer", "DELETE": "admin"}
# Resumable uploads: every request needs what a PUT of a file needs; their OPTIONS is public.
UPLOADS_NEED = "writer"
RANK = {"reader": 1, "writer": 2, "admin": 3}


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.yaml"
    entries = [{"id": f"{role}-1", "role": role, "sha256": hash_key(key)} for role, key in KEYS.items()]
    path.write_text(yaml.safe_dump(entries))
    return path


async def _client(mongo_url, **overrides):
    settings = make_settings(mongo_url, **overrides)
    app = create_app(settings)
    return settings, app


def _protected_routes(app):
    for path, ops in app.openapi()["paths"].items():
        if path in ("/health", "/ready"):
            continue
        for method, op in ops.items():
            if method == "options":
                continue
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            yield method.upper(), concrete
            if "application/octet-stream" in op["responses"].get("200", {}).get("content", {}):
                yield "HEAD", concrete


def _needed(method: str, path: str) -> str:
    if path == "/audit":
        return "admin"
    return UPLOADS_NEED if path.startswith("/uploads") else NEEDED[method]


async def test_role_matrix(mongo_url, keys_file):
    settings, app = await _client(mongo_url, api_keys_file=keys_file)
    routes = sorted(set(_protected_routes(app)))
    assert len(routes) >= 30
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                for method, path in routes:
                    for who in ("none", "wrong", "reader", "writer", "admin"):
                        headers = {"Tus-Resumable": "1.0.0"} if path.startswith("/uploads") else {}
                        if who == "wrong":
                            headers["Authorization"] = "Bearer not-a-key"
                        elif who != "none":
                            # Alternate the two ways of sending a key.
                            if who == "writer":
                                headers["X-API-Key"] = KEYS[who]
                            else:
                                headers["Authorization"] = f"Bearer {KEYS[who]}"
                        r = await client.request(method, path, headers=headers, json={} if method != "GET" else None)
                        if who in ("none", "wrong"):
                            expected = 401
                        elif RANK[who] < RANK[_needed(method, path)]:
                            expected = 403
                        else:
                            assert r.status_code not in (401, 403), (method, path, who, r.text)
                            continue
                        assert r.status_code == expected, (method, path, who, r.status_code, r.text)
                        if method != "HEAD":
                            assert set(r.json()) == {"detail"}
                            assert "key-of" not in r.text and "sha256" not in r.text
                        if expected == 401:
                            assert r.headers["www-authenticate"] == "Bearer"
                assert (await client.get("/health")).status_code == 200
                assert (await client.get("/ready")).status_code == 200
                assert (await client.get("/docs")).status_code == 200
                assert (await client.get("/openapi.json")).status_code == 200
    finally:
        drop(settings)


async def test_anonymous_role_for_legacy_clients(mongo_url, keys_file):
    settings, app = await _client(mongo_url, api_keys_file=keys_file, anonymous_role="reader")
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                assert (await client.get("/model")).status_code == 200
                body = {"model_name": "m", "model_version": "v", "meta": {"library": "k"}}
                assert (await client.post("/model", json=body)).status_code == 403
                auth = {"Authorization": f"Bearer {KEYS['writer']}"}
                assert (await client.post("/model", json=body, headers=auth)).status_code == 201
                assert (await client.get("/model", headers={"X-API-Key": "bad"})).status_code == 401
    finally:
        drop(settings)


def test_no_keys_configured_is_open_and_warns(caplog):
    from flrepo.server.auth import KeyStore

    store = KeyStore.from_settings(None, None)
    assert store.anonymous == Role.ADMIN
    assert "no API keys configured" in caplog.text


def test_keys_file_formats_and_errors(tmp_path):
    key, entry = new_key("ci", Role.WRITER)
    assert entry["sha256"] == hash_key(key) and key not in json.dumps(entry)
    as_json = tmp_path / "keys.json"
    as_json.write_text(json.dumps([entry]))
    loaded = load_keys(as_json)
    assert loaded[0].id == "ci" and loaded[0].role == Role.WRITER
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump([{"id": "x", "role": "superuser", "sha256": "0" * 64}]))
    with pytest.raises(ValueError, match="unknown role"):
        load_keys(bad)
    bad.write_text(yaml.safe_dump([{"id": "x", "role": "admin", "sha256": "short"}]))
    with pytest.raises(ValueError, match="sha256"):
        load_keys(bad)


def test_openapi_declares_both_key_schemes(keys_file, mongo_url):
    settings, app = make_settings(mongo_url, api_keys_file=keys_file), None
    app = create_app(settings)
    schemes = app.openapi()["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}


def test_cli_keys_create_prints_key_once_and_its_entry(capsys):
    from flrepo.cli.main import main

    assert main(["keys", "create", "--role", "reader", "--id", "ci-reader"]) == 0
    out = capsys.readouterr().out
    key = re.search(r"^key:\s+(\S+)$", out, re.M).group(1)
    entry = json.loads(re.search(r"^entry: (.+)$", out, re.M).group(1))
    assert entry == {"id": "ci-reader", "role": "reader", "sha256": hash_key(key)}


def test_cli_keys_create_appends_to_a_keys_file(tmp_path, capsys):
    from flrepo.cli.main import main

    path = tmp_path / "keys.yaml"
    assert main(["keys", "create", "--role", "admin", "--id", "ops", "--file", str(path)]) == 0
    assert main(["keys", "create", "--role", "reader", "--id", "dash", "--file", str(path)]) == 0
    keys = {k.id: k for k in load_keys(path)}
    assert keys["ops"].role == Role.ADMIN and keys["dash"].role == Role.READER
    assert main(["keys", "create", "--role", "reader", "--id", "dash", "--file", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.count("key:") == 2 and "flr_" in out
    assert "flr_" not in path.read_text()  # only hashes are stored
