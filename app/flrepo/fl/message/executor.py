"""flrepo's SuperExec: Flower's own SuperExec loop with an executor that forks a warm process per
task instead of starting a cold one.

Flower 1.42's SuperExec starts `flwr-clientapp` as a new program for every message a SuperNode
receives: each imports flwr, numpy and the ML framework again (seconds) before doing milliseconds
of work; the SuperLink's starts `flwr-serverapp` likewise per run. This program imports them once,
then runs `run_superexec` (Flower's loop: AcquireTask on
the Runtime API, authenticated with the SuperExec secret; a one-task token per launch) with
`ForkExecutor`, which forks a child per task; the child runs Flower's `run_clientapp` (or
`run_serverapp`) with that task's token, exactly as the `flwr-clientapp` program would, and exits.
Each task still runs in its own process with its own token; what the children share is only what
was imported before the fork.

Forking is safe because nothing here starts a Python thread before forking (checked on every
launch) and the frameworks are imported, not used: PyTorch starts its intra-op pool on the first
operation, in the child. OpenBLAS's pool (started by importing numpy) re-initialises after fork.

A SuperNode started by flrepo (flrepo.fl.message.supernode) wakes this loop through a datagram
socket the moment it has stored a message, so the task is acquired at once; the loop still polls
every FLWR_SUPEREXEC_TASK_POLL_INTERVAL seconds, WOKEN_POLL_S by default when it is woken (Flower's
default, 1 s, is an AcquireTask a second per site while nothing happens: 30 a second at 30 sites).

    python -m flrepo.fl.message.executor --runtime-api-address 127.0.0.1:9094 \\
        --superexec-auth-secret-file secret --wake-socket wake.sock --site /path/to/site
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult, SubprocessExecutor

from flrepo.fl.message import polling
from flrepo.fl.message.polling import quick_object_pulls, wake_socket, woken
from flrepo.fl.message.warm_worker import Worker, forget_parent

log = logging.getLogger(__name__)

# The SuperExec loop's poll when a wake socket tells it of each task (a lost wake costs this much).
POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
WOKEN_POLL_S = "5"
# A SuperLink's executor asks for the run's ServerApp task often (flrepo.fl.message.superlink), but a
# collector submits one run per SuperLink: once it launched one, it asks this often (a request 10
# times a second for the whole training was CPU in both it and the SuperLink, on the cores the
# rounds need).
SERVERAPP_LAUNCHED_POLL_S = 2.0
# Set to 1 to fork a fresh ClientApp process per message (the worker off): for comparison.
COLD_ENV = "FLREPO_CLIENTAPP_PER_MESSAGE"


def cold_clientapps() -> bool:
    return os.environ.get(COLD_ENV, "") == "1"


# What a warm executor imports before it forks, by the kind of app it runs: Flower's app runtime
# and flrepo's app (the site's framework comes with the site, see warm_site).
PRELOAD = {
    TaskType.CLIENT_APP: ("numpy", "flwr.supernode.runtime.run_clientapp", "flrepo.fl.message.client"),
    TaskType.SERVER_APP: ("numpy", "flwr.superlink.runtime.run_serverapp", "flrepo.fl.message.server"),
}


def run_clientapp(spec: ExecutionSpec) -> None:
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp as run

    run(
        runtime_api_address=spec.runtime_api_address,
        token=spec.token,
        insecure=spec.insecure,
        certificates=validate_and_resolve_root_certificates(spec.root_certificates_path, spec.insecure),
        parent_pid=spec.parent_pid,
        runtime_dependency_install=spec.runtime_dependency_install,
    )


def run_serverapp(spec: ExecutionSpec) -> None:
    """As the `flwr-serverapp` program: its output is mirrored to the SuperLink (the run's logs)."""
    from queue import Queue

    from flwr.supercore.logger import mirror_output_to_queue, restore_output
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.superlink.runtime import run_serverapp as run

    log_queue: Queue[str | None] = Queue()
    mirror_output_to_queue(log_queue)
    run(
        runtime_api_address=spec.runtime_api_address,
        log_queue=log_queue,
        token=spec.token,
        insecure=spec.insecure,
        certificates=validate_and_resolve_root_certificates(spec.root_certificates_path, spec.insecure),
        parent_pid=spec.parent_pid,
        runtime_dependency_install=spec.runtime_dependency_install,
    )
    restore_output()


# The task types a warm child can run in-process.
RUNNERS: dict[TaskType, Callable[[ExecutionSpec], None]] = {
    TaskType.CLIENT_APP: run_clientapp,
    TaskType.SERVER_APP: run_serverapp,
}


class ForkExecutor:
    """Flower's SuperExec `Executor` protocol: `launch` forks a child that runs the task."""

    def __init__(self, warm: dict[TaskType, Callable[[ExecutionSpec], None]], worker: Worker | None = None) -> None:
        """`warm`: the task types forked, and what the child runs; any other type is started
        cold, as Flower's SubprocessExecutor would. `worker`: a long-lived process that takes its
        task type's tasks while it is free (flrepo.fl.message.warm_worker)."""
        self.warm = warm
        self.worker = worker
        self.cold = SubprocessExecutor()
        self.children: set[int] = set()
        self.owner = os.getpid()
        self.launched = 0

    def get_eligible_capacity(
        self, supported_task_types: set[TaskType], *, insecure: bool = False, root_certificates_path: str | None = None
    ) -> tuple[set[TaskType], set[str]]:
        return set(supported_task_types), set()

    def wait_for_capacity(
        self,
        task_type: TaskType | None = None,
        *,
        fab_hash: str | None = None,
        insecure: bool = False,
        root_certificates_path: str | None = None,
    ) -> None:
        """Forking has no capacity gate."""

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        run = self.warm.get(spec.task_type)
        if run is None:
            return self.cold.launch(spec)
        self.reconcile()
        if self.worker is not None and spec.task_type == TaskType.CLIENT_APP and self.worker.submit(spec):
            log.debug("task %s (%s): to the worker", spec.task_id, spec.task_type)
            self.launched += 1
            return LaunchResult.accepted()
        if threading.active_count() > 1:  # a thread would leave its locks held in the child
            names = [t.name for t in threading.enumerate()]
            return LaunchResult.failed(f"the executor has threads {names}: refusing to fork")
        log.debug("task %s (%s): forking", spec.task_id, spec.task_type)
        pid = os.fork()
        if pid == 0:
            _child(run, spec)  # never returns
        self.children.add(pid)
        self.launched += 1
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Collect the children that ended (no zombies)."""
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            self.children.discard(pid)

    def close(self) -> None:
        if os.getpid() == self.owner:  # not in a child that inherited the exit handler
            self.reconcile()


# How the ServerApp's lines are told apart in the collector's log.
SERVERAPP_PREFIX = "[ServerApp] "


class Prefixed:
    """A text stream that writes to `raw` with `prefix` at the start of every line (Flower's
    output mirror replaces `write` on it, and still sees the unprefixed text)."""

    def __init__(self, raw: TextIO, prefix: str) -> None:
        self.raw, self.prefix = raw, prefix
        self.at_line_start = True

    def write(self, text: str) -> int:
        out = []
        for piece in LINE.findall(text):
            if self.at_line_start:
                out.append(self.prefix)
            out.append(piece)
            self.at_line_start = piece.endswith("\n")
        self.raw.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...: the raw stream's
        return getattr(self.raw, name)


LINE = re.compile(r"[^\n]*\n|[^\n]+")


def _child(run: Callable[[ExecutionSpec], None], spec: ExecutionSpec) -> None:
    """The forked task: run it, then leave without returning into the parent's loop."""
    code = 1
    started, cpu = time.perf_counter(), time.process_time()
    try:
        forget_parent()
        if spec.suppress_output and spec.task_type == TaskType.SERVER_APP:
            # Its output goes to this process's (the collector's log) as it is written, and Flower
            # still ships it to the SuperLink (`flwr log`): read back from the SuperLink, the lines
            # came up to 0.7 s late (upload and stream intervals) and the last were lost when the
            # collector left at the task's end.
            sys.stdout, sys.stderr = Prefixed(sys.stdout, SERVERAPP_PREFIX), Prefixed(sys.stderr, SERVERAPP_PREFIX)
        elif spec.suppress_output:  # as Flower's SubprocessExecutor would start it
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        run(spec)
        code = 0
    except SystemExit as exc:  # Flower's apps end with flwr_exit
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        log.exception("task %s failed in its forked process", spec.task_id)
    finally:
        log.debug(
            "task %s (%s): exit %s after %.3f s, %.3f s CPU",
            spec.task_id, spec.task_type, code, time.perf_counter() - started, time.process_time() - cpu,
        )  # fmt: skip
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# Where the SuperNode's side finds it (flrepo.fl.message.polling holds it, importing no Flower).
wake = polling.wake


class WakeableTime:
    """Stands in for the `time` module in Flower's SuperExec loop: its sleep between AcquireTask
    calls ends early when a datagram arrives on the wake socket; once `settled()` says no task is
    expected soon, it sleeps at least `settled_s`."""

    def __init__(
        self, wake: socket.socket | None, settled: Callable[[], bool] | None = None, settled_s: float = 0.0
    ) -> None:
        self.wake = wake
        self.woken = 0
        self.settled, self.settled_s = settled, settled_s

    def sleep(self, seconds: float) -> None:
        if self.settled is not None and self.settled():
            seconds = max(seconds, self.settled_s)
        if self.wake is None:
            time.sleep(seconds)
            return
        if woken(self.wake, seconds):  # one AcquireTask serves every wake that queued meanwhile
            self.woken += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def preload(modules: list[str]) -> None:
    started = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # the child imports it (and reports) if the app needs it
            log.warning("executor: cannot preload %s: %s", name, exc)
    log.debug("executor: preloaded in %.2f s", time.perf_counter() - started)


def warm_site(site: Path) -> None:
    """Load the site's model and data once: the first load of a model imports much of its
    framework lazily (torch.export: 1.6 s of CPU, then 20 ms), which the children then inherit.
    Loading starts no thread; training would (PyTorch's pool), so nothing is trained here."""
    from flrepo.fl.message.client import SITE_KEY, load_site

    started = time.process_time()
    try:
        load_site({SITE_KEY: str(site)})
    except Exception as exc:  # the ClientApp reports it, per message, where the operator looks
        log.warning("executor: cannot load the site in %s: %s", site, exc)
    log.debug("executor: site loaded in %.2f s CPU; %d native threads", time.process_time() - started, native_threads())


def native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def serve(
    task_type: TaskType,
    runtime_api_address: str,
    secret: bytes | None,
    wake: Path | socket.socket | None,
    site: Path | None,
) -> None:
    """Preload, then run Flower's SuperExec loop with the fork executor (until signalled); `wake`: the
    wake socket's path, or the socket bound already."""
    from flwr.supercore.superexec import run_superexec as loop

    preload(list(PRELOAD[task_type]))
    quick_object_pulls()  # inherited by every ClientApp/ServerApp this executor runs
    if site is not None:
        warm_site(site)
    worker = Worker(run_clientapp) if task_type == TaskType.CLIENT_APP and not cold_clientapps() else None
    executor = ForkExecutor({task_type: RUNNERS[task_type]}, worker)
    loop.get_executor = lambda *args, **kwargs: executor  # type: ignore[assignment]
    listening = wake_socket(wake) if isinstance(wake, Path) else wake
    if listening is not None:
        os.environ.setdefault(POLL_ENV, WOKEN_POLL_S)  # read by run_superexec
    settled = (lambda: executor.launched > 0) if task_type == TaskType.SERVER_APP else None
    loop.time = WakeableTime(listening, settled, SERVERAPP_LAUNCHED_POLL_S)  # type: ignore[assignment]
    loop.run_superexec(
        runtime_api_address=runtime_api_address,
        insecure=True,  # loopback only
        root_certificates_path=None,
        superexec_auth_secret=secret,
        parent_pid=None,  # PR_SET_PDEATHSIG instead: Flower's monitor is a thread, and we fork
    )


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flrepo.fl.message.executor", description=__doc__)
    parser.add_argument("--runtime-api-address", required=True, help="the Runtime API (loopback)")
    parser.add_argument(
        "--app", choices=[t.value for t in PRELOAD], default=TaskType.CLIENT_APP.value, help="what this executor forks"
    )
    parser.add_argument("--superexec-auth-secret-file", type=Path, help="the secret the SuperNode was given")
    parser.add_argument("--wake-socket", type=Path, help="a datagram socket path to be woken on")
    parser.add_argument("--site", type=Path, help="the site directory whose model and data to load once")
    return parser


def main() -> None:
    from flrepo.logs import configure_logging

    args = arguments().parse_args()
    configure_logging(os.environ.get("FLREPO_LOG_LEVEL", "INFO"), json_logs=False)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per AcquireTask otherwise
    secret = args.superexec_auth_secret_file.read_bytes() if args.superexec_auth_secret_file else None
    serve(TaskType(args.app), args.runtime_api_address, secret, args.wake_socket, args.site)


if __name__ == "__main__":
    main()
