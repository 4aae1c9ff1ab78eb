"""The collector's side of issue 28 without Flower: its claim (token kept for a restart) and its signed
discovery record, which a local execution verifies before connecting (against the real API and store)."""

from __future__ import annotations

import pytest

from flrepo.client import Conflict, RepositoryClient
from flrepo.fl.core import claim as claiming
from flrepo.fl.core import discovery
from flrepo.signing import Keyring, SignatureError, encode_key, new_key_pair
from tests.helpers import make_model

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _keys(key_id: str) -> tuple[Keyring, str]:
    private, public = new_key_pair()
    return Keyring.signer(key_id, private), f"{key_id}:{encode_key(public)}"


def _task(**more: object) -> dict[str, object]:
    return {"task_id": "t1", "runtime": "legacy", "server_address": "collector:8080", "server_ca": CA, **more}


def test_a_signed_record_verifies_and_any_change_to_it_does_not():
    signer, trusted = _keys("collector")
    fields = discovery.signed_fields(signer, "t1", "legacy", "collector:8080", CA)
    sites = Keyring.from_env({"FLREPO_TRUSTED_KEYS": trusted})
    discovery.verify_record(_task(discovery_signature=fields["discovery_signature"]), sites)
    for change in ({"server_address": "evil:8080"}, {"server_ca": CA + CA}, {"runtime": "message"}, {"task_id": "t2"}):
        with pytest.raises(SignatureError):
            discovery.verify_record(_task(discovery_signature=fields["discovery_signature"], **change), sites)
    with pytest.raises(SignatureError, match="not signed"):
        discovery.verify_record(_task(), sites)
    impostor, _ = _keys("collector")  # the same key id, another key
    forged = discovery.signed_fields(impostor, "t1", "legacy", "collector:8080", CA)
    with pytest.raises(SignatureError):
        discovery.verify_record(_task(discovery_signature=forged["discovery_signature"]), sites)


def test_a_task_that_pins_a_discovery_key_accepts_only_that_key():
    pinned_signer, pinned = _keys("pinned")
    other_signer, other = _keys("other")
    sites = Keyring.from_env({"FLREPO_TRUSTED_KEYS": other})  # trusts "other", not the pinned key
    good = discovery.signed_fields(pinned_signer, "t1", "legacy", "collector:8080", CA)["discovery_signature"]
    discovery.verify_record(_task(discovery_signature=good, discovery_key=pinned), sites)
    trusted_but_not_pinned = discovery.signed_fields(other_signer, "t1", "legacy", "collector:8080", CA)
    with pytest.raises(SignatureError, match="discovery_key"):
        discovery.verify_record(
            _task(discovery_signature=trusted_but_not_pinned["discovery_signature"], discovery_key=pinned), sites
        )


def test_the_collector_key_comes_from_its_own_settings(tmp_path):
    from flrepo.signing import private_key_pem

    private, _ = new_key_pair()
    (tmp_path / "site-collector.key").write_bytes(private_key_pem(private))
    keyring = discovery.collector_keyring({"FLREPO_COLLECTOR_KEY_FILE": str(tmp_path / "site-collector.key")})
    assert keyring is not None and keyring.signing_id == "site-collector"
    assert discovery.collector_keyring({}) is None
    with pytest.raises(Exception, match="discovery key"):
        discovery.collector_keyring({"FLREPO_COLLECTOR_KEY": "not a key"})


async def _plan(client) -> None:
    await make_model(client, "digits", "v1", library="numpy")
    await client.post("/strategy", json={"strategy_name": "fedavg"})
    await client.put("/strategy/fedavg", files={"file": ("s.pkl", b"bytes", "application/octet-stream")})
    body = {"task_id": "t1", "model": {"model_name": "digits", "model_version": "v1"}}
    assert (await client.post("/tasks", json={**body, "strategy": {"strategy_name": "fedavg"}})).status_code == 201


async def test_a_restarted_collector_reclaims_with_its_kept_token(live_server, client, tmp_path):
    await _plan(client)
    with RepositoryClient(live_server.url, keyring=Keyring()) as first:
        claimed = claiming.claim(first, "t1", "host:1", tmp_path)
        assert first.task_token == claimed.token
        assert claiming.token_file(first, "t1", tmp_path).stat().st_mode & 0o077 == 0
        first.update_task_status("t1", phase="Running")
    with RepositoryClient(live_server.url, keyring=Keyring()) as restarted:  # after a SIGKILL: same state dir
        again = claiming.claim(restarted, "t1", "host:2", tmp_path)
        assert again.token == claimed.token and again.claimed_by.collector == "host:2"
        restarted.update_task_status("t1", current_round=1)
    # Another state dir has no token: it waits for the claim to lapse. (Without API keys every caller is
    # an admin, which needs no token to write: tests/server/test_task_claims.py checks writers.)
    with RepositoryClient(live_server.url, keyring=Keyring()) as elsewhere:
        with pytest.raises(Conflict):
            claiming.claim(elsewhere, "t1", "host:3", tmp_path / "other")
    claiming.release(restarted, "t1", tmp_path)
    assert not claiming.token_file(restarted, "t1", tmp_path).exists()


async def test_a_site_verifies_what_it_takes_from_the_task_and_nothing_given_by_hand(live_server, client):
    await _plan(client)
    record = {"phase": "Running", "runtime": "legacy", "server_address": "127.0.0.1:9", "server_ca": CA}
    assert (await client.put("/tasks/t1/status", json=record)).status_code == 200  # unsigned
    signer, trusted = _keys("collector")
    with RepositoryClient(live_server.url, keyring=Keyring.from_env({"FLREPO_TRUSTED_KEYS": trusted})) as site:
        with pytest.raises(SignatureError, match="not signed"):
            discovery.discover(site, "t1", discovery.Site(wait=5))
        with pytest.raises(SignatureError):  # the address by hand, but the CA would still come from the task
            discovery.discover(site, "t1", discovery.Site(server="10.0.0.1:8080", wait=5))
        by_hand = discovery.discover(site, "t1", discovery.Site(server="10.0.0.1:8080", root_certificates=b"x"))
        assert by_hand == discovery.Connection("legacy", "10.0.0.1:8080", b"x")
        fields = discovery.signed_fields(signer, "t1", "legacy", "127.0.0.1:9", CA)
        assert (await client.put("/tasks/t1/status", json=fields)).status_code == 200
        found = discovery.discover(site, "t1", discovery.Site(wait=5))
        assert found == discovery.Connection("legacy", "127.0.0.1:9", CA.encode())
