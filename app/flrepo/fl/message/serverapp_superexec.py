"""The SuperLink's SuperExec (it starts the run's ServerApp) forked from the SuperLink's process.

Started as a program (`python -m flrepo.fl.message.executor --app flwr-serverapp`), it pays a
Python start and the import of Flower's runtime stack again: ~1 s of CPU, measured, which a
collector pays while its sites import their frameworks on the same cores — on the way to the
first round. Forked from the SuperLink's process, which has imported that stack, it pays ~0.1 s.

The SuperLink forks it first thing (`prefork`), while it has one thread and no event loop, and
tells it to start (`PreForkedExecutor.go`) once its Runtime API listens: the Runtime API's
address, the SuperExec secret's file and the environment the SuperLink has set by then (the
reply-wake socket, the poll interval), which a program would have inherited. Closing the pair
without a word (the SuperLink failed to start) makes it exit. It is its own process group, gets
SIGTERM when the SuperLink dies, and runs as `fl-serverexec` in `ps`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from flrepo.fl.message.programs import read_command, run_forked

log = logging.getLogger(__name__)

PROCESS_NAME = "fl-serverexec"


@dataclass
class PreForkedExecutor:
    """The SuperLink's child that becomes its SuperExec once told (`go`), or exits (`cancel`)."""

    pid: int
    channel: socket.socket | None

    def go(self, runtime_api: str, secret: Path) -> bool:
        """Start serving the Runtime API at `runtime_api`; False when the child cannot (it died): the
        caller starts the program instead."""
        if self.channel is None:
            return False
        settings = {"runtime_api": runtime_api, "secret": str(secret), "env": dict(os.environ)}
        try:
            self.channel.sendall(json.dumps(settings).encode())
        except OSError as exc:
            log.warning("the pre-forked SuperExec (pid %s) cannot be used: %s", self.pid, exc)
            self.cancel()
            return False
        self.channel.close()
        self.channel = None
        log.info("the SuperLink's SuperExec is forked from it (pid %s)", self.pid)
        return True

    def cancel(self) -> None:
        """Not needed: the child exits as the pair closes (reaped by `terminate` or at exit)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def terminate(self) -> None:
        """SIGTERM (the ServerApp it forked follows it: PR_SET_PDEATHSIG); reaped if it has gone."""
        self.cancel()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, os.WNOHANG)


def prefork() -> PreForkedExecutor | None:
    """Fork the child that becomes the SuperLink's SuperExec; None when this process has another
    thread (its locks would stay held in the child): the caller then starts the program."""
    if threading.active_count() != 1:
        log.debug("threads %s: the SuperLink's SuperExec starts as a program", threading.enumerate())
        return None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        ours.close()
        run_forked(PROCESS_NAME, lambda: _serve_when_told(theirs))  # never returns
    theirs.close()
    return PreForkedExecutor(pid, ours)


def _serve_when_told(channel: socket.socket) -> None:
    settings = read_command(channel)
    channel.close()
    if settings is None:  # the SuperLink does not need it
        return
    os.environ.clear()
    os.environ.update(settings["env"])
    from flwr.supercore.constant import TaskType

    from flrepo.fl.message.executor import serve

    logging.getLogger("httpx").setLevel(logging.WARNING)  # as the program: a line per AcquireTask otherwise
    secret = Path(settings["secret"]).read_bytes()
    serve(TaskType.SERVER_APP, settings["runtime_api"], secret, None, None)
