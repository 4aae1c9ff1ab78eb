"""Signed strategies and transformations: signed on upload, verified before unpickling."""

from __future__ import annotations

import io
import logging
from typing import Any

import cloudpickle
import pytest

from flrepo.client import (
    Keyring,
    SignatureError,
)
from flrepo.schemas import StrategyOut, TransformationOut
from flrepo.signing import public_key_of
from tests.client.sdk import (
    FLAVOURS,
    IMPOSTOR,
    NO_KEYS,
    PUBLISHER_KEY,
    STRANGER,
    double,
    pipe_with,
    run,
    sha,
)

# --- signed artifacts ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["strategy", "transformation"])
@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_signed_artifacts(live_server, connect, tmp_path, caplog, flavour, kind):
    publisher = connect(flavour, live_server.url)
    impostor = connect(flavour, live_server.url, keyring=IMPOSTOR)
    stranger = connect(flavour, live_server.url, keyring=STRANGER)
    nobody = connect(flavour, live_server.url, keyring=NO_KEYS)

    def method(client: Any, action: str) -> Any:
        return getattr(client, f"{action}_{kind}")

    async def create(name: str) -> None:
        if kind == "strategy":
            await run(publisher.create_strategy, name, "described", {"class": "Mine"})
        else:
            await run(
                publisher.create_transformation,
                name,
                parameter_types={"k": "int"},
                default_values={"k": 1},
                outputs=["x"],
                needs={"RAM": 1},
                description="described",
                meta={"class": "Mine"},
            )

    artifact = {"kind": kind, "weights": [1, 2, 3], "fn": double}
    pickled = cloudpickle.dumps(artifact)
    source = tmp_path / "artifact.pkl"
    source.write_bytes(pickled)

    # Signed with the publisher's key (from a path); the signature lands in meta, the rest is kept.
    await create("good")
    await run(method(publisher, "upload"), "good", source)
    item = await run(method(publisher, "get"), "good")
    assert isinstance(item, StrategyOut if kind == "strategy" else TransformationOut)
    assert item.meta["key_id"] == "k1" and item.meta["sha256"] == item.sha256 == sha(pickled)
    assert item.meta["size"] == item.size == len(pickled) and item.meta["algorithm"] == "ed25519"
    assert item.meta["class"] == "Mine" and item.filename == "artifact.pkl"
    if kind == "strategy":
        assert item.strategy_description == "described"
    else:
        assert (item.parameter_types, item.outputs, item.needs["RAM"]) == ({"k": "int"}, ["x"], 1)
        assert item.description == "described"

    loaded = await run(method(publisher, "load"), "good")
    assert loaded["weights"] == [1, 2, 3] and loaded["fn"](21) == 42
    verifier = connect(flavour, live_server.url, keyring=Keyring.verifier({"k1": public_key_of(PUBLISHER_KEY)}))
    assert (await run(method(verifier, "load"), "good"))["kind"] == kind
    raw = tmp_path / "raw.pkl"
    assert (await run(method(publisher, "download"), "good", raw)).sha256 == sha(pickled)
    assert raw.read_bytes() == pickled
    with pytest.raises(SignatureError, match="bad signature"):
        await run(method(impostor, "load"), "good")
    with pytest.raises(SignatureError, match="key id 'k1', which is not trusted"):
        await run(method(stranger, "load"), "good")

    # Signed from a file object with a progress callback.
    await create("buffered")
    seen: list[tuple[int, int | None]] = []
    await run(method(publisher, "upload"), "buffered", io.BytesIO(pickled), progress=lambda *p: seen.append(p))
    assert seen[-1] == (len(pickled), len(pickled))
    assert (await run(method(publisher, "load"), "buffered"))["weights"] == [1, 2, 3]

    # Unsigned: refused unless allow_unsigned, which warns.
    await create("plain")
    await run(method(publisher, "upload"), "plain", io.BytesIO(pickled), sign=False)
    assert "signature" not in (await run(method(publisher, "get"), "plain")).meta
    with pytest.raises(SignatureError, match="not signed"):
        await run(method(publisher, "load"), "plain")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert (await run(method(nobody, "load"), "plain", allow_unsigned=True))["fn"](1) == 2
    assert "WITHOUT checking its signature" in caplog.text
    # A client without a key uploads unsigned by default, and cannot be made to sign.
    await run(method(nobody, "upload"), "plain", io.BytesIO(pickled))
    with pytest.raises(SignatureError, match="no signing key"):
        await run(method(nobody, "upload"), "plain", io.BytesIO(pickled), sign=True)
    # Signing reads the source twice: a pipe is refused before anything is sent.
    with pytest.raises(SignatureError, match="seekable"), pipe_with(pickled) as pipe:
        await run(method(publisher, "upload"), "plain", pipe)

    # Replacing a signed file without signing leaves a signature that no longer matches.
    await run(method(publisher, "upload"), "good", io.BytesIO(cloudpickle.dumps({"evil": True})), sign=False)
    with pytest.raises(SignatureError, match="does not match"):
        await run(method(publisher, "load"), "good")
