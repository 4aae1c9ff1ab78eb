"""The habits users expect from a command line (issue 15, "CLI and SDK"): global options anywhere,
help for every argument, --progress only where a file moves, shell completion."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml

from flrepo.cli.exit_codes import DENIED, OK, UNAVAILABLE, USAGE
from flrepo.cli.main import build_parser, main
from flrepo.server.auth import hash_key
from flrepo.server.embedded import free_port
from flrepo.server.main import create_app
from tests.helpers import LiveServer, make_settings


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLREPO_")}
    return subprocess.run(
        [sys.executable, "-m", "flrepo.cli", *args], capture_output=True, text=True, env={**environ, **env}, timeout=120
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
