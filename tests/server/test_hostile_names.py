"""Names that escape folders or fool readers: `.`/`..`, archive entries from whatever is stored,
Unicode format characters, two spellings of one name."""

from __future__ import annotations

import io
import tarfile
import unicodedata
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from tests.helpers import make_model, payload, upload

HOSTILE_NAMES = ["..", ".", "../../passwd", "/etc/passwd", "..\\..\\x", "a\x00b", "\u202egnp.exe", ""]


@pytest.mark.parametrize("name, version", [("..", ".."), (".", "v1"), ("m", "..")])
async def test_dot_names_are_refused_in_bodies(client, name, version):
    # The reproduction: POST /model {"model_name":"..","model_version":".."} used to be 201.
    r = await client.post("/model", json={"model_name": name, "model_version": version, "meta": {"library": "x"}})
    assert r.status_code == 422, r.text
    assert (await client.get("/model")).json() == []


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("PUT", "/model/%2E%2E/v1", None),
        ("GET", "/model/m/%2E%2E", None),
        ("POST", "/strategy", {"strategy_name": ".."}),
        ("PUT", "/strategy/%2E", None),
        ("POST", "/tasks", {"task_id": "..", "model": {"model_name": "m", "model_version": "v"}, "strategy": {}}),
    ],
)
async def test_dot_names_are_refused_everywhere(client, method, path, body):
    r = await client.request(method, path, json=body, content=None if body else b"x")
    assert r.status_code == 422, r.text


def _archive_names(content: bytes, kind: str) -> list[str]:
    if kind == "zip":
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            assert z.testzip() is None
            return z.namelist()
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz" if kind == "tar.gz" else "r:") as t:
        return t.getnames()


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
async def test_archive_entries_are_built_from_safe_components_whatever_is_stored(client, raw_db, tmp_path, kind):
    """A restored, legacy or directly written document may name anything; entries never escape."""
    await make_model(client, "good", "v1")
    await upload(client, "/model/good/v1", payload(100), filename="good.bin")
    data = payload(300)
    for n, (name, version, filename) in enumerate(
        [("..", "..", "../../passwd"), ("/abs", "v1/../../..", "/etc/shadow"), ("a\x00b", "\u202ev", "..")]
    ):
        await make_model(client, f"x{n}", "v1")
        await upload(client, f"/model/x{n}/v1", data, filename="f.bin")
        raw_db[0]["models"].update_one(
            {"model_name": f"x{n}"}, {"$set": {"model_name": name, "model_version": version, "filename": filename}}
        )
    r = await client.get(f"/models/download/shell/all.{kind}")
    assert r.status_code == 200, r.text
    names = _archive_names(r.content, kind)
    assert len(names) == 4 and "good/v1/good.bin" in names
    for entry in names:
        parts = PurePosixPath(entry).parts
        assert len(parts) == 3 and not PurePosixPath(entry).is_absolute(), entry
        assert not {".", "..", ""} & set(parts), entry
        assert not any(ch == "\\" or unicodedata.category(ch) in ("Cc", "Cf") for ch in entry), ascii(entry)
    if kind != "zip":
        # What Python's tarfile.extractall does with it (no filter): everything stays in the target.
        target = tmp_path / "a" / "b"
        target.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:*") as t:
            t.extractall(target, filter="fully_trusted")
        outside = [p for p in tmp_path.rglob("*") if p.is_file() and target not in p.parents]
        assert outside == []
        assert sorted(p.read_bytes() == data for p in target.rglob("*") if p.is_file()).count(True) == 3


@pytest.mark.parametrize(
    "name",
    ["a\u202egnp.exe", "zero\u200bwidth", "\ufeffbom", "soft\u00adhyphen", "tag\U000e0041", "lrm\u200e"],
)
async def test_format_characters_are_refused_in_names(client, name):
    r = await client.post("/model", json={"model_name": name, "model_version": "v1", "meta": {"library": "x"}})
    assert r.status_code == 422, r.text
    r = await client.post("/strategy", json={"strategy_name": "s", "meta": {name: 1}})
    assert r.status_code == 422, r.text  # keys of user documents too


async def test_two_spellings_name_one_item(client):
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert unicodedata.normalize("NFC", decomposed) == composed
    await make_model(client, decomposed, "v1")
    r = await client.post("/model", json={"model_name": composed, "model_version": "v1", "meta": {"library": "x"}})
    assert r.status_code == 409, r.text
    assert (await client.get("/model")).json()[0]["model_name"] == composed
    r = await client.get("/model/meta", params={"model_name": decomposed, "model_version": "v1"})
    assert r.status_code == 200 and r.json()["model_name"] == composed


async def test_uploaded_file_names_lose_format_characters(client):
    await make_model(client)
    await upload(client, "/model/m/v1", payload(10), filename="report\u202efdp.exe")
    r = await client.get("/model/meta", params={"model_name": "m", "model_version": "v1"})
    assert r.json()["filename"] == "reportfdp.exe"


def test_safe_filename_never_leaves_a_folder(tmp_path: Path):
    from flrepo.client.transfer import in_folder

    folder = tmp_path / "here"
    folder.mkdir()
    for name in HOSTILE_NAMES:
        target = in_folder(folder, name, "fallback.bin")
        assert target.parent == folder and target.name not in ("", ".", ".."), ascii(name)
