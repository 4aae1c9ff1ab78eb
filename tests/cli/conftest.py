"""Fixtures of the CLI tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flrepo.cli.main import main


@pytest.fixture
def flrepo(live_server, capsys) -> Callable[..., tuple[int, str, str]]:
    """Run `flrepo ARGS --url <live server> -O json` (or `output=`) in this process: (exit code, stdout, stderr)."""

    def run(*args: str, output: str = "json") -> tuple[int, str, str]:
        code = main([*args, "--url", live_server.url, "--output", output])
        out, err = capsys.readouterr()
        return code, out, err

    return run
