"""The collector on Flower's Message API runtime: a SuperLink for the task, and a run of flrepo's
ServerApp on it.

It starts the SuperLink (flrepo.fl.message.superlink: Fleet API alone on the participant-facing
address, with TLS; plaintext only with --insecure), registers the task's participant_keys as the
only SuperNodes allowed in (SuperNode authentication), publishes the address, runtime and CA in
the task's status, submits the run, and heartbeats until the run ends. A cancel stops the run and
the SuperLink. The ServerApp reports the rounds and the result itself (flrepo.fl.message.server).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from flrepo.fl.core.lifecycle import RUNNING_PROGRESS, exit_code, fail, started, stopped
from flrepo.fl.core.link import TaskLink
from flrepo.fl.core.publishing import Written
from flrepo.fl.core.resume import Resume, resume_round
from flrepo.fl.core.serving import Serving, advertised
from flrepo.fl.core.watch import Ended, Heartbeat, ended
from flrepo.fl.message import programs
from flrepo.fl.message.fab import task_fab
from flrepo.fl.message.superlink import fork as fork_superlink

log = logging.getLogger(__name__)
# Flower's ServerApp may be slow to come up (imports, the model): the SuperLink must answer first.
SUPERLINK_START_SECONDS = 60.0


class SuperLinkError(RuntimeError):
    """The SuperLink did not start or stopped unexpectedly."""


class ConfigurationError(ValueError):
    """The collector cannot serve this task as it was started (no TLS, say)."""


SUPERLINK_PROGRAM = [sys.executable, "-m", "flrepo.fl.message.superlink"]


def superlink_options(serving: Serving, control_port: int, authenticate: bool) -> list[str]:
    """flrepo's SuperLink launcher's options (run as SUPERLINK_PROGRAM + these, or forked with them)."""
    argv = ["--fleet-address", serving.address]
    argv += ["--port", str(control_port), "--disable-runtime-dependency-installation"]
    if serving.tls is not None:
        argv += ["--ssl-ca-certfile", str(serving.tls.ca), "--ssl-certfile", str(serving.tls.cert)]
        argv += ["--ssl-keyfile", str(serving.tls.key)]
    else:
        argv += ["--insecure"]
    if authenticate:
        argv += ["--enable-supernode-auth"]
    return argv


class Control:
    """The SuperLink's Control API, on loopback."""

    def __init__(self, port: int) -> None:
        from flwr.supercore.control import ControlHttpClient

        self.client = ControlHttpClient.from_server_address(
            server_address=f"127.0.0.1:{port}", insecure=True, root_certificates=None, interceptors=[]
        )

    def wait_ready(self, process: programs.Program, timeout: float) -> None:
        from flwr.proto.control_pb2 import ListRunsRequest

        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise SuperLinkError(f"the SuperLink exited with code {process.returncode} (see the log above)")
            try:
                self.client.ListRuns(ListRunsRequest())
                return
            except Exception:  # not listening yet
                if time.monotonic() > deadline:
                    raise SuperLinkError(f"the SuperLink did not answer within {timeout:g} s") from None
                time.sleep(0.2)

    def allow(self, public_keys: list[str]) -> None:
        """Register the SuperNodes allowed to join (their OpenSSH public keys)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from flwr.proto.control_pb2 import RegisterNodeRequest
        from flwr.supercore.primitives.asymmetric import public_key_to_bytes

        for line in public_keys:
            key = serialization.load_ssh_public_key(line.encode())
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ConfigurationError(f"participant key {line[:40]}... is not an ECDSA key")
            name = line.split(" ", 2)[2] if line.count(" ") >= 2 else None
            self.client.RegisterNode(RegisterNodeRequest(public_key=public_key_to_bytes(key), name=name))

    def start_run(self, config: dict[str, Any]) -> int:
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest

        request = StartRunRequest(fab=fab_to_proto(task_fab()), override_config=user_config_to_proto(config))
        response = self.client.StartRun(request)
        if not response.HasField("run_id"):
            raise SuperLinkError("the SuperLink did not start the run")
        return int(response.run_id)

    def run_status(self, run_id: int) -> tuple[str, str, str]:
        """(status, sub_status, details) of the run."""
        from flwr.proto.control_pb2 import ListRunsRequest

        run = self.client.ListRuns(ListRunsRequest(run_id=run_id)).run_dict[run_id]
        return run.status.status, run.status.sub_status, run.status.details

    def active_nodes(self) -> int:
        from flwr.proto.control_pb2 import ListNodesRequest

        return sum(1 for node in self.client.ListNodes(ListNodesRequest()).nodes_info if node.status == "online")

    def forward_logs(self, run_id: int) -> threading.Thread:
        """Copy the ServerApp's output (Flower keeps it in the SuperLink) into this process's log: on
        Flower's stock SuperLink, whose SuperExec sends it nowhere else."""
        from flwr.proto.control_pb2 import StreamLogsRequest

        def forward() -> None:
            try:
                for response in self.client.StreamLogs(StreamLogsRequest(run_id=run_id, after_timestamp=0.0)):
                    for line in response.log_output.splitlines():
                        sys.stdout.write(f"[ServerApp] {line}\n")
                    sys.stdout.flush()
            except Exception as exc:  # the run ended, the SuperLink went away
                log.debug("ServerApp log stream ended: %s", exc)

        thread = threading.Thread(target=forward, name=f"serverapp-log-{run_id}", daemon=True)
        thread.start()
        return thread

    def stop_run(self, run_id: int) -> None:
        from flwr.proto.control_pb2 import StopRunRequest

        try:
            self.client.StopRun(StopRunRequest(run_id=run_id))
        except Exception as exc:  # finished meanwhile, or the SuperLink is going away
            log.info("stopping run %s: %s", run_id, exc)

    def close(self) -> None:
        self.client.close()


def _checked(serving: Serving, task: dict[str, Any]) -> None:
    if serving.tls is None and not serving.insecure:
        raise ConfigurationError(
            "the Message-API runtime needs TLS: give --tls-dir (or --ssl-ca-certfile, --ssl-certfile, "
            "--ssl-keyfile), or --insecure for plaintext"
        )
    if task.get("participant_keys") and serving.tls is None:
        raise ConfigurationError("SuperNode authentication (the task's participant_keys) needs TLS")


def run(link: TaskLink, task: dict[str, Any], serving: Serving, allow_unsigned: bool) -> int:
    """Serve the task until its run ends: 0 when it Succeeded or was cancelled, else 1."""
    repo, task_id = link.repo, task["task_id"]
    try:
        _checked(serving, task)
    except ConfigurationError as exc:
        log.error("task %s: %s", task_id, exc)
        return 2
    superlink: programs.Program | None = None
    heartbeat: Heartbeat | None = None
    control: Control | None = None
    run_id: int | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="flrepo-superlink-") as tmp:
            control_port = programs.free_port()
            keys = list(task.get("participant_keys") or [])
            command = superlink_options(serving, control_port, authenticate=bool(keys))
            env = programs.flower_env(Path(tmp))
            # Forked from this process, which imported Flower already; started as a program where it cannot be.
            superlink = fork_superlink(command, env) or programs.start([*SUPERLINK_PROGRAM, *command], env)
            control = Control(control_port)
            control.wait_ready(superlink, SUPERLINK_START_SECONDS)
            control.allow(keys)
            done = resume_round(repo, task)  # the ServerApp loads its weights
            address = advertised(serving, serving.address)
            started(link, task, None, Resume(done, []) if done else None, "message", address, serving.tls)
            if not keys:
                log.warning("task %s has no participant_keys: any SuperNode that reaches %s may join", task_id, address)
            run_config = {
                "task-id": task_id,
                "serving-since": time.time(),
                "resume-round": done,
                "allow-unsigned": allow_unsigned,
            }
            run_id = control.start_run(run_config)
            if programs.stock():  # flrepo's SuperExec writes the ServerApp's output here itself (executor.Prefixed)
                Control(control_port).forward_logs(run_id)  # its own connection: the stream holds it
            log.info(
                "Flower SuperLink (Message API) on %s, advertised as %s, %s, %d allowed SuperNode(s): run %s",
                serving.address,
                address,
                "TLS" if serving.tls else "plaintext",
                len(keys),
                run_id,
            )
            ends: list[Ended] = []
            woken = threading.Event()
            api = control

            def seen(end: Ended) -> None:
                ends.append(end)
                woken.set()

            def progress() -> dict[str, Any]:
                try:
                    return {"active": api.active_nodes()}
                except Exception:  # the count is a nicety; the heartbeat is what matters
                    return {}

            # Its held reads of the task also see the end the moment the service records it, not at the
            # next heartbeat: the ServerApp's own Succeeded report ends the collector while Flower still
            # winds the run down (its task output, the run's logs: a second or two).
            heartbeat = Heartbeat(link, float(task["heartbeat_timeout"]), progress, seen, shown=RUNNING_PROGRESS)
            heartbeat.start()
            return _until_done(link, task, control, superlink, run_id, ends, woken)
    except Exception as exc:
        if heartbeat is not None and heartbeat.ended is not None:
            return stopped(link, task, heartbeat.ended, Written())
        return fail(link, task, exc, Written())
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if control is not None:
            if run_id is not None and superlink is not None and superlink.poll() is None:
                control.stop_run(run_id)
            control.close()
        if superlink is not None:
            programs.stop(superlink)


def _until_done(
    link: TaskLink,
    task: dict[str, Any],
    control: Control,
    superlink: programs.Program,
    run_id: int,
    ends: list[Ended],
    woken: threading.Event,
) -> int:
    repo, task_id = link.repo, task["task_id"]
    while True:
        if ends and ends[0].phase == "Succeeded":  # the ServerApp's own report
            return 0
        if ends:  # cancelled, or failed by a site or by the service
            control.stop_run(run_id)
            return stopped(link, task, ends[0], Written())
        if superlink.poll() is not None:
            raise SuperLinkError(f"the SuperLink exited with code {superlink.returncode} while the task ran")
        status, sub_status, details = control.run_status(run_id)
        if status == "finished":
            end = ended(repo, task_id)
            if end is not None:  # the ServerApp reported how (and, on failure, removed what it wrote)
                if end.phase != "Succeeded":
                    log.error("task %s: %s", task_id, end)
                return exit_code(end)
            details = details or "no details"
            raise SuperLinkError(f"the ServerApp run ended ({sub_status}: {details}) without a result")
        woken.wait(1)
