"""The web console at /ui, over HTTP: the page and its assets (local only, under a policy that keeps
the page to this origin), GET /whoami, GET /signatures/{kind}, and cancel refused to a reader. The
browser tests are in tests/server/test_console_browser.py."""

from __future__ import annotations

import re

import httpx
import pytest

from flrepo.server.main import create_app
from flrepo.server.ui import STATIC
from flrepo.signing import Keyring, encode_key, new_key_pair, sign
from tests.helpers import drop, make_settings, make_task, upload
from tests.server.console_pages import KEYS, keys_file


@pytest.fixture
async def keyed(mongo_url, tmp_path):
    """A client of an app with reader, writer and admin keys (send them with `as_role`)."""
    private, public = new_key_pair()
    settings = make_settings(mongo_url, api_keys_file=keys_file(tmp_path), trusted_keys=f"trusted:{encode_key(public)}")
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://flrepo.test") as c:
                c.signer = Keyring.signer("trusted", private)  # type: ignore[attr-defined]
                yield c
    finally:
        drop(settings)


def as_role(role: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[role]}


async def test_the_console_page_is_served_with_a_same_origin_policy(client):
    r = await client.get("/ui")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    assert (await client.get("/ui/")).text == r.text  # a trailing slash is the same page
    assets = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', r.text)
    assert {"/ui/static/console.js", "/ui/static/console.css"} <= set(assets)
    for asset in assets:
        served = await client.get(asset)
        assert served.status_code == 200, asset
    # Every module the script imports is there too.
    for path in sorted(STATIC.glob("*.js")):
        for name in re.findall(r'from "\./([^"]+)"', path.read_text()):
            assert (await client.get(f"/ui/static/{name}")).status_code == 200, (path.name, name)


def test_the_console_names_no_other_origin():
    """No URL of another site in the page or its assets (the SVG namespace is a name, not a request)."""
    for path in sorted(STATIC.iterdir()):
        text = path.read_text()
        found = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"')]*", text)) - {
            "http://www.w3.org/2000/svg"
        }
        assert not found, (path.name, found)


async def test_whoami_names_the_key_and_its_role(keyed):
    for role in KEYS:
        r = await keyed.get("/whoami", headers=as_role(role))
        assert r.status_code == 200 and r.json() == {"key_id": f"{role}-1", "role": role}
    assert (await keyed.get("/whoami")).status_code == 401
    assert (await keyed.get("/whoami", headers={"Authorization": "Bearer nope"})).status_code == 401
    spec = (await keyed.get("/openapi.json")).json()
    assert spec["paths"]["/whoami"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


async def test_whoami_without_keys_configured_is_the_anonymous_admin(client):
    assert (await client.get("/whoami")).json() == {"key_id": "anonymous", "role": "admin"}


async def test_a_reader_cannot_cancel_a_task_and_a_writer_can(keyed):
    keyed.headers.update(as_role("admin"))
    await make_task(keyed, "t-cancel")
    r = await keyed.post("/tasks/t-cancel/cancel", json={}, headers=as_role("reader"))
    assert r.status_code == 403 and "writer" in r.json()["detail"]
    assert (await keyed.get("/tasks/t-cancel", headers=as_role("reader"))).json()["phase"] == "Pending"
    r = await keyed.post("/tasks/t-cancel/cancel", json={"message": "from a test"}, headers=as_role("writer"))
    assert r.status_code == 200 and r.json()["phase"] == "Failed"
    assert r.json()["conditions"][-1]["reason"] == "Cancelled"


async def _strategy(client: httpx.AsyncClient, name: str, data: bytes, meta: dict) -> None:
    assert (await client.post("/strategy", json={"strategy_name": name, "meta": meta})).status_code == 201
    assert (await upload(client, f"/strategy/{name}", data)).status_code == 204


async def test_signature_states_say_who_signed_and_whether_it_verifies(keyed):
    keyed.headers.update(as_role("admin"))
    data = b"pickled strategy bytes"
    await _strategy(keyed, "signed", data, sign(keyed.signer, "strategy", "signed", data))
    await _strategy(keyed, "plain", data, {})
    stranger, _ = new_key_pair()
    await _strategy(keyed, "stranger", data, sign(Keyring.signer("other", stranger), "strategy", "stranger", data))
    # Signed, then its file replaced: the signature no longer covers what is stored.
    await _strategy(keyed, "swapped", data, sign(keyed.signer, "strategy", "swapped", data))
    assert (await upload(keyed, "/strategy/swapped", b"something else")).status_code == 204
    r = await keyed.get("/signatures/strategy", headers=as_role("reader"))
    assert r.status_code == 200 and r.headers["x-total-count"] == "4"
    states = {s["name"]: s for s in r.json()}
    assert states["signed"]["verified"] and states["signed"]["key_id"] == "trusted"
    assert states["signed"]["algorithm"] == "ed25519"
    assert not states["plain"]["signed"] and not states["plain"]["verified"]
    assert states["stranger"]["signed"] and not states["stranger"]["verified"]
    assert "not trusted" in states["stranger"]["detail"]
    assert not states["swapped"]["verified"] and "does not match" in states["swapped"]["detail"]
    assert (await keyed.get("/signatures/transformation", headers=as_role("reader"))).json() == []
    assert (await keyed.get("/signatures/model", headers=as_role("reader"))).status_code == 422


async def test_signatures_verify_nothing_without_trusted_keys(client):
    data = b"x"
    private, _ = new_key_pair()
    await _strategy(client, "s", data, sign(Keyring.signer("k", private), "strategy", "s", data))
    (state,) = (await client.get("/signatures/strategy")).json()
    assert state["signed"] and not state["verified"] and state["key_id"] == "k"


def test_the_lineage_of_a_published_version_names_the_round_it_holds():
    from flrepo.fl.core.publishing import lineage

    task = {"rounds": 5, "strategy": {"strategy_name": "fedavg"}, "best": {"round": 3, "loss": 0.2, "metrics": {}}}
    task["best"]["metrics"] = {"accuracy": 0.9, "note": "x", "skip": [1]}
    best = lineage({**task, "publish": "best"}, 3, 0.4, {"accuracy": 0.8})
    assert best == {
        "strategy": "fedavg",
        "published_round": 3,
        "final_loss": 0.2,
        "final_metrics": {"accuracy": 0.9, "note": "x"},
    }
    last = lineage({**task, "publish": "last"}, 5, None, {"accuracy": 0.8})
    assert last == {"strategy": "fedavg", "published_round": 5, "final_metrics": {"accuracy": 0.8}}
