"""The site's SuperNode forked from its local execution, which has imported Flower already.

Started as a program, flrepo's SuperNode (flrepo.fl.message.supernode) pays a Python start and the
import of Flower's SuperNode (its HTTP servers, SQLAlchemy, the Fleet client): ~1.5 s of CPU per
site, which the sites of one machine pay at the same time, on the way to the first round. The
local execution pre-forks a child that waits, on a socket pair, for the SuperNode's command line
and environment (`PreForkedNode.start`) — or for the pair's close, and exits — at the same moment
and under the same rules as the SuperExec's pre-fork (flrepo.fl.message.site_superexec): one Python
thread, no framework thread pool run yet. `preload` imports what both children need first, so
neither imports it again.

The child runs in its own process group and gets SIGTERM when the local execution dies, as the
program did (flrepo.fl.message.programs.start); `Forked` gives the local execution the handle it
used for the program (poll, wait, the pid for the group's signals). A restarted SuperNode (its
collector restarted) is started as a program again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from flrepo.fl.message.programs import read_command, run_forked, stop_child

log = logging.getLogger(__name__)

# What the pre-forked children run, imported before they are forked (copy-on-write shared).
PRELOAD = (
    "flwr.supernode.cli.flower_supernode",
    "flwr.supernode.start_client_internal",
    "flrepo.fl.message.supernode",
    "flrepo.fl.message.executor",
    "flrepo.fl.message.client",
)
POLL_S = 0.02
STOP_SECONDS = 10.0


def preload() -> None:
    """Import the modules of the SuperNode and the SuperExec (no threads start on import)."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)


@dataclass
class Forked:
    """A forked program as the local execution watches and stops it (the part of Popen it uses)."""

    pid: int
    args: list[str] = field(default_factory=list)
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(POLL_S)
        return code


@dataclass
class PreForkedNode:
    """A child of the local execution that becomes its SuperNode once told its command line and
    environment (`start`), or exits when the pair closes (`cancel`)."""

    pid: int
    channel: socket.socket | None

    def start(self, args: list[str], env: dict[str, str]) -> Forked | None:
        """Run flrepo's SuperNode with `args` (flower-supernode's options) and `env` in the child;
        None when it cannot (it died, or was used already): the caller starts the program."""
        if self.channel is None:
            return None
        try:
            self.channel.sendall(json.dumps({"args": args, "env": env}).encode())
        except OSError as exc:  # the child is gone
            log.warning("the pre-forked SuperNode (pid %s) cannot be used: %s", self.pid, exc)
            self.cancel()
            return None
        self.channel.close()
        self.channel = None
        log.info("the site's SuperNode is the process forked before the framework ran (pid %s)", self.pid)
        return Forked(self.pid, ["flrepo-supernode", *args])

    def cancel(self) -> None:
        """Not needed (legacy runtime, a failure): the child exits as its pair closes; reaped."""
        if self.channel is None:
            return
        self.channel.close()
        self.channel = None
        stop_child(self.pid, STOP_SECONDS)  # SIGTERM too: a child stuck before reading its pair


def prefork() -> PreForkedNode:
    """Fork the child that may become the site's SuperNode. The caller checked that this process may
    fork (one thread, no framework pool run: flrepo.fl.message.site_superexec.prefork)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        ours.close()
        _waiting(theirs)  # never returns
    theirs.close()
    log.debug("SuperNode pre-forked: pid %s", pid)
    return PreForkedNode(pid, ours)


def _waiting(channel: socket.socket) -> None:
    """The pre-forked child: wait for the command, then run flrepo's SuperNode (or exit)."""

    def body() -> None:
        command = read_command(channel)
        channel.close()
        if command is None:  # the local execution does not need it
            os._exit(0)
        os.environ.clear()
        os.environ.update(command["env"])
        sys.argv = ["flrepo-supernode", *command["args"]]
        _as_own_program()
        from flrepo.fl.message.supernode import main

        main()

    run_forked("fl-supernode", body)


def _as_own_program() -> None:
    """What a SuperNode started as a program would not have inherited: the local execution's exit
    handlers (Flower's), and Flower's log lines printed twice (its console handler and flrepo's)."""
    from flwr.supercore.exit import exit_handler

    from flrepo.fl.flower_logs import through_flrepo_only

    exit_handler.registered_exit_handlers.clear()
    through_flrepo_only()
