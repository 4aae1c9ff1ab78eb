"""Downloads never write outside the folder asked for, whatever file name the server reports
(a restored or directly written document, a hostile server, a man in the middle)."""

from __future__ import annotations

import io
import json

import pytest

from flrepo.cli.exit_codes import OK
from flrepo.cli.main import main
from flrepo.client import RepositoryClient

HOSTILE = ["../../x", "/abs/x", "..\\..\\x", "..", "\u202eexe.txt", "a/../../../b"]


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def hostile_model(live_server, raw_db):
    """A model whose stored file name is set by the test, as a direct database write would."""
    with RepositoryClient(live_server.url) as repo:
        repo.create_model("m", "v1", "numpy")
        repo.upload_model("m", "v1", io.BytesIO(b"weights"), filename="w.bin")

    def set_name(name: str) -> None:
        raw_db[0]["models"].update_one({"model_name": "m"}, {"$set": {"filename": name}})

    return set_name


@pytest.mark.parametrize("stored", HOSTILE)
def test_cli_download_without_dest_stays_in_the_working_folder(
    live_server, hostile_model, tmp_path, monkeypatch, capsys, stored
):
    hostile_model(stored)
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    code = main(["models", "download", "m", "v1", "--url", live_server.url, "--output", "json"])
    out, err = capsys.readouterr()
    assert code == OK, err
    written = json.loads(out)["path"]
    assert _files(tmp_path) == [f"a/b/work/{written}"]  # one file, in the working folder, nowhere else
    assert (work / written).read_bytes() == b"weights"


@pytest.mark.parametrize("stored", ["../../x", "/abs/x"])
def test_cli_download_into_a_folder_stays_in_it(live_server, hostile_model, tmp_path, capsys, stored):
    hostile_model(stored)
    folder = tmp_path / "deep" / "folder"
    folder.mkdir(parents=True)
    code = main(["models", "download", "m", "v1", "-o", str(folder), "--url", live_server.url, "--output", "json"])
    assert code == OK, capsys.readouterr().err
    assert [p.parent for p in tmp_path.rglob("*") if p.is_file()] == [folder]


@pytest.mark.parametrize("stored", HOSTILE)
def test_sdk_download_into_a_folder_uses_a_safe_base_name(live_server, hostile_model, tmp_path, stored):
    hostile_model(stored)
    folder = tmp_path / "x" / "y"
    folder.mkdir(parents=True)
    with RepositoryClient(live_server.url) as repo:
        done = repo.download_model("m", "v1", folder)
    assert done.path is not None and done.path.parent == folder
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [done.path]


async def test_async_sdk_download_into_a_folder(live_server, hostile_model, tmp_path):
    from flrepo.client import AsyncRepositoryClient

    hostile_model("../../../escape")
    async with AsyncRepositoryClient(live_server.url) as repo:
        done = await repo.download_model("m", "v1", tmp_path)
    assert done.path is not None and done.path.parent == tmp_path and done.path.read_bytes() == b"weights"


def test_a_generic_download_into_a_folder_is_refused_before_writing(live_server, hostile_model, tmp_path):
    with RepositoryClient(live_server.url) as repo, pytest.raises(IsADirectoryError):
        repo.download("/model/m/v1", tmp_path)
    assert list(tmp_path.parent.glob(f"{tmp_path.name}.part*")) == []
