"""The `flrepo` collection commands against a live server: output, progress, verification, exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from flrepo.cli.exit_codes import CONFLICT, DENIED, INTEGRITY, NOT_FOUND, OK, TOO_LARGE, UNAVAILABLE, USAGE
from flrepo.cli.main import main
from flrepo.server.auth import hash_key
from flrepo.server.embedded import free_port
from flrepo.server.main import create_app
from flrepo.signing import encode_key, public_key_of
from tests.helpers import LiveServer, make_settings

# A publisher's Ed25519 key (FLREPO_SIGNING_KEY takes it as base64) and what verifiers trust.
SIGNING_KEY = encode_key(bytes(range(32)))
PUBLIC_KEY = encode_key(public_key_of(bytes(range(32))))


def _json(out: str):
    return json.loads(out)


def _file(tmp_path, size: int, name: str = "model.bin"):
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_models_create_upload_download_list_delete(flrepo, tmp_path):
    code, out, _ = flrepo("models", "create", "m", "v1", "--library", "numpy", "--meta", '{"features": 64}')
    meta = _json(out)["meta"]
    assert code == OK and meta["library"] == "numpy" and meta["features"] == 64

    source, digest = _file(tmp_path, 3 * 1024 * 1024 + 5)
    code, out, err = flrepo("models", "upload", "m", "v1", str(source), "--progress")
    assert code == OK, err
    assert _json(out)["sha256"] == digest and _json(out)["size"] == source.stat().st_size
    # rich's bar, drawn on stderr: the description and the transferred total.
    assert "upload model.bin" in err and "3.1/3.1 MB" in err

    dest = tmp_path / "out" / "copy.bin"
    dest.parent.mkdir()
    code, out, err = flrepo("models", "download", "m", "v1", "-o", str(dest))
    assert code == OK, err
    assert _json(out) == {
        "path": str(dest),
        "size": source.stat().st_size,
        "sha256": digest,
        "verified": True,
        "up_to_date": False,
    }
    assert dest.read_bytes() == source.read_bytes() and not list(dest.parent.glob("*.part*"))

    # A directory as destination keeps the recorded file name.
    code, out, _ = flrepo("models", "download", "m", "v1", "-o", str(dest.parent))
    assert code == OK and (dest.parent / "model.bin").read_bytes() == source.read_bytes()

    flrepo("models", "create", "m", "v2", "--library", "numpy")
    code, out, _ = flrepo("models", "list")
    assert code == OK and sorted((m["model_name"], m["model_version"]) for m in _json(out)) == [
        ("m", "v1"),
        ("m", "v2"),
    ]
    code, out, _ = flrepo("models", "list", "--available")
    assert [m["model_version"] for m in _json(out)] == ["v1"]
    code, out, _ = flrepo("models", "list", output="table")
    assert code == OK and "model_name" in out and "numpy" in out

    code, out, _ = flrepo("models", "delete", "m", "v1")
    assert code == OK and _json(out)["key"] == ["m", "v1"]
    code, _, err = flrepo("models", "show", "m", "v1")
    assert code == NOT_FOUND and "not found" in err


def test_exit_codes(flrepo, tmp_path):
    assert flrepo("models", "create", "m", "v1", "--library", "numpy")[0] == OK
    code, _, err = flrepo("models", "create", "m", "v1", "--library", "numpy")
    assert code == CONFLICT and "already exists" in err
    code, _, err = flrepo("models", "create", "$bad", "v1", "--library", "numpy")
    assert code == USAGE and "model_name" in err
    code, _, err = flrepo("models", "download", "m", "v1", "-o", str(tmp_path / "x"))
    assert code == NOT_FOUND and "no file yet" in err
    code, _, err = flrepo("models", "upload", "m", "v1", str(tmp_path / "missing.bin"))
    assert code == USAGE and "no such file" in err
    with pytest.raises(SystemExit) as usage:
        main(["models", "create", "m", "v3", "--library", "x", "--meta", "{not json"])
    assert usage.value.code == USAGE
    closed = f"http://127.0.0.1:{free_port()}"
    assert main(["models", "list", "--url", closed, "--output", "json"]) == UNAVAILABLE


def test_unauthorized_and_too_large(mongo_url, tmp_path, capsys):
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump([{"id": "r", "role": "reader", "sha256": hash_key("reader-key")}]))
    settings = make_settings(mongo_url, api_keys_file=keys, max_upload_bytes=1000)
    with LiveServer(create_app(settings)) as server:
        base = ["--url", server.url, "--output", "json"]
        assert main(["models", "list", *base]) == DENIED
        assert main(["models", "list", *base, "--api-key", "wrong"]) == DENIED
        assert main(["models", "list", *base, "--api-key", "reader-key"]) == OK
        code = main(["models", "create", "m", "v1", "--library", "numpy", *base, "--api-key", "reader-key"])
        assert code == DENIED and "403" in capsys.readouterr().err
    open_settings = make_settings(mongo_url, max_upload_bytes=1000)
    with LiveServer(create_app(open_settings)) as server:
        base = ["--url", server.url, "--output", "json"]
        assert main(["models", "create", "m", "v1", "--library", "numpy", *base]) == OK
        big, _ = _file(tmp_path, 5000)
        assert main(["models", "upload", "m", "v1", str(big), *base]) == TOO_LARGE


def test_download_of_corrupted_file_fails_and_leaves_nothing(flrepo, tmp_path, raw_db):
    flrepo("models", "create", "m", "v1", "--library", "numpy")
    source, _ = _file(tmp_path, 300_000)
    assert flrepo("models", "upload", "m", "v1", str(source))[0] == OK
    chunk = raw_db[1]["fs.chunks"].find_one({})
    data = bytearray(chunk["data"])
    data[0] ^= 0xFF
    raw_db[1]["fs.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(data)}})
    dest = tmp_path / "copy.bin"
    code, _, err = flrepo("models", "download", "m", "v1", "-o", str(dest))
    assert code == INTEGRITY and "sha256" in err
    assert not dest.exists() and not list(tmp_path.glob("copy.bin.part*"))


def test_download_resumes_a_partial_file(flrepo, tmp_path, live_server):
    flrepo("models", "create", "m", "v1", "--library", "numpy")
    source, digest = _file(tmp_path, 2 * 1024 * 1024)
    flrepo("models", "upload", "m", "v1", str(source))
    dest = tmp_path / "copy.bin"
    half = source.read_bytes()[: 1024 * 1024]
    (tmp_path / "copy.bin.part").write_bytes(half)
    (tmp_path / "copy.bin.part.etag").write_text(f'"{digest}"')
    code, out, err = flrepo("models", "download", "m", "v1", "-o", str(dest), "--progress")
    assert code == OK, err
    assert dest.read_bytes() == source.read_bytes() and _json(out)["sha256"] == digest
    assert not (tmp_path / "copy.bin.part.etag").exists()


def test_signed_strategy_upload_and_verified_download(flrepo, tmp_path, monkeypatch):
    flrepo("strategies", "create", "s1", "--description", "mine", "--meta", '{"class": "X"}')
    artifact, digest = _file(tmp_path, 4096, "s1.pkl")
    monkeypatch.setenv("FLREPO_SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("FLREPO_SIGNING_KEY_ID", "pub1")
    assert flrepo("strategies", "upload", "s1", str(artifact))[0] == OK
    code, out, _ = flrepo("strategies", "show", "s1")
    meta = _json(out)["meta"]
    assert meta["class"] == "X" and meta["key_id"] == "pub1" and meta["sha256"] == digest and meta["signature"]
    dest = tmp_path / "got.pkl"
    assert flrepo("strategies", "download", "s1", "-o", str(dest))[0] == OK and dest.exists()
    dest.unlink()

    # A verifier that does not trust the publisher's key refuses and leaves no file behind ...
    monkeypatch.delenv("FLREPO_SIGNING_KEY")
    code, _, err = flrepo("strategies", "download", "s1", "-o", str(dest))
    assert code == INTEGRITY and "key id 'pub1', which is not trusted" in err and not dest.exists()
    # ... one that holds just the public key verifies ...
    monkeypatch.setenv("FLREPO_TRUSTED_KEYS", f"pub1:{PUBLIC_KEY}")
    assert flrepo("strategies", "download", "s1", "-o", str(dest))[0] == OK and dest.exists()
    dest.unlink()
    monkeypatch.delenv("FLREPO_TRUSTED_KEYS")
    # ... unless told otherwise.
    assert flrepo("strategies", "download", "s1", "-o", str(dest), "--allow-unsigned")[0] == OK
    assert dest.read_bytes() == artifact.read_bytes()

    # --unsigned uploads without a signature even when a key is set; loading it is then refused.
    monkeypatch.setenv("FLREPO_SIGNING_KEY", SIGNING_KEY)
    flrepo("strategies", "create", "s2")
    assert flrepo("strategies", "upload", "s2", str(artifact), "--unsigned")[0] == OK
    code, _, err = flrepo("strategies", "download", "s2", "-o", str(tmp_path / "s2.pkl"))
    assert code == INTEGRITY and "not signed" in err


def test_transformations_results_and_tasks(flrepo, tmp_path, monkeypatch):
    monkeypatch.setenv("FLREPO_SIGNING_KEY", SIGNING_KEY)
    code, out, err = flrepo(
        "transformations",
        "create",
        "t.scale",
        "--parameter-types",
        '{"low": "float"}',
        "--default-values",
        '{"low": 0}',
        "--outputs",
        '["np.ndarray", "np.ndarray"]',
    )
    assert code == OK, err
    assert _json(out)["parameter_types"] == {"low": "float"} and _json(out)["outputs"] == ["np.ndarray"] * 2
    artifact, _ = _file(tmp_path, 100, "t.pkl")
    assert flrepo("transformations", "upload", "t.scale", str(artifact))[0] == OK
    code, out, _ = flrepo("transformations", "show", "t.scale")
    assert _json(out)["meta"]["key_id"] == "default" and _json(out)["default_values"] == {"low": 0}

    flrepo("models", "create", "m", "v1", "--library", "numpy")
    code, out, _ = flrepo("results", "create", "m", "v1", "r1", "--results", '{"accuracy": 0.9, "rounds": 3}')
    assert code == OK and _json(out)["results"] == {"accuracy": 0.9, "rounds": 3}
    weights, digest = _file(tmp_path, 1000, "w.npz")
    assert flrepo("results", "upload", "m", "v1", "r1", str(weights))[0] == OK
    code, _, err = flrepo("results", "upload", "m", "v1", "r1", str(weights), "--configuration-id", "9")
    assert code != OK and "configuration" in err
    code, out, _ = flrepo("results", "download", "m", "v1", "r1", "-o", str(tmp_path / "w2.npz"))
    assert code == OK and _json(out)["sha256"] == digest
    code, out, _ = flrepo("results", "list", "--model", "m", "v1")
    assert [r["training_id"] for r in _json(out)] == ["r1"]

    # A task needs its model and strategy with files.
    flrepo("models", "upload", "m", "v1", str(weights))
    flrepo("strategies", "create", "fedavg")
    flrepo("strategies", "upload", "fedavg", str(artifact))
    spec = tmp_path / "task.json"
    spec.write_text(
        json.dumps({"model": {"model_name": "m", "model_version": "v1"}, "strategy": {"strategy_name": "fedavg"}})
    )
    code, out, err = flrepo("tasks", "create", "job-1", "--spec", f"@{spec}")
    assert code == OK, err
    assert _json(out)["task_id"] == "job-1" and _json(out)["phase"] == "Pending"
    code, out, _ = flrepo("tasks", "list", "--phase", "Pending")
    assert [t["task_id"] for t in _json(out)] == ["job-1"]
    assert _json(flrepo("tasks", "list", "--phase", "Running")[1]) == []
    code, out, err = flrepo("tasks", "cancel", "job-1", "--message", "wrong data")
    assert code == OK, err
    cancelled = _json(out)
    assert cancelled["phase"] == "Failed" and cancelled["conditions"][-1]["reason"] == "Cancelled"
    assert cancelled["conditions"][-1]["message"].endswith("wrong data")
    code, _, err = flrepo("tasks", "cancel", "job-1")
    assert code == CONFLICT and "nothing to cancel" in err
    assert flrepo("tasks", "delete", "job-1")[0] == OK
    assert flrepo("transformations", "delete", "t.scale")[0] == OK
    assert flrepo("results", "delete", "m", "v1", "r1")[0] == OK
    assert flrepo("results", "show", "m", "v1", "r1")[0] == NOT_FOUND


def test_entry_point_in_a_fresh_process(live_server, tmp_path):
    env = {**os.environ, "FLREPO_URL": live_server.url}
    created = subprocess.run(
        [sys.executable, "-m", "flrepo.cli", "models", "create", "p", "v1", "--library", "numpy", "-O", "json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert created.returncode == OK, created.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "flrepo.cli", "models", "list", "-O", "json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert [m["model_name"] for m in json.loads(listed.stdout)] == ["p"]
    missing = subprocess.run(
        [sys.executable, "-m", "flrepo.cli", "models", "show", "p", "v9"], capture_output=True, text=True, env=env
    )
    assert missing.returncode == NOT_FOUND and missing.stdout == "" and "not found" in missing.stderr


def test_seed_needs_a_signing_key_and_reports(live_server, monkeypatch, capsys):
    monkeypatch.delenv("FLREPO_SIGNING_KEY", raising=False)
    assert main(["seed", "--repo", live_server.url]) == USAGE
    assert "FLREPO_SIGNING_KEY" in capsys.readouterr().err
    assert main(["strategies", "list", "--url", live_server.url, "-O", "json"]) == OK
    assert json.loads(capsys.readouterr().out) == []  # nothing half-seeded
    monkeypatch.setenv("FLREPO_SIGNING_KEY", SIGNING_KEY)
    assert main(["seed", "--repo", live_server.url]) == OK
    assert "added strategy fedavg" in capsys.readouterr().out
    assert main(["seed", "--repo", live_server.url]) == OK
    assert "kept  strategy fedavg (already there)" in capsys.readouterr().out


def test_fl_commands_fail_with_a_line_and_an_exit_code(live_server, capsys):
    assert main(["collector", "--task", "nope", "--repo", live_server.url]) == NOT_FOUND
    assert "flrepo collector:" in capsys.readouterr().err
    closed = f"http://127.0.0.1:{free_port()}"
    assert main(["local-exec", "--task", "t", "--server", "127.0.0.1:1", "--data", "digits:1/2", "--repo", closed]) == (
        UNAVAILABLE
    )


def test_pipes_in_and_out(live_server, tmp_path, monkeypatch):
    """`upload ... -` reads standard input; `download -o -` writes the bytes to standard output."""
    base = [sys.executable, "-m", "flrepo.cli"]
    env = {**os.environ, "FLREPO_URL": live_server.url}
    env.pop("FLREPO_SIGNING_KEY", None)
    data = os.urandom(1_500_000)
    assert main(["models", "create", "m", "v1", "--library", "numpy", "--url", live_server.url]) == OK
    up = subprocess.run(
        [*base, "models", "upload", "m", "v1", "-", "-O", "json"], input=data, capture_output=True, env=env
    )
    assert up.returncode == OK, up.stderr
    assert json.loads(up.stdout)["sha256"] == hashlib.sha256(data).hexdigest()
    down = subprocess.run(
        [*base, "models", "download", "m", "v1", "-o", "-", "-O", "json"], capture_output=True, env=env
    )
    assert down.returncode == OK and down.stdout == data  # nothing but the file on stdout
    assert json.loads(down.stderr)["verified"] is True
    # A signed upload needs to read its file twice: a pipe is refused with a usage error.
    signed = subprocess.run(
        [*base, "strategies", "upload", "s", "-"],
        input=b"x",
        capture_output=True,
        env={**env, "FLREPO_SIGNING_KEY": SIGNING_KEY},
    )
    assert signed.returncode == USAGE and b"pipe" in signed.stderr
