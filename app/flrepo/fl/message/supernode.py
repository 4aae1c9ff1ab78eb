"""flower-supernode with flrepo's SuperExec and without Flower's fixed sleeps.

Flower 1.42's SuperNode, as shipped, costs seconds per message that the work does not: its
SuperExec starts a cold `flwr-clientapp` program per message (`--isolation subprocess`), its loop
sleeps 3 s whenever the SuperLink has no message for it, and 0.5 s at a time while the ClientApp
works. This launcher runs Flower's own SuperNode (same arguments, TLS, SuperNode authentication)
with three changes:

- `--isolation process` and a SuperExec secret (SuperExec authentication on the loopback Runtime
  API), and flrepo's SuperExec (flrepo.fl.message.executor) started beside it: it imports flwr,
  numpy, flrepo's ClientApp and the site's framework once (it loads the site's model once) and
  forks a process per task. Where the local execution forked that SuperExec already
  (flrepo.fl.message.site_superexec), the SuperNode uses it: its secret and wake socket come in
  the environment.
- The SuperNode wakes that SuperExec through a datagram socket as soon as it has stored a message.
- Its sleeps become intervals that start short and grow (flrepo.fl.message.polling): right after
  a reply the next message is usually close.

These reach into `flwr.supernode.start_client_internal` (its `time` and `_push_messages` names);
tests/fl/test_flower_internals.py fails when the pinned flwr changes them.

With FLREPO_FLOWER_STOCK=1 it runs Flower's SuperNode unchanged (the baseline in bench/federated.py).

    python -m flrepo.fl.message.supernode --superlink HOST:PORT [flower-supernode options]
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flrepo.fl.message import inline_endpoints, plain_translation
from flrepo.fl.message.polling import Backoff, quick_object_pulls
from flrepo.fl.message.programs import SECRET_ENV, WAKE_ENV, new_secret, pdeathsig, stock

log = logging.getLogger(__name__)

# The sleeps Flower 1.42 hard-codes in start_client_internal, and what they become.
IDLE_SLEEP = 3  # no message pulled
REPLY_SLEEP = 0.5  # waiting for the ClientApp's reply (or its objects)
# first, factor, cap (seconds): the first second after a reply as before (0.3 s steps by then), then
# up to one pull a second per idle site: 30 sites waiting out a long round pulled 100 times a second
# at a 0.3-s cap, each a TLS request the SuperLink answers, on the cores the round needs.
IDLE = (0.02, 1.4, 1.0)
# The wait for the ClientApp's reply reads this process's own state (no request): checking every
# 10 ms costs nothing measurable, and a 50-ms cap made each exchange wait 25 ms on average.
REPLY = (0.005, 1.3, 0.01)
# flrepo's SuperLink holds a pull that can find nothing until the ServerApp pushes, or for
# flrepo.fl.message.held_pulls.HOLD_S (2 s): an empty pull that lasted this long was held, and the
# node asks again at once (its next pull is held in turn), instead of sleeping past the next push.
HELD_PULL_S = 1.0
AFTER_HELD_S = 0.001


class NodeTime:
    """Stands in for the `time` module in Flower's SuperNode loop."""

    def __init__(self) -> None:
        self.idle = Backoff(*IDLE)
        self.reply = Backoff(*REPLY)
        self.awake_since = time.monotonic()  # the loop's last sleep ended (its pull began) then
        self.held = 0  # empty pulls the SuperLink held

    def sleep(self, seconds: float) -> None:
        if seconds == IDLE_SLEEP:
            if time.monotonic() - self.awake_since >= HELD_PULL_S:  # the SuperLink held the pull
                self.held += 1
                self.idle.reset()
                time.sleep(AFTER_HELD_S)
            else:
                time.sleep(self.idle.interval())
        elif seconds == REPLY_SLEEP:
            time.sleep(self.reply.interval())
        else:
            time.sleep(seconds)
        self.awake_since = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def patch_loop(wake_path: Path | None) -> NodeTime:
    """Replace the SuperNode loop's sleeps; wake the SuperExec when a message was stored."""
    from flwr.supernode import start_client_internal as loop

    from flrepo.fl.message.polling import wake

    node_time = NodeTime()
    push_messages = loop._push_messages

    def stored_then_push(*args: Any, **kwargs: Any) -> None:
        # Flower calls this right after it stored a message and created its task.
        if wake_path is not None:
            wake(wake_path)
        node_time.reply.reset()
        try:
            push_messages(*args, **kwargs)
        finally:
            node_time.idle.reset()  # a reply went out: the next message is probably close

    loop.time = node_time  # type: ignore[assignment]
    loop._push_messages = stored_then_push
    return node_time


def site_directory(node_config: dict[str, Any]) -> Path | None:
    """The site directory flrepo's local execution named in the node config."""
    from flrepo.fl.message.client import SITE_KEY

    return Path(str(node_config[SITE_KEY])) if SITE_KEY in node_config else None


def start_executor(runtime_api: str, secret: Path, wake_path: Path, site: Path | None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "flrepo.fl.message.executor", "--runtime-api-address", runtime_api]
    argv += ["--superexec-auth-secret-file", str(secret), "--wake-socket", str(wake_path)]
    if site is not None:
        argv += ["--site", str(site)]
    return subprocess.Popen(argv, preexec_fn=pdeathsig)


def main() -> None:
    from flwr.common.config import parse_config_args
    from flwr.supercore.address import resolve_bind_address
    from flwr.supernode.cli import flower_supernode
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    argv = sys.argv[1:]
    if not stock():
        if os.environ.get(SECRET_ENV):  # the local execution forked its SuperExec (flrepo.fl.message.site_superexec)
            secret, wake_path = Path(os.environ[SECRET_ENV]), Path(os.environ[WAKE_ENV])
        else:
            args = _parse_args_run_supernode().parse_args(argv)
            work = Path(tempfile.mkdtemp(prefix="flrepo-supernode-"))
            atexit.register(shutil.rmtree, work, ignore_errors=True)
            secret = new_secret(work)
            wake_path = work / "wake.sock"
            host = f"[{args.host}]" if ":" in args.host else args.host
            runtime_api = resolve_bind_address(f"{host}:{args.port}")  # as Flower's own SuperExec connects
            config = parse_config_args([args.node_config] if args.node_config else None)
            executor = start_executor(runtime_api, secret, wake_path, site_directory(config))
            atexit.register(executor.terminate)
        argv += ["--isolation", "process", "--superexec-auth-secret-file", str(secret)]
        patch_loop(wake_path)
        quick_object_pulls()
        plain_translation.install_supernode()  # Flower's two translation layers as plain ASGI
        inline_endpoints.install()  # its plain-function endpoints without a worker thread each
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


if __name__ == "__main__":
    main()
