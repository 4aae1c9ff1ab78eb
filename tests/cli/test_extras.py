"""Commands that need an extra say which one to install: one line on stderr and a usage exit code."""

from __future__ import annotations

import importlib.util

import pytest

from flrepo.cli.exit_codes import USAGE
from flrepo.cli.main import main


@pytest.fixture
def hide(monkeypatch):
    """Make find_spec answer None for the given top-level modules, as if they were not installed."""

    def hide_modules(*names: str) -> None:
        real = importlib.util.find_spec

        def find_spec(name: str, package: str | None = None):
            return None if name.split(".")[0] in names else real(name, package)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return hide_modules


@pytest.mark.parametrize(
    "argv",
    [["serve"], ["dump", "x.tar"], ["restore", "x.tar"], ["keys", "create", "--role", "reader"]],
)
def test_server_commands_without_the_server_extra(hide, capsys, argv):
    hide("pymongo")
    assert main(argv) == USAGE
    out, err = capsys.readouterr()
    assert out == "" and err == f"flrepo {argv[0]}: needs the server extra: pip install 'flrepo[server]'\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["collector", "--task", "t"],
        ["local-exec", "--task", "t", "--server", "127.0.0.1:1", "--data", "digits:1/2"],
        ["seed"],
        ["demo"],
    ],
)
def test_fl_commands_without_the_fl_extra(hide, capsys, argv):
    hide("flwr")
    assert main(argv) == USAGE
    assert f"flrepo {argv[0]}: needs the fl extra: pip install 'flrepo[fl]'" in capsys.readouterr().err


def test_demo_names_both_extras_when_both_are_missing(hide, capsys):
    hide("fastapi", "numpy")
    assert main(["demo"]) == USAGE
    assert "needs the server and fl extras: pip install 'flrepo[server,fl]'" in capsys.readouterr().err


def test_help_needs_no_extra(hide, capsys):
    hide("fastapi", "uvicorn", "pymongo", "flwr", "numpy")
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0 and "--embedded" in capsys.readouterr().out
