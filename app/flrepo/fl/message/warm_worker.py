"""One long-lived ClientApp process per SuperNode, running its messages one after another.

A ClientApp forked per message (flrepo.fl.message.executor.ForkExecutor) starts warm in what was
imported, but every message is still the first one its process trains: PyTorch builds its
thread pool and autograd state, the exported model's module is generated again, the allocator
starts empty. Measured on the digits MLP: 0.4-1.4 s for the first two-epoch fit in a fresh fork,
0.09 s for the next one in the same process; a round has two messages per site, and the round
waits for its slowest site. Flower ran ClientApps in a long-running `flwr-clientapp` loop up to
1.20; this is that loop, with Flower 1.42's own `run_clientapp` for each message.

The worker is forked once, at the first ClientApp task, from the executor (which has no thread),
and is the only process that trains: it may start threads, since nothing forks from it. It
receives each task's `ExecutionSpec` as a JSON line on a socket pair and answers with the exit
code the task would have had as a process. While it is busy (or if it died), the executor forks a
child for the task as before, so a task never waits for another.

`run_clientapp` ends every task with `flwr_exit`, which starts a thread that hard-exits the
process a few seconds later; in the worker it is replaced by an exit that runs the same exit
handlers (the task's final status, the heartbeat's stop) and raises SystemExit, which the loop
catches. tests/fl/test_message_internals.py fails loudly if Flower changes what this relies on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor import ExecutionSpec

log = logging.getLogger(__name__)


def spec_line(spec: ExecutionSpec) -> bytes:
    fields = dataclasses.asdict(spec)
    fields["task_type"] = spec.task_type.value
    return (json.dumps(fields) + "\n").encode()


def spec_of(line: bytes) -> ExecutionSpec:
    fields: dict[str, Any] = json.loads(line)
    fields["task_type"] = TaskType(fields["task_type"])
    return ExecutionSpec(**fields)


def exit_in_worker(code: int, message: str | None = None, *_: Any, **__: Any) -> NoReturn:
    """`flwr_exit` without its hard-exit timer: run the task's exit handlers, then leave the task."""
    from flwr.supercore.exit.exit_handler import trigger_exit_handlers

    if message:
        log.log(logging.ERROR if not 0 <= code < 100 else logging.DEBUG, "%s", message)
    trigger_exit_handlers(run_before_force_exit=True)
    trigger_exit_handlers(run_before_force_exit=False)
    raise SystemExit(0 if 0 <= code < 100 else 1)


def run_one(run: Callable[[ExecutionSpec], None], spec: ExecutionSpec) -> int:
    """Run one task in this process; its exit code. What the task registered (exit handlers, signal
    handlers) is removed afterwards, so the next task starts as a new process would."""
    from flwr.supercore.exit import exit_handler

    code = 1
    started, cpu = time.perf_counter(), time.process_time()
    try:
        # The worker outlives the SuperNode's ClientApp monitor: the executor's pdeathsig ends it.
        run(dataclasses.replace(spec, parent_pid=None))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:
        log.exception("task %s failed in the ClientApp worker", spec.task_id)
    finally:
        exit_handler.registered_exit_handlers.clear()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    log.debug(
        "task %s: exit %s after %.3f s, %.3f s CPU in the worker",
        spec.task_id, code, time.perf_counter() - started, time.process_time() - cpu,
    )  # fmt: skip
    return code


def serve_tasks(conn: socket.socket, run: Callable[[ExecutionSpec], None]) -> NoReturn:
    """The worker's loop: a task per line until the executor closes its end."""
    import flwr.supernode.runtime.run_clientapp as clientapp_module

    from flrepo.fl.message.programs import pdeathsig

    pdeathsig()
    clientapp_module.flwr_exit = exit_in_worker  # type: ignore[assignment]
    reader = conn.makefile("rb")
    for line in reader:
        answer = run_one(run, spec_of(line))
        conn.sendall(f"{answer}\n".encode())
    os._exit(0)  # the executor closed its end: it is stopping


def forget_parent() -> None:
    """The child inherited the SuperExec's exit handlers (close its Runtime API client, the
    executor): they belong to the parent, and the app registers its own."""
    from flwr.supercore.exit import exit_handler

    exit_handler.registered_exit_handlers.clear()


class Worker:
    """The executor's side: the worker's process, and whether it is busy with a task."""

    def __init__(self, run: Callable[[ExecutionSpec], None]) -> None:
        self.run = run
        self.pid: int | None = None
        self.conn: socket.socket | None = None
        self.busy = False
        self.served = 0

    def submit(self, spec: ExecutionSpec) -> bool:
        """Hand the task to the worker (starting it if need be); False if it cannot take it now."""
        self.collect()
        if self.busy or spec.suppress_output:
            return False
        if self.conn is None and not self._start():
            return False
        assert self.conn is not None
        try:
            self.conn.sendall(spec_line(spec))
        except OSError:
            self._lost()
            return False
        self.busy = True
        self.served += 1
        return True

    def collect(self) -> None:
        """Note the answers of finished tasks (and a worker that died)."""
        if self.conn is None:
            return
        while select.select([self.conn], [], [], 0)[0]:
            data = self.conn.recv(4096)
            if not data:
                self._lost()
                return
            self.busy = False

    def _start(self) -> bool:
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                forget_parent()
                serve_tasks(theirs, self.run)
            finally:
                os._exit(1)
        theirs.close()
        self.pid, self.conn, self.busy = pid, ours, False
        log.debug("ClientApp worker started: pid %s", pid)
        return True

    def _lost(self) -> None:
        log.warning("the ClientApp worker (pid %s) ended; the next task starts a new one", self.pid)
        if self.conn is not None:
            self.conn.close()
        if self.pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
        self.pid, self.conn, self.busy = None, None, False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
