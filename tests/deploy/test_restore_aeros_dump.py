"""The database image's first-start restore (mongo_db/restore-dump.sh) of an aerOS database dump.

aerOS's documented path: `mongodump --archive db.dump` on the aerOS database, the file in mongo_db/,
restored when the database image first starts. No mongo-tools here: the dump is written in
mongodump's archive format by tests/deploy/mongo_archive.py from a database seeded exactly as aerOS 1.1.0
writes it, and a stand-in `mongorestore` reads that format with the options the script passes. The
restored database is then served by flrepo, and `flrepo migrate` gives its files ETags.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from flrepo.server.main import create_app
from flrepo.server.repository.migrate import migrate
from flrepo.server.storage.db import Database
from tests.deploy.mongo_archive import dump_databases, read_archive, write_archive
from tests.helpers import LiveServer, drop, make_settings, seed_aeros, sha

ROOT = Path(__file__).resolve().parents[2]
INDEXES = {
    "repository_grid.fs.chunks": [{"key": {"files_id": 1, "n": 1}, "name": "files_id_1_n_1", "unique": True}],
    "repository_grid.fs.files": [{"key": {"filename": 1, "uploadDate": 1}, "name": "filename_1_uploadDate_1"}],
}


def test_archive_format_round_trip_and_checksums():
    namespaces = {"repository.models": [{"_id": 1, "model_name": "abcdef", "meta": None}], "repository.empty": []}
    out = io.BytesIO()
    write_archive(out, namespaces, {})
    metadata, docs, header = read_archive(io.BytesIO(out.getvalue()))
    assert docs == namespaces and header["version"] == "0.1" and set(metadata) == set(namespaces)
    damaged = bytearray(out.getvalue())
    damaged[damaged.index(b"abcdef") + 1] ^= 1  # one byte of a stored value
    with pytest.raises(ValueError, match="checksum"):
        read_archive(io.BytesIO(bytes(damaged)))


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash runs the init script")
@pytest.mark.parametrize("gzipped", [False, True], ids=["archive", "archive-gzip"])
def test_an_aeros_dump_restored_by_the_image_is_served_by_flrepo(mongo_url: str, tmp_path: Path, gzipped: bool):
    source, target = make_settings(mongo_url), make_settings(mongo_url)
    try:
        with MongoClient(mongo_url) as client:
            aeros = seed_aeros((client[source.db_name], client[source.gridfs_db_name]))
        names = {"repository": source.db_name, "repository_grid": source.gridfs_db_name}
        namespaces = dict(dump_databases(mongo_url, names))
        # A whole-server dump holds admin too; the script must leave it out.
        namespaces["admin.system.version"] = [{"_id": "featureCompatibilityVersion", "version": "6.0"}]
        raw = io.BytesIO()
        write_archive(raw, namespaces, INDEXES)
        dump = tmp_path / "db.dump"
        dump.write_bytes(gzip.compress(raw.getvalue()) if gzipped else raw.getvalue())

        fake = tmp_path / "bin" / "mongorestore"
        fake.parent.mkdir()
        fake.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
            "from tests.deploy.mongo_archive import main\nraise SystemExit(main(sys.argv[1:]))\n"
        )
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
        env = {
            **os.environ,
            "PATH": f"{fake.parent}:{os.environ['PATH']}",
            "FLREPO_DB_DUMP": str(dump),
            # Into this test's databases instead of aerOS's names (mongorestore's own renaming options).
            "FLREPO_RESTORE_ARGS": f"--nsFrom=repository.* --nsTo={target.db_name}.* "
            f"--nsFrom=repository_grid.* --nsTo={target.gridfs_db_name}.*",
            "FAKE_MONGORESTORE_URL": mongo_url,
        }
        script = ROOT / "mongo_db" / "restore-dump.sh"
        done = subprocess.run(
            ["bash", "-c", f'set -Eeuo pipefail; . "{script}"'],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "restore of" in done.stdout and "complete" in done.stdout
        assert f"repository.models to {target.db_name}.models: 4 documents" in done.stderr
        assert "admin.system.version" not in done.stderr

        with LiveServer(create_app(target)) as server, httpx.Client(base_url=server.url, timeout=30) as api:
            models = {(m["model_name"], m["model_version"]): m for m in api.get("/model").json()}
            assert len(models) == 4 and models[("test", "0")]["meta"] is None
            assert api.get("/strategy").json()[0]["meta"] is None
            r = api.get("/model/test/0")
            assert r.content == aeros.files["model test/0"] and "etag" not in r.headers

            async def run_migrate() -> None:
                db = Database.connect(target)
                try:
                    report = await migrate(db)
                    assert report.clean and report.files_hashed == 6
                finally:
                    await db.close()

            asyncio.run(run_migrate())
            r = api.get("/model/test/0")
            assert r.headers["etag"] == f'"{sha(aeros.files["model test/0"])}"'
            weights = api.get("/training-results/weights/test/0/1", params={"encoding": "raw"})
            assert weights.content == aeros.files["weights test/0/1"] and weights.headers["etag"]
    finally:
        drop(source)
        drop(target)
