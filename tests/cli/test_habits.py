"""The habits users expect from a command line (issue 15, "CLI and SDK"): global options anywhere,
help for every argument, --progress only where a file moves, shell completion, downloads that never
overwrite a different file and skip an identical one, upload --create, human sizes in tables that
fit the terminal, and Ctrl-C."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flrepo.cli.exit_codes import CONFLICT, DENIED, INTEGRITY, INTERRUPTED, NOT_FOUND, OK, UNAVAILABLE, USAGE
from flrepo.cli.main import build_parser, main
from flrepo.server.auth import hash_key
from flrepo.server.embedded import free_port
from flrepo.server.main import create_app
from flrepo.signing import encode_key
from tests.cli.stalling_proxy import StallingProxy
from tests.helpers import LiveServer, make_settings


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLREPO_")}
    return subprocess.run(
        [sys.executable, "-m", "flrepo.cli", *args], capture_output=True, text=True, env={**environ, **env}, timeout=300
    )


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)parser of the tree with its command path, e.g. ("models", "list")."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


# --- global options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "{url}", "-O", "json", "models", "list"],
        ["models", "--url", "{url}", "--output", "json", "list"],
        ["models", "list", "--url", "{url}", "-O", "json"],
        ["-O", "json", "models", "--url", "{url}", "list"],
    ],
)
def test_global_options_before_or_after_the_command(live_server, capsys, argv):
    assert main(["models", "create", "g", "v1", "--library", "numpy", "--url", live_server.url]) == OK
    capsys.readouterr()
    code = main([arg.format(url=live_server.url) for arg in argv])
    out, err = capsys.readouterr()
    assert code == OK, err
    assert [m["model_name"] for m in json.loads(out)] == ["g"]


def test_the_last_given_global_option_wins(live_server, capsys):
    closed = f"http://127.0.0.1:{free_port()}"
    assert main(["--url", closed, "models", "--url", live_server.url, "list", "-O", "json"]) == OK
    assert main(["--url", live_server.url, "models", "list", "--url", closed, "-O", "json"]) == UNAVAILABLE
    assert main(["-O", "table", "models", "list", "--url", live_server.url, "-O", "json"]) == OK
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == []


def test_api_key_before_the_command(mongo_url, tmp_path, capsys):
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump([{"id": "r", "role": "reader", "sha256": hash_key("reader-key")}]))
    with LiveServer(create_app(make_settings(mongo_url, api_keys_file=keys))) as server:
        assert main(["--api-key", "reader-key", "--url", server.url, "models", "list"]) == OK
        assert main(["--api-key", "wrong", "models", "--url", server.url, "list"]) == DENIED
        assert main(["models", "--api-key", "reader-key", "list", "--url", server.url]) == OK


def test_global_url_reaches_the_fl_commands(live_server, capsys):
    # The FL commands took --repo; the global --url (anywhere) names the same thing.
    assert main(["--url", live_server.url, "collector", "--task", "nope"]) == 3
    assert "flrepo collector:" in capsys.readouterr().err


def test_log_level_is_a_global_option(live_server):
    done = _cli("--log-level", "debug", "--url", live_server.url, "models", "list", "-O", "json")
    assert done.returncode == OK and "HTTP Request: GET" in done.stderr
    quiet = _cli("models", "list", "--url", live_server.url, "-O", "json")
    assert quiet.returncode == OK and quiet.stderr == ""


# --- arguments and help -----------------------------------------------------------------------


def test_every_positional_argument_has_help():
    missing = [
        (path, action.dest)
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []
    usage = subprocess.run(
        [sys.executable, "-m", "flrepo.cli", "results", "download", "--help"], capture_output=True, text=True
    ).stdout
    assert "TRAINING_ID" in usage and "the training's id" in usage


def test_progress_only_on_the_commands_that_move_a_file():
    offered = {
        path
        for path, parser in _parsers(build_parser())
        if any("--progress" in action.option_strings for action in parser._actions)
    }
    moving = {(c, a) for c in ("models", "results", "strategies", "transformations") for a in ("upload", "download")}
    assert offered == moving
    with pytest.raises(SystemExit) as refused:
        main(["models", "list", "--progress"])
    assert refused.value.code == USAGE


# --- shell completion -------------------------------------------------------------------------


def test_bash_completion_script_completes_commands_and_options(tmp_path):
    done = _cli("completion", "bash")
    assert done.returncode == OK, done.stderr
    script = tmp_path / "flrepo.bash"
    script.write_text(done.stdout)
    for word in ("models", "results", "strategies", "transformations", "tasks", "download", "completion"):
        assert word in done.stdout, word
    bash = shutil.which("bash")
    assert bash is not None
    assert subprocess.run([bash, "-n", str(script)]).returncode == 0  # it parses

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        program = (
            f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
            f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; _shtab_flrepo; printf "%s\\n" "${{COMPREPLY[@]}}"'
        )
        return subprocess.run([bash, "-c", program], capture_output=True, text=True).stdout.split()

    assert complete("flrepo", "mo") == ["models"]
    assert "download" in complete("flrepo", "models", "")
    assert complete("flrepo", "--url", "x", "strategies", "up") == ["upload"]
    assert "--restart" in complete("flrepo", "models", "download", "--re")


def test_zsh_completion_and_an_unknown_shell():
    done = _cli("completion", "zsh")
    assert done.returncode == OK and done.stdout.startswith("#compdef flrepo") and "transformations" in done.stdout
    assert _cli("completion", "cmd.exe").returncode == USAGE


# --- downloads: never overwrite a different file, skip the same one ----------------------------


def cli_lines(err: str) -> list[str]:
    """The command's own lines on stderr (in this process the live server logs there too)."""
    return [line for line in err.splitlines() if line.startswith("flrepo ")]


def _model_with_file(flrepo, tmp_path, size: int) -> tuple[Path, str]:
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(size))
    assert flrepo("models", "create", "m", "v1", "--library", "numpy")[0] == OK
    assert flrepo("models", "upload", "m", "v1", str(source))[0] == OK
    return source, hashlib.sha256(source.read_bytes()).hexdigest()


def test_download_refuses_to_replace_a_different_file_without_force(flrepo, tmp_path):
    source, digest = _model_with_file(flrepo, tmp_path, 2 * 1024 * 1024 + 3)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = out_dir / "copy.bin"
    dest.write_bytes(b"my own work")
    code, out, err = flrepo("models", "download", "m", "v1", "-o", str(dest))
    assert code == CONFLICT and out == "" and len(cli_lines(err)) == 1
    assert "--force" in err and str(dest) in err
    assert dest.read_bytes() == b"my own work" and sorted(p.name for p in out_dir.iterdir()) == ["copy.bin"]
    # Into a folder: the recorded name is checked the same way.
    (out_dir / "model.bin").write_bytes(b"another")
    assert flrepo("models", "download", "m", "v1", "-o", str(out_dir))[0] == CONFLICT
    assert (out_dir / "model.bin").read_bytes() == b"another"

    code, out, err = flrepo("models", "download", "m", "v1", "-o", str(dest), "--force")
    assert code == OK, err
    assert json.loads(out) == {
        "path": str(dest),
        "size": source.stat().st_size,
        "sha256": digest,
        "verified": True,
        "up_to_date": False,
    }
    assert dest.read_bytes() == source.read_bytes()


def test_download_of_a_file_already_here_moves_nothing(flrepo, tmp_path):
    source, digest = _model_with_file(flrepo, tmp_path, 1024 * 1024)
    dest = tmp_path / "copy.bin"
    assert flrepo("models", "download", "m", "v1", "-o", str(dest))[0] == OK
    before = dest.stat()
    code, out, err = flrepo("models", "download", "m", "v1", "-o", str(dest))
    assert code == OK and "up to date" in err
    assert json.loads(out) == {
        "path": str(dest),
        "size": 1024 * 1024,
        "sha256": digest,
        "verified": True,
        "up_to_date": True,
    }
    after = dest.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    # After a new upload the same file name differs: refused, then replaced with --force.
    source.write_bytes(os.urandom(1000))
    assert flrepo("models", "upload", "m", "v1", str(source))[0] == OK
    assert flrepo("models", "download", "m", "v1", "-o", str(dest))[0] == CONFLICT
    assert flrepo("models", "download", "m", "v1", "-o", str(dest), "--force")[0] == OK
    assert dest.read_bytes() == source.read_bytes()


def test_force_resumes_a_part_left_by_an_interrupted_run(flrepo, tmp_path):
    source, digest = _model_with_file(flrepo, tmp_path, 2 * 1024 * 1024)
    dest = tmp_path / "copy.bin"
    dest.write_bytes(b"old version")
    (tmp_path / "copy.bin.part").write_bytes(source.read_bytes()[: 1024 * 1024])
    (tmp_path / "copy.bin.part.etag").write_text(f'"{digest}"')
    code, _, err = flrepo("models", "download", "m", "v1", "-o", str(dest), "--force")
    assert code == OK, err
    assert dest.read_bytes() == source.read_bytes() and not list(tmp_path.glob("copy.bin.part*"))


# --- upload --create ---------------------------------------------------------------------------


def test_upload_to_a_missing_item_says_how_to_create_it(flrepo, tmp_path):
    weights = tmp_path / "w.npz"
    weights.write_bytes(os.urandom(5000))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    code, out, err = flrepo("models", "upload", "m", "v1", str(weights))
    assert code == NOT_FOUND and out == "" and len(cli_lines(err)) == 1
    assert "not found" in err and "--create --library LIB" in err and "request id" in err
    code, _, err = flrepo("models", "upload", "m", "v1", str(weights), "--create")
    assert code == USAGE and "--library" in err
    assert flrepo("models", "show", "m", "v1")[0] == NOT_FOUND  # nothing half-made

    code, out, err = flrepo(
        "models", "upload", "m", "v1", str(weights), "--create", "--library", "numpy", "--description", "first",
        "--meta", '{"features": 64}',
    )  # fmt: skip
    assert code == OK, err
    assert json.loads(out) == {"uploaded": str(weights), "size": 5000, "sha256": digest}
    shown = json.loads(flrepo("models", "show", "m", "v1")[1])
    assert shown["meta"] == {"library": "numpy", "description": "first", "features": 64} and shown["sha256"] == digest
    # --create on an existing item just uploads; its metadata stays.
    assert flrepo("models", "upload", "m", "v1", str(weights), "--create", "--library", "torch")[0] == OK
    assert json.loads(flrepo("models", "show", "m", "v1")[1])["meta"]["library"] == "numpy"

    code, _, err = flrepo("results", "upload", "m", "v1", "r1", str(weights), "--create", "--results", '{"acc": 0.5}')
    assert code == OK, err
    shown = json.loads(flrepo("results", "show", "m", "v1", "r1")[1])
    assert shown["results"] == {"acc": 0.5} and shown["sha256"] == digest
    code, _, err = flrepo("strategies", "upload", "s", str(weights), "--create", "--description", "mine", "--unsigned")
    assert code == OK, err
    assert json.loads(flrepo("strategies", "show", "s")[1])["strategy_description"] == "mine"
    code, _, err = flrepo(
        "transformations", "upload", "t", str(weights), "--create", "--outputs", '["x"]', "--unsigned"
    )
    assert code == OK, err
    assert json.loads(flrepo("transformations", "show", "t")[1])["outputs"] == ["x"]
    code, _, err = flrepo("strategies", "upload", "nope", str(weights), "--unsigned")
    assert code == NOT_FOUND and "add --create to register the strategy" in err


# --- tables ------------------------------------------------------------------------------------


def test_tables_show_human_sizes_and_json_the_bytes(flrepo, tmp_path):
    _model_with_file(flrepo, tmp_path, 3 * 1024 * 1024 + 5)
    code, out, _ = flrepo("models", "list", output="table")
    assert code == OK and "3.0 MiB" in out and "3145733" not in out
    assert json.loads(flrepo("models", "list")[1])[0]["size"] == 3 * 1024 * 1024 + 5
    code, out, _ = flrepo("models", "show", "m", "v1", output="table")
    assert "3.0 MiB (3145733 bytes)" in out


def test_tables_fit_the_terminal_and_are_not_cut_in_a_pipe(flrepo, monkeypatch):
    long_name = "a-model-with-a-long-descriptive-name-" + "x" * 60
    assert flrepo("models", "create", long_name, "v1", "--library", "numpy")[0] == OK
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = flrepo("models", "list", output="table")  # captured: not a terminal
    assert code == OK and long_name in out and "uploaded_at" in out  # whole, on one line
    monkeypatch.setenv("COLUMNS", "70")
    code, out, _ = flrepo("models", "list", output="table")
    lines = out.splitlines()
    assert code == OK and max(len(line) for line in lines) <= 70
    first_column = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
    assert long_name not in out and "".join(first_column) == long_name  # folded within its column, not cut
    assert "numpy" in out


# --- Ctrl-C ------------------------------------------------------------------------------------


def test_ctrl_c_mid_download_exits_130_and_keeps_the_part(flrepo, live_server, tmp_path):
    source, digest = _model_with_file(flrepo, tmp_path, 6 * 1024 * 1024)
    dest = tmp_path / "copy.bin"
    part = tmp_path / "copy.bin.part"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLREPO_")}
    port = int(live_server.url.rsplit(":", 1)[1])
    with StallingProxy(port, stall_after=2 * 1024 * 1024) as proxy:
        process = subprocess.Popen(
            [sys.executable, "-m", "flrepo.cli", "models", "download", "m", "v1", "-o", str(dest), "--url", proxy.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        # Generous bounds: on a busy machine the interpreter alone may take long to start.
        deadline = time.monotonic() + 300
        while not (part.exists() and part.stat().st_size >= 1024 * 1024) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        assert part.exists(), "the download never started"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=300)
    assert process.returncode == INTERRUPTED
    assert err == "flrepo models: interrupted\n" and out == ""
    assert not dest.exists() and (tmp_path / "copy.bin.part.etag").read_text() == f'"{digest}"'
    kept = part.stat().st_size
    assert 1024 * 1024 <= kept < source.stat().st_size
    assert part.read_bytes() == source.read_bytes()[:kept]
    # The next run fetches only the rest, through a proxy that now lets everything pass.
    with StallingProxy(port, stall_after=100 * 1024 * 1024) as proxy:
        code, out, err = flrepo("models", "download", "m", "v1", "-o", str(dest), "--url", proxy.url)
        assert code == OK, err
        assert proxy.forwarded < source.stat().st_size - kept + 64 * 1024  # the rest, plus headers and metadata
    assert dest.read_bytes() == source.read_bytes() and not list(tmp_path.glob("copy.bin.part*"))


def test_an_up_to_date_signed_strategy_is_still_verified(flrepo, tmp_path, monkeypatch):
    monkeypatch.setenv("FLREPO_SIGNING_KEY", encode_key(bytes(range(32))))
    artifact = tmp_path / "s.pkl"
    artifact.write_bytes(os.urandom(4096))
    assert flrepo("strategies", "upload", "s", str(artifact), "--create")[0] == OK
    dest = tmp_path / "got.pkl"
    assert flrepo("strategies", "download", "s", "-o", str(dest))[0] == OK
    code, out, err = flrepo("strategies", "download", "s", "-o", str(dest))
    assert code == OK and json.loads(out)["up_to_date"] is True and "up to date" in err
    monkeypatch.delenv("FLREPO_SIGNING_KEY")  # now nothing trusts the publisher's key
    code, out, err = flrepo("strategies", "download", "s", "-o", str(dest))
    assert code == INTEGRITY and "not trusted" in err and "up to date" not in err
