"""flower-superlink with its Fleet API alone on the participant-facing address.

Flower 1.42's SuperLink serves its Fleet API (SuperNodes), its Control API (start runs, register
SuperNode keys) and its Runtime API (ServerApp processes) on one HTTP port, and without account
authentication (an enterprise plugin) the Control API takes any caller. Exposed to participants,
that port would let any of them register its own key — SuperNode authentication undone — or start
a run whose app code the collector's host then executes. So this launcher runs Flower's own
SuperLink application (same argument parsing and checks as `flower-superlink`, same app) twice
over: on `--host`/`--port`, loopback, with everything, for the collector and Flower's own helpers;
and on `--fleet-address`, with TLS, answering only /v1/fleet/ (everything else is 404).

The collector forks it (`fork`) after importing Flower's server stack once, rather than starting it
as a program that imports it again; where it cannot fork safely, it starts the program.

    python -m flrepo.fl.message.superlink --fleet-address 0.0.0.0:9092 --port 9093 \\
        --ssl-ca-certfile ca.crt --ssl-certfile tls.crt --ssl-keyfile tls.key --enable-supernode-auth ...
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import uvicorn

from flrepo.fl.message import inline_endpoints, plain_translation, scoped_middleware, serverapp_superexec
from flrepo.fl.message.complete_pushes import CompletePushes
from flrepo.fl.message.held_pulls import PULL_PATH, HeldPulls
from flrepo.fl.message.polling import REPLY_WAKE_ENV, wake
from flrepo.fl.message.programs import pdeathsig, run_forked, stock
from flrepo.fl.message.serverapp_superexec import PreForkedExecutor
from flrepo.fl.message.site_supernode import Forked

FLEET_PREFIX = "/v1/fleet/"
# What a SuperNode sends that the ServerApp waits for: a reply, whole with its objects; its arrival.
FLEET_PUSH = ("/v1/fleet/push-messages", "/v1/fleet/push-object")
WAKE_PATHS = ("/v1/fleet/activate-node",)
# What the ServerApp sends that SuperNodes wait for (the Runtime API, on loopback).
RUNTIME_PUSH = ("/v1/runtime/push-messages", "/v1/runtime/push-object")
SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
SUPEREXEC_POLL_S = "0.1"
LOOPBACK = "127.0.0.1"
# What the SuperLink runs, imported by the collector before it forks it (flrepo.fl.message.collector):
# the child then starts without a Python start and a second import of Flower's server stack.
PRELOAD = (
    "flwr.supercore.http_logging",
    "flwr.supercore.logger",
    "flwr.superlink.cli.flower_superlink",
    "flwr.superlink.main",
)

log = logging.getLogger(__name__)

Scope = dict[str, Any]


class FleetOnly:
    """ASGI wrapper: Fleet API requests pass, anything else is 404 (and the lifespan is the
    loopback server's, not ours). With `replies`, a SuperNode's reply, once whole with its objects
    (flrepo.fl.message.complete_pushes), or its arrival is told to whoever listens on that datagram
    socket: the ServerApp's grid (flrepo.fl.message.fast_grid), which then pulls at once instead of
    polling for it. With `held`, a
    SuperNode's pull that can find no message waits for the ServerApp's next push (flrepo.fl.message.held_pulls)."""

    def __init__(self, app: Any, replies: Path | None = None, held: HeldPulls | None = None) -> None:
        from flwr.proto.fleet_pb2 import PushMessagesResponse

        self.app = app
        self.replies = replies
        self.held = held
        self.pushes = CompletePushes(*FLEET_PUSH, PushMessagesResponse, self._wake) if replies is not None else None

    def _wake(self) -> None:
        if self.replies is not None:
            wake(self.replies)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == PULL_PATH and self.held is not None:
            await self.held.pull(self.app, scope, receive, send)
            return
        if self.pushes is not None and self.pushes.watches(path):
            await self.pushes.serve(self.app, scope, receive, send)
            return
        if path.startswith(FLEET_PREFIX):
            await self.app(scope, receive, send)
            if path in WAKE_PATHS:
                self._wake()
            return
        if scope["type"] == "http":
            body = b'{"detail":"not found"}'
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})


class Watched:
    """ASGI wrapper: the pushes `pushes` watches go through it, everything else straight to `app`."""

    def __init__(self, app: Any, pushes: CompletePushes) -> None:
        self.app, self.pushes = app, pushes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.pushes.watches(scope.get("path", "")):
            await self.pushes.serve(self.app, scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    """Two servers share one loop: signals are handled once, below, for both."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass

    def capture_signals(self) -> Any:  # uvicorn >= 0.29
        import contextlib

        return contextlib.nullcontext()


def split_arguments(argv: list[str]) -> tuple[str, list[str]]:
    """(--fleet-address value, flower-superlink's own arguments)."""
    rest, fleet = [], None
    args = iter(argv)
    for arg in args:
        if arg == "--fleet-address":
            fleet = next(args, None)
        elif arg.startswith("--fleet-address="):
            fleet = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if not fleet:
        raise SystemExit("--fleet-address HOST:PORT is required (where SuperNodes connect)")
    return fleet, rest


async def serve(fleet: str, argv: list[str], prefork: PreForkedExecutor | None = None) -> None:
    """Serve both sides until signalled; the SuperExec that starts ServerApps is `prefork` (told to
    start once the Runtime API listens) or, without one, a program."""
    from flwr.supercore.http_logging import get_uvicorn_log_config
    from flwr.supercore.logger import console_handler
    from flwr.superlink.cli.flower_superlink import SuperLinkLifespan, _parse_superlink_lifespan_config
    from flwr.superlink.main import create_app

    work = Path(tempfile.mkdtemp(prefix="flrepo-superlink-"))
    ours = None if stock() else _flrepo_runtime(work)
    secret = ours.secret if ours is not None else None
    replies = ours.replies if ours is not None else None
    held = ours.held if ours is not None else None
    if secret is not None:
        argv = [*argv, "--isolation", "process", "--superexec-auth-secret-file", str(secret)]
    sys.argv = ["flower-superlink", *argv]
    config = _parse_superlink_lifespan_config()  # flower-superlink's own parsing and checks
    # The loopback side carries no TLS: Flower's helpers (SuperExec, the ServerApp) then connect in
    # plaintext on loopback, and the server certificate need not name 127.0.0.1.
    inner = dataclasses.replace(
        config, host=LOOPBACK, insecure=True, certificates=None, ssl_ca_certfile=None, ssl_certfile=None,
        ssl_keyfile=None,
    )  # fmt: skip
    app = create_app(inner, SuperLinkLifespan)
    loopback: Any = app
    if held is not None:
        from flwr.proto.runtime_pb2 import PushAppMessagesResponse

        loopback = Watched(app, CompletePushes(*RUNTIME_PUSH, PushAppMessagesResponse, held.pushed))
    log_config = get_uvicorn_log_config(console_handler.level)
    host, _, port = fleet.rpartition(":")
    servers = [
        _Server(uvicorn.Config(loopback, host=LOOPBACK, port=config.port, log_config=log_config, workers=1)),
        _Server(
            uvicorn.Config(
                FleetOnly(app, replies, held),
                host=host.strip("[]") or "0.0.0.0",
                port=int(port),
                lifespan="off",
                log_config=log_config,
                ssl_certfile=config.ssl_certfile,
                ssl_keyfile=config.ssl_keyfile,
            )
        ),
    ]

    def shut_down(*_: object) -> None:
        if held is not None:
            held.close()
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shut_down)
    # The loopback server first: its lifespan starts Flower's SuperExec and state.
    first = asyncio.create_task(servers[0].serve())
    while not servers[0].started and not first.done():  # noqa: ASYNC110 - uvicorn offers no event to await
        await asyncio.sleep(0.05)
    executor = None
    if secret is not None and servers[0].started:
        executor = _executor(prefork, f"{LOOPBACK}:{config.port}", secret)
    if prefork is not None and executor is not prefork:
        prefork.terminate()
    second = asyncio.create_task(servers[1].serve())
    done, _ = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
    shut_down()  # one stopped (a port in use, a signal): stop the other too
    await asyncio.gather(first, second, return_exceptions=True)
    if executor is not None:
        executor.terminate()
    shutil.rmtree(work, ignore_errors=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    if not all(server.started for server in servers):
        raise SystemExit("the SuperLink could not listen (see above)")


@dataclasses.dataclass
class FlreposRuntime:
    """What flrepo adds to Flower's SuperLink (nothing of it with FLREPO_FLOWER_STOCK=1)."""

    secret: Path  # the SuperExec's secret (SuperExec authentication on the Runtime API)
    replies: Path  # the datagram socket the ServerApp's grid is woken on (flrepo.fl.message.fast_grid)
    held: HeldPulls


def _flrepo_runtime(work: Path) -> FlreposRuntime:
    """Set this process up for flrepo's runtime: its SuperExec, wakes, held pulls, and Flower's
    middleware and endpoints made cheaper."""
    # flrepo's SuperExec (flrepo.fl.message.executor) starts the ServerApp: a fork of a process that
    # imported it while the SuperLink started, instead of a cold program; it asks for the run's task
    # every 0.1 s rather than every second.
    os.environ.setdefault(SUPEREXEC_POLL_ENV, SUPEREXEC_POLL_S)
    secret = work / "superexec-secret"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    replies = work / "replies.sock"
    os.environ[REPLY_WAKE_ENV] = str(replies)
    scoped_middleware.install()  # Flower's Control/Fleet-only middleware on those requests only
    plain_translation.install_superlink()  # and its two translation layers as plain ASGI
    inline_endpoints.install()  # its plain-function endpoints without a worker thread each
    return FlreposRuntime(secret, replies, HeldPulls())


def _executor(
    prefork: PreForkedExecutor | None, runtime_api: str, secret: Path
) -> PreForkedExecutor | subprocess.Popen[bytes]:
    """The SuperExec that starts the run's ServerApp: `prefork`, told to start, or a program."""
    if prefork is not None and prefork.go(runtime_api, secret):
        return prefork
    return start_executor(runtime_api, secret)


def start_executor(runtime_api: str, secret: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "flrepo.fl.message.executor", "--app", "flwr-serverapp"]
    argv += ["--runtime-api-address", runtime_api, "--superexec-auth-secret-file", str(secret)]
    return subprocess.Popen(argv, preexec_fn=pdeathsig)


def main() -> None:
    fleet, argv = split_arguments(sys.argv[1:])
    # Forked now, while this process has one thread and no event loop (serve starts Flower's threads).
    prefork = None if stock() else serverapp_superexec.prefork()
    asyncio.run(serve(fleet, argv, prefork))


def fork(args: list[str], env: dict[str, str]) -> Forked | None:
    """This launcher with `args` (its options, as after `python -m flrepo.fl.message.superlink`) and
    `env`, in a child forked from the calling process (the collector) after it imported PRELOAD; None
    where that is not safe (a thread is running: its locks would stay held in the child) or Flower runs
    as shipped, and the caller starts the program instead. The child is its own process group and gets
    SIGTERM when the caller dies, as the program would."""
    if stock() or threading.active_count() > 1:
        return None
    for name in PRELOAD:
        importlib.import_module(name)
    if threading.active_count() > 1:  # an import started a thread
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _forked(args, env)  # never returns
    log.info("the SuperLink is forked from this process (pid %s)", pid)
    return Forked(pid, ["flrepo-superlink", *args])


def _forked(args: list[str], env: dict[str, str]) -> None:
    def body() -> None:
        os.environ.clear()
        os.environ.update(env)
        from flwr.supercore.exit import exit_handler

        exit_handler.registered_exit_handlers.clear()  # the collector's, not the SuperLink's
        sys.argv = ["flrepo-superlink", *args]
        main()

    run_forked("fl-superlink", body)


if __name__ == "__main__":
    main()
