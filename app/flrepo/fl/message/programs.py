"""Flower's programs, run with this Python.

Flower starts its helpers by name from PATH: flower-superlink and flower-supernode start
`flower-superexec`, which starts `flwr-serverapp` and `flwr-clientapp` for each run and message.
Those must import flrepo (the apps live there), so `shim_dir` writes same-named scripts that run
the Flower entry points with this interpreter, and `flower_env` puts them first on PATH. Where
flrepo and flwr share one environment (the fl image) the shims change nothing; where console
scripts come from elsewhere (a shared virtualenv) they are what makes the apps load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Protocol

# Program name -> (module, function) of its entry point in the pinned flwr.
ENTRY_POINTS = {
    "flower-superlink": ("flwr.superlink.cli", "flower_superlink"),
    "flower-supernode": ("flwr.supernode.cli", "flower_supernode"),
    "flower-superexec": ("flwr.supercore.cli", "flower_superexec"),
    "flwr-serverapp": ("flwr.superlink.cli", "flwr_serverapp"),
    "flwr-clientapp": ("flwr.supernode.cli", "flwr_clientapp"),
    # Flower's SuperNode with flrepo's warm SuperExec and short polls (flrepo.fl.message.supernode).
    "flrepo-supernode": ("flrepo.fl.message.supernode", "main"),
}
STOCK_ENV = "FLREPO_FLOWER_STOCK"
# Set for a SuperNode whose SuperExec runs already (flrepo.fl.message.site_superexec): its
# authentication secret's file and its wake socket.
SECRET_ENV = "FLREPO_SUPEREXEC_SECRET_FILE"
WAKE_ENV = "FLREPO_SUPEREXEC_WAKE_SOCKET"


def stock() -> bool:
    """FLREPO_FLOWER_STOCK=1: run Flower's SuperLink, SuperNode and Grid as shipped (a cold
    ClientApp process per message, Flower's polling): the baseline of bench/federated.py, and a way
    to rule flrepo's runtime changes out when something misbehaves."""
    return os.environ.get(STOCK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def free_port() -> int:
    """A TCP port free on loopback now (for the SuperLink's and SuperNode's loopback APIs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(program: str) -> list[str]:
    """The argv prefix that runs `program` with this interpreter."""
    module, function = ENTRY_POINTS[program]
    code = f"import sys; sys.argv[0] = {program!r}; from {module} import {function}; sys.exit({function}())"
    return [sys.executable, "-c", code]


def shim_dir(directory: Path) -> Path:
    """Scripts named like Flower's programs that run them with this interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    for program in ENTRY_POINTS:
        argv = " ".join(_quote(part) for part in command(program))
        path = directory / program
        path.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
        path.chmod(0o755)
    return directory


def _quote(part: str) -> str:
    return "'" + part.replace("'", "'\"'\"'") + "'"


def flower_env(workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of Flower's processes: the shims first on PATH, Flower's own files (apps,
    credentials) under `workdir` rather than the user's home, no telemetry."""
    shims = shim_dir(workdir / "bin")
    return {
        **os.environ,
        "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(workdir / "flwr-home"),
        "FLWR_TELEMETRY_ENABLED": "0",
        **(extra or {}),
    }


def _die_with_parent() -> None:
    """In the child before exec: its own process group (so it can be stopped with its helpers),
    and SIGTERM from Linux when the collector or local execution that started it dies."""
    os.setsid()
    pdeathsig()


def pdeathsig() -> None:
    """In a child before exec: SIGTERM from Linux when the process that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def name_process(name: str) -> None:
    """This process's name as `ps` and /proc/PID/comm show it (PR_SET_NAME: 15 characters at most)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(15, name.encode()[:15], 0, 0, 0)


def stop_child(pid: int, grace: float) -> None:
    """SIGTERM to a child this process forked, SIGKILL after `grace` seconds; reaped."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def as_forked_child() -> None:
    """In a child this process forked: SIGTERM when its parent dies, and the default SIGINT/SIGTERM
    (the parent's handlers are not its own)."""
    pdeathsig()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


# What a parent may send its pre-forked child (flrepo.fl.message.site_supernode, serverapp_superexec).
MAX_COMMAND_BYTES = 1 << 20


def read_command(channel: socket.socket) -> dict[str, Any] | None:
    """In a pre-forked child: what its parent sent (JSON) before closing its end of their pair, whole;
    None when the parent closed it without a word (the child is not needed)."""
    data = b""
    while chunk := channel.recv(65536):
        data += chunk
        if len(data) > MAX_COMMAND_BYTES:
            raise ValueError("the command from the parent process is too long")
    return json.loads(data) if data else None


def run_forked(name: str, body: Callable[[], None]) -> NoReturn:
    """In a child forked to stand for a program (flrepo.fl.message.site_supernode, superlink.fork):
    its own process group (stopped with whatever it starts), SIGTERM when its parent dies, the default
    SIGINT/SIGTERM (its parent's handlers are not its own), `name` in ps; then `body`, and exit with the
    code the program would have had."""
    code = 1
    try:
        os.setsid()
        as_forked_child()
        name_process(name)
        body()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        logging.getLogger(__name__).exception("the forked %s failed", name)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a Flower program; its output joins ours (the collector's or local execution's log)."""
    return subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent)


class Program(Protocol):
    """A started program as flrepo watches and stops it: a Popen, or a forked child
    (flrepo.fl.message.site_supernode.Forked)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def stop(process: Program, grace: float = 10.0) -> None:
    """SIGTERM to the program and the helpers it started (its process group), SIGKILL after `grace`."""
    if process.poll() is not None:
        _signal_group(process, signal.SIGKILL)  # helpers it left behind
        return
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: Program, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def new_secret(workdir: Path) -> Path:
    """A fresh SuperExec authentication secret in `workdir`, readable by its owner only."""
    secret = workdir / "superexec-secret"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    return secret
