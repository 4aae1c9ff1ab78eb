"""The site's SuperExec forked from its local execution, which has imported the framework and
loaded the model already.

Two ways, both saving the SuperExec's own interpreter start, imports and first model load:

- `prefork`, at the start of the local execution, right after it loaded the task's model and
  before it ran any framework operation (the model check, the training): a child that waits, on a
  socket pair, for its SuperNode's settings (`PreFork.go`) — or for the pair's close, when the site
  ends up on the legacy runtime or fails first, and exits. This is the way for PyTorch sites (a
  Keras model's load runs TensorFlow already: those sites start their SuperExec as before).
- `start`, later, when the SuperNode is about to start: for sites whose process can still fork
  then (below).

A SuperNode started on its own starts flrepo's SuperExec as a new program
(flrepo.fl.message.supernode), which imports flwr, numpy and the framework and loads the model
again before the first ClientApp can run: ~3 s of CPU per site, which the sites of one machine pay
at the same time, all of it before the first round. Forked from the local execution, the SuperExec
starts with all of that done.

Forking is safe only while the local execution has one Python thread (a thread's locks would stay
held in the child) and has not loaded a framework whose thread pool breaks in a forked child
(PyTorch's OpenMP pool, once used, hangs the child): `start` forks then — a NumPy site, as the
30-site benchmark's — and otherwise returns None, and the SuperNode starts its own SuperExec as
before (a PyTorch site; a restarted SuperNode, whose local execution's watch thread has run). The
SuperNode learns the secret and the wake socket from the environment (SECRET_ENV, WAKE_ENV).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flrepo.fl.message.programs import SECRET_ENV, WAKE_ENV, as_forked_child, name_process, new_secret, stop_child

if TYPE_CHECKING:
    from flrepo.fl.message.site_supernode import PreForkedNode

log = logging.getLogger(__name__)

STOP_SECONDS = 10.0
# Frameworks whose native thread pools do not survive a fork once used: a PyTorch process that ran an
# operation (the local execution checks the model) forks a child that hangs at its first parallel
# operation (GNU OpenMP). numpy's OpenBLAS pool is re-created in the child.
POOLED_FRAMEWORKS = ("torch", "tensorflow", "keras", "jax")
# Of those, the ones whose pools may run before the local execution's first training step (loading a
# Keras model runs TensorFlow operations): `prefork` leaves these sites to the SuperNode's own SuperExec.
EAGER_POOLS = ("tensorflow", "keras", "jax")


@dataclass
class SiteSuperExec:
    """A forked SuperExec serving the Runtime API on `port`."""

    pid: int
    port: int
    secret: Path
    wake: Path

    def env(self) -> dict[str, str]:
        """What the SuperNode's environment needs to use this SuperExec instead of starting one."""
        return {SECRET_ENV: str(self.secret), WAKE_ENV: str(self.wake)}

    def terminate(self) -> None:
        """SIGTERM (its ClientApp worker follows it: PR_SET_PDEATHSIG)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after STOP_SECONDS; reaped."""
        stop_child(self.pid, STOP_SECONDS)


def _unforkable(frameworks: Iterable[str]) -> str | None:
    """Why this process must not fork now, or None: other threads (their locks would stay held in the
    child) or a framework among `frameworks` loaded (its native pools do not survive a fork)."""
    if threading.active_count() != 1:
        return f"this process has threads {[t.name for t in threading.enumerate()]}"
    loaded = sorted(set(frameworks) & set(sys.modules))
    return f"this process has loaded {loaded}" if loaded else None


def start(site_dir: Path, workdir: Path, port: int) -> SiteSuperExec | None:
    """Fork the site's SuperExec for a SuperNode whose Runtime API will be on 127.0.0.1:`port`; None
    when this process has threads (the SuperNode then starts its own)."""
    from flrepo.fl.message.executor import native_threads

    why = _unforkable(POOLED_FRAMEWORKS)
    if why:
        log.debug("%s: the SuperNode starts its own SuperExec", why)
        return None
    log.debug("forking the SuperExec: %d native threads %s", native_threads(), _thread_names())
    workdir.mkdir(parents=True, exist_ok=True)
    secret = new_secret(workdir)
    wake = workdir / "wake.sock"
    from flrepo.fl.message.polling import wake_socket

    listening = wake_socket(wake)  # bound before the SuperNode can wake it
    pid = os.fork()
    if pid == 0:
        _child(f"127.0.0.1:{port}", secret, listening, site_dir)  # never returns
    listening.close()
    log.debug("SuperExec forked: pid %s, Runtime API 127.0.0.1:%s", pid, port)
    return SiteSuperExec(pid, port, secret, wake)


@dataclass
class PreFork:
    """A child of the local execution, forked before its framework ran, that becomes the site's
    SuperExec once told its SuperNode's settings (`go`), or exits when the pair closes (`cancel`)."""

    pid: int
    channel: socket.socket | None
    node: PreForkedNode | None = None  # the child that may become the site's SuperNode

    def go(self, site_dir: Path, workdir: Path, port: int) -> SiteSuperExec | None:
        """Make the child the SuperExec for a SuperNode whose Runtime API will be on 127.0.0.1:`port`;
        None when it cannot be (it died, or was used already): the caller starts one another way."""
        if self.channel is None:
            return None
        workdir.mkdir(parents=True, exist_ok=True)
        secret = new_secret(workdir)
        wake = workdir / "wake.sock"
        from flrepo.fl.message.polling import wake_socket

        listening = wake_socket(wake)  # bound here, before the SuperNode can wake it; the child gets the socket
        settings = {"runtime_api": f"127.0.0.1:{port}", "secret": str(secret), "site": str(site_dir)}
        try:
            socket.send_fds(self.channel, [json.dumps(settings).encode()], [listening.fileno()])
        except OSError as exc:  # the child is gone
            log.warning("the pre-forked SuperExec (pid %s) cannot be used: %s", self.pid, exc)
            self._drop()  # the SuperNode's child stays usable
            return None
        finally:
            listening.close()
        self.channel.close()
        self.channel = None
        log.info("the site's SuperExec is the process forked before the framework ran (pid %s)", self.pid)
        return SiteSuperExec(self.pid, port, secret, wake)

    def cancel(self) -> None:
        """Not needed (legacy runtime, a failure): the children exit as their pairs close; reaped."""
        if self.node is not None:
            self.node.cancel()
        self._drop()

    def _drop(self) -> None:
        """The SuperExec's child exits as its pair closes; reaped."""
        if self.channel is None:
            return
        self.channel.close()
        self.channel = None
        SiteSuperExec(self.pid, 0, Path(), Path()).stop()


def prefork() -> PreFork | None:
    """Fork the child that may become the site's SuperExec; call it before the framework runs any
    operation (a PyTorch process forked after that hangs at its first parallel operation). None when
    this process has threads (their locks would stay held in the child) or runs Flower as shipped."""
    from flrepo.fl.message.programs import stock

    if stock():
        return None
    # TensorFlow starts its native thread pools as it loads a model (PyTorch only at its first operation).
    why = _unforkable(EAGER_POOLS)
    if why:
        log.debug("%s: no SuperExec is pre-forked", why)
        return None
    from flrepo.fl.message import site_supernode

    site_supernode.preload()  # once, here: neither child imports Flower again
    why = _unforkable(EAGER_POOLS)
    if why:  # an import started a thread
        log.debug("%s: no SuperExec is pre-forked", why)
        return None
    node = site_supernode.prefork()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        ours.close()
        if node.channel is not None:  # the SuperNode's child must see its pair close when the site drops it
            node.channel.close()
        _waiting(theirs)  # never returns
    theirs.close()
    log.debug("SuperExec pre-forked: pid %s; this process's native threads: %s", pid, _thread_names())
    return PreFork(pid, ours, node)


def _thread_names() -> list[str]:
    names = []
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
    return names


def _waiting(channel: socket.socket) -> None:
    """The pre-forked child: wait for the settings, then serve as the SuperExec (or exit)."""
    try:
        as_forked_child()
        name_process("fl-superexec")
        data, fds, _, _ = socket.recv_fds(channel, 65536, 1)
        channel.close()
        if not data or not fds:  # the local execution does not need it
            os._exit(0)
        settings = json.loads(data)
        wake = socket.socket(fileno=fds[0])
    except BaseException:
        log.exception("the pre-forked SuperExec failed to start")
        os._exit(1)
    _child(settings["runtime_api"], Path(settings["secret"]), wake, Path(settings["site"]))


def _child(runtime_api: str, secret: Path, wake: socket.socket, site_dir: Path) -> None:
    code = 1
    try:
        from flwr.supercore.constant import TaskType

        from flrepo.fl.message.executor import serve

        as_forked_child()  # again: the SuperExec forked without a pre-fork comes here directly
        serve(TaskType.CLIENT_APP, runtime_api, secret.read_bytes(), wake, site_dir)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:
        log.exception("the site's SuperExec failed")
    finally:
        os._exit(code)
